"""A device's engine credentials (an opaque blob the engine produces after pairing).

Plain functions over a ``sqlite3.Connection``; call them inside ``Database.run``. The invariant
"connected implies stored credentials, logged_out implies none" is kept by writing these in the
same ``run`` job as the matching ``record_transition``.
"""

from __future__ import annotations

import sqlite3

from storage._sql import translate_integrity_error


def get_credentials(conn: sqlite3.Connection, device_id: int) -> bytes | None:
    row = conn.execute("SELECT data FROM credentials WHERE device_id = ?", (device_id,)).fetchone()
    return None if row is None else bytes(row[0])


def put_credentials(conn: sqlite3.Connection, device_id: int, data: bytes) -> None:
    """Store (or replace) the device's credentials.

    Error handling: ``NotFound`` if there is no such device.
    """
    try:
        conn.execute(
            "INSERT INTO credentials (device_id, data) VALUES (?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET data = excluded.data",
            (device_id, sqlite3.Binary(data)),
        )
    except sqlite3.IntegrityError as exc:
        raise translate_integrity_error(exc) from None


def delete_credentials(conn: sqlite3.Connection, device_id: int) -> bool:
    """Wipe the device's credentials; False if there were none (idempotent)."""
    cursor = conn.execute("DELETE FROM credentials WHERE device_id = ?", (device_id,))
    return cursor.rowcount > 0
