"""Simulator controls for groups: play the other members of a device's groups
(``--engine simulator`` only, operator token only)::

    POST  /api/whatsapp/simulator/devices/{deviceId}/groups
          {"owner", "subject", "participants": [...], "member"?: true}
          -> 201 {"groupId", "link"}   the owner creates a group; with member (the default)
                                       the device is in it (group_joined), else it has the link
    PATCH /api/whatsapp/simulator/devices/{deviceId}/groups/{groupId}
          {"by", "subject"?, "topic"?, "announce"?, "locked"?}     group_updated
    POST  /api/whatsapp/simulator/devices/{deviceId}/groups/{groupId}/participants
          {"by", "add"|"remove"|"promote"|"demote": [...]}         group_participants, or
                                       group_joined when the device itself is added

The participants may name the device's own number (add it, remove it, make it an admin).
The bodies are checked as the device's own group routes check theirs
(:mod:`api.routes_groups`), with ``by`` / ``owner`` a phone number or user JID.

Errors: 400 naming the field; 404 for an unknown device; 409 DEVICE_CONFLICT when the device
is not connected; 400 ``groupId`` for a group the device is not in.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from api.content_fields import fields, flag
from api.routes_devices import ok, read_body
from api.routes_groups import change_request, create_request, participants_request
from api.routes_simulator import _target
from supervisor import groups
from supervisor.engine_groups import ACTIONS
from supervisor.engines.simulator_groups import INVITE_PREFIX
from supervisor.errors import InvalidRequest

bp = Blueprint("simulator_groups", __name__)

_BASE = "/simulator/devices/<device_id>/groups"


def _split(body: Any, key: str, rest: frozenset[str]) -> tuple[str, dict[str, Any]]:
    """``body[key]`` as a person's JID, and the rest of the body."""
    given = dict(fields(body, "body", rest | {key}))
    if key not in given:
        raise InvalidRequest(f"{key}: is required", field=key)
    return groups.person_jid(given.pop(key), key), given


@bp.post(_BASE)
async def create(device_id: str) -> Response:
    engine, row = _target(device_id)
    owner, rest = _split(await read_body(), "owner",
                         frozenset({"subject", "participants", "member"}))
    member = flag(rest, "member") if "member" in rest else True
    rest.pop("member", None)
    subject, participants = create_request(rest)
    created = await engine.group_create(row.id, owner, subject, participants, member)
    return ok({"groupId": created.id, "link": INVITE_PREFIX + created.code},
              "Group created by another member.", status=201)


@bp.patch(f"{_BASE}/<group:group_id>")
async def change(device_id: str, group_id: str) -> Response:
    engine, row = _target(device_id)
    group = groups.group_jid(group_id)
    by, rest = _split(await read_body(), "by",
                      frozenset({"subject", "topic", "announce", "locked"}))
    wanted = change_request(rest)
    await engine.group_change(row.id, group, by, wanted.subject, wanted.topic, wanted.announce,
                              wanted.locked)
    return ok({"groupId": group}, "Group changed by another member.")


@bp.post(f"{_BASE}/<group:group_id>/participants")
async def participants(device_id: str, group_id: str) -> Response:
    engine, row = _target(device_id)
    group = groups.group_jid(group_id)
    by, rest = _split(await read_body(), "by", frozenset(ACTIONS))
    action, jids = participants_request(rest)
    await engine.group_participants(row.id, group, by, action, jids)
    return ok({"groupId": group}, "Participants changed by another member.")
