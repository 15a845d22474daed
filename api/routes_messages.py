"""Pairing by phone code, sending messages and a device's pacing (under ``/api/whatsapp``).

::

    POST /devices/{deviceId}/pair-code  {"phoneNumber": "+15551234567"}
        -> 200 {"success": true, "data": {"sessionId", "code": "ABCD-EFGH", "expiresAt"}}
    POST /devices/{deviceId}/messages   {"to": "+15551234567" | "<jid>", "type"?: "text",
                                         "text": "hello", "replyTo"?, "ttl"?: seconds}
                                        [Idempotency-Key: <key>]
        (every type, as JSON or multipart/form-data: :mod:`api.send_request`)
        -> 200 {"success": true, "data": {"messageId", "to", "status": "sent", "timestamp",
                                          "type"}}
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
message made the first time and sends nothing. A media file goes into the media store, pinned
until its send is done (:mod:`api.send_media`); the outbound queue unpins the file of a send
it refuses (409, 429, an unknown ``replyTo``), and this route that of a send the device never
saw (404, 503).

Errors: 400 INVALID_REQUEST naming the field (``phoneNumber``, ``to``, ``text``, ``ttl``,
``replyTo``, ``media.url``, ``mimetype``, ``Idempotency-Key``, ``ratePerMinute``, ``burst``,
``body``...); 413 PAYLOAD_TOO_LARGE naming ``media`` or ``file`` for a file beyond its type's
limit; 404 for an unknown device; 409
DEVICE_CONFLICT for a pair code while the device is not pending (or its pairing connection is not
up yet) and for a message while the device is in a state it does not leave by itself (logged out,
QR timed out, pairing, held); 429 RATE_LIMIT_EXCEEDED with Retry-After when the device's outbound
queue is full; 502 ENGINE_ERROR when WhatsApp refuses a pair code.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Blueprint, Response, request

from api.auth import resolve_device
from api.routes_devices import ok, read_body
from api.send_media import prepare
from api.send_request import read_send, response_data
from api.state import current_state
from api.text import check_line
from api.validation import number
from supervisor.errors import Busy, DeviceNotFound, InvalidRequest
from supervisor.pacing import BURST_MAX, BURST_MIN, RATE_MAX, RATE_MIN, SETTINGS_KIND, Pacing

bp = Blueprint("messages", __name__)

#: Limits shared with docs/openapi.yaml.
PAIR_PHONE_RE = re.compile(r"\+?[1-9][0-9]{6,14}")
IDEMPOTENCY_KEY_RE = re.compile(r"[!-~]{1,128}")
#: What a send may fail with before the device's actor saw it (the actor itself unpins the
#: file of a send it refuses, unless another queued send needs it).
UNSEEN = (DeviceNotFound, Busy)


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
    sup = current_state().sup
    req = await read_send(sup.config.sending.max_ttl)
    stored: list[str] = []

    async def store(data: bytes) -> str:
        sha256 = await sup.media.put(data, pin=True)
        stored.append(sha256)
        return sha256

    message = await prepare(req, sup.config.media, sup.config.allow_networks, store)
    try:
        result = await sup.send(str(row.id), req.to.canonical, message, origin="api", ttl=req.ttl,
                                idempotency_key=key, reply_to=req.reply_to)
    except UNSEEN:
        # Never queued: nothing will send the file, which joins the cache.
        for sha256 in stored:
            await sup.media.unpin(sha256)
        raise
    data = response_data(result, req)
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
