"""A device's WhatsApp groups (under ``/api/whatsapp``)::

    GET   /devices/{deviceId}/groups                          -> [group, ...] (joined groups)
    GET   /devices/{deviceId}/groups/{groupId}                -> group
    POST  /devices/{deviceId}/groups    {"subject", "participants": [...]}   -> 201 group
    PATCH /devices/{deviceId}/groups/{groupId}
          {"subject"?, "topic"?, "announce"?, "locked"?}      -> group (as it is then)
    PUT   /devices/{deviceId}/groups/{groupId}/picture        (an image upload, JPEG:
          {"media": {"data"|"url"}} or multipart ``file``)    -> {"groupId", "pictureId"}
    POST  /devices/{deviceId}/groups/{groupId}/participants
          {"add"|"remove"|"promote"|"demote": [...]}          -> [{"jid", "ok", "code", "reason"}]
    GET   /devices/{deviceId}/groups/{groupId}/invite[?revoke=true]  -> {"groupId", "link"}
    POST  /devices/{deviceId}/groups/join  {"link"}           -> {"groupId"}
    POST  /devices/{deviceId}/groups/{groupId}/leave          -> {"groupId"}

A group is ``{"id", "subject", "topic", "owner", "createdAt", "announce", "locked", "size",
"participants": [{"jid", "phoneNumber", "admin", "superAdmin"}]}``. The operator token or the
device's own key may call them all; each asks WhatsApp through the connected device
(:mod:`supervisor.groups`).

Errors: 400 INVALID_REQUEST naming the field (``groupId``, ``subject``, ``participants``,
``add``…, ``topic``, ``announce``, ``locked``, ``revoke``, ``link``, ``media``, ``file``…);
404 for an unknown device; 409 DEVICE_CONFLICT when the device is not connected, and for
WhatsApp's refusals (``group_not_found``, ``not_participant``, ``group_full``,
``link_revoked``, ``link_invalid``…, its reason in ``details.reason``); 403 FORBIDDEN when
WhatsApp refuses because the device is not an admin; 413 for a picture beyond an image's limit.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request
from quart.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from api.auth import resolve_device
from api.content_fields import fields, string
from api.image_upload import read_jpeg
from api.routes_devices import ok, read_body
from api.state import current_state
from supervisor import groups
from supervisor.engine_groups import ACTIONS, Action
from supervisor.errors import InvalidRequest

bp = Blueprint("groups", __name__)


class GroupIdConverter(BaseConverter):
    """A group id in a path: any segment but ``join`` (``…/groups/join`` is the join route,
    so another method on it answers 405, not a malformed group id)."""

    regex = r"(?!join\b)[^/]+"


@bp.record_once
def _converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("group", GroupIdConverter)


_BASE = "/devices/<device_id>/groups"


def create_request(body: Any) -> tuple[str, list[str]]:
    """The subject and participants of a ``POST …/groups`` body."""
    given = fields(body, "body", frozenset({"subject", "participants"}))
    subject = string(given, "subject", "subject", groups.SUBJECT_MAX)
    assert subject is not None
    if "participants" not in given:
        raise InvalidRequest("participants: is required", field="participants")
    return groups.check_subject(subject), groups.participant_jids(given["participants"])


def change_request(body: Any) -> groups.GroupChange:
    """What a ``PATCH …/groups/{groupId}`` body sets (at least one field)."""
    given = fields(body, "body", frozenset({"subject", "topic", "announce", "locked"}))
    if not given:
        raise InvalidRequest("body: must set subject, topic, announce or locked", field="body")
    subject = string(given, "subject", "subject", groups.SUBJECT_MAX, required=False)
    topic = string(given, "topic", "topic", groups.TOPIC_MAX, required=False, one_line=False,
                   empty=True)
    settings: dict[str, bool | None] = {}
    for key in ("announce", "locked"):
        value = given.get(key)
        if key in given and not isinstance(value, bool):
            raise InvalidRequest(f"{key}: must be true or false", field=key)
        settings[key] = value
    return groups.GroupChange(
        subject=None if subject is None else groups.check_subject(subject), topic=topic,
        announce=settings["announce"], locked=settings["locked"])


def participants_request(body: Any) -> tuple[Action, list[str]]:
    """The action and participants of a ``POST …/participants`` body (exactly one action)."""
    given = fields(body, "body", frozenset(ACTIONS))
    if len(given) != 1:
        raise InvalidRequest("body: must hold exactly one of add, remove, promote, demote",
                             field="body")
    action = next(a for a in ACTIONS if a in given)
    return action, groups.participant_jids(given[action], field=action)


def join_request(body: Any) -> str:
    given = fields(body, "body", frozenset({"link"}))
    if "link" not in given:
        raise InvalidRequest("link: is required", field="link")
    return groups.invite_code(given["link"])


def _revoke() -> bool:
    raw = request.args.get("revoke")
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise InvalidRequest("revoke: must be true or false", field="revoke")
    return raw == "true"


async def _empty_body() -> None:
    data = await request.get_data()
    assert isinstance(data, bytes)
    if data.strip():
        fields(await read_body(), "body", frozenset())


@bp.get(_BASE)
async def list_groups(device_id: str) -> Response:
    row = await resolve_device(device_id)
    return ok(await groups.joined(current_state().sup, row.id))


@bp.post(_BASE)
async def create_group(device_id: str) -> Response:
    row = await resolve_device(device_id)
    subject, participants = create_request(await read_body())
    created = await groups.create(current_state().sup, row.id, subject, participants)
    return ok(created, "Group created.", status=201)


@bp.post(f"{_BASE}/join")
async def join_group(device_id: str) -> Response:
    row = await resolve_device(device_id)
    code = join_request(await read_body())
    return ok(await groups.join(current_state().sup, row.id, code), "Joined the group.")


@bp.get(f"{_BASE}/<group:group_id>")
async def get_group(device_id: str, group_id: str) -> Response:
    row = await resolve_device(device_id)
    group = groups.group_jid(group_id)
    return ok(await groups.info(current_state().sup, row.id, group))


@bp.patch(f"{_BASE}/<group:group_id>")
async def change_group(device_id: str, group_id: str) -> Response:
    row = await resolve_device(device_id)
    group = groups.group_jid(group_id)
    wanted = change_request(await read_body())
    return ok(await groups.change(current_state().sup, row.id, group, wanted), "Group updated.")


@bp.put(f"{_BASE}/<group:group_id>/picture")
async def set_picture(device_id: str, group_id: str) -> Response:
    row = await resolve_device(device_id)
    group = groups.group_jid(group_id)
    sup = current_state().sup
    jpeg = await read_jpeg(sup.config.media, sup.config.allow_networks)
    return ok(await groups.set_picture(sup, row.id, group, jpeg), "Group picture set.")


@bp.post(f"{_BASE}/<group:group_id>/participants")
async def change_participants(device_id: str, group_id: str) -> Response:
    row = await resolve_device(device_id)
    group = groups.group_jid(group_id)
    action, participants = participants_request(await read_body())
    results = await groups.update_participants(current_state().sup, row.id, group,
                                               action, participants)
    done = sum(1 for r in results if r["ok"])
    return ok(results, f"{done} of {len(results)} participants: {action} done.")


@bp.get(f"{_BASE}/<group:group_id>/invite")
async def invite_link(device_id: str, group_id: str) -> Response:
    row = await resolve_device(device_id)
    group = groups.group_jid(group_id)
    revoke = _revoke()
    answer = await groups.invite_link(current_state().sup, row.id, group, revoke)
    return ok(answer, "Invite link revoked; this is the new one." if revoke else None)


@bp.post(f"{_BASE}/<group:group_id>/leave")
async def leave_group(device_id: str, group_id: str) -> Response:
    row = await resolve_device(device_id)
    group = groups.group_jid(group_id)
    await _empty_body()
    return ok(await groups.leave(current_state().sup, row.id, group), "Left the group.")
