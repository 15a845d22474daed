"""Standard Webhooks 1.0 signatures.

Synopsis::

    secret = generate_secret()                  # "whsec_" + base64 of 32 random bytes
    headers = sign_headers("msg_1", 1718798400, body, [secret])
    # {"webhook-id": "msg_1", "webhook-timestamp": "1718798400",
    #  "webhook-signature": "v1,<base64 HMAC-SHA256 of b'msg_1.1718798400.' + body>"}

A secret of the form ``whsec_<base64>`` signs with the decoded bytes, as the specification
says; any other string (the seed's example uses ``"webhook_secret"``) signs with its UTF-8
bytes. During a rotation window every active secret signs, and ``webhook-signature`` lists
the signatures separated by spaces; a receiver accepts the message if any one matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
#: Random bytes in a generated secret (the specification asks for 24 to 64).
SECRET_BYTES = 32


def generate_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of :data:`SECRET_BYTES` random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret``.

    Error handling: a ``whsec_`` secret whose remainder is not valid base64 raises
    ``ValueError`` (settings validation calls this, so a stored secret is always usable).
    """
    if secret.startswith(SECRET_PREFIX):
        text = secret[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("secret is not valid base64 after whsec_") from exc
        if not key:
            raise ValueError("secret is empty")
        return key
    if not secret:
        raise ValueError("secret is empty")
    return secret.encode("utf-8")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 over ``{msg_id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Iterable[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret in ``secrets``.

    Error handling: ``ValueError`` if ``secrets`` is empty (an unsigned webhook is never sent).
    """
    signatures = [signature(s, msg_id, timestamp, body) for s in secrets]
    if not signatures:
        raise ValueError("no secret to sign with")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signatures),
    }


def verify(
    secret: str, headers: dict[str, str], body: bytes, *, now: float, tolerance: float = 300.0
) -> bool:
    """True if ``headers`` carry a valid signature of ``body`` by ``secret``, within
    ``tolerance`` seconds of ``now``. For receivers written in Python and for tests."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        offered = lower["webhook-signature"].split(" ")
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, sig) for sig in offered)
