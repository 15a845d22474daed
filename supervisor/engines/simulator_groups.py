"""The simulated WhatsApp's groups: a world of groups per device, with its rules, and the
simulator session's :class:`~supervisor.engine_groups.GroupsApi`.

Each device sees its own world (:class:`GroupWorld`, held by the
:class:`~supervisor.engines.simulator_server.SimulatedServer`): the groups it is in or has an
invite link to, their participants and admins, subject, topic, settings, picture and invite
link. The rules are WhatsApp's:

* only admins change the settings (``announce``, ``locked``), the participants and the invite
  link; only admins edit the subject, topic and picture of a ``locked`` group (anyone may in
  an unlocked one): else :class:`WhatsAppForbidden` ``not_admin``;
* a group holds at most ``size_limit`` participants (WhatsApp's 1024): adding past it answers
  ``419 group_full`` for that participant, joining by link :class:`WhatsAppRefused`
  ``group_full``;
* a participant change is answered per participant (``409 already_participant``,
  ``404 not_found``); a revoked invite link answers ``link_revoked``, an unknown one
  ``link_invalid``; a group the device is not in ``not_participant``.

Events: the device creating, joining or leaving a group reports a notice (``group_joined``,
``group_participants``), as WhatsApp tells its other devices; so does what another member does
through :class:`SimulatorGroups`' controls (``others_*``), which the simulator's HTTP controls
(:mod:`api.sim_groups`) and tests call. What the device changes itself is answered to the
caller only.

Determinism: group ids and invite codes derive from the seed
(:meth:`~supervisor.engines.simulator_server.SimulatedServer.derive`), per device.

Error handling: as :mod:`supervisor.engine_groups`; ``EngineError("not_connected")``
(recoverable) when the session is not connected. The controls raise :class:`DeviceConflict`
when the device is not connected and :class:`InvalidRequest` for a group they cannot act on.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from common.clock import now_epoch
from supervisor.engine import Notice, Sink
from supervisor.engine_groups import Action, GroupInfo, Participant, ParticipantResult
from supervisor.errors import (
    DeviceConflict,
    EngineError,
    InvalidRequest,
    WhatsAppForbidden,
    WhatsAppRefused,
)
from supervisor.payloads import GroupJoined, GroupParticipants, GroupUpdated

#: WhatsApp's largest group.
SIZE_LIMIT = 1024
#: What an invite link starts with.
INVITE_PREFIX = "https://chat.whatsapp.com/"

MEMBER, ADMIN, SUPER_ADMIN = "member", "admin", "superadmin"

Derive = Callable[[int, str, int, int], bytes]


@attrs.define(eq=False)
class SimGroup:
    """One group as the simulated WhatsApp keeps it; ``roles`` by participant JID."""

    id: str
    subject: str
    owner: str
    created: float
    roles: dict[str, str]
    code: str
    topic: str = ""
    announce: bool = False
    locked: bool = False
    picture: bytes | None = None
    picture_id: str | None = None

    def info(self) -> GroupInfo:
        participants = tuple(
            Participant(jid, admin=role != MEMBER, super_admin=role == SUPER_ADMIN)
            for jid, role in self.roles.items()
        )
        return GroupInfo(self.id, self.subject, participants, topic=self.topic or None,
                         owner=self.owner, created=self.created, announce=self.announce,
                         locked=self.locked)

    def is_admin(self, jid: str) -> bool:
        return self.roles.get(jid, MEMBER) != MEMBER


@attrs.define(eq=False)
class GroupWorld:
    """Every device's groups (see the module docstring); ``derive`` is the server's."""

    derive: Derive
    size_limit: int = SIZE_LIMIT
    groups: dict[int, dict[str, SimGroup]] = attrs.field(factory=dict)
    #: Invite codes in force, and revoked ones, by (device, code): the group's id.
    links: dict[tuple[int, str], str] = attrs.field(factory=dict)
    revoked: dict[tuple[int, str], str] = attrs.field(factory=dict)
    draws: dict[int, int] = attrs.field(factory=dict)

    def new_group(self, device_id: int, owner: str, subject: str,
                  members: Sequence[str]) -> SimGroup:
        """A new group of ``owner`` (its super admin) with ``members``."""
        number = int.from_bytes(self.random(device_id, "group_id", 8), "big") % 10**12
        roles = {owner: SUPER_ADMIN}
        for jid in members:
            roles.setdefault(jid, MEMBER)
        group = SimGroup(f"120363{number:012d}@g.us", subject, owner, now_epoch(), roles,
                         self.new_code(device_id))
        self.groups.setdefault(device_id, {})[group.id] = group
        self.links[(device_id, group.code)] = group.id
        return group

    def new_code(self, device_id: int) -> str:
        raw = self.random(device_id, "invite_code", 16)
        return base64.b64encode(raw, b"Ab").decode().rstrip("=")[:22]

    def revoke(self, device_id: int, group: SimGroup) -> None:
        del self.links[(device_id, group.code)]
        self.revoked[(device_id, group.code)] = group.id
        group.code = self.new_code(device_id)
        self.links[(device_id, group.code)] = group.id

    def get(self, device_id: int, group_id: str) -> SimGroup | None:
        return self.groups.get(device_id, {}).get(group_id)

    def forget(self, device_id: int) -> None:
        """Forget the device's groups and links."""
        self.groups.pop(device_id, None)
        self.draws.pop(device_id, None)
        for table in (self.links, self.revoked):
            for key in [k for k in table if k[0] == device_id]:
                del table[key]

    def random(self, device_id: int, label: str, size: int) -> bytes:
        draw = self.draws[device_id] = self.draws.get(device_id, 0) + 1
        return self.derive(device_id, label, draw, size)


