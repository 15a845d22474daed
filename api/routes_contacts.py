"""A device's contacts at WhatsApp (under ``/api/whatsapp``; :mod:`supervisor.contacts`).

::

    POST /devices/{deviceId}/contacts/check  {"phoneNumbers": ["+15551234567", ...]}
        -> 200 {"success": true, "data": [{"phoneNumber", "onWhatsApp", "jid", "businessName",
                                          "cached"}, ...]}        one per distinct number
    GET  /devices/{deviceId}/contacts?page=&limit=
        -> 200 {"data": [{"jid", "phoneNumber", "name", "firstName", "pushName",
                          "businessName"}], "pagination": {"total", "page", "limit"}}
    GET  /devices/{deviceId}/contacts/{contact}
        -> 200 {"data": {"jid", "phoneNumber", "lid", "name", "firstName", "pushName", "about",
                         "businessName", "pictureUrl", "blocked"}}
    GET  /devices/{deviceId}/lids/{lidOrPhone}
        -> 200 {"data": {"jid", "phoneNumber", "lid"}}
    POST /devices/{deviceId}/contacts/{contact}/block    (no body, or {})
    POST /devices/{deviceId}/contacts/{contact}/unblock
        -> 200 {"data": {"jid", "blocked"}}

The operator token or the device's own API key may call them all; the device must be
connected. ``contact`` and ``lidOrPhone`` are a phone number (``+15551234567``) or a person's
JID (``…@s.whatsapp.net``, ``…@lid``). A check answers numbers checked within
``contacts.check_cache_seconds`` from wasup's cache (``cached: true``) and asks WhatsApp about
the others in one request; a device may ask WhatsApp about ``contacts.checks_per_hour``
numbers an hour.

Errors: 400 INVALID_REQUEST naming the field (``body``, ``phoneNumbers``: missing, empty, more
than ``contacts.check_batch_max``, or an entry that is not a phone number; ``contact``,
``lidOrPhone``, ``page``, ``limit``); 404 DEVICE_NOT_FOUND; 404 NOT_FOUND for a person without
a WhatsApp account or a mapping WhatsApp has not told; 409 DEVICE_CONFLICT when the device is
not connected; 429 RATE_LIMIT_EXCEEDED with Retry-After when a check would pass the hourly
cap; 502 ENGINE_ERROR when WhatsApp fails the request.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, request
from quart.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from api import validation
from api.auth import resolve_device
from api.content_fields import fields
from api.routes_devices import ok, read_body
from api.state import current_state
from supervisor.contacts import Contacts, person, phone_numbers
from supervisor.engine_contacts import Contact, ContactInfo

bp = Blueprint("contacts", __name__)


class PersonConverter(BaseConverter):
    """A path segment naming a person: any but ``check``, which is ``POST …/contacts/check``'s
    (so ``GET …/contacts/check`` is 405, not a person called "check")."""

    regex = r"(?!check\Z)[^/]+"


@bp.record_once
def _person_converter(state: BlueprintSetupState) -> None:
    """Registers :class:`PersonConverter` with the app, before the blueprint's rules."""
    state.app.url_map.converters.setdefault("person", PersonConverter)


def contacts() -> Contacts:
    """The app's :class:`Contacts` (its check cache and cap), made at first use."""
    found = current_app.extensions.get("wasup.contacts")
    if not isinstance(found, Contacts):
        found = current_app.extensions["wasup.contacts"] = Contacts(current_state().sup)
    return found


def _phone(jid: str | None) -> str | None:
    if jid is None or not jid.endswith("@s.whatsapp.net"):
        return None
    return "+" + jid.partition("@")[0]


def contact_json(c: Contact) -> dict[str, Any]:
    return {"jid": c.jid, "phoneNumber": _phone(c.jid), "name": c.name,
            "firstName": c.first_name, "pushName": c.push_name, "businessName": c.business_name}


def info_json(c: ContactInfo) -> dict[str, Any]:
    return {"jid": c.jid, "phoneNumber": _phone(c.jid), "lid": c.lid, "name": c.name,
            "firstName": c.first_name, "pushName": c.push_name, "about": c.about,
            "businessName": c.business_name, "pictureUrl": c.picture_url, "blocked": c.blocked}


async def _no_body() -> None:
    data = await request.get_data()
    assert isinstance(data, bytes)
    if data.strip():
        validation.structure(validation.parse_json(data), validation.Empty)


@bp.post("/devices/<device_id>/contacts/check")
async def check(device_id: str) -> Response:
    row = await resolve_device(device_id)
    service = contacts()
    config = service.config
    body = fields(await read_body(), "body", frozenset({"phoneNumbers"}))
    phones = phone_numbers(body.get("phoneNumbers"),
                           min(config.check_batch_max, config.checks_per_hour))
    results = await service.check(row.id, phones)
    return ok([
        {"phoneNumber": "+" + c.result.phone, "onWhatsApp": c.result.on_whatsapp,
         "jid": c.result.jid, "businessName": c.result.business_name, "cached": c.cached}
        for c in results
    ])


@bp.get("/devices/<device_id>/contacts")
async def address_book(device_id: str) -> Response:
    row = await resolve_device(device_id)
    page = validation.int_param(request.args, "page", 1, 1, validation.PAGE_MAX)
    limit = validation.int_param(request.args, "limit", validation.LIMIT_DEFAULT, 1,
                                 validation.LIMIT_MAX)
    book = await contacts().address_book(row.id)
    start = (page - 1) * limit
    return ok([contact_json(c) for c in book[start:start + limit]],
              pagination={"total": len(book), "page": page, "limit": limit})


@bp.get("/devices/<device_id>/contacts/<person:contact>")
async def info(device_id: str, contact: str) -> Response:
    row = await resolve_device(device_id)
    jid = person("contact", contact)
    return ok(info_json(await contacts().info(row.id, jid)))


@bp.get("/devices/<device_id>/lids/<lid_or_phone>")
async def lid(device_id: str, lid_or_phone: str) -> Response:
    row = await resolve_device(device_id)
    jid = person("lidOrPhone", lid_or_phone)
    found = await contacts().mapping(row.id, jid)
    return ok({"jid": found.pn, "phoneNumber": _phone(found.pn), "lid": found.lid})


@bp.post("/devices/<device_id>/contacts/<person:contact>/block")
async def block(device_id: str, contact: str) -> Response:
    return await _block(device_id, contact, True)


@bp.post("/devices/<device_id>/contacts/<person:contact>/unblock")
async def unblock(device_id: str, contact: str) -> Response:
    return await _block(device_id, contact, False)


async def _block(device_id: str, contact: str, blocked: bool) -> Response:
    row = await resolve_device(device_id)
    jid = person("contact", contact)
    await _no_body()
    await contacts().block(row.id, jid, blocked)
    return ok({"jid": jid.canonical, "blocked": blocked},
              "Contact blocked." if blocked else "Contact unblocked.")
