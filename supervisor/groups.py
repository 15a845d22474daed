"""Groups, as wasup's API offers them: the values a request names checked, the request asked of
the device's connected session (:meth:`supervisor.devices.Devices.ask`), the answer shaped.

::

    await groups.joined(devices, ref)                      # [{"id", "subject", ...}, ...]
    await groups.create(devices, ref, "Orders", ["+15551234567"])
    await groups.update_participants(devices, ref, gid, "add", [...])  # one result each
    await groups.invite_link(devices, ref, gid, revoke=True)           # {"groupId", "link"}

Values: a group is its JID (``<digits>@g.us``, the strict spelling of :mod:`supervisor.jid`);
a participant a phone number (``+`` optional) or a user JID (``@s.whatsapp.net`` or ``@lid``),
each made canonical and given at most once; a subject 1 to :data:`SUBJECT_MAX` characters
(WhatsApp's limit), a topic at most :data:`TOPIC_MAX`; an invite link
``https://chat.whatsapp.com/<code>`` or its code alone.

Error handling: :class:`InvalidRequest` naming the field (``groupId``, ``participants``,
``add``…, ``subject``, ``topic``, ``link``) before anything is asked; the rest as
:meth:`~supervisor.devices.Devices.ask` raises (409 not connected, WhatsApp's refusals 403/409).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from common.clock import iso

from .engine_groups import Action, GroupInfo, ParticipantResult
from .errors import InvalidRequest
from .jid import InvalidJid, Jid, JidKind

if TYPE_CHECKING:
    from .devices import Devices

#: WhatsApp's limits: a subject's characters, a description's, a group's participants.
SUBJECT_MAX = 100
TOPIC_MAX = 2048
PARTICIPANTS_MAX = 1024
#: A JID or number as the API takes it, at most this long.
JID_MAX = 100
_INVITE = re.compile(r"(?:https?://)?chat\.whatsapp\.com/(?:invite/)?([A-Za-z0-9]{20,24})/?")
_CODE = re.compile(r"[A-Za-z0-9]{20,24}")
PERSON_KINDS = frozenset({JidKind.USER, JidKind.LID})


@attrs.frozen
class GroupChange:
    """What a ``PATCH`` of a group sets; None: left as it is."""

    subject: str | None = None
    topic: str | None = None
    announce: bool | None = None
    locked: bool | None = None


# -- values -------------------------------------------------------------------------------


def group_jid(value: object, field: str = "groupId") -> str:
    """The canonical JID of a group id (``120363…@g.us``)."""
    jid = None
    if isinstance(value, str) and len(value) <= JID_MAX and value == value.strip():
        try:
            jid = Jid.parse(value, strict=True)
        except InvalidJid:
            jid = None
    if jid is None or jid.kind is not JidKind.GROUP:
        raise InvalidRequest(f"{field}: must be a group jid like 120363000000000000@g.us",
                             field=field)
    return jid.canonical


def participant_jids(value: object, field: str = "participants") -> list[str]:
    """The canonical JIDs of a non-empty list of participants (duplicates dropped)."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{field}: must be a list of phone numbers or user jids",
                             field=field)
    if not value:
        raise InvalidRequest(f"{field}: must name at least one participant", field=field)
    if len(value) > PARTICIPANTS_MAX:
        raise InvalidRequest(f"{field}: at most {PARTICIPANTS_MAX} participants", field=field)
    found: list[str] = []
    for index, item in enumerate(value):
        jid = person_jid(item, f"{field}[{index}]", field)
        if jid not in found:
            found.append(jid)
    return found


def person_jid(value: object, name: str, field: str | None = None) -> str:
    """The canonical JID of a phone number or user JID; the error names ``name`` and has
    ``field`` (default: ``name``)."""
    jid = None
    if isinstance(value, str) and len(value) <= JID_MAX:
        try:
            jid = Jid.parse(value, strict=True)
        except InvalidJid:
            jid = None
    if jid is None or jid.kind not in PERSON_KINDS:
        raise InvalidRequest(
            f"{name}: must be a phone number like +15551234567 or a user jid like "
            "15551234567@s.whatsapp.net", field=field or name)
    return jid.canonical


def check_subject(value: str, field: str = "subject") -> str:
    if not value.strip():
        raise InvalidRequest(f"{field}: must not be empty", field=field)
    if len(value) > SUBJECT_MAX:
        raise InvalidRequest(f"{field}: must be at most {SUBJECT_MAX} characters", field=field)
    return value


