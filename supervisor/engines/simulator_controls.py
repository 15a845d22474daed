"""The simulator controls the API exposes, as one interface over either simulator.

The routes under ``/api/whatsapp/simulator/...`` (:mod:`api.routes_simulator`, ``api.sim_*``)
play the phone and the WhatsApp server through :class:`SimulatorControls`:
:class:`LocalControls` drives the in-process :class:`~supervisor.engines.simulator.
SimulatorEngine`, and the remote engine (:mod:`supervisor.engines.simulator_remote`) sends the
same calls to a shared simulator process, which answers them with its own
:class:`LocalControls`. :func:`supervisor.supervisor.simulator_controls` picks the one of a
running engine.

Error handling: as the engine's controls: :class:`DeviceNotFound` when the simulated WhatsApp
has no session for the device, :class:`DeviceConflict` when the device's state does not allow
the action, :class:`InvalidRequest` for a malformed argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from supervisor.engine import Paired
from supervisor.engine_groups import Action
from supervisor.message_content import Content

from .simulator import FailReason, Incoming

if TYPE_CHECKING:
    from .simulator import SimulatorEngine


@attrs.frozen
class ContactEntry:
    """A number as the simulated WhatsApp knows it after :meth:`SimulatorControls.put_contact`."""

    on_whatsapp: bool
    lid: str | None  # its LID JID (``…@lid``) when on WhatsApp


@attrs.frozen
class ContactsSeen:
    """What a device asked the simulated WhatsApp about people so far, and its block list."""

    check_requests: int
    checked_numbers: int
    blocked: tuple[str, ...]
    address_book: int


@attrs.frozen
class GroupMade:
    """A group another member created: its JID and invite code."""

    id: str
    code: str


class SimulatorControls(Protocol):
    """The phone and the WhatsApp server, for one device at a time (see the module)."""

    async def scan(self, device_id: int, phone_number: str | None, push_name: str | None,
                   code: str | None) -> Paired:
        """The phone scans the QR code or enters the pair code (``SimulatorEngine.scan``)."""
        ...

    async def drop(self, device_id: int) -> None:
        """The network drops the connection."""

    async def unlink(self, device_id: int) -> None:
        """The phone removes the linked device."""

    async def incoming_message(self, device_id: int, sender: str, text: str,
                               content: Content | None, quoted: str | None,
                               push_name: str | None, media: bytes | None) -> Incoming:
        """Someone writes to the device (``SimulatorEngine.incoming_message``)."""
        ...

    async def ack(self, device_id: int, message_id: str, status: str) -> None:
        """A receipt for a message the device sent (WhatsApp's id)."""

    async def fail(self, device_id: int, reason: FailReason, seconds: float | None) -> None:
        """WhatsApp reports a failure (``SimulatorEngine.fail``)."""

    async def incoming_call(self, device_id: int, caller: str, video: bool, group: bool) -> str:
        """``caller`` calls the device; returns the call's id."""
        ...

    async def contact_presence(self, device_id: int, contact: str, state: str,
                               chat: str | None, seen: float | None) -> bool:
        """A contact's presence; returns whether the device was told."""
        ...

    async def put_contact(self, device_id: int, phone: str, on_whatsapp: bool | None,
                          name: str | None) -> ContactEntry:
        """Give ``phone`` (digits) an account or take it away, and save it as ``name``."""
        ...

    async def contacts_seen(self, device_id: int) -> ContactsSeen:
        """The device's contact checks so far and its block list."""
        ...

    async def group_create(self, device_id: int, owner: str, subject: str,
                           participants: Sequence[str], member: bool) -> GroupMade:
        """``owner`` creates a group (with the device in it when ``member``)."""
        ...

    async def group_change(self, device_id: int, group: str, by: str, subject: str | None,
                           topic: str | None, announce: bool | None,
                           locked: bool | None) -> None:
        """Participant ``by`` changes the group."""

    async def group_participants(self, device_id: int, group: str, by: str, action: Action,
                                 jids: Sequence[str]) -> None:
        """Admin ``by`` adds, removes, promotes or demotes ``jids``."""


@attrs.define(eq=False)
class LocalControls:
    """:class:`SimulatorControls` of an in-process :class:`SimulatorEngine`."""

    engine: SimulatorEngine

    async def scan(self, device_id: int, phone_number: str | None, push_name: str | None,
                   code: str | None) -> Paired:
        return await self.engine.scan(device_id, phone_number=phone_number,
                                      push_name=push_name, code=code)

    async def drop(self, device_id: int) -> None:
        await self.engine.drop(device_id)

    async def unlink(self, device_id: int) -> None:
        await self.engine.unlink(device_id)

    async def incoming_message(self, device_id: int, sender: str, text: str,
                               content: Content | None, quoted: str | None,
                               push_name: str | None, media: bytes | None) -> Incoming:
        return await self.engine.incoming_message(
            device_id, sender, text, content=content, quoted=quoted, push_name=push_name,
            media=media)

    async def ack(self, device_id: int, message_id: str, status: str) -> None:
        await self.engine.ack(device_id, message_id, status)

    async def fail(self, device_id: int, reason: FailReason, seconds: float | None) -> None:
        await self.engine.fail(device_id, reason, seconds)

    async def incoming_call(self, device_id: int, caller: str, video: bool, group: bool) -> str:
        session = self.engine.get_session(device_id)
        return self.engine.server.account.incoming_call(session, caller, video, group)

    async def contact_presence(self, device_id: int, contact: str, state: str,
                               chat: str | None, seen: float | None) -> bool:
        session = self.engine.get_session(device_id)
        return self.engine.server.account.contact_presence(session, contact, state, chat, seen)

    async def put_contact(self, device_id: int, phone: str, on_whatsapp: bool | None,
                          name: str | None) -> ContactEntry:
        world = self.engine.server.contacts
        if on_whatsapp is not None:
            world.set_on_whatsapp(phone, on_whatsapp)
        if name is not None:
            world.add_contact(device_id, phone, name)
        on = world.on_whatsapp(phone)
        return ContactEntry(on, world.person(phone).lid + "@lid" if on else None)

    async def contacts_seen(self, device_id: int) -> ContactsSeen:
        world = self.engine.server.contacts
        done = world.checks(device_id)
        return ContactsSeen(done.requests, done.numbers, tuple(sorted(world.blocked(device_id))),
                            len(world.address_book(device_id)))

    async def group_create(self, device_id: int, owner: str, subject: str,
                           participants: Sequence[str], member: bool) -> GroupMade:
        groups = self.engine.get_session(device_id).groups
        created = await groups.others_create(owner, subject, participants, member=member)
        return GroupMade(created.id, created.code)

    async def group_change(self, device_id: int, group: str, by: str, subject: str | None,
                           topic: str | None, announce: bool | None,
                           locked: bool | None) -> None:
        await self.engine.get_session(device_id).groups.others_change(
            group, by, subject=subject, topic=topic, announce=announce, locked=locked)

    async def group_participants(self, device_id: int, group: str, by: str, action: Action,
                                 jids: Sequence[str]) -> None:
        groups = self.engine.get_session(device_id).groups
        await groups.others_participants(group, by, action, jids)

