"""Each device's engine credentials in PostgreSQL: SQLite's repository
(:mod:`storage.credentials`) with its sqlite-utils calls written in SQL."""

from __future__ import annotations

import attrs

from storage.credentials import SqliteCredentials
from storage.pg.sql import pg_of


@attrs.define(eq=False)
class PgCredentials(SqliteCredentials):
    """The ``credentials`` table, one row per paired device."""

    def delete(self, device_id: int) -> bool:
        """Wipe the device's credentials; False if there were none (idempotent)."""
        cursor = pg_of(self._db).execute(
            "DELETE FROM credentials WHERE device_id = ?", (device_id,)
        )
        return cursor.rowcount > 0

    def all(self) -> dict[int, bytes]:
        """Every device's credentials, by device id (one query at boot)."""
        rows = pg_of(self._db).execute("SELECT device_id, data FROM credentials").fetchall()
        return {int(str(r[0])): bytes(r[1]) for r in rows}  # type: ignore[call-overload]
