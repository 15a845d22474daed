"""State timeouts of every device, kept by one task in one heap.

Usage::

    timers = Timers()
    await nursery.start(timers.run)
    token = timers.arm(inbox, deadline)          # Timeout(token) goes into inbox at deadline

One task keeps every device's state timeout in a heap, so an actor waits on its inbox alone and
ten thousand devices cost ten thousand heap entries, not ten thousand cancel scopes. A timeout
is never taken back: an actor that changed state since ignores it by its token.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator

import attrs
import trio

from .inbox import Inbox, Timeout


@attrs.define(eq=False)
class Timers:
    """A heap of ``(deadline, token, inbox)`` and the task that delivers what is due."""

    _heap: list[tuple[float, int, Inbox]] = attrs.field(factory=list)
    _tokens: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    _scope: trio.CancelScope | None = None

    def arm(self, inbox: Inbox, deadline: float) -> int:
        """Put ``Timeout(token)`` into ``inbox`` at ``deadline``; returns the token."""
        token = next(self._tokens)
        heapq.heappush(self._heap, (deadline, token, inbox))
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline
        return token

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the timeouts as they fall due, until cancelled."""
        task_status.started()
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, token, inbox = heapq.heappop(heap)
                inbox.put_event(Timeout(token))
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
