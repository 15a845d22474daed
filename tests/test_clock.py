"""Timestamps: the API's ISO format, and wall time that moves with Trio's clock."""

from __future__ import annotations

from datetime import UTC, datetime

import trio
from hypothesis import given
from hypothesis import strategies as st

from common.clock import iso, now_epoch, parse_iso


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_matches_datetime_to_the_millisecond(epoch: float) -> None:
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    assert iso(epoch) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    assert abs(parse_iso(iso(epoch)) - epoch) < 0.001 + 1e-6


async def test_wall_time_follows_the_trio_clock(autojump_clock) -> None:
    start = now_epoch()
    await trio.sleep(3600)
    assert abs(now_epoch() - start - 3600) < 1e-6
