"""Running blocking work in worker threads without fooling the MockClock.

Under an autojumping ``trio.testing.MockClock`` the run loop counts as idle while a worker
thread works, so virtual time would leap past every pending timeout in the meantime. In that
case :func:`run_sync` keeps the loop busy until the thread is done, so virtual time stands
still; with any other clock it is plain ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from common.virtual_time import holds_virtual_time

T = TypeVar("T")


async def run_sync(
    fn: Callable[..., T],
    *args: object,
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
) -> T:
    """``trio.to_thread.run_sync(fn, *args)`` that holds virtual time still (see module doc)."""
    if not holds_virtual_time():
        return await trio.to_thread.run_sync(
            fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel
        )
    done = trio.Event()
    result: list[T] = []

    async def worker() -> None:
        try:
            result.append(
                await trio.to_thread.run_sync(
                    fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel
                )
            )
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        while not done.is_set():
            await trio.lowlevel.checkpoint()
    return result[0]
