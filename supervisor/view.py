"""What a device shows the outside while its actor runs: status, QR code and outbound queue, as a
value to watch.

Usage::

    view = DeviceView(DeviceShown(Status.PENDING))
    view.value = DeviceShown(Status.PENDING, qr=attempt, live=True)    # the actor, on a change
    shown = await view.wait_value(lambda v: v.qr is not None)          # anybody else

Shaped like trio-util's ``AsyncValue``: setting the value wakes exactly the waiters whose
predicate now holds. The view belongs to the supervisor's child, not to the actor, so it
outlives a crash restart (``live`` is False while the actor restarts).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from .qr import QrAttempt
from .state import Status


@attrs.frozen
class DeviceShown:
    """A device's status, the QR code on show (only while pairing) and its outbound queue
    (sends not sent yet, and those of them that raised ``message_stuck``); ``live`` is False
    while the actor restarts."""

    status: Status
    qr: QrAttempt | None = None
    live: bool = False
    pending_sends: int = 0
    stuck_sends: int = 0


@attrs.define(eq=False, slots=True)
class _Waiter:
    predicate: Callable[[DeviceShown], bool]
    event: trio.Event = attrs.field(factory=trio.Event)
    result: DeviceShown | None = None


@attrs.define(eq=False, slots=True)
class DeviceView:
    """An observable :class:`DeviceShown`."""

    _value: DeviceShown
    _waiters: list[_Waiter] | None = None

    @property
    def value(self) -> DeviceShown:
        return self._value

    @value.setter
    def value(self, value: DeviceShown) -> None:
        self._value = value
        waiters = self._waiters
        if waiters:
            keep = []
            for waiter in waiters:
                if waiter.predicate(value):
                    waiter.result = value
                    waiter.event.set()
                else:
                    keep.append(waiter)
            self._waiters = keep or None

    async def wait_value(self, predicate: Callable[[DeviceShown], bool]) -> DeviceShown:
        """The value, once ``predicate`` holds for it (at once if it holds now).

        Cancellation: cancelling the wait leaves the view as it was.
        """
        if predicate(self._value):
            await trio.lowlevel.checkpoint()
            return self._value
        waiter = _Waiter(predicate)
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        finally:
            if waiter.result is None and self._waiters is not None:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        assert waiter.result is not None
        return waiter.result
