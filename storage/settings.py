"""Per-device settings documents (``kind`` ``"ai"`` or ``"webhook"``), stored as JSON.

Plain functions over a ``sqlite3.Connection``; call them inside ``Database.run``.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from storage._sql import translate_integrity_error


def get_settings(conn: sqlite3.Connection, device_id: int, kind: str) -> dict[str, Any] | None:
    """The stored document of this kind, or None if none was ever put."""
    row = conn.execute(
        "SELECT value FROM settings WHERE device_id = ? AND kind = ?", (device_id, kind)
    ).fetchone()
    if row is None:
        return None
    value: dict[str, Any] = json.loads(row[0])
    return value


def put_settings(
    conn: sqlite3.Connection, device_id: int, kind: str, value: dict[str, Any]
) -> None:
    """Replace the document of this kind (insert or overwrite).

    Error handling: ``NotFound`` if there is no such device; ``TypeError`` / ``ValueError`` if
    ``value`` is not JSON-serializable (nothing written).
    """
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    try:
        conn.execute(
            "INSERT INTO settings (device_id, kind, value) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id, kind) DO UPDATE SET value = excluded.value",
            (device_id, kind, text),
        )
    except sqlite3.IntegrityError as exc:
        raise translate_integrity_error(exc) from None


def delete_settings(conn: sqlite3.Connection, device_id: int, kind: str) -> bool:
    """Remove the document of this kind; False if there was none."""
    cursor = conn.execute(
        "DELETE FROM settings WHERE device_id = ? AND kind = ?", (device_id, kind)
    )
    return cursor.rowcount > 0
