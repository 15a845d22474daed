"""Wall-clock timestamps derived from Trio's clock.

wasup reads time only through Trio, so that a test on the MockClock sees QR expiry times,
backoff and timestamps move together in virtual time. The wall clock is sampled once, the
first time it is needed in a run, and then advanced by Trio's clock.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

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


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, for reuse


def iso(epoch: float) -> str:
    """Format an epoch as the API does: ``2025-06-19T12:00:00.000Z``."""
    global _second
    # Round to the microsecond as datetime.fromtimestamp does, then truncate to milliseconds.
    frac, whole_f = math.modf(epoch)
    micros = round(frac * 1_000_000)
    whole = int(whole_f)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    millis = micros // 1000
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{millis:03d}Z"


def now_iso() -> str:
    return iso(now_epoch())


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso` (also accepts any ISO 8601 string with an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
