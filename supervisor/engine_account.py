"""The account part of the engine interface: presence, profile and calls.

Every engine session has an ``account`` (:class:`AccountApi`) through which wasup shows the
device online or offline, shows "typing..." in a chat, subscribes to a contact's presence,
reads and sets the account's profile (push name, about, picture) and rejects incoming calls::

    await session.account.set_chat_presence("15551234567@s.whatsapp.net", "typing")
    profile = await session.account.profile()

What WhatsApp tells the device on its own (a contact's presence after a subscription, an
incoming call) comes as :class:`~supervisor.engine.Notice` of
:class:`~supervisor.payloads.PresenceChanged` and :class:`~supervisor.payloads.CallReceived`.

Every method takes canonical JID strings (:mod:`supervisor.jid`) and may run while the actor
makes other engine calls (requests run as tasks: :mod:`supervisor.asks`). Error handling:
:class:`~supervisor.errors.EngineError` (recoverable) when not connected;
:class:`~supervisor.errors.WhatsAppRefused` when WhatsApp refuses the request on its own terms;
``EngineError(reason, recoverable=False)`` for any other failure.
"""

from __future__ import annotations

from typing import Literal, Protocol

import attrs

#: The device's own presence: shown online (and receiving presences) or offline.
PresenceState = Literal["available", "unavailable"]
PRESENCE_STATES: tuple[PresenceState, ...] = ("available", "unavailable")
#: What the device shows in a chat: typing, recording a voice message, or nothing any more.
ChatState = Literal["typing", "recording", "paused"]
CHAT_STATES: tuple[ChatState, ...] = ("typing", "recording", "paused")


@attrs.frozen
class Profile:
    """The account's profile as WhatsApp shows it to others: its push name, its about text
    and its picture's URL and id (None where it has none)."""

    jid: str
    name: str | None = None
    about: str | None = None
    picture_url: str | None = None
    picture_id: str | None = None


class AccountApi(Protocol):
    """Presence, profile and calls of one connected device (see the module docstring)."""

    async def set_presence(self, state: PresenceState) -> None:
        """Show the account online (``available``) or offline (``unavailable``)."""

    async def set_chat_presence(self, chat: str, state: ChatState) -> None:
        """Show ``typing``, ``recording`` (a voice message) or ``paused`` (neither) in
        ``chat`` (a user or group JID)."""

    async def subscribe_presence(self, contact: str) -> None:
        """Ask WhatsApp for ``contact``'s presence: :class:`PresenceChanged` notices follow
        (online, offline with last seen, typing or recording in a chat)."""

    async def profile(self) -> Profile:
        """The account's own profile."""
        ...

    async def set_name(self, name: str) -> None:
        """Set the account's push name (the name others see)."""

    async def set_about(self, about: str) -> None:
        """Set the account's about text."""

    async def set_picture(self, jpeg: bytes) -> str:
        """Set the account's profile picture (a JPEG file); returns WhatsApp's picture id."""
        ...

    async def reject_call(self, call_id: str, caller: str) -> None:
        """Reject (decline) the incoming call ``call_id`` from ``caller``: the JID its
        :class:`~supervisor.payloads.CallReceived` named (whatsmeow needs the caller exactly as
        WhatsApp addressed the call, which may be a LID)."""
