"""Retention: the services that prune what wasup keeps, here stored messages by age and by count
per device (the event log's is :mod:`supervisor.event_retention`, on the same :class:`Retention`).

Synopsis::

    retention = MessageRetention(db, days=90, count=100_000)
    await nursery.start(retention.run)          # prunes now, then every `interval` seconds
    retention.statistics()                      # RetentionStatistics(runs, deleted, failures)

Each pass deletes messages stored more than ``days`` ago, then, device by device, those beyond
each device's newest ``count``; both in jobs of at most ``batch`` rows, so the single database
writer is held only briefly and other writes interleave between batches (the queries are on
indexes: ``storage.history``). ``days`` or ``count`` 0 turns that limit off.

Error handling: a pass that meets a storage error (a full disk: ``StorageUnavailable``) logs it,
counts a failure and tries again at the next interval; anything else propagates (a bug ends the
service, and the composition root's nursery with it).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import ClassVar

import attrs
import trio

from common.clock import iso, now_epoch
from storage import Repositories, StorageError, Store

log = logging.getLogger("wasup.retention")

DAY = 86_400.0
#: Seconds between passes.
DEFAULT_INTERVAL = 600.0
#: Most rows one job deletes.
DEFAULT_BATCH = 500


@attrs.frozen
class RetentionStatistics:
    """What the service did so far: passes completed, messages deleted, passes that failed."""

    runs: int
    deleted: int
    failures: int


@attrs.define(eq=False)
class Retention:
    """A pruning service: :meth:`prune` (one pass; subclasses define it) at once, then every
    ``interval`` seconds, with its counters. ``what`` names what it deletes, in its logs."""

    db: Store
    interval: float = attrs.field(default=DEFAULT_INTERVAL, kw_only=True)
    batch: int = attrs.field(default=DEFAULT_BATCH, kw_only=True)
    _runs: int = attrs.field(default=0, init=False)
    _deleted: int = attrs.field(default=0, init=False)
    _failures: int = attrs.field(default=0, init=False)
    what: ClassVar[str] = "rows"

    def statistics(self) -> RetentionStatistics:
        """Counters so far."""
        return RetentionStatistics(self._runs, self._deleted, self._failures)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Prune at once, then every ``interval`` seconds, until cancelled.

        Error handling: storage errors are logged and retried at the next interval.
        """
        task_status.started()
        while True:
            try:
                deleted = await self.prune()
            except StorageError as exc:
                self._failures += 1
                log.warning("%s retention: pass failed, next in %g s: %s", self.what,
                            self.interval, exc)
            else:
                if deleted:
                    log.info("%s retention: %d deleted", self.what, deleted)
            await trio.sleep(self.interval)

    async def prune(self) -> int:
        """One pass; returns how many rows it deleted."""
        raise NotImplementedError


@attrs.define(eq=False)
class MessageRetention(Retention):
    """Prunes messages older than ``days`` and beyond ``count`` per device (see the module)."""

    days: int = attrs.field(kw_only=True)
    count: int = attrs.field(kw_only=True)
    what: ClassVar[str] = "message"

    async def prune(self) -> int:
        """One pass; returns how many messages it deleted.

        Error handling: raises what the database raises (the batches before stay deleted).
        """
        deleted = 0
        if self.days > 0:
            cutoff = iso(now_epoch() - self.days * DAY)
            while True:
                n = await self.db.run(
                    lambda r: r.message_history.prune_older(cutoff, limit=self.batch)
                )
                deleted += n
                self._deleted += n
                if n < self.batch:
                    break
        if self.count > 0:
            devices = await self.db.run(lambda r: r.message_history.devices())
            for device_id in devices:
                while True:
                    n = await self.db.run(partial(self._trim, device_id))
                    deleted += n
                    self._deleted += n
                    if n < self.batch:
                        break
        self._runs += 1
        return deleted

    def _trim(self, device_id: int, repos: Repositories) -> int:
        return repos.message_history.prune_beyond(device_id, self.count, limit=self.batch)
