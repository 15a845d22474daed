"""Restart and retry policy as data: child specs, restart intensity, backoff.

Modelled on OTP's supervisor: a :class:`ChildSpec` says how a child is restarted, and a
:class:`RestartIntensity` counts restarts inside a :class:`SlidingWindow` (the one sliding-window
count of wasup, also behind auto-reply's per-chat rate cap). Reconnect backoff (network
flaps) and crash restarts are kept apart: the first is a state timeout of ``disconnected`` in
the device state machine, the second is the supervisor's business, so a flapping network never
spends a device's crash budget.
"""

from __future__ import annotations

import random
from collections import deque
from enum import StrEnum

import attrs


@attrs.frozen
class Backoff:
    """Exponential backoff with multiplicative jitter and a cap.

    ``delay(n)`` for the n-th retry (n >= 1) is ``min(cap, base * factor ** (n - 1))`` scaled by
    a random factor in ``[1 - jitter, 1 + jitter]`` and capped again; ``delay(0)`` is 0.
    """

    base: float = 2.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2

    def __attrs_post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff needs base >= 0, factor >= 1, cap >= 0, 0 <= jitter <= 1")

    def nominal(self, attempt: int) -> float:
        if attempt <= 0:
            return 0.0
        # Cap the exponent so huge attempt counts cannot overflow a float.
        return min(self.cap, self.base * self.factor ** min(attempt - 1, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        nominal = self.nominal(attempt)
        if nominal == 0.0 or self.jitter == 0.0:
            return nominal
        return min(self.cap, nominal * rng.uniform(1 - self.jitter, 1 + self.jitter))


class RestartType(StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after a crash, not after a normal exit
    TEMPORARY = "temporary"  # never restarted


@attrs.frozen
class ChildSpec:
    """How the supervisor runs one child: restart type, intensity within a period, backoff."""

    id: object
    restart: RestartType = RestartType.TRANSIENT
    intensity: int = 5
    period: float = 60.0
    backoff: Backoff = Backoff(base=0.5, factor=2.0, cap=30.0, jitter=0.2)


@attrs.define(eq=False)
class SlidingWindow:
    """Times of the events in the last ``period`` seconds (times come from the caller).

    The one sliding-window count in wasup: restart intensity and auto-reply's per-chat rate
    cap both use it. An event at ``t`` leaves the window at ``t + period``.
    """

    period: float
    _times: deque[float] = attrs.field(factory=deque)

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()

    def count(self, now: float) -> int:
        """Events inside the window at ``now``."""
        self._expire(now)
        return len(self._times)

    def add(self, now: float) -> int:
        """Note an event at ``now``; return the events inside the window, this one included."""
        self._times.append(now)
        return self.count(now)

    def try_acquire(self, now: float, limit: int) -> bool:
        """Note an event and return True, or return False when ``limit`` are in the window."""
        if self.count(now) >= limit:
            return False
        self._times.append(now)
        return True

    def next_free(self, now: float, limit: int) -> float:
        """When the window next holds fewer than ``limit`` events (``now`` if it does)."""
        if self.count(now) < limit:
            return now
        return self._times[len(self._times) - limit] + self.period

    def idle(self, now: float) -> bool:
        """True when the window is empty at ``now``."""
        return self.count(now) == 0

    def __len__(self) -> int:
        """Events noted and not yet expired by a call (no clock read)."""
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()


@attrs.define(eq=False)
class RestartIntensity:
    """Counts restarts in a sliding window of ``period`` seconds.

    ``record(now)`` notes a restart and says whether the child may be restarted: once more than
    ``intensity`` restarts fall inside the window, it answers False (the child is crash-looping).
    """

    intensity: int
    period: float
    _window: SlidingWindow = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._window = SlidingWindow(self.period)

    def record(self, now: float) -> bool:
        return self._window.add(now) <= self.intensity

    @property
    def recent(self) -> int:
        return len(self._window)

    def reset(self) -> None:
        self._window.clear()
