"""The webhook outbox in PostgreSQL: SQLite's repository (:mod:`storage.outbox`) with the device
filter as PostgreSQL's JSON function and the delivery views written in SQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from storage.outbox import _COLUMNS, SqliteOutbox
from storage.pg.sql import pg_of


@attrs.define(eq=False)
class PgOutbox(SqliteOutbox):
    """The ``webhook_outbox`` and ``webhook_attempts`` tables."""

    _EXCLUDED_DEVICES = "SELECT value::bigint FROM json_array_elements_text(?::json)"

    def list_deliveries(
        self,
        device_id: int,
        *,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """The device's deliveries, newest first, each with its attempts; and the total count."""
        sql = pg_of(self._db)
        where = "device_id = ? AND (?::text IS NULL OR status = ?)"
        params = (device_id, status, status)
        total = sql.execute(f"SELECT count(*) FROM webhook_outbox WHERE {where}", params)
        count = total.fetchone()
        rows = sql.rows(
            f"SELECT {_COLUMNS} FROM webhook_outbox WHERE {where}"
            " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
            (*params, max(0, int(limit)), max(0, int(offset))),
        )
        return [self._delivery(r) for r in rows], 0 if count is None else int(str(count[0]))

    def get_delivery(self, device_id: int, outbox_id: str) -> dict[str, Any] | None:
        """One delivery of the device with its attempts, or None."""
        rows = pg_of(self._db).rows(
            f"SELECT {_COLUMNS} FROM webhook_outbox WHERE id = ? AND device_id = ?",
            (outbox_id, device_id),
        )
        return self._delivery(rows[0]) if rows else None

    def _attempts(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        return pg_of(self._db).rows(
            "SELECT at, status_code, error, duration_ms FROM webhook_attempts"
            " WHERE outbox_id = ? ORDER BY id",
            (row["id"],),
        )
