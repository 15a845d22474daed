"""Whether the current Trio run keeps virtual time: an autojumping ``MockClock``.

Under an autojumping ``trio.testing.MockClock`` the run loop counts as idle while another thread
works (the database thread, a worker thread), and virtual time would leap past every pending
timeout meanwhile. The code that waits on such a thread asks :func:`holds_virtual_time` and, if
so, keeps the loop busy until the thread is done. With any other clock it answers False and
costs one ``isinstance``.
"""

from __future__ import annotations

import math

import trio
import trio.testing


def holds_virtual_time() -> bool:
    """True if the current run's clock is a ``MockClock`` that jumps ahead when idle."""
    clock = trio.lowlevel.current_clock()
    return isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold != math.inf
