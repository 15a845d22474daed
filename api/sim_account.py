"""Simulator controls of presence and calls: the device's contacts (``--engine simulator``
only, operator token only)::

    POST /api/whatsapp/simulator/devices/{deviceId}/calls     {"from", "video"?, "group"?}
        -> {"callId"}: someone calls the device (a call_received event)
    POST /api/whatsapp/simulator/devices/{deviceId}/presence  {"from", "state", "chat"?,
                                                               "lastSeen"?}
        -> {"delivered"}: a contact comes online, goes offline, types, records or pauses

A contact's presence reaches the device only when it subscribed to that contact
(``POST /devices/{deviceId}/contacts/{contact}/presence/subscribe``) and showed itself
``available``, as with WhatsApp: ``delivered`` says whether it did
(:mod:`supervisor.engines.simulator_account`).

Errors: 400 naming the field (``from``, ``state``, ``chat``, ``lastSeen``, ``video``,
``group``, ``body``); 404 for an unknown device; 409 DEVICE_CONFLICT when the device is not
connected.
"""

from __future__ import annotations

from quart import Blueprint, Response

from api.content_fields import fields, flag, string
from api.routes_devices import ok
from api.routes_simulator import _body_or_empty, _target
from api.validation import number
from supervisor.account import ADDRESS_MAX, CHAT_KINDS, CONTACT_KINDS, address
from supervisor.errors import InvalidRequest

bp = Blueprint("sim_account", __name__)

#: The states a contact's presence takes.
STATES = ("available", "unavailable", "typing", "recording", "paused")
#: lastSeen bounds: epoch seconds from 2009 (WhatsApp's start) to 2100.
SEEN_MIN, SEEN_MAX = 1_230_000_000, 4_102_444_800


@bp.post("/simulator/devices/<device_id>/calls")
async def incoming_call(device_id: str) -> Response:
    engine, row = _target(device_id)
    body = fields(await _body_or_empty(), "body", frozenset({"from", "video", "group"}))
    caller = address(string(body, "from", "from", ADDRESS_MAX) or "", "from", CONTACT_KINDS)
    video, group = flag(body, "video"), flag(body, "group")
    call_id = await engine.incoming_call(row.id, caller, video, group)
    return ok({"sessionId": row.session_id, "callId": call_id, "from": caller},
              "The device is being called.")


@bp.post("/simulator/devices/<device_id>/presence")
async def contact_presence(device_id: str) -> Response:
    engine, row = _target(device_id)
    body = fields(await _body_or_empty(), "body",
                  frozenset({"from", "state", "chat", "lastSeen"}))
    contact = address(string(body, "from", "from", ADDRESS_MAX) or "", "from", CONTACT_KINDS)
    state = body.get("state")
    if state not in STATES:
        raise InvalidRequest(f"state: must be one of {', '.join(STATES)}", field="state")
    chat = string(body, "chat", "chat", ADDRESS_MAX, required=False)
    if chat is not None:
        if state in ("available", "unavailable"):
            raise InvalidRequest("chat: only for typing, recording or paused", field="chat")
        chat = address(chat, "chat", CHAT_KINDS)
    seen = None
    if "lastSeen" in body:
        if state != "unavailable":
            raise InvalidRequest("lastSeen: only for unavailable", field="lastSeen")
        seen = float(number("lastSeen", body["lastSeen"], SEEN_MIN, SEEN_MAX, integer=True))
    delivered = await engine.contact_presence(row.id, contact, str(state), chat, seen)
    return ok({"sessionId": row.session_id, "delivered": delivered},
              "Presence delivered." if delivered else
              "Not delivered: the device did not subscribe to this contact or is unavailable.")
