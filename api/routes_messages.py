"""Pairing by phone code, sending messages and a device's pacing (under ``/api/whatsapp``).

::

    POST /devices/{deviceId}/pair-code  {"phoneNumber": "+15551234567"}
        -> 200 {"success": true, "data": {"sessionId", "code": "ABCD-EFGH", "expiresAt"}}
    POST /devices/{deviceId}/messages   {"to": "+15551234567" | "<jid>", "text": "hello",
                                         "ttl"?: seconds}      [Idempotency-Key: <key>]
        -> 200 {"success": true, "data": {"messageId", "to", "status": "sent", "timestamp"}}
        -> 202 the same with "status": "pending" (queued: paced, or waiting for the connection)
    PUT  /devices/{deviceId}/settings/sending  {"ratePerMinute": 60, "burst": 5}
    GET  /devices/{deviceId}/settings/sending  -> the pacing in force

The operator token or the device's own API key may call them all. ``to`` is a phone number
(E.164, ``+`` optional, spaces and dashes allowed) or a WhatsApp JID (``...@s.whatsapp.net``,
``...@g.us``) in the strict spellings of :mod:`supervisor.jid`, and is normalized to the
canonical JID before sending; ``data.to`` is that JID. Every send is tracked by the device's
outbound queue (:mod:`supervisor.outbound`): ``messageId`` is wasup's id of it, stored before it
leaves; ``message_status`` events follow it. A device ``connecting``, or ``disconnected`` for a
reason it recovers from, queues the send (202) until it is connected or ``ttl`` seconds (default
``SendingConfig.ttl``, at most ``SendingConfig.max_ttl``) have passed. A request with an
``Idempotency-Key`` (1 to 128 visible ASCII characters) that the device has seen answers the
message made the first time and sends nothing.

Errors: 400 INVALID_REQUEST naming the field (``phoneNumber``, ``to``, ``text``, ``ttl``,
``Idempotency-Key``, ``ratePerMinute``, ``burst``, ``body``); 404 for an unknown device; 409
DEVICE_CONFLICT for a pair code while the device is not pending (or its pairing connection is not
up yet) and for a message while the device is in a state it does not leave by itself (logged out,
QR timed out, pairing, held); 429 RATE_LIMIT_EXCEEDED with Retry-After when the device's outbound
queue is full; 502 ENGINE_ERROR when WhatsApp refuses a pair code.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from quart import Blueprint, Response, request

from api import validation
from api.auth import resolve_device
from api.routes_devices import ok, read_body
from api.state import current_state
from api.text import check_line, check_text
from api.validation import number
from supervisor.errors import InvalidRequest
from supervisor.jid import InvalidJid, Jid, JidKind
from supervisor.outbound import BURST_MAX, BURST_MIN, RATE_MAX, RATE_MIN, SETTINGS_KIND, Pacing

bp = Blueprint("messages", __name__)

#: Limits shared with docs/openapi.yaml.
TO_MAX = 100
TEXT_MAX = validation.TEXT_MAX
PAIR_PHONE_RE = re.compile(r"\+?[1-9][0-9]{6,14}")
IDEMPOTENCY_KEY_RE = re.compile(r"[!-~]{1,128}")
TTL_MIN = 1
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
    """``(jid, text)`` of a send request (its ``ttl`` is :func:`ttl_of`'s)."""
    if isinstance(body, dict) and "ttl" in body:
        body = {k: v for k, v in body.items() if k != "ttl"}
    req = validation.structure(body, SendMessageRequest)
    check_line("to", req.to)
    check_text("text", req.text)
    to = normalize_recipient(req.to)
    if not req.text.strip():
        raise InvalidRequest("text: must not be empty", field="text")
    if len(req.text) > TEXT_MAX:
        raise InvalidRequest(f"text: must be at most {TEXT_MAX} characters", field="text")
    return to, req.text


def ttl_of(body: Any, max_ttl: float) -> float | None:
    """The ``ttl`` of a send request in seconds, or None for the default."""
    if not isinstance(body, dict) or body.get("ttl") is None:
        return None
    return float(number("ttl", body["ttl"], TTL_MIN, max_ttl))


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header, or None."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise InvalidRequest(
            "Idempotency-Key: must be 1 to 128 visible ascii characters", field="Idempotency-Key"
        )
    return value


def pacing_request(body: Any) -> dict[str, float | int]:
    """The stored ``sending`` settings of a ``PUT .../settings/sending`` body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    for key in sorted(body):
        if key not in ("ratePerMinute", "burst"):
            raise InvalidRequest(f"{key}: unknown field", field=key)
    for key in ("ratePerMinute", "burst"):
        if key not in body:
            raise InvalidRequest(f"{key}: is required", field=key)
    rate = float(number("ratePerMinute", body["ratePerMinute"], RATE_MIN, RATE_MAX))
    burst: int = number("burst", body["burst"], BURST_MIN, BURST_MAX, integer=True)
    return {"ratePerMinute": rate, "burst": burst}


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
    key = idempotency_key()
    body = await read_body()
    to, text = send_message_request(body)
    sup = current_state().sup
    ttl = ttl_of(body, sup.config.sending.max_ttl)
    result = await sup.send_message(
        str(row.id), to.canonical, text, origin="api", ttl=ttl, idempotency_key=key
    )
    data = {
        "messageId": result["messageId"],
        "to": result.get("to", to.canonical),
        "status": result.get("status", "sent"),
        "timestamp": result.get("timestamp"),
    }
    if data["status"] == "pending":
        return ok(data, "Message queued; it goes out when the device may send.", status=202)
    return ok(data, "Message sent.")


@bp.put("/devices/<device_id>/settings/sending")
async def put_sending(device_id: str) -> Response:
    row = await resolve_device(device_id)
    value = pacing_request(await read_body())
    await current_state().sup.put_settings(str(row.id), SETTINGS_KIND, value)
    return ok(value, "Sending pace updated.")


@bp.get("/devices/<device_id>/settings/sending")
async def get_sending(device_id: str) -> Response:
    row = await resolve_device(device_id)
    state = current_state()
    stored = await state.sup.get_settings(str(row.id), SETTINGS_KIND)
    return ok(Pacing.of(stored, state.sup.config.sending).to_json())
