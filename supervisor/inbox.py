"""A device actor's inbox: commands and engine events, each bounded, read in arrival order.

Usage::

    inbox = Inbox(commands=64, events=1024)
    inbox.put_command(call)          # Busy when `commands` commands are waiting
    inbox.put_event(QrCode("2@..."))  # False when `events` events are waiting (see below)
    message = await inbox.get()      # the oldest message of either kind

The two kinds share one queue, so the actor sees them in the order they came, but each kind
has its own bound: a burst of API calls cannot take the room of engine events, nor the other
way round. The queue holds at most ``commands + events`` messages.

Resource handling: a full command inbox refuses the command at once (:class:`Busy`, which the
API answers 503 with Retry-After). A full event inbox refuses the event, counts it in
``lost`` and raises the ``overflowed`` flag; the actor then disconnects the device and lets it
reconnect, and WhatsApp sends again what the device had not acknowledged (see
:mod:`supervisor.actor` for what that does and does not cover).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import trio

from . import engine as eng
from .commands import Call
from .errors import Busy


@attrs.frozen
class OpFailed:
    """A background engine operation ended with an exception."""

    generation: int
    error: BaseException


@attrs.frozen
class Timeout:
    """The state timeout armed with ``token`` is due (see :class:`supervisor.timers.Timers`)."""

    token: int


#: What an actor reads: a command, or an event (from the engine, its own operations, a timer).
Event = OpFailed | Timeout | eng.EngineEvent
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
        if len(self._queue) - self._command_count >= self.events:
            self.lost += 1
            if not self.overflowed:
                self.overflowed = True
                self._wake()
            return False
        self._push(event)
        return True

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
        return message

    def close(self) -> list[AnyCall]:
        """Refuse everything from now on; returns the commands that were waiting."""
        self.closed = True
        calls = [m for m in self._queue if isinstance(m, Call)]
        self._queue.clear()
        self._command_count = 0
        return calls

    def waiting(self) -> int:
        """Messages waiting, of both kinds."""
        return len(self._queue)
