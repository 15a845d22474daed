"""Event-log retention: the service that prunes the event log by age.

Synopsis::

    retention = EventRetention(db, days=7)
    await nursery.start(retention.run)          # prunes now, then every `interval` seconds
    retention.statistics()                      # RetentionStatistics(runs, deleted, failures)

Each pass deletes the events stamped more than ``days`` ago, walking the log by id in jobs of
at most ``batch`` rows (``storage`` ``events.prune``), so the single database writer is held
only briefly and the actors' writes interleave between batches. An event a pending webhook
delivery references is kept until the delivery is done; a finished delivery of a pruned event
keeps its body in its own row. ``days`` 0 keeps every event. The schedule and the handling of
storage errors are :class:`supervisor.retention.Retention`'s; time is Trio's, so tests run it
on the MockClock.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import attrs

from common.clock import iso, now_epoch
from storage import Repositories
from storage.models import PrunedEvents

from .retention import DAY, Retention

#: Days events are kept by default.
DEFAULT_DAYS = 7


@attrs.define(eq=False)
class EventRetention(Retention):
    """Prunes the events older than ``days`` (see the module)."""

    days: int = attrs.field(default=DEFAULT_DAYS, kw_only=True)
    what: ClassVar[str] = "event"

    async def prune(self) -> int:
        """One pass; returns how many events it deleted.

        Error handling: raises what the database raises (the batches before stay deleted).
        """
        deleted = 0
        if self.days > 0:
            cutoff = iso(now_epoch() - self.days * DAY)
            after: int | None = 0
            while after is not None:
                done = await self.db.run(partial(self._batch, cutoff, after))
                deleted += done.deleted
                self._deleted += done.deleted
                after = done.after
        self._runs += 1
        return deleted

    def _batch(self, cutoff: str, after: int, repos: Repositories) -> PrunedEvents:
        return repos.events.prune(cutoff, after=after, limit=self.batch)
