"""Per-device settings documents in SQLite (``kind`` ``"ai"`` or ``"webhook"``), stored as JSON.

The ``settings`` repository, bound to the database thread's connection and called inside
``Database.run``. Writes and listings go through sqlite-utils; the read keeps prepared SQL
because the webhook outbox makes it in the transaction of every state change and message
(13 µs prepared against 50 µs through ``rows_where``, measured in one transaction).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs
import sqlite_utils
from sqlite_utils.db import NotFoundError

from storage._sql import translate_integrity_error


@attrs.define(eq=False)
class SqliteSettings:
    """The ``settings`` table: one JSON document per ``(device_id, kind)``."""

    _db: sqlite_utils.Database

    def get(self, device_id: int, kind: str) -> dict[str, Any] | None:
        """The stored document of this kind, or None if none was ever put."""
        row = self._db.conn.execute(
            "SELECT value FROM settings WHERE device_id = ? AND kind = ?", (device_id, kind)
        ).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def put(self, device_id: int, kind: str, value: dict[str, Any]) -> None:
        """Replace the document of this kind (insert or overwrite).

        Error handling: ``NotFound`` if there is no such device; ``TypeError`` / ``ValueError``
        if ``value`` is not JSON-serializable (nothing written).
        """
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        try:
            self._db.table("settings").upsert(
                {"device_id": device_id, "kind": kind, "value": text}, pk=("device_id", "kind")
            )
        except sqlite3.IntegrityError as exc:
            raise translate_integrity_error(exc) from None

    def delete(self, device_id: int, kind: str) -> bool:
        """Remove the document of this kind; False if there was none."""
        try:
            self._db.table("settings").delete((device_id, kind))
        except NotFoundError:
            return False
        return True

    def devices_with(self, kind: str) -> list[int]:
        """The ids of the devices that have a document of this kind."""
        rows = self._db.table("settings").rows_where("kind = ?", [kind], select="device_id")
        return [int(r["device_id"]) for r in rows]
