"""Groups through whatsmeow: the whatsmeow session's :class:`~supervisor.engine_groups.GroupsApi`,
the translation of neonize's group objects, errors and events.

Each request calls neonize's client on a worker thread, sharing the Go gate as a send does
(:mod:`supervisor.engines.whatsmeow_client`), so requests run beside each other and beside the
session's sends; a stop waits for one in flight.

Translation: neonize's ``GroupInfo`` becomes :class:`~supervisor.engine_groups.GroupInfo`
(a participant named by their phone-number JID where WhatsApp gives it, else their LID;
``admin`` also for the super admin); a participant change's ``GroupParticipant`` list becomes
one :class:`~supervisor.engine_groups.ParticipantResult` each (``Error`` 0: ok). Events
(:func:`group_notices`): ``JoinedGroup`` -> ``group_joined`` (``by`` the sender unless it is
the account itself); ``GroupInfoEvent`` -> ``group_participants`` per joins, leaves, promotions
and demotions, and one ``group_updated`` for a new subject, topic, announce or locked setting.

Error handling (:func:`refusal`, from whatsmeow's error texts, errors.go and group.go):
``ErrGroupNotFound`` and IQ 404 -> WhatsAppRefused ``group_not_found``; ``ErrNotInGroup`` ->
``not_participant``; ``ErrInviteLinkRevoked`` and IQ 410 -> ``link_revoked``;
``ErrInviteLinkInvalid`` and IQ 406 -> ``link_invalid`` (on a join) / ``not_acceptable``;
``ErrInvalidImageFormat`` -> ``invalid_image``; IQ 409 -> ``conflict``, 419 -> ``group_full``,
429 -> ``rate_limited``; ``ErrGroupInviteLinkUnauthorized`` and IQ 401/403 ->
WhatsAppForbidden ``not_admin``; a dropped connection -> EngineError ``not_connected``
(recoverable); anything else -> EngineError ``groups_failed: …`` (final).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
from neonize.client import NewClient
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ParticipantChange

from supervisor.engine import EngineEvent, Notice
from supervisor.engine_groups import (
    Action,
    GroupInfo,
    Participant,
    ParticipantResult,
    participant_reason,
)
from supervisor.errors import EngineError, WasupError, WhatsAppForbidden, WhatsAppRefused
from supervisor.jid import JidKind
from supervisor.payloads import GroupJoined, GroupParticipants, GroupUpdated

from .whatsmeow_requests import RequestSession, call
from .whatsmeow_requests import canonical as _canonical
from .whatsmeow_requests import neonize_arg as _neonize
from .whatsmeow_translate import short_error

T = TypeVar("T")


#: neonize's event codes of groups: JoinedGroup, GroupInfoEvent.
GROUP_CODES = frozenset({21, 22})

_CHANGES = {"add": ParticipantChange.ADD, "remove": ParticipantChange.REMOVE,
            "promote": ParticipantChange.PROMOTE, "demote": ParticipantChange.DEMOTE}


@attrs.define(eq=False)
class WhatsmeowGroups:
    """A whatsmeow session's groups (see the module docstring)."""

    session: RequestSession

    async def joined(self) -> list[GroupInfo]:
        groups = await self._call("joined groups", lambda api: list(api.get_joined_groups()))
        return [group_info(g) for g in groups]

    async def info(self, group: str) -> GroupInfo:
        jid = _neonize(group)
        return group_info(await self._call("group info", lambda api: api.get_group_info(jid)))

    async def create(self, subject: str, participants: Sequence[str]) -> GroupInfo:
        jids = [_neonize(p) for p in participants]
        created = await self._call("create group", lambda api: api.create_group(subject, jids))
        return group_info(created)

    async def set_subject(self, group: str, subject: str) -> None:
        jid = _neonize(group)
        await self._call("group subject", lambda api: api.set_group_name(jid, subject))

    async def set_topic(self, group: str, topic: str) -> None:
        jid = _neonize(group)
        # whatsmeow looks the previous topic's id up and makes the new one when given ""
        await self._call("group topic", lambda api: api.set_group_topic(jid, "", "", topic))

    async def set_announce(self, group: str, announce: bool) -> None:
        jid = _neonize(group)
        await self._call("group announce", lambda api: api.set_group_announce(jid, announce))

    async def set_locked(self, group: str, locked: bool) -> None:
        jid = _neonize(group)
        await self._call("group locked", lambda api: api.set_group_locked(jid, locked))

    async def set_picture(self, group: str, jpeg: bytes) -> str:
        jid = _neonize(group)
        return str(await self._call("group picture", lambda api: api.set_group_photo(jid, jpeg)))

    async def update_participants(self, group: str, action: Action,
                                  participants: Sequence[str]) -> list[ParticipantResult]:
        jid = _neonize(group)
        jids = [_neonize(p) for p in participants]
        change = _CHANGES[action]
        answered = await self._call(
            "group participants",
            lambda api: list(api.update_group_participants(jid, jids, change)))
        return participant_results(participants, answered)

    async def invite_link(self, group: str, revoke: bool = False) -> str:
        jid = _neonize(group)
        return str(await self._call("invite link",
                                    lambda api: api.get_group_invite_link(jid, revoke)))

    async def join(self, code: str) -> str:
        joined = await self._call("join group", lambda api: api.join_group_with_link(code),
                                  joining=True)
        return _canonical(joined) or ""

    async def leave(self, group: str) -> None:
        jid = _neonize(group)
        await self._call("leave group", lambda api: api.leave_group(jid))

    async def _call(self, what: str, fn: Callable[[NewClient], T], *,
                    joining: bool = False) -> T:
        """``fn(neonize's client)`` as a request (:func:`.whatsmeow_requests.call`);
        whatsmeow's errors translated (:func:`refusal`)."""
        return await call(self.session, fn,
                          lambda exc: refusal(str(exc), what, joining=joining))


