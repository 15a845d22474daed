"""Commands for a device actor: frozen records, each generic in the type of its reply.

Usage::

    call = Call(Logout(), Reply[DeviceRow]())
    inbox.put_command(call)                  # Busy if the command inbox is full
    row = await call.reply.wait()            # DeviceRow, typed; or the actor's error

The actor dispatches on the command with ``match``; a new command is one record here and one
``case`` there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

import attrs
import trio

from storage import ColumnValue, JsonObject
from storage.models import DeviceRow

from .engine import EngineSession
from .outgoing import Outgoing
from .qr import QrAttempt

R = TypeVar("R")


@attrs.define(eq=False, slots=True)
class Reply(Generic[R]):
    """A one-shot answer: the actor sets a value or an error, the caller waits for it."""

    _done: trio.Event = attrs.field(factory=trio.Event)
    _value: R | None = None
    _error: BaseException | None = None

    def set(self, value: R) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> R:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set() was called with an R


class Command(Generic[R]):
    """Base of the commands; ``R`` is the type of the reply."""

    __slots__ = ()


@attrs.frozen
class Login(Command[tuple[DeviceRow, QrAttempt | None]]):
    """Start a login (pairing or connect); replies with the row and the QR code on show."""


@attrs.frozen
class Logout(Command[DeviceRow]):
    """Log out at WhatsApp and wipe the credentials."""


@attrs.frozen
class Cancel(Command[DeviceRow]):
    """Stop the session that is running or wanted."""


@attrs.frozen
class Delete(Command[None]):
    """Delete the device: its session, credentials and rows."""


@attrs.frozen
class UpdateDevice(Command[DeviceRow]):
    """Set descriptive fields (alias, business type, phone number, description)."""

    fields: Mapping[str, ColumnValue]


@attrs.frozen
class PutSettings(Command[JsonObject]):
    """Store the device's settings document of ``kind`` (``webhook``, ``ai``)."""

    kind: str
    value: JsonObject


@attrs.frozen
class RequestPairCode(Command[tuple[str, str]]):
    """Ask to pair by phone number; replies with the code and when pairing ends (ISO)."""

    phone: str


@attrs.frozen
class SentMessage:
    """The reply to :class:`Send`: ``status`` ``sent`` if it went out at once, ``pending`` if it
    waits in the outbound queue; ``timestamp`` is when it was accepted."""

    message_id: str
    to: str
    status: str
    timestamp: str


@attrs.frozen
class Send(Command[SentMessage]):
    """Send ``message`` to ``to`` through the outbound queue; ``origin`` (``api``,
    ``autoreply``) goes into the event. ``ttl``: seconds it may wait for the device to connect
    (None: the default); ``idempotency_key``: a retry with the same key answers the send made
    the first time; ``reply_to``: the id of a message of the device to quote (resolved when the
    send is accepted: an unknown one is ``InvalidRequest`` with ``field="replyTo"``)."""

    to: str
    message: Outgoing
    origin: str
    ttl: float | None = None
    idempotency_key: str | None = None
    reply_to: str | None = None


@attrs.frozen
class Download(Command[bytes]):
    """Download the file of an incoming media message (``ref``: its stored
    :attr:`~supervisor.engine.MessageReceived.media_ref`); replies with its bytes. The actor
    starts the download and goes on with its work: the reply comes when the file is in."""

    ref: str


@attrs.frozen
class MarkRead(Command[int]):
    """Mark the chat (a canonical JID) read: read receipts for its unread incoming messages,
    then its read mark (:mod:`supervisor.reads`); replies with how many were marked."""

    chat: str


@attrs.frozen
class Ask(Command[R]):
    """Ask WhatsApp something, or have it do something, through the device's connected session:
    ``op`` runs on the session (a contact check, a group change, a presence update...) and its
    result is the reply. ``what`` names it in logs. Refused with ``DeviceConflict`` unless the
    device is connected. The actor starts ``op`` and goes on with its work
    (:func:`supervisor.asks.run`)."""

    op: Callable[[EngineSession], Awaitable[R]]
    what: str


@attrs.frozen
class Call(Generic[R]):
    """A command in the inbox, with the reply its caller waits on."""

    command: Command[R]
    reply: Reply[R]
