"""Per-device settings documents in PostgreSQL: SQLite's repository (:mod:`storage.settings`)
with its sqlite-utils calls written in SQL."""

from __future__ import annotations

import json
from typing import Any

import attrs

from storage.pg.sql import pg_of
from storage.settings import SqliteSettings


@attrs.define(eq=False)
class PgSettings(SqliteSettings):
    """The ``settings`` table: one JSON document per ``(device_id, kind)``."""

    def put(self, device_id: int, kind: str, value: dict[str, Any]) -> None:
        """Replace the document of this kind (insert or overwrite).

        Error handling: ``NotFound`` if there is no such device; ``TypeError`` / ``ValueError``
        if ``value`` is not JSON-serializable (nothing written).
        """
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        pg_of(self._db).execute(
            "INSERT INTO settings (device_id, kind, value) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id, kind) DO UPDATE SET value = excluded.value",
            (device_id, kind, text),
        )

    def delete(self, device_id: int, kind: str) -> bool:
        """Remove the document of this kind; False if there was none."""
        cursor = pg_of(self._db).execute(
            "DELETE FROM settings WHERE device_id = ? AND kind = ?", (device_id, kind)
        )
        return cursor.rowcount > 0

    def devices_with(self, kind: str) -> list[int]:
        """The ids of the devices that have a document of this kind."""
        rows = pg_of(self._db).execute(
            "SELECT device_id FROM settings WHERE kind = ? ORDER BY device_id", (kind,)
        ).fetchall()
        return [int(str(r[0])) for r in rows]
