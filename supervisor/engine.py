"""The engine interface: how one device actor talks to WhatsApp.

An engine makes one :class:`EngineSession` per device. The session's methods are called only
by that device's actor, one at a time except :meth:`EngineSession.stop`, which may interrupt
another call. What the engine learns on its own (a QR code, a scan, a dropped connection, a
message) it reports as an :data:`EngineEvent` through the ``sink`` it was given; ``sink`` is a
plain function, called on the Trio thread, that never blocks: it puts the event into the
device's bounded event inbox, and when that is full the device is disconnected and reconnects
to resynchronise (see :mod:`supervisor.actor`), so an engine never waits on wasup.

Error handling: a session method raises :class:`supervisor.errors.EngineError` for failures the
state machine understands (unreachable, refused, logged out). Any other exception is a crash:
the actor dies and its supervisor restarts it from the persisted state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs


@attrs.frozen
class QrCode:
    """A new QR string is ready to be shown (the device is pairing)."""

    code: str


@attrs.frozen
class Paired:
    """The phone scanned the QR code or accepted the pair code; credentials are stored."""

    jid: str
    phone_number: str
    push_name: str | None = None
    platform: str | None = None


@attrs.frozen
class Connected:
    """The login handshake finished: the device is online."""

    push_name: str | None = None
    platform: str | None = None


@attrs.frozen
class Disconnected:
    """The connection was lost, or WhatsApp could not be reached."""

    reason: str
    recoverable: bool = True


@attrs.frozen
class LoggedOut:
    """The session is over for good (unlinked from the phone, 401, banned, replaced...)."""

    reason: str


@attrs.frozen
class TemporaryBan:
    """WhatsApp refuses this account until ``until_epoch``; retry no earlier."""

    reason: str
    until_epoch: float


@attrs.frozen
class MessageReceived:
    message_id: str
    chat: str
    sender: str
    text: str
    is_group: bool = False
    from_me: bool = False
    timestamp: float = 0.0
    is_broadcast: bool = False


@attrs.frozen
class MessageStatus:
    """A receipt for an outgoing message: sent, delivered, read or failed."""

    message_id: str
    status: str


EngineEvent = (
    QrCode
    | Paired
    | Connected
    | Disconnected
    | LoggedOut
    | TemporaryBan
    | MessageReceived
    | MessageStatus
)
Sink = Callable[[EngineEvent], None]


class EngineSession(Protocol):
    async def start_pairing(self) -> None:
        """Connect without credentials; :class:`QrCode` events follow."""

    async def next_qr(self) -> None:
        """The current QR code expired: report the next one."""

    async def request_pair_code(self, phone_number: str) -> str:
        """Ask to pair by phone number instead of QR; returns the code (``ABCD-EFGH``)."""
        ...

    async def connect(self) -> None:
        """Connect with stored credentials; returns once connected (a :class:`Connected` event
        is reported too) or raises :class:`EngineError`."""

    async def send_message(self, to_jid: str, text: str) -> str:
        """Send a text message; returns its message id."""
        ...

    async def logout(self) -> None:
        """Log out at WhatsApp and wipe this device's credentials."""

    async def stop(self) -> None:
        """Drop the connection and release every resource; idempotent."""

    async def delete(self) -> None:
        """Stop and wipe credentials: the device is being deleted."""


class Engine(Protocol):
    name: str

    def session(self, device_id: int, session_id: str, sink: Sink) -> EngineSession: ...

    async def aclose(self) -> None: ...