# -- translation --------------------------------------------------------------------------


def _person(jid: nz.JID, phone: nz.JID) -> str:
    """A participant's JID: their phone number's where WhatsApp gives it."""
    if jid.Server == JidKind.LID.server and phone.User:
        return _canonical(phone) or ""
    return _canonical(jid) or _canonical(phone) or ""


def group_info(info: nz.GroupInfo) -> GroupInfo:
    """neonize's ``GroupInfo`` as wasup's."""
    owner = _person(info.OwnerJID, info.OwnerPN) or None
    participants = tuple(
        Participant(_person(p.JID, p.PhoneNumber), admin=p.IsAdmin or p.IsSuperAdmin,
                    super_admin=p.IsSuperAdmin)
        for p in info.Participants
    )
    return GroupInfo(
        id=_canonical(info.JID) or "",
        subject=info.GroupName.Name,
        participants=participants,
        topic=info.GroupTopic.Topic or None,
        owner=owner,
        created=info.GroupCreated or None,
        announce=info.GroupAnnounce.IsAnnounce,
        locked=info.GroupLocked.isLocked,
    )


def participant_results(asked: Sequence[str],
                        answered: Sequence[nz.GroupParticipant]) -> list[ParticipantResult]:
    """One result per participant asked for, from WhatsApp's answer (``Error`` 0: ok); one
    WhatsApp did not answer for is reported ``404 not_found``."""
    by_jid: dict[str, nz.GroupParticipant] = {}
    for p in answered:
        for jid in (_canonical(p.JID), _canonical(p.PhoneNumber), _canonical(p.LID)):
            if jid:
                by_jid.setdefault(jid, p)
    results = []
    for jid in asked:
        found = by_jid.get(jid)
        if found is None:
            results.append(ParticipantResult(jid, False, 404, participant_reason(404)))
        elif found.Error in (0, 200):
            results.append(ParticipantResult(jid, True))
        else:
            results.append(ParticipantResult(jid, False, found.Error,
                                             participant_reason(found.Error)))
    return results


