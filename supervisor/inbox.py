"""A device actor's inbox: commands and engine events, each bounded, read in arrival order.

Usage::

    inbox = Inbox(commands=64, events=1024)
    inbox.put_command(call)          # Busy when `commands` commands are waiting
    inbox.put_event(QrCode(code))    # False when `events` events are waiting (see below)
    await inbox.put_delivery(d)      # waits while `events` events are waiting
    message = await inbox.get()      # the oldest message of either kind

The two kinds share one queue, so the actor sees them in the order they came, but each kind
has its own bound: a burst of API calls cannot take the room of engine events, nor the other
way round. The queue holds at most ``commands + events`` messages.

Resource handling: a full command inbox refuses the command at once (:class:`Busy`, which the
API answers 503 with Retry-After). A full event inbox refuses the event, counts it in
``lost`` and raises the ``overflowed`` flag; the actor then disconnects the device and lets it
reconnect, and WhatsApp sends again what the device had not acknowledged (see
:mod:`supervisor.actor` for what that does and does not cover). A :class:`Delivery` (an incoming
message or a completed pairing whose sender waits for the commit) is never refused: its sender
waits for room instead (backpressure), and fails with :class:`DeliveryFailed` when the inbox
is closed or the actor that would have handled it ended.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import trio

from . import engine as eng
from .commands import Call
from .errors import Busy, DeliveryFailed


@attrs.frozen
class OpFailed:
    """A background engine operation ended with an exception."""

    generation: int
    error: BaseException


@attrs.frozen
class Timeout:
    """The state timeout armed with ``token`` is due (see :class:`supervisor.timers.Timers`)."""

    token: int


@attrs.define(eq=False, slots=True)
class Delivery:
    """An engine event whose sender waits until the actor committed it (:meth:`wait`)."""

    event: eng.MessageReceived | eng.Paired
    _done: trio.Event = attrs.field(factory=trio.Event)
    _failure: str | None = None

    def succeed(self) -> None:
        """The event is committed (or known from before): the sender may acknowledge it."""
        self._done.set()

    def fail(self, reason: str) -> None:
        """The event was not committed; a no-op once decided."""
        if not self._done.is_set():
            self._failure = reason
            self._done.set()

    @property
    def decided(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        """Return once committed.

        Error handling: raises :class:`DeliveryFailed` when it was not.
        """
        await self._done.wait()
        if self._failure is not None:
            raise DeliveryFailed(self._failure, message=f"event not stored: {self._failure}")


#: What an actor reads: a command, or an event (from the engine, its own operations, a timer).
Event = OpFailed | Timeout | Delivery | eng.EngineEvent
#: A queue holds calls of every reply type; each caller keeps its own typed ``Reply``.
AnyCall = Call[Any]
Message = AnyCall | Event


@attrs.define(eq=False, slots=True)
class Inbox:
    """Two bounded classes of messages in one arrival order; one reader (the actor)."""

    commands: int
    events: int
    _queue: deque[Message] = attrs.field(factory=deque)
    _command_count: int = 0
    _wakeup: trio.Event | None = None
    _room: trio.Event | None = None
    lost: int = 0
    overflowed: bool = False
    closed: bool = False

    def put_command(self, call: AnyCall) -> None:
        """Queue ``call``; raises :class:`Busy` when the command inbox is full.

        Raises:
            Busy: ``commands`` commands are waiting already.
        """
        if self._command_count >= self.commands or self.closed:
            raise Busy(retry_after=1.0)
        self._command_count += 1
        self._push(call)

    def put_event(self, event: Event) -> bool:
        """Queue ``event``; False (and ``overflowed`` set) when the event inbox is full."""
        if self.closed:
            return True  # the device is gone: nothing is waiting for it
        if self._events_waiting() >= self.events:
            self.lost += 1
            if not self.overflowed:
                self.overflowed = True
                self._wake()
            return False
        self._push(event)
        return True

    async def put_delivery(self, delivery: Delivery) -> None:
        """Queue ``delivery``, waiting while the event inbox is full.

        Error handling: raises :class:`DeliveryFailed` when the inbox is closed (the device
        was deleted).
        """
        while not self.closed and self._events_waiting() >= self.events:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()
        if self.closed:
            raise DeliveryFailed("device_deleted", message="the device was deleted")
        self._push(delivery)

    def fail_deliveries(self, reason: str) -> None:
        """Fail every waiting :class:`Delivery`: the actor that would commit them ended."""
        kept: deque[Message] = deque()
        for message in self._queue:
            if isinstance(message, Delivery):
                message.fail(reason)
            else:
                kept.append(message)
        self._queue = kept
        self._make_room()

    def _events_waiting(self) -> int:
        return len(self._queue) - self._command_count

    def _make_room(self) -> None:
        room = self._room
        if room is not None and (self.closed or self._events_waiting() < self.events):
            self._room = None
            room.set()

    def _push(self, message: Message) -> None:
        self._queue.append(message)
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def take_overflow(self) -> bool:
        """True once after events were refused; the actor resynchronises the device then."""
        if self.overflowed:
            self.overflowed = False
            return True
        return False

    async def get(self) -> Message | None:
        """The oldest message, waiting for one; None when only an overflow is to be handled."""
        while not self._queue:
            if self.overflowed:
                await trio.lowlevel.checkpoint()
                return None
            self._wakeup = wakeup = trio.Event()
            await wakeup.wait()
        message = self._queue.popleft()
        if isinstance(message, Call):
            self._command_count -= 1
        else:
            self._make_room()
        return message

    def close(self) -> list[AnyCall]:
        """Refuse everything from now on; returns the commands that were waiting."""
        self.closed = True
        calls = [m for m in self._queue if isinstance(m, Call)]
        for message in self._queue:
            if isinstance(message, Delivery):
                message.fail("device_deleted")
        self._queue.clear()
        self._command_count = 0
        self._make_room()
        return calls

    def waiting(self) -> int:
        """Messages waiting, of both kinds."""
        return len(self._queue)


@attrs.define(eq=False, slots=True)
class InboxSink:
    """The :class:`~supervisor.engine.Sink` a device's engine session reports into."""

    inbox: Inbox

    def __call__(self, event: eng.EngineEvent) -> None:
        """Queue a lifecycle event; never blocks (an overflow resynchronises the device)."""
        self.inbox.put_event(event)

    async def deliver(self, event: eng.MessageReceived | eng.Paired) -> None:
        """Queue ``event`` and return once the actor committed it.

        Error handling: raises :class:`DeliveryFailed` when the device was deleted, or its
        actor ended or failed before the commit.
        """
        delivery = Delivery(event)
        await self.inbox.put_delivery(delivery)
        await delivery.wait()
