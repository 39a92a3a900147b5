"""``verify_webhook``: what the server signs verifies, anything altered, stale or unsigned does not."""

from __future__ import annotations

import pytest

from nrg_client import WebhookVerificationError, verify_webhook

# The Standard Webhooks specification's test vector: what its reference libraries sign and verify.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"test": 2432232314}'
SENT = 1614265330
HEADERS = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": str(SENT),
           "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}


def test_the_specifications_vector_verifies():
    assert verify_webhook(BODY, HEADERS, SECRET, now=SENT + 10) == {"test": 2432232314}
    # Header names in any case; several signatures (a secret being rotated): one must match.
    mixed = {k.title(): v for k, v in HEADERS.items()}
    mixed["Webhook-Signature"] = "v1,bm9wZQ== " + HEADERS["webhook-signature"]
    assert verify_webhook(BODY, mixed, SECRET, now=SENT) == {"test": 2432232314}


@pytest.mark.parametrize("body, headers, secret, now, says", [
    (BODY.replace(b"2", b"3"), HEADERS, SECRET, SENT, "no webhook-signature matches"),
    (BODY, HEADERS, "whsec_" + "A" * 32, SENT, "no webhook-signature matches"),
    (BODY, {**HEADERS, "webhook-id": "msg_other"}, SECRET, SENT, "no webhook-signature matches"),
    (BODY, {**HEADERS, "webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, SECRET, SENT,
     "no webhook-signature matches"),
    (BODY, HEADERS, SECRET, SENT + 301, "301 s old"),
    (BODY, HEADERS, SECRET, SENT - 301, "301 s in the future"),
    (BODY, {k: v for k, v in HEADERS.items() if k != "webhook-signature"}, SECRET, SENT,
     "the webhook-signature header is missing"),
    (BODY, {**HEADERS, "webhook-timestamp": "soon"}, SECRET, SENT, "not a number"),
    (BODY, HEADERS, "whsec_%%%", SENT, "not base64"),
])
def test_refused(body, headers, secret, now, says):
    with pytest.raises(WebhookVerificationError, match=says) as caught:
        verify_webhook(body, headers, secret, now=now)
    assert isinstance(caught.value, ValueError) and caught.value.code == "invalid_webhook"


def test_what_the_server_signs_with_a_raw_secret_verifies():
    from server.webhooks.signing import secret_key, signed_headers

    raw = "a raw secret, not base64, long enough"
    headers = signed_headers(secret_key(raw), "msg_video_1_completed", SENT, b'{"type": "video.completed"}')
    assert verify_webhook(b'{"type": "video.completed"}', headers, raw, now=SENT) == {"type": "video.completed"}
