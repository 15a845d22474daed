"""The durable event log in SQLite: the ``events`` repository.

Every event wasup publishes is appended here by the job that stores its cause (a status change
with its history row, a stored message, a send's status...), so an event is logged if and only
if its cause is stored. Ids come from ``AUTOINCREMENT``: they grow with every event and are
never handed out again, even once retention has emptied the table, so an id a client keeps
always means the same event or one that is gone. With one writer, ids are in commit order.

Readers page the log by id (``after``): every query is bounded both by ``limit`` and by an id
range (``since < id <= until``), so a filter that matches little never scans the whole log.
Retention (``prune``) deletes the oldest events in batches, walking by id; an event a pending
webhook delivery still references is kept, and a finished delivery of a pruned event keeps its
body in its outbox row (the deliveries' views do not change).

Appends run per event and keep prepared SQL (see ``storage.devices`` for the cost of
sqlite-utils' inserts); the SQL is plain enough for another backend to mirror.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import sqlite_utils

from storage.models import ALL_EVENTS, EventQuery, EventRow, LoggedEvent, PrunedEvents

_COLS = "id, device_id, session_id, type, data, timestamp"


def _marks(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


def _among(column: str, values: frozenset[int] | frozenset[str], params: list[object]) -> str:
    """``column IN (...)`` for ``values`` (added to ``params``); a condition no row meets when
    there are none (PostgreSQL refuses an empty ``IN ()``, which SQLite takes)."""
    if not values:
        return "0 = 1"
    params += sorted(values)
    return f"{column} IN ({_marks(values)})"


@attrs.define(eq=False)
class SqliteEvents:
    """The ``events`` table."""

    _db: sqlite_utils.Database

    def append(self, events: Sequence[LoggedEvent]) -> list[int]:
        """Log ``events`` in order, inside the caller's transaction; their ids, in order."""
        conn = self._db.conn
        ids: list[int] = []
        for event in events:
            row = conn.execute(
                "INSERT INTO events (device_id, session_id, type, data, timestamp)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (event.device_id, event.session_id, event.type, event.data, event.timestamp),
            ).fetchone()
            ids.append(int(row[0]))
        return ids

    def bounds(self) -> tuple[int, int]:
        """``(oldest, newest)`` ids kept; ``(0, 0)`` when the log is empty."""
        row = self._db.conn.execute("SELECT min(id), max(id) FROM events").fetchone()
        return (0, 0) if row[0] is None else (int(row[0]), int(row[1]))

    def after(
        self, since: int, *, until: int, limit: int, query: EventQuery = ALL_EVENTS
    ) -> list[EventRow]:
        """Up to ``limit`` events with ``since < id <= until`` that ``query`` lets through,
        oldest first."""
        where = ["id > ?", "id <= ?"]
        params: list[object] = [since, until]
        if query.device_ids is not None:
            where.append(_among("device_id", query.device_ids, params))
        if query.selected_ids is not None or query.selected_sessions is not None:
            ids, sessions = query.selected_ids or frozenset(), query.selected_sessions or frozenset()
            where.append(
                f"({_among('device_id', ids, params)} OR {_among('session_id', sessions, params)})"
            )
        if query.types is not None:
            where.append(_among("type", query.types, params))
        params.append(max(0, limit))
        rows = self._db.conn.execute(
            f"SELECT {_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            params,
        ).fetchall()
        return [EventRow(*row) for row in rows]

    def pinned(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` a pending webhook delivery references."""
        if not ids:
            return set()
        rows = self._db.conn.execute(
            f"SELECT event_id FROM webhook_outbox WHERE event_id IN ({_marks(ids)})"
            " AND status = 'pending'",
            list(ids),
        ).fetchall()
        return {int(row[0]) for row in rows}

    def prune(self, before: str, *, after: int, limit: int) -> PrunedEvents:
        """Delete events stamped before ``before`` among the ``limit`` oldest with an id above
        ``after``, but those a pending webhook delivery references; a finished delivery of a
        deleted event gets the event's body in its own row first."""
        rows = [
            EventRow(*row)
            for row in self._db.conn.execute(
                f"SELECT {_COLS} FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after, max(1, limit)),
            ).fetchall()
        ]
        old = [row for row in rows if row.timestamp < before]
        keep = self.pinned([row.id for row in old])
        gone = [row for row in old if row.id not in keep]
        if gone:
            self._keep_bodies(gone)
            self._db.conn.execute(
                f"DELETE FROM events WHERE id IN ({_marks(gone)})", [row.id for row in gone]
            )
        more = len(rows) == limit and rows[-1].timestamp < before
        return PrunedEvents(deleted=len(gone), after=rows[-1].id if more else None)

    def _keep_bodies(self, rows: Sequence[EventRow]) -> None:
        by_id = {row.id: row for row in rows}
        conn = self._db.conn
        refs = conn.execute(
            f"SELECT id, event_id FROM webhook_outbox WHERE event_id IN ({_marks(by_id)})"
            " AND payload = ''",
            list(by_id),
        ).fetchall()
        conn.executemany(
            "UPDATE webhook_outbox SET payload = ? WHERE id = ?",
            [(by_id[event_id].envelope_text, outbox_id) for outbox_id, event_id in refs],
        )
        conn.execute(
            f"UPDATE webhook_outbox SET event_id = NULL WHERE event_id IN ({_marks(by_id)})",
            list(by_id),
        )

