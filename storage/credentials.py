"""Each device's engine credentials in SQLite (an opaque blob the engine produces after pairing).

The ``credentials`` repository, bound to the database thread's connection and called inside
``Database.run``. The invariant "connected implies stored credentials, logged_out implies none"
is kept by writing these in the same job as the matching ``record_transition``.

Every paired device stores its credentials once and reads them at each connect, so ``get`` and
``put`` keep prepared SQL: through sqlite-utils an upsert costs 457 µs against 15 µs prepared,
a read 63 µs against 9 µs (measured in one transaction; pairing 10,000 devices in
bench/supervisor_scale.py more than doubled the database thread's CPU time with them).
Deleting and the one read of all at boot go through sqlite-utils.
"""

from __future__ import annotations

import sqlite3

import attrs
import sqlite_utils
from sqlite_utils.db import NotFoundError

from storage._sql import translate_integrity_error


@attrs.define(eq=False)
class SqliteCredentials:
    """The ``credentials`` table, one row per paired device."""

    _db: sqlite_utils.Database

    def get(self, device_id: int) -> bytes | None:
        """The device's credentials, or None."""
        row = self._db.conn.execute(
            "SELECT data FROM credentials WHERE device_id = ?", (device_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, device_id: int, data: bytes) -> None:
        """Store (or replace) the device's credentials.

        Error handling: ``NotFound`` if there is no such device.
        """
        try:
            self._db.conn.execute(
                "INSERT INTO credentials (device_id, data) VALUES (?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET data = excluded.data",
                (device_id, sqlite3.Binary(data)),
            )
        except sqlite3.IntegrityError as exc:
            raise translate_integrity_error(exc) from None

    def delete(self, device_id: int) -> bool:
        """Wipe the device's credentials; False if there were none (idempotent)."""
        try:
            self._db.table("credentials").delete(device_id)
        except NotFoundError:
            return False
        return True

    def all(self) -> dict[int, bytes]:
        """Every device's credentials, by device id (one query at boot)."""
        rows = self._db.table("credentials").rows_where(select="device_id, data")
        return {int(r["device_id"]): bytes(r["data"]) for r in rows}