def invite_code(value: object, field: str = "link") -> str:
    """The code of an invite link (``https://chat.whatsapp.com/<code>``, or the code)."""
    if isinstance(value, str) and len(value) <= 200:
        m = _INVITE.fullmatch(value) or _CODE.fullmatch(value)
        if m is not None:
            return m.group(1) if m.re is _INVITE else m.group(0)
    raise InvalidRequest(f"{field}: must be an invite link like https://chat.whatsapp.com/"
                         "AbCdEfGhIjKlMnOpQrStUv", field=field)


# -- shaping ------------------------------------------------------------------------------


def group_json(info: GroupInfo) -> dict[str, Any]:
    """A group as the API answers it."""
    return {
        "id": info.id,
        "subject": info.subject,
        "topic": info.topic,
        "owner": info.owner,
        "createdAt": None if info.created is None else iso(info.created),
        "announce": info.announce,
        "locked": info.locked,
        "size": len(info.participants),
        "participants": [
            {"jid": p.jid, "phoneNumber": _phone(p.jid), "admin": p.admin,
             "superAdmin": p.super_admin}
            for p in info.participants
        ],
    }


def result_json(result: ParticipantResult) -> dict[str, Any]:
    return {"jid": result.jid, "phoneNumber": _phone(result.jid), "ok": result.ok,
            "code": result.code, "reason": result.reason}


def _phone(jid: str) -> str | None:
    try:
        return Jid.parse(jid).phone_number
    except InvalidJid:
        return None


# -- requests -----------------------------------------------------------------------------


async def joined(devices: Devices, ref: str | int) -> list[dict[str, Any]]:
    groups = await devices.ask(ref, lambda s: s.groups.joined(), "joined groups")
    return [group_json(g) for g in sorted(groups, key=lambda g: (g.subject.lower(), g.id))]


async def info(devices: Devices, ref: str | int, group: str) -> dict[str, Any]:
    return group_json(await devices.ask(ref, lambda s: s.groups.info(group), "group info"))


async def create(devices: Devices, ref: str | int, subject: str,
                 participants: Sequence[str]) -> dict[str, Any]:
    check_subject(subject)
    created = await devices.ask(ref, lambda s: s.groups.create(subject, participants),
                                "create group")
    return group_json(created)


async def change(devices: Devices, ref: str | int, group: str,
                 wanted: GroupChange) -> dict[str, Any]:
    """Apply ``wanted`` (subject, topic, then the settings) and answer the group as it is
    then."""
    subject, topic = wanted.subject, wanted.topic
    if subject is not None:
        check_subject(subject)
        await devices.ask(ref, lambda s: s.groups.set_subject(group, subject), "group subject")
    if topic is not None:
        await devices.ask(ref, lambda s: s.groups.set_topic(group, topic), "group topic")
    announce, locked = wanted.announce, wanted.locked
    if announce is not None:
        await devices.ask(ref, lambda s: s.groups.set_announce(group, announce),
                          "group announce")
    if locked is not None:
        await devices.ask(ref, lambda s: s.groups.set_locked(group, locked), "group locked")
    return await info(devices, ref, group)


async def set_picture(devices: Devices, ref: str | int, group: str,
                      jpeg: bytes) -> dict[str, Any]:
    picture = await devices.ask(ref, lambda s: s.groups.set_picture(group, jpeg),
                                "group picture")
    return {"groupId": group, "pictureId": picture}


async def update_participants(devices: Devices, ref: str | int, group: str, action: Action,
                              participants: Sequence[str]) -> list[dict[str, Any]]:
    results = await devices.ask(
        ref, lambda s: s.groups.update_participants(group, action, participants),
        f"group participants ({action})")
    return [result_json(r) for r in results]


async def invite_link(devices: Devices, ref: str | int, group: str,
                      revoke: bool = False) -> dict[str, Any]:
    link = await devices.ask(ref, lambda s: s.groups.invite_link(group, revoke), "invite link")
    return {"groupId": group, "link": link, "revoked": revoke}


async def join(devices: Devices, ref: str | int, code: str) -> dict[str, Any]:
    group = await devices.ask(ref, lambda s: s.groups.join(code), "join group")
    return {"groupId": group}


async def leave(devices: Devices, ref: str | int, group: str) -> dict[str, Any]:
    await devices.ask(ref, lambda s: s.groups.leave(group), "leave group")
    return {"groupId": group}
