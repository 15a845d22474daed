"""Devices and their state history in PostgreSQL: the ``devices`` and ``history`` repositories.

SQLite's (:mod:`storage.devices`) with the calls that go through sqlite-utils written in SQL;
every other method, the hot paths included, runs SQLite's SQL as it is (see
:mod:`storage.pg.sql`).
"""

from __future__ import annotations

import sqlite3

import attrs

from storage.devices import _COLS, _HISTORY_COLS, SqliteDevices, SqliteHistory
from storage.models import DeviceRow, HistoryEntry, HistoryRow
from storage.pg.sql import pg_of


@attrs.define(eq=False)
class PgHistory(SqliteHistory):
    """The ``state_history`` table."""

    def of(self, device_id: int) -> list[HistoryRow]:
        """The device's status changes, oldest first (empty for an unknown device)."""
        rows = pg_of(self._db).rows(
            f"SELECT {_HISTORY_COLS} FROM state_history WHERE device_id = ? ORDER BY id",
            (device_id,),
        )
        return [HistoryRow.from_row(r) for r in rows]

    def page(self, device_id: int, before: int | None, limit: int) -> list[HistoryEntry]:
        """Up to ``limit`` of the device's status changes, newest first, older than the entry
        ``before`` (from the newest when None)."""
        rows = pg_of(self._db).rows(
            f"SELECT id, {_HISTORY_COLS} FROM state_history WHERE device_id = ?"
            " AND (?::bigint IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
            (device_id, before, before, max(0, limit)),
        )
        return [HistoryEntry(int(str(r["id"])), HistoryRow.from_row(r)) for r in rows]


@attrs.define(eq=False)
class PgDevices(SqliteDevices):
    """The ``devices`` table; a status change also appends to :class:`PgHistory`."""

    # PostgreSQL's cursor has no last row id: the insert returns it.
    _INSERT = SqliteDevices._INSERT + " RETURNING id"

    def _inserted_id(self, cursor: sqlite3.Cursor) -> int:
        row = cursor.fetchone()
        assert row is not None
        return int(row[0])

    def all(self) -> list[DeviceRow]:
        """Every device, ordered by id (boot restore)."""
        rows = pg_of(self._db).execute(f"SELECT {_COLS} FROM devices ORDER BY id").fetchall()
        return [DeviceRow.from_values(r) for r in rows]

    def page(
        self,
        *,
        user_id: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[DeviceRow], int]:
        """One page of devices ordered by id, optionally filtered by owner and/or status, and the
        total number of devices matching the filters (for pagination)."""
        sql = pg_of(self._db)
        where = "(?::text IS NULL OR user_id = ?) AND (?::text IS NULL OR status = ?)"
        owner, state = user_id, None if status is None else str(status)
        params = (owner, owner, state, state)
        total = sql.execute(f"SELECT count(*) FROM devices WHERE {where}", params).fetchone()
        rows = sql.execute(
            f"SELECT {_COLS} FROM devices WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
            (*params, max(0, int(limit)), max(0, int(offset))),
        ).fetchall()
        return [DeviceRow.from_values(r) for r in rows], 0 if total is None else int(str(total[0]))

    def count_by_status(self) -> dict[str, int]:
        """Number of devices per status; statuses with no device are absent."""
        rows = pg_of(self._db).execute(
            "SELECT status, count(*) FROM devices GROUP BY status"
        ).fetchall()
        return {str(r[0]): int(str(r[1])) for r in rows}

    def delete(self, device_id: int) -> bool:
        """Remove the device and, by cascade, everything of it; False if there was none."""
        return pg_of(self._db).execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount > 0
