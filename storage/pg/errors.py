"""Which PostgreSQL errors mean "the database cannot serve now" (an outage, answered 503 with
Retry-After: :mod:`storage.outage`) rather than the job's own failure."""

from __future__ import annotations

import psycopg

from storage.errors import StorageUnavailable
from storage.outage import RETRY_AFTER

#: SQLSTATE classes that mean "the database cannot serve now": connection exceptions,
#: insufficient resources (disk full, too many connections), operator intervention (shutdown,
#: restart, recovery).
_OUTAGE_CLASSES = frozenset({"08", "53", "57"})
_READ_ONLY = "25006"  # a standby, or default_transaction_read_only: no writes now


def as_unavailable(exc: BaseException) -> StorageUnavailable | None:
    """A :class:`StorageUnavailable` if ``exc`` means the server cannot serve now, else None."""
    if isinstance(exc, StorageUnavailable):
        return exc
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate
    if state == _READ_ONLY or (
        isinstance(exc, psycopg.OperationalError)
        and (state is None or state[:2] in _OUTAGE_CLASSES)
    ):
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        failure = StorageUnavailable(reason, RETRY_AFTER)
        failure.__cause__ = exc
        return failure
    return None
