"""Pairing by phone code and sending messages (under ``/api/whatsapp``), on either engine.

::

    POST /devices/{deviceId}/pair-code  {"phoneNumber": "+15551234567"}
        -> 200 {"success": true, "data": {"sessionId", "code": "ABCD-EFGH", "expiresAt"}}
    POST /devices/{deviceId}/messages   {"to": "+15551234567" | "<jid>", "text": "hello"}
        -> 200 {"success": true, "data": {"messageId", "to", "status": "sent", "timestamp"}}

The operator token or the device's own API key may call both. ``to`` is a phone number (E.164,
``+`` optional, spaces and dashes allowed) or a WhatsApp JID (``...@s.whatsapp.net``, ``...@g.us``)
in the strict spellings of :mod:`supervisor.jid`, and is normalized to the canonical JID before
sending; ``data.to`` is that JID.

Errors: 400 INVALID_REQUEST naming the field (``phoneNumber``, ``to``, ``text``, ``body``);
404 for an unknown device; 409 DEVICE_CONFLICT for a pair code while the device is not
pending (or its pairing connection is not up yet) and for a message while it is not
connected; 502 ENGINE_ERROR when WhatsApp refuses a pair code.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from quart import Blueprint, Response

from api import validation
from api.auth import resolve_device
from api.routes_devices import ok, read_body
from api.state import current_state
from api.text import check_line, check_text
from supervisor.errors import InvalidRequest
from supervisor.jid import InvalidJid, Jid, JidKind

bp = Blueprint("messages", __name__)

#: Limits shared with docs/openapi.yaml.
TO_MAX = 100
TEXT_MAX = validation.TEXT_MAX
PAIR_PHONE_RE = re.compile(r"\+?[1-9][0-9]{6,14}")
#: What a message may be sent to: a person's number or a group.
RECIPIENT_KINDS = frozenset({JidKind.USER, JidKind.GROUP})

@attrs.frozen
class SendMessageRequest:
    to: str
    text: str


def normalize_recipient(to: str) -> Jid:
    """``to`` as a Jid: ``+1 555-123-4567`` -> ``15551234567@s.whatsapp.net``.

    Raises InvalidRequest(field="to") for anything that is neither a phone number nor a
    user or group JID in the strict spellings.
    """
    value = to.strip()
    if len(value) > TO_MAX:
        raise InvalidRequest(f"to: must be at most {TO_MAX} characters", field="to")
    try:
        jid = Jid.parse(value, strict=True)
    except InvalidJid:
        jid = None
    if jid is None or jid.kind not in RECIPIENT_KINDS:
        raise InvalidRequest(
            "to: must be a phone number like +15551234567 or a whatsapp jid like "
            "15551234567@s.whatsapp.net",
            field="to",
        )
    return jid


def pair_code_request(body: Any) -> str:
    """The phone number of a pair-code request, as digits (no ``+``)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    for key in sorted(body):
        if key != "phoneNumber":
            raise InvalidRequest(f"{key}: unknown field", field=key)
    value = body.get("phoneNumber")
    if value is None:
        raise InvalidRequest("phoneNumber: is required", field="phoneNumber")
    if not isinstance(value, str):
        raise InvalidRequest("phoneNumber: must be a string", field="phoneNumber")
    check_line("phoneNumber", value)
    phone = value.strip()
    if not PAIR_PHONE_RE.fullmatch(phone):
        raise InvalidRequest(
            "phoneNumber: must be 7 to 15 digits with the country code (E.164), like +15551234567",
            field="phoneNumber",
        )
    return phone.lstrip("+")


def send_message_request(body: Any) -> tuple[Jid, str]:
    """``(jid, text)`` of a send request."""
    req = validation.structure(body, SendMessageRequest)
    check_line("to", req.to)
    check_text("text", req.text)
    to = normalize_recipient(req.to)
    if not req.text.strip():
        raise InvalidRequest("text: must not be empty", field="text")
    if len(req.text) > TEXT_MAX:
        raise InvalidRequest(f"text: must be at most {TEXT_MAX} characters", field="text")
    return to, req.text


@bp.post("/devices/<device_id>/pair-code")
async def pair_code(device_id: str) -> Response:
    row = await resolve_device(device_id)
    phone = pair_code_request(await read_body())
    code, expires_at = await current_state().sup.request_pair_code(str(row.id), phone)
    return ok(
        {"sessionId": row.session_id, "code": code, "expiresAt": expires_at},
        "Enter this code on the phone: WhatsApp > Linked devices > Link with phone number.",
    )


@bp.post("/devices/<device_id>/messages")
async def send_message(device_id: str) -> Response:
    row = await resolve_device(device_id)
    to, text = send_message_request(await read_body())
    result = await current_state().sup.send_message(str(row.id), to.canonical, text, origin="api")
    data = {
        "messageId": result["messageId"],
        "to": result.get("to", to.canonical),
        "status": result.get("status", "sent"),
        "timestamp": result.get("timestamp"),
    }
    return ok(data, "Message sent.")
