"""Storage outages: which SQLite failures mean "the storage cannot take writes now", and the
watch that makes a run of them one outage.

Synopsis::

    failure = as_unavailable(exc)          # StorageUnavailable, or None for the job's own error
    watch = OutageWatch(label="wasup.db")
    watch.observe("database or disk is full", refused=3)   # starts the outage (one log line)
    watch.observe(None, refused=0)                          # a write committed: it is over
    watch.raise_if_unavailable()                            # refuse at once, moments after

A failure that is not the job's fault (a full disk, an I/O error, a read-only database file,
the lock held by another process beyond the busy timeout) is an outage; the first starts it and
the next transaction that stores something ends it, each logged once. Everything here runs on
the Trio thread but :func:`as_unavailable`, which the database thread calls too.
"""

from __future__ import annotations

import logging
import math
import shutil
import sqlite3
from pathlib import Path

import attrs
import trio

from storage.errors import StorageUnavailable
from storage.models import Outage

log = logging.getLogger(__name__)

#: SQLite's primary result codes that mean "the storage cannot take writes now", whatever the
#: job was: SQLITE_BUSY (after the busy timeout) and SQLITE_LOCKED, a read-only database file,
#: I/O errors, a full disk, a database file that cannot be opened (its directory vanished).
_OUTAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)

#: Below this many free bytes on its file system, a database that cannot be opened is taken to
#: be on a full disk (opening needs room for its -wal and -shm files).
FULL_BELOW = 1 << 20

#: Seconds after a storage failure during which writes that can be refused up front are
#: refused without trying, and the ``retry_after`` of every ``StorageUnavailable``.
RETRY_AFTER = 5.0


def as_unavailable(exc: BaseException | None) -> StorageUnavailable | None:
    """A fresh :class:`StorageUnavailable` if ``exc`` is a storage outage, else None."""
    if isinstance(exc, StorageUnavailable):
        failure = StorageUnavailable(exc.reason, RETRY_AFTER)
        failure.__cause__ = exc.__cause__
        return failure
    if isinstance(exc, sqlite3.Error) and (exc.sqlite_errorcode & 0xFF) in _OUTAGE_CODES:
        failure = StorageUnavailable(str(exc), RETRY_AFTER)
        failure.__cause__ = exc
        return failure
    return None


def disk_full(path: Path, exc: BaseException) -> bool:
    """Whether ``exc``, raised opening the database at ``path``, is for want of disk space: an
    I/O or full-disk error (itself or as the cause of a failed migration) while less than
    ``FULL_BELOW`` bytes are free where the database lives."""
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    if not isinstance(cause, sqlite3.Error):
        return False
    if cause.sqlite_errorcode & 0xFF not in {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}:
        return False
    try:
        return shutil.disk_usage(path.parent).free < FULL_BELOW
    except OSError:
        return False


@attrs.define(eq=False)
class OutageWatch:
    """The outage in progress of one database (``label`` names it in the log), if any."""

    label: str
    outage: Outage | None = None
    _last_failure: float = -math.inf

    def observe(self, failure: str | None, refused: int) -> None:
        """Note a transaction's fate: ``failure`` is the outage's reason for one that ``refused``
        jobs, None for one that stored something."""
        outage = self.outage
        if failure is not None:
            self._last_failure = trio.current_time()
            if outage is None:
                log.error(
                    "storage unavailable: %s (%s); writes are answered 503 until it recovers",
                    failure, self.label,
                )
                self.outage = Outage(failure, self._last_failure, refused)
            else:
                self.outage = attrs.evolve(outage, refused=outage.refused + refused)
        elif outage is not None:
            log.warning(
                "storage available again after %.0f s (%d writes refused meanwhile)",
                trio.current_time() - outage.since, outage.refused,
            )
            self.outage = None

    def recent(self) -> bool:
        """Whether a write failed for the outage in progress less than ``RETRY_AFTER`` s ago."""
        return self.outage is not None and trio.current_time() - self._last_failure < RETRY_AFTER

    def raise_if_unavailable(self) -> None:
        """Raise ``StorageUnavailable`` if :meth:`recent`."""
        if self.outage is not None and self.recent():
            raise StorageUnavailable(self.outage.reason, RETRY_AFTER)
