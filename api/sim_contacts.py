"""Simulator controls for contacts: play WhatsApp's world of people for a device
(``--engine simulator`` only, operator token only; :mod:`supervisor.engines.simulator_contacts`)::

    POST /api/whatsapp/simulator/devices/{deviceId}/contacts
         {"phoneNumber", "onWhatsApp"?: bool, "name"?}
         -> 200 {"phoneNumber", "jid", "onWhatsApp", "lid", "name"}
            gives the number a WhatsApp account or takes it away (``onWhatsApp``), and saves it
            in the device's address book as ``name``
    GET  /api/whatsapp/simulator/devices/{deviceId}/contacts
         -> 200 {"checkRequests", "checkedNumbers", "blocked": [...], "addressBook"}
            what the device asked the simulated WhatsApp so far, and its block list

Errors: 400 naming the field; 404 for an unknown device.
"""

from __future__ import annotations

import re

from quart import Blueprint, Response

from api.content_fields import fields, flag, string
from api.routes_devices import ok, read_body
from api.routes_simulator import _target
from supervisor.contacts import PHONE_PATTERN
from supervisor.errors import InvalidRequest
from supervisor.jid import InvalidJid, Jid

bp = Blueprint("simulator_contacts", __name__)

NAME_MAX = 100


@bp.post("/simulator/devices/<device_id>/contacts")
async def put_contact(device_id: str) -> Response:
    engine, row = _target(device_id)
    body = fields(await read_body(), "body", frozenset({"phoneNumber", "onWhatsApp", "name"}))
    raw = body.get("phoneNumber")
    try:
        if not isinstance(raw, str) or re.fullmatch(PHONE_PATTERN, raw) is None:
            raise InvalidJid("not a phone number")
        phone = Jid.phone(raw, strict=True).user
    except InvalidJid:
        raise InvalidRequest("phoneNumber: must be a phone number like +15551234567",
                             field="phoneNumber") from None
    on = flag(body, "onWhatsApp") if "onWhatsApp" in body else None
    name = string(body, "name", "name", NAME_MAX, required=False)
    entry = await engine.put_contact(row.id, phone, on, name)
    return ok({"phoneNumber": "+" + phone, "jid": f"{phone}@s.whatsapp.net",
               "onWhatsApp": entry.on_whatsapp, "lid": entry.lid, "name": name})


@bp.get("/simulator/devices/<device_id>/contacts")
async def contacts_state(device_id: str) -> Response:
    engine, row = _target(device_id)
    seen = await engine.contacts_seen(row.id)
    return ok({"checkRequests": seen.check_requests, "checkedNumbers": seen.checked_numbers,
               "blocked": list(seen.blocked), "addressBook": seen.address_book})
