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
    world = engine.server.contacts
    if "onWhatsApp" in body:
        world.set_on_whatsapp(phone, flag(body, "onWhatsApp"))
    name = string(body, "name", "name", NAME_MAX, required=False)
    if name is not None:
        world.add_contact(row.id, phone, name)
    on = world.on_whatsapp(phone)
    return ok({"phoneNumber": "+" + phone, "jid": f"{phone}@s.whatsapp.net", "onWhatsApp": on,
               "lid": world.person(phone).lid + "@lid" if on else None, "name": name})


@bp.get("/simulator/devices/<device_id>/contacts")
async def contacts_state(device_id: str) -> Response:
    engine, row = _target(device_id)
    world = engine.server.contacts
    done = world.checks(row.id)
    return ok({"checkRequests": done.requests, "checkedNumbers": done.numbers,
               "blocked": sorted(world.blocked(row.id)),
               "addressBook": len(world.address_book(row.id))})
