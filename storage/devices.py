"""Devices and their state history: plain functions over a ``sqlite3.Connection``.

Call them inside ``Database.run``, which supplies the transaction::

    row = await db.run(lambda conn: devices.record_transition(
        conn, device_id, from_status="connecting", to_status="connected",
        reason="engine_connected", at=now, paired=True, last_connection=now))

Several calls in one ``run`` job are atomic together. None of these functions commits.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from storage._sql import translate_integrity_error
from storage.errors import NotFound
from storage.models import DEVICE_COLUMNS, MUTABLE_DEVICE_FIELDS, DeviceRow, HistoryRow

_COLS = ", ".join(DEVICE_COLUMNS)

#: ``reason`` of the history row ``insert_device`` writes (``from_status`` None).
CREATED_REASON = "created"


def insert_device(
    conn: sqlite3.Connection,
    *,
    user_id: str,
    alias: str,
    session_id: str,
    business_type: str | None,
    phone_number: str | None,
    description: str | None,
    api_key_hash: str,
    status: str,
    now: str,
) -> DeviceRow:
    """Store a new device (``created_at = updated_at = now``) and its first history row
    (``None -> status``, reason ``"created"``); return it with its new numeric id.

    Error handling: ``Conflict`` (``field`` = ``"session_id"``, ``"alias"`` (per user) or
    ``"api_key_hash"``) if one is taken; nothing is written then.
    """
    try:
        cursor = conn.execute(
            """
            INSERT INTO devices (session_id, user_id, alias, business_type, phone_number,
                                 description, status, created_at, updated_at, api_key_hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                session_id,
                user_id,
                alias,
                business_type,
                phone_number,
                description,
                str(status),
                now,
                now,
                api_key_hash,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise translate_integrity_error(exc) from None
    device_id = cursor.lastrowid
    assert device_id is not None
    _append_history(conn, device_id, None, str(status), CREATED_REASON, now)
    return _require(conn, device_id)


def get_device(conn: sqlite3.Connection, ref: str | int) -> DeviceRow | None:
    """The device with numeric id ``ref`` (an int, or a string of digits) or session id ``ref``.

    A string is looked up as a session id first, then, if it is all digits, as an id.
    """
    if isinstance(ref, int):
        return _by_id(conn, ref)
    row = conn.execute(f"SELECT {_COLS} FROM devices WHERE session_id = ?", (ref,)).fetchone()
    if row is not None:
        return DeviceRow.from_values(row)
    if ref.isascii() and ref.isdigit():
        return _by_id(conn, int(ref))
    return None


def get_device_by_key_hash(conn: sqlite3.Connection, key_hash: str) -> DeviceRow | None:
    """The device whose ``api_key_hash`` equals ``key_hash`` (an index lookup, not a
    constant-time compare: the caller hashes first, so timing reveals nothing of the key)."""
    row = conn.execute(
        f"SELECT {_COLS} FROM devices WHERE api_key_hash = ?", (key_hash,)
    ).fetchone()
    return None if row is None else DeviceRow.from_values(row)


def all_devices(conn: sqlite3.Connection) -> list[DeviceRow]:
    """Every device, ordered by id (boot restore)."""
    return [
        DeviceRow.from_values(r) for r in conn.execute(f"SELECT {_COLS} FROM devices ORDER BY id")
    ]


def list_devices(
    conn: sqlite3.Connection,
    *,
    user_id: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[DeviceRow], int]:
    """One page of devices ordered by id, optionally filtered by owner and/or status, and the
    total number of devices matching the filters (for pagination)."""
    where: list[str] = []
    params: list[Any] = []
    if user_id is not None:
        where.append("user_id = ?")
        params.append(user_id)
    if status is not None:
        where.append("status = ?")
        params.append(str(status))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    total = conn.execute(f"SELECT count(*) FROM devices{clause}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {_COLS} FROM devices{clause} ORDER BY id LIMIT ? OFFSET ?",
        [*params, max(0, limit), max(0, offset)],
    ).fetchall()
    return [DeviceRow.from_values(r) for r in rows], int(total)


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of devices per status; statuses with no device are absent."""
    rows = conn.execute("SELECT status, count(*) FROM devices GROUP BY status")
    return {status: int(n) for status, n in rows}


def update_device(conn: sqlite3.Connection, device_id: int, **fields: Any) -> DeviceRow:
    """Set the given columns of a device (any ``DeviceRow`` field but ``id`` and
    ``created_at``) and return the updated row. Nothing is set implicitly: pass
    ``updated_at=now`` where the change should show in ``updatedAt``.

    Error handling: ``NotFound`` if there is no such device; ``Conflict`` if the new ``alias``
    (per user), ``session_id`` or ``api_key_hash`` is taken; ``TypeError`` for an unknown field.
    """
    if fields:
        return _update(conn, device_id, fields)
    return _require(conn, device_id)


def record_transition(
    conn: sqlite3.Connection,
    device_id: int,
    *,
    from_status: str | None,
    to_status: str,
    reason: str | None,
    at: str,
    **extra_fields: Any,
) -> DeviceRow:
    """Move a device to ``to_status`` and log it: sets ``status``, ``status_reason = reason``,
    ``updated_at = at`` and any ``extra_fields`` (``paired``, ``last_connection``, ``jid``,
    ``push_name``, ...), and appends the history row ``(from_status, to_status, reason, at)``.

    ``from_status`` is recorded as given; it is not checked against the stored status (the
    actor owns the state).

    Error handling: ``NotFound`` if there is no such device (nothing written); ``TypeError`` for
    an unknown field.
    """
    fields = {**extra_fields, "status": str(to_status), "status_reason": reason, "updated_at": at}
    row = _update(conn, device_id, fields)
    _append_history(
        conn,
        device_id,
        None if from_status is None else str(from_status),
        str(to_status),
        reason,
        at,
    )
    return row


def history(conn: sqlite3.Connection, device_id: int) -> list[HistoryRow]:
    """The device's status changes, oldest first (empty for an unknown device)."""
    rows = conn.execute(
        "SELECT from_status, to_status, reason, at FROM state_history"
        " WHERE device_id = ? ORDER BY id",
        (device_id,),
    )
    return [HistoryRow.from_row(r) for r in rows]


def increment_stats(
    conn: sqlite3.Connection, device_id: int, *, sent: int = 0, received: int = 0, at: str
) -> DeviceRow:
    """Add to the message counters and set ``last_activity = at``.

    Error handling: ``NotFound`` if there is no such device.
    """
    rows = conn.execute(
        "UPDATE devices SET messages_sent = messages_sent + ?,"
        f" messages_received = messages_received + ?, last_activity = ? WHERE id = ? RETURNING {_COLS}",
        (sent, received, at, device_id),
    ).fetchall()
    if not rows:
        raise NotFound(f"device {device_id} not found")
    return DeviceRow.from_values(rows[0])


def delete_device(conn: sqlite3.Connection, device_id: int) -> bool:
    """Remove the device and, by cascade, its settings, history, credentials, messages and
    webhook outbox. Returns False if there was no such device (idempotent)."""
    return conn.execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount > 0


# -- internals ---------------------------------------------------------------------------------


def _by_id(conn: sqlite3.Connection, device_id: int) -> DeviceRow | None:
    row = conn.execute(f"SELECT {_COLS} FROM devices WHERE id = ?", (device_id,)).fetchone()
    return None if row is None else DeviceRow.from_values(row)


def _require(conn: sqlite3.Connection, device_id: int) -> DeviceRow:
    row = _by_id(conn, device_id)
    if row is None:
        raise NotFound(f"device {device_id} not found")
    return row


def _update(conn: sqlite3.Connection, device_id: int, fields: dict[str, Any]) -> DeviceRow:
    """Set ``fields`` and return the row as it is afterwards (one statement, ``RETURNING``)."""
    unknown = set(fields) - MUTABLE_DEVICE_FIELDS
    if unknown:
        raise TypeError(f"unknown or read-only device fields: {', '.join(sorted(unknown))}")
    # Column names come from the fixed set above, never from input.
    assignments = ", ".join(f"{name} = ?" for name in fields)
    values = [_column_value(v) for v in fields.values()]
    try:
        rows = conn.execute(
            f"UPDATE devices SET {assignments} WHERE id = ? RETURNING {_COLS}",
            [*values, device_id],
        ).fetchall()
    except sqlite3.IntegrityError as exc:
        raise translate_integrity_error(exc) from None
    if not rows:
        raise NotFound(f"device {device_id} not found")
    return DeviceRow.from_values(rows[0])


def _column_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)  # a StrEnum member (Status) is stored as its plain value
    return value


def _append_history(
    conn: sqlite3.Connection,
    device_id: int,
    from_status: str | None,
    to_status: str,
    reason: str | None,
    at: str,
) -> None:
    conn.execute(
        "INSERT INTO state_history (device_id, from_status, to_status, reason, at)"
        " VALUES (?, ?, ?, ?, ?)",
        (device_id, from_status, to_status, reason, at),
    )