class _Account(Protocol):
    @property
    def jid(self) -> str: ...


class _Server(Protocol):
    """What groups use of the :class:`~supervisor.engines.simulator_server.SimulatedServer`."""

    @property
    def groups(self) -> GroupWorld: ...

    async def load_credentials(self, device_id: int) -> _Account | None: ...


class _Session(Protocol):
    """What groups use of the :class:`~supervisor.engines.simulator_session.SimulatorSession`."""

    @property
    def server(self) -> _Server: ...

    @property
    def device_id(self) -> int: ...

    @property
    def epoch(self) -> int: ...

    @property
    def sink(self) -> Sink: ...

    def online(self, epoch: int) -> bool: ...


@attrs.define(eq=False)
class SimulatorGroups:
    """A simulator session's :class:`~supervisor.engine_groups.GroupsApi`, and the controls
    with which a test plays the group's other members."""

    session: _Session

    @property
    def world(self) -> GroupWorld:
        return self.session.server.groups

    @property
    def device_id(self) -> int:
        return self.session.device_id

    # -- GroupsApi -----------------------------------------------------------------------

    async def joined(self) -> list[GroupInfo]:
        me = await self._me()
        groups = self.world.groups.get(self.device_id, {}).values()
        return [g.info() for g in groups if me in g.roles]

    async def info(self, group: str) -> GroupInfo:
        return self._member_group(group, await self._me()).info()

    async def create(self, subject: str, participants: Sequence[str]) -> GroupInfo:
        me = await self._me()
        members = [jid for jid in participants if jid != me]
        if len(set(members)) + 1 > self.world.size_limit:
            raise WhatsAppRefused("group_full", "a group holds at most "
                                  f"{self.world.size_limit} participants")
        created = self.world.new_group(self.device_id, me, subject, members)
        self._notice(GroupJoined(created.id, subject, list(created.roles), by=None))
        return created.info()

    async def set_subject(self, group: str, subject: str) -> None:
        self._editable(group, await self._me()).subject = subject

    async def set_topic(self, group: str, topic: str) -> None:
        self._editable(group, await self._me()).topic = topic

    async def set_announce(self, group: str, announce: bool) -> None:
        self._administered(group, await self._me()).announce = announce

    async def set_locked(self, group: str, locked: bool) -> None:
        self._administered(group, await self._me()).locked = locked

    async def set_picture(self, group: str, jpeg: bytes) -> str:
        found = self._editable(group, await self._me())
        found.picture = jpeg
        found.picture_id = str(int.from_bytes(self.world.random(self.device_id, "picture", 6),
                                              "big"))
        return found.picture_id

    async def update_participants(self, group: str, action: Action,
                                  participants: Sequence[str]) -> list[ParticipantResult]:
        found = self._administered(group, await self._me())
        return [self._change(found, action, jid) for jid in participants]

    async def invite_link(self, group: str, revoke: bool = False) -> str:
        found = self._administered(group, await self._me())
        if revoke:
            self.world.revoke(self.device_id, found)
        return INVITE_PREFIX + found.code

    async def join(self, code: str) -> str:
        me = await self._me()
        key = (self.device_id, code)
        if key in self.world.revoked:
            raise WhatsAppRefused("link_revoked", "that group invite link has been revoked")
        group_id = self.world.links.get(key)
        found = None if group_id is None else self.world.get(self.device_id, group_id)
        if found is None:
            raise WhatsAppRefused("link_invalid", "that group invite link is not valid")
        if me not in found.roles:
            if len(found.roles) >= self.world.size_limit:
                raise WhatsAppRefused("group_full", "the group is full")
            found.roles[me] = MEMBER
            self._notice(GroupJoined(found.id, found.subject, list(found.roles), by=None))
        return found.id

    async def leave(self, group: str) -> None:
        me = await self._me()
        found = self._member_group(group, me)
        del found.roles[me]
        self._notice(GroupParticipants(found.id, "remove", [me], by=None))

    # -- controls: the group's other members ---------------------------------------------

    async def others_create(self, owner: str, subject: str, participants: Sequence[str],
                            member: bool = True) -> SimGroup:
        """``owner`` creates a group with ``participants``; with ``member`` the device is
        added (``group_joined`` by the owner), else it only knows the invite link."""
        me = await self._control_me()
        members = [jid for jid in participants if jid not in (me, owner)]
        if member:
            members.append(me)
        created = self.world.new_group(self.device_id, owner, subject, members)
        if member:
            self._notice(GroupJoined(created.id, subject, list(created.roles), by=owner))
        return created

    async def others_change(self, group: str, by: str, *, subject: str | None = None,
                            topic: str | None = None, announce: bool | None = None,
                            locked: bool | None = None) -> None:
        """Participant ``by`` changes the group (``group_updated``)."""
        me = await self._control_me()
        found = self._control_group(group, me)
        if subject is not None:
            found.subject = subject
        if topic is not None:
            found.topic = topic
        if announce is not None:
            found.announce = announce
        if locked is not None:
            found.locked = locked
        self._notice(GroupUpdated(found.id, by, subject=subject, topic=topic,
                                  announce=announce, locked=locked))

    async def others_participants(self, group: str, by: str, action: Action,
                                  participants: Sequence[str]) -> None:
        """Admin ``by`` adds, removes, promotes or demotes ``participants`` (the device among
        them, perhaps): ``group_joined`` when the device is added, ``group_participants``
        for the rest. Participants the change does not apply to are left out."""
        me = await self._control_me()
        found = self.world.get(self.device_id, group)
        if found is None or (me not in found.roles and (action != "add" or me not in
                                                         participants)):
            raise InvalidRequest(f"the device is not in the group {group}", field="groupId")
        changed = [jid for jid in participants
                   if self._change(found, action, jid).ok]
        if action == "add" and me in changed:
            self._notice(GroupJoined(found.id, found.subject, list(found.roles), by=by))
            changed.remove(me)
        if changed:
            self._notice(GroupParticipants(found.id, action, changed, by=by))

    # -- internals -----------------------------------------------------------------------

    def _change(self, group: SimGroup, action: Action, jid: str) -> ParticipantResult:
        role = group.roles.get(jid)
        if action == "add":
            if role is not None:
                return ParticipantResult(jid, False, 409, "already_participant")
            if len(group.roles) >= self.world.size_limit:
                return ParticipantResult(jid, False, 419, "group_full")
            group.roles[jid] = MEMBER
        elif role is None:
            return ParticipantResult(jid, False, 404, "not_found")
        elif action == "remove":
            del group.roles[jid]
        elif role != SUPER_ADMIN:  # the creator stays super admin
            group.roles[jid] = ADMIN if action == "promote" else MEMBER
        return ParticipantResult(jid, True)

    async def _me(self) -> str:
        """The account's JID; EngineError ``not_connected`` unless connected."""
        session = self.session
        creds = await session.server.load_credentials(self.device_id)
        if not session.online(session.epoch) or creds is None:
            raise EngineError("not_connected", recoverable=True)
        return creds.jid

    async def _control_me(self) -> str:
        try:
            return await self._me()
        except EngineError:
            raise DeviceConflict(f"device {self.device_id} is not connected") from None

    def _member_group(self, group: str, me: str) -> SimGroup:
        found = self.world.get(self.device_id, group)
        if found is None:
            raise WhatsAppRefused("group_not_found", "that group does not exist")
        if me not in found.roles:
            raise WhatsAppRefused("not_participant", "you're not participating in that group")
        return found

    def _control_group(self, group: str, me: str) -> SimGroup:
        found = self.world.get(self.device_id, group)
        if found is None or me not in found.roles:
            raise InvalidRequest(f"the device is not in the group {group}", field="groupId")
        return found

    def _editable(self, group: str, me: str) -> SimGroup:
        found = self._member_group(group, me)
        if found.locked and not found.is_admin(me):
            raise WhatsAppForbidden("not_admin", "only admins edit the info of this group")
        return found

    def _administered(self, group: str, me: str) -> SimGroup:
        found = self._member_group(group, me)
        if not found.is_admin(me):
            raise WhatsAppForbidden("not_admin", "only admins may do this in this group")
        return found

    def _notice(self, payload: GroupJoined | GroupUpdated | GroupParticipants) -> None:
        self.session.sink(Notice(payload))
