"""A database job: one unit of work for the database thread, and how its caller waits for it.

:class:`storage.db.Database` queues a :class:`Job`, its thread runs and answers it, and hands
the finished jobs back to Trio with :func:`set_all` (a ``run_sync_soon`` callback), which
wakes each caller parked in :func:`wait_done`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

from common.virtual_time import holds_virtual_time
from storage.interface import Repositories

T = TypeVar("T")


class Job(Generic[T]):
    """One unit of work and, once the thread is done with it, its result."""

    __slots__ = ("done", "error", "fn", "value", "waiter", "wrote")

    def __init__(self, fn: Callable[[Repositories], T]) -> None:
        self.fn = fn
        # False once the job ran and changed no row: its answer stands even if the
        # transaction it shared with other jobs is lost (a read next to a write a full disk refused).
        self.wrote = True
        self.done = False  # set on the Trio thread, with the waiter woken
        self.waiter: trio.lowlevel.Task | None = None
        self.value: T | None = None
        self.error: BaseException | None = None


async def wait_done(job: Job[Any]) -> None:
    if holds_virtual_time():
        # Under an autojumping MockClock the run loop counts as idle while the database thread
        # works, and virtual time would leap past every timeout meanwhile. Keep the loop busy
        # until the job is done so virtual time stands still (tests only; costs CPU).
        while not job.done:
            await trio.lowlevel.checkpoint()
    if job.done:
        await trio.lowlevel.checkpoint()
        return
    # A one-shot wait, cheaper than a trio.Event: set_all reschedules this task.
    job.waiter = trio.lowlevel.current_task()

    def abort(_: object) -> trio.lowlevel.Abort:
        job.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


def set_all(jobs: list[Job[Any]]) -> None:
    for job in jobs:
        job.done = True
        waiter, job.waiter = job.waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)
