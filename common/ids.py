"""Random identifiers with a type prefix.

Usage::

    new_message_id()   # "msg_Xy3…": a webhook-id / outbox row id, 128 random bits
"""

from __future__ import annotations

import secrets


def new_message_id() -> str:
    """A fresh ``msg_`` id: 128 random bits, URL-safe base64 without padding."""
    return "msg_" + secrets.token_urlsafe(16)
