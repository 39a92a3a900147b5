"""Signing webhooks the Standard Webhooks way (https://www.standardwebhooks.com), so that receivers can
use any of its libraries, or ``nrg_client.verify_webhook``, to know a delivery came from this server.

Each delivery carries ``webhook-id`` (the event's, the same on every retry, for the receiver to
dedupe on), ``webhook-timestamp`` (the attempt's, in seconds, for the receiver to refuse replays) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"
#: Fewer bytes than this are a password, not a key.
MIN_SECRET_BYTES = 16


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``--webhook-secret``: ``whsec_<base64>`` is decoded (Standard Webhooks' form),
    anything else is taken as its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except binascii.Error:
            raise ValueError("--webhook-secret: whsec_ must be followed by base64") from None
    else:
        key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"--webhook-secret must hold at least {MIN_SECRET_BYTES} bytes of key; make one with "
                         "`echo whsec_$(openssl rand -base64 32)`")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of one attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(key, message_id, timestamp, body)}