def _by(sender: nz.JID, me: nz.Device | None) -> str | None:
    """Who did it: None when the account itself (or no one said)."""
    by = _canonical(sender)
    if by is None or me is None:
        return by
    own = {_canonical(me.JID), _canonical(me.LID)} - {None}
    return None if by in own else by


def group_notices(event: object, me: nz.Device | None = None) -> list[EngineEvent]:
    """The notices of a neonize group event (see the module docstring); none for any other
    object."""
    if isinstance(event, nz.JoinedGroup):
        info = group_info(event.GroupInfo)
        sender = event.SenderPN if event.SenderPN.User else event.Sender
        return [Notice(GroupJoined(info.id, info.subject, [p.jid for p in info.participants],
                                   by=_by(sender, me)))]
    if not isinstance(event, nz.GroupInfoEvent):
        return []
    group = _canonical(event.JID)
    if group is None:
        return []
    by = _by(event.Sender, me)
    notices: list[EngineEvent] = []
    for action, jids in (("add", event.Join), ("remove", event.Leave),
                         ("promote", event.Promote), ("demote", event.Demote)):
        people = [j for j in (_canonical(jid) for jid in jids) if j]
        if people:
            notices.append(Notice(GroupParticipants(group, action, people, by=by)))
    subject = event.Name.Name if event.HasField("Name") else None
    topic = None
    if event.HasField("Topic"):
        topic = "" if event.Topic.TopicDeleted else event.Topic.Topic
    announce = event.Announce.IsAnnounce if event.HasField("Announce") else None
    locked = event.Locked.isLocked if event.HasField("Locked") else None
    if (subject, topic, announce, locked) != (None, None, None, None):
        notices.append(Notice(GroupUpdated(group, by, subject=subject, topic=topic,
                                           announce=announce, locked=locked)))
    return notices


_IQ = re.compile(r"info query returned status (\d{3})")
#: whatsmeow's human errors of groups (errors.go), by their text.
_KNOWN: dict[str, Callable[[str], WasupError]] = {
    "that group does not exist": lambda m: WhatsAppRefused("group_not_found", m),
    "you're not participating in that group": lambda m: WhatsAppRefused("not_participant", m),
    "that group invite link has been revoked": lambda m: WhatsAppRefused("link_revoked", m),
    "that group invite link is not valid": lambda m: WhatsAppRefused("link_invalid", m),
    "the given data is not a valid image": lambda m: WhatsAppRefused("invalid_image", m),
    "you don't have the permission to get the group's invite link":
        lambda m: WhatsAppForbidden("not_admin", m),
}
_IQ_REASONS = {404: "group_not_found", 406: "not_acceptable", 409: "conflict",
               410: "link_revoked", 419: "group_full", 429: "rate_limited"}


def refusal(error: str, what: str, *, joining: bool = False) -> WasupError:
    """The error a failed request ``what`` answers, from whatsmeow's error text ``error``."""
    text = " ".join(error.split())
    for known, make in _KNOWN.items():
        if known in text:
            return make(f"{what}: {known}")
    m = _IQ.search(text)
    if m is not None:
        code = int(m.group(1))
        if code in (401, 403):
            return WhatsAppForbidden("not_admin", f"{what}: whatsapp answered {code}")
        if code == 406 and joining:
            return WhatsAppRefused("link_invalid", f"{what}: whatsapp answered {code}")
        if code in _IQ_REASONS:
            return WhatsAppRefused(_IQ_REASONS[code], f"{what}: whatsapp answered {code}")
    lowered = text.lower()
    if "websocket disconnected" in lowered or "not connected" in lowered:
        return EngineError("not_connected", message=f"{what}: {short_error(Exception(text))}")
    return EngineError(f"groups_failed: {short_error(Exception(text))}", recoverable=False)
