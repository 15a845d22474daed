"""The groups part of the engine interface: what a connected session can do with WhatsApp groups.

Each engine session has a ``groups`` attribute that speaks :class:`GroupsApi`; the device's
actor runs its methods as requests (:mod:`supervisor.asks`), so they may run concurrently with
each other and with the session's other calls. Every JID is canonical
(:attr:`supervisor.jid.Jid.canonical`): groups ``…@g.us``, people ``…@s.whatsapp.net`` (or
``…@lid`` where WhatsApp hides the number).

Error handling: a method raises :class:`~supervisor.errors.WhatsAppForbidden` when the account
may not do it (not an admin of a locked group, …), :class:`~supervisor.errors.WhatsAppRefused`
with WhatsApp's reason when WhatsApp refuses it otherwise (``group_not_found``,
``not_participant``, ``group_full``, ``link_revoked``, ``link_invalid``, …),
:class:`~supervisor.errors.EngineError` (recoverable) when the device is not connected. A
participant change is answered per participant (:class:`ParticipantResult`), as WhatsApp does:
one participant's refusal does not fail the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import attrs

#: What :meth:`GroupsApi.update_participants` does to each participant.
Action = Literal["add", "remove", "promote", "demote"]
ACTIONS: tuple[Action, ...] = ("add", "remove", "promote", "demote")


@attrs.frozen
class Participant:
    """A member of a group; ``admin`` also for the super admin (the creator)."""

    jid: str
    admin: bool = False
    super_admin: bool = False


@attrs.frozen
class GroupInfo:
    """A group as WhatsApp describes it to a member.

    ``created`` is epoch seconds (None when WhatsApp did not say); ``announce``: only admins
    send messages; ``locked``: only admins edit the subject, topic and picture.
    """

    id: str
    subject: str
    participants: tuple[Participant, ...]
    topic: str | None = None
    owner: str | None = None
    created: float | None = None
    announce: bool = False
    locked: bool = False


#: WhatsApp's error codes of one participant of a participant change, and wasup's reason for
#: each (any other code: ``error_<code>``).
PARTICIPANT_ERRORS = {
    403: "privacy_restricted",  # their privacy settings allow an invite only
    404: "not_found",  # not on WhatsApp (add), not in the group (remove, promote, demote)
    408: "recently_left",  # they left the group recently: invite them instead
    409: "already_participant",
    417: "community_restricted",
    419: "group_full",
}


def participant_reason(code: int) -> str:
    """wasup's reason for WhatsApp's error ``code`` of one participant."""
    return PARTICIPANT_ERRORS.get(code, f"error_{code}")


@attrs.frozen
class ParticipantResult:
    """What became of one participant of a participant change: ``ok``, or WhatsApp's error
    ``code`` (an HTTP-like number: 403, 404, 408, 409, 500…) and its ``reason``."""

    jid: str
    ok: bool
    code: int | None = None
    reason: str | None = None


class GroupsApi(Protocol):
    """The groups a connected device is in, and what it can change of them."""

    async def joined(self) -> list[GroupInfo]:
        """Every group the account is a participant of."""
        ...

    async def info(self, group: str) -> GroupInfo:
        """One group the account is in (``not_participant`` / ``group_not_found`` otherwise)."""
        ...

    async def create(self, subject: str, participants: Sequence[str]) -> GroupInfo:
        """Create a group with the account as its super admin and ``participants`` added."""
        ...

    async def set_subject(self, group: str, subject: str) -> None:
        """Rename the group."""

    async def set_topic(self, group: str, topic: str) -> None:
        """Set the group's description (``""`` removes it)."""

    async def set_announce(self, group: str, announce: bool) -> None:
        """Let only admins send (True) or everyone (False)."""

    async def set_locked(self, group: str, locked: bool) -> None:
        """Let only admins edit the group's info (True) or everyone (False)."""

    async def set_picture(self, group: str, jpeg: bytes) -> str:
        """Set the group's picture (a JPEG file); returns WhatsApp's picture id."""
        ...

    async def update_participants(self, group: str, action: Action,
                                  participants: Sequence[str]) -> list[ParticipantResult]:
        """Add, remove, promote or demote ``participants``; one result per participant."""
        ...

    async def invite_link(self, group: str, revoke: bool = False) -> str:
        """The group's invite link (``https://chat.whatsapp.com/…``); ``revoke``: the current
        one stops working and a new one is returned."""
        ...

    async def join(self, code: str) -> str:
        """Join a group by the code of its invite link; returns the group's JID."""
        ...

    async def leave(self, group: str) -> None:
        """Leave the group."""
