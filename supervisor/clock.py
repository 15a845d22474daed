"""Wall-clock timestamps derived from Trio's clock.

wasup reads time only through Trio, so that a test on the MockClock sees QR expiry times,
backoff and timestamps move together in virtual time. The wall clock is sampled once, the
first time it is needed in a run, and then advanced by Trio's clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import trio

_anchor: tuple[object, float, float] | None = None  # (trio clock, trio time, epoch) at first use


def now_epoch() -> float:
    """Seconds since the Unix epoch, advancing with ``trio.current_time()``.

    Outside a Trio run, falls back to the system clock.
    """
    global _anchor
    try:
        clock = trio.lowlevel.current_clock()
        t = trio.current_time()
    except RuntimeError:
        return time.time()
    if _anchor is None or _anchor[0] is not clock:
        _anchor = (clock, t, time.time())
    return _anchor[2] + (t - _anchor[1])


def iso(epoch: float) -> str:
    """Format an epoch as the API does: ``2025-06-19T12:00:00.000Z``."""
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso(now_epoch())


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso` (also accepts any ISO 8601 string with an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
