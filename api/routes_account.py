"""A device's presence, profile and calls (under ``/api/whatsapp``)::

    POST /devices/{deviceId}/presence                      {"state": "available"|"unavailable"}
    POST /devices/{deviceId}/chats/{chatId}/presence       {"state": "typing"|"recording"|"paused"}
    POST /devices/{deviceId}/contacts/{contact}/presence/subscribe   (no body, or {})
    GET  /devices/{deviceId}/profile        -> {"jid", "name", "about", "pictureUrl", "pictureId"}
    PUT  /devices/{deviceId}/profile        {"name"?, "about"?}  (at least one)
    PUT  /devices/{deviceId}/profile/picture   {"media": {"data": "<base64>"} | {"url": "..."}}
                                               or multipart/form-data with the part "file"
    POST /devices/{deviceId}/calls/{callId}/reject         {"from": "<the caller>"}
    PUT  /devices/{deviceId}/settings/calls  {"autoReject": true, "message"?: "..."}
    GET  /devices/{deviceId}/settings/calls  -> {"autoReject", "message"}

The operator token or the device's own API key may call them all. The requests go to WhatsApp
through the device (:mod:`supervisor.account`); the call settings are stored with the device's
settings (:mod:`supervisor.calls`). A picture is read as an image send's file is
(:mod:`api.image_upload`: base64, a URL fetched through the SSRF guard, or an upload; at most
``MediaConfig.max_image`` bytes, its type read from the bytes).

Errors: 400 INVALID_REQUEST naming the field (``state``, ``chatId``, ``contact``, ``callId``,
``from``, ``name``, ``about``, ``media``, ``media.data``, ``media.url``, ``mimetype``, ``file``,
``autoReject``, ``message``, ``body``); 413 PAYLOAD_TOO_LARGE naming ``media`` or ``file``; 404
for an unknown device; 409 DEVICE_CONFLICT when the device is not connected; 502 ENGINE_ERROR
when WhatsApp failed.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from api import validation
from api.auth import resolve_device
from api.content_fields import fields, flag, string
from api.image_upload import read_image
from api.routes_devices import ok, read_body
from api.state import current_state
from supervisor import account
from supervisor.calls import MESSAGE_MAX, SETTINGS_KIND, CallSettings
from supervisor.engine_account import Profile
from supervisor.errors import InvalidRequest

bp = Blueprint("account", __name__)


def _state(body: Any) -> object:
    given = fields(body, "body", frozenset({"state"}))
    if "state" not in given:
        raise InvalidRequest("state: is required", field="state")
    return given["state"]


async def _body_or_empty() -> Any:
    data = await request.get_data()
    assert isinstance(data, bytes)
    return {} if not data.strip() else validation.parse_json(data)


def profile_json(profile: Profile) -> dict[str, Any]:
    return {"jid": profile.jid, "name": profile.name, "about": profile.about,
            "pictureUrl": profile.picture_url, "pictureId": profile.picture_id}


@bp.post("/devices/<device_id>/presence")
async def set_presence(device_id: str) -> Response:
    row = await resolve_device(device_id)
    state = await account.set_presence(current_state().sup, str(row.id), _state(await read_body()))
    return ok({"state": state}, f"The device shows itself {state}.")


@bp.post("/devices/<device_id>/chats/<chat_id>/presence")
async def set_chat_presence(device_id: str, chat_id: str) -> Response:
    row = await resolve_device(device_id)
    body = await read_body()
    chat, state = await account.set_chat_presence(current_state().sup, str(row.id), chat_id,
                                                  _state(body))
    return ok({"chat": chat, "state": state}, f"The device shows {state} in the chat.")


@bp.post("/devices/<device_id>/contacts/<contact>/presence/subscribe")
async def subscribe_presence(device_id: str, contact: str) -> Response:
    row = await resolve_device(device_id)
    fields(await _body_or_empty(), "body", frozenset())
    jid = await account.subscribe_presence(current_state().sup, str(row.id), contact)
    return ok({"contact": jid},
              "Subscribed: presence events of this contact follow while the device is available.")


@bp.get("/devices/<device_id>/profile")
async def get_profile(device_id: str) -> Response:
    row = await resolve_device(device_id)
    return ok(profile_json(await account.profile(current_state().sup, str(row.id))))


@bp.put("/devices/<device_id>/profile")
async def put_profile(device_id: str) -> Response:
    row = await resolve_device(device_id)
    body = fields(await read_body(), "body", frozenset({"name", "about"}))
    name = string(body, "name", "name", account.NAME_MAX, required=False)
    about = string(body, "about", "about", account.ABOUT_MAX, required=False, empty=True)
    if name is None and about is None:
        raise InvalidRequest("body: give name, about or both", field="body")
    profile = await account.update_profile(current_state().sup, str(row.id), name, about)
    return ok(profile_json(profile), "Profile updated.")


@bp.put("/devices/<device_id>/profile/picture")
async def put_picture(device_id: str) -> Response:
    row = await resolve_device(device_id)
    sup = current_state().sup
    image, _, field = await read_image(sup.config.media, sup.config.allow_networks)
    picture_id = await account.set_picture(sup, str(row.id), image, field)
    return ok({"pictureId": picture_id}, "Profile picture updated.")


@bp.post("/devices/<device_id>/calls/<call_id>/reject")
async def reject_call(device_id: str, call_id: str) -> Response:
    row = await resolve_device(device_id)
    body = fields(await read_body(), "body", frozenset({"from"}))
    caller = string(body, "from", "from", account.ADDRESS_MAX)
    assert caller is not None
    jid = await account.reject_call(current_state().sup, str(row.id), call_id, caller)
    return ok({"callId": call_id, "from": jid}, "Call rejected.")


@bp.put("/devices/<device_id>/settings/calls")
async def put_call_settings(device_id: str) -> Response:
    row = await resolve_device(device_id)
    body = fields(await read_body(), "body", frozenset({"autoReject", "message"}))
    if "autoReject" not in body:
        raise InvalidRequest("autoReject: is required", field="autoReject")
    message = body.get("message")
    if message is not None:
        message = string(body, "message", "message", MESSAGE_MAX, one_line=False)
    settings = CallSettings(auto_reject=flag(body, "autoReject"), message=message)
    await current_state().sup.put_settings(str(row.id), SETTINGS_KIND, settings.to_json())
    return ok(settings.to_json(), "Call settings updated.")


@bp.get("/devices/<device_id>/settings/calls")
async def get_call_settings(device_id: str) -> Response:
    row = await resolve_device(device_id)
    stored = await current_state().sup.get_settings(str(row.id), SETTINGS_KIND)
    return ok(CallSettings.of(stored).to_json())
