"""The event log in PostgreSQL: SQLite's ``events`` repository (:mod:`storage.events`), with
appends that commit in id order.

Ids come from an identity column, handed out when a row is inserted; transactions side by side
may commit in another order than their ids (a transaction that took id 7 commits after one
that took id 8). A reader that pages the log by id (a WebSocket resuming, a node's feed of the
whole cluster's events) would then read 8, go on after it, and never see 7. So an append takes
a transaction-level advisory lock (:data:`APPEND_LOCK`) before its first insert: appending
transactions take their ids one after the other and commit in that order (the lock is released
only once the commit is visible), and an id seen by a reader is never followed by a smaller
one committed later.

The cost: from its first append to its commit, a transaction excludes every other append. The
jobs that log events append them last (the webhook outbox rows that reference them follow),
so the lock is held for the append and the commit; the append is one statement (the lock, then
every event of the call in order), one round trip to the server.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from storage.events import SqliteEvents
from storage.models import LoggedEvent
from storage.pg.sql import pg_of

#: The advisory lock key every append takes (the ASCII of "wasup_ev" as an integer).
APPEND_LOCK = int.from_bytes(b"wasup_ev", "big") & 0x7FFF_FFFF_FFFF_FFFF


@attrs.define(eq=False)
class PgEvents(SqliteEvents):
    """The ``events`` table."""

    def append(self, events: Sequence[LoggedEvent]) -> list[int]:
        """Log ``events`` in order, inside the caller's transaction, after every append that
        took the lock before; their ids, in order."""
        if not events:
            return []
        # The lock is taken before the first row is made (a row needs the lock's row of the
        # join), so before any id is drawn; the rows are inserted in the order given, and so
        # draw ascending ids. No savepoint: nothing here can violate a constraint.
        rows = pg_of(self._db).pg.execute(
            "INSERT INTO events (device_id, session_id, type, data, timestamp)"
            " SELECT e.device_id, e.session_id, e.type, e.data, e.timestamp"
            " FROM (SELECT pg_advisory_xact_lock(%s)) AS lock,"
            " unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS e(device_id, session_id, type, data, timestamp, n)"
            " ORDER BY e.n RETURNING id",
            (
                APPEND_LOCK,
                [event.device_id for event in events],
                [event.session_id for event in events],
                [event.type for event in events],
                [event.data for event in events],
                [event.timestamp for event in events],
            ),
        ).fetchall()
        return sorted(int(str(row[0])) for row in rows)
