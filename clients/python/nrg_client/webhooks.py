"""Verifying the webhooks nrg-serve sends (``webhook_url``), before trusting what they say.

The server signs each delivery the Standard Webhooks way with its ``--webhook-secret``: the
``webhook-signature`` header holds ``v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">``.
Verify the raw body as received (not a re-serialised one), and refuse old timestamps, which is what
stops a recorded delivery from being replayed. The same event may arrive more than once (retries are
at least once): keep the ``webhook-id`` of what you processed and skip repeats.

::

    from nrg_client import WebhookVerificationError, verify_webhook

    def receive(body: bytes, headers) -> int:
        try:
            event = verify_webhook(body, headers, secret=os.environ["NRG_WEBHOOK_SECRET"])
        except WebhookVerificationError:
            return 400
        if event["type"] == "video.completed":
            print(event["data"]["id"], event["data"]["rewards"])
        return 204
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from nrg_client.errors import WebhookVerificationError

__all__ = ["DEFAULT_TOLERANCE_S", "verify_webhook"]

#: How far a delivery's timestamp may be from the receiver's clock, either way (Standard Webhooks' 5 minutes).
DEFAULT_TOLERANCE_S = 300.0
_PREFIX = "whsec_"


def _key(secret: str) -> bytes:
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret[len(_PREFIX):], validate=True)
        except binascii.Error:
            raise WebhookVerificationError("the secret starts with whsec_ but the rest is not base64") from None
    return secret.encode()


def verify_webhook(payload: bytes, headers: Mapping[str, str], secret: str, *,
                   tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> dict[str, Any]:
    """The delivery's JSON (``{"type", "timestamp", "data"}``), once its signature is the server's and its
    timestamp within ``tolerance_s`` of ``now`` (default: this machine's clock).

    ``headers`` is any mapping of the request's headers (names in any case); ``secret`` the server's
    ``--webhook-secret`` as given (``whsec_...`` or raw). Raises :class:`WebhookVerificationError`
    saying what is wrong: a header missing, a stale or future timestamp, no matching signature."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    try:
        message_id, timestamp_text, signatures = (lowered[name] for name in
                                                  ("webhook-id", "webhook-timestamp", "webhook-signature"))
    except KeyError as exc:
        raise WebhookVerificationError(f"the {exc.args[0]} header is missing") from None
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {timestamp_text!r}") from None
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise WebhookVerificationError(f"webhook-timestamp is {abs(skew):.0f} s {when} (tolerance {tolerance_s:g} s): "
                                       "a replay, or a clock that is off")
    body = payload if isinstance(payload, bytes) else bytes(payload)
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            try:
                return json.loads(body)
            except ValueError:
                raise WebhookVerificationError("the signed body is not JSON") from None
    raise WebhookVerificationError("no webhook-signature matches: a wrong secret, or a body that was altered")
