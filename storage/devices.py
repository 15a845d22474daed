"""Devices and their state history in SQLite: the ``devices`` and ``history`` repositories.

Both are bound to the database thread's connection and run inside ``Database.run``, which
supplies the transaction::

    row = await db.run(lambda repos: repos.devices.record_transition(
        device_id, from_status="connecting", to_status="connected",
        reason="engine_connected", at=now, paired=True, last_connection=now))

Several calls in one job are atomic together. Nothing here commits.

sqlite-utils serves the rare and the listing work (delete, pages, the full list at boot, the
history). The paths that run per device, per event or per request keep prepared SQL: creating a
device, a status change with its history row, the message counters, and the lookups every API
request makes. sqlite-utils introspects the schema on each call (``sqlite_master`` and
``PRAGMA table_info``) and wraps each write in a savepoint with a fresh name; measured in one
transaction on the same machine, a device insert costs 65 µs prepared against 403 µs through
``Table.insert``, a history insert 17 µs against 207 µs, an update 122 µs against 1.4 ms through
``Table.update``, a lookup by id 16 µs against 50 µs through ``rows_where``.
"""

from __future__ import annotations

import sqlite3

import attrs
import sqlite_utils
from sqlite_utils.db import NotFoundError

from storage._sql import translate_integrity_error
from storage.errors import NotFound
from storage.interface import ColumnValue
from storage.models import (
    DEVICE_COLUMNS,
    MUTABLE_DEVICE_FIELDS,
    DeviceRow,
    HistoryEntry,
    HistoryRow,
)

_COLS = ", ".join(DEVICE_COLUMNS)

#: ``reason`` of the history row ``insert`` writes (``from_status`` None).
CREATED_REASON = "created"

_HISTORY_COLS = "from_status, to_status, reason, at"


@attrs.define(eq=False)
class SqliteHistory:
    """The ``state_history`` table: one row per status change of a device."""

    _db: sqlite_utils.Database

    def of(self, device_id: int) -> list[HistoryRow]:
        """The device's status changes, oldest first (empty for an unknown device)."""
        rows = self._db.table("state_history").rows_where(
            "device_id = ?", [device_id], order_by="id", select=_HISTORY_COLS
        )
        return [HistoryRow.from_row(r) for r in rows]

    def page(self, device_id: int, before: int | None, limit: int) -> list[HistoryEntry]:
        """Up to ``limit`` of the device's status changes, newest first, older than the entry
        ``before`` (from the newest when None)."""
        where, params = "device_id = ?", [device_id]
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        rows = self._db.table("state_history").rows_where(
            where, params, order_by="id DESC", select="id, " + _HISTORY_COLS,
            limit=max(0, limit),
        )
        return [HistoryEntry(r["id"], HistoryRow.from_row(r)) for r in rows]

    def append(
        self,
        device_id: int,
        from_status: str | None,
        to_status: str,
        reason: str | None,
        at: str,
    ) -> None:
        """Log one status change (prepared SQL: written with every transition)."""
        self._db.conn.execute(
            "INSERT INTO state_history (device_id, from_status, to_status, reason, at)"
            " VALUES (?, ?, ?, ?, ?)",
            (device_id, from_status, to_status, reason, at),
        )


@attrs.define(eq=False)
class SqliteDevices:
    """The ``devices`` table; a status change also appends to :class:`SqliteHistory`."""

    _db: sqlite_utils.Database
    _history: SqliteHistory

    _INSERT = (
        "INSERT INTO devices (session_id, user_id, alias, business_type, phone_number,"
        " description, status, created_at, updated_at, api_key_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def _inserted_id(self, cursor: sqlite3.Cursor) -> int:
        """The id of the device ``_INSERT`` just stored."""
        device_id = cursor.lastrowid
        assert device_id is not None
        return device_id

    def insert(
        self,
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
        # Prepared SQL: pairing 10,000 devices inserts 10,000 rows, and ``Table.insert`` costs
        # 403 µs a row against 65 µs prepared (measured in one transaction): with it the
        # database thread's CPU time in bench/supervisor_scale.py more than doubled.
        try:
            cursor = self._db.conn.execute(
                self._INSERT,
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
        device_id = self._inserted_id(cursor)
        self._history.append(device_id, None, str(status), CREATED_REASON, now)
        return self._require(device_id)

    def get(self, ref: str | int) -> DeviceRow | None:
        """The device with numeric id ``ref`` (an int, or a string of digits) or session id ``ref``.

        A string is looked up as a session id first, then, if it is all ASCII digits, as an id.
        """
        if isinstance(ref, int):
            return self._by_id(ref)
        # Prepared SQL: every API request resolves its device.
        row = self._db.conn.execute(
            f"SELECT {_COLS} FROM devices WHERE session_id = ?", (ref,)
        ).fetchone()
        if row is not None:
            return DeviceRow.from_values(row)
        if ref.isascii() and ref.isdigit():
            return self._by_id(int(ref))
        return None

    def get_by_key_hash(self, key_hash: str) -> DeviceRow | None:
        """The device whose ``api_key_hash`` equals ``key_hash`` (an index lookup, not a
        constant-time compare: the caller hashes first, so timing reveals nothing of the key)."""
        # Prepared SQL: every request with a device key authenticates here.
        row = self._db.conn.execute(
            f"SELECT {_COLS} FROM devices WHERE api_key_hash = ?", (key_hash,)
        ).fetchone()
        return None if row is None else DeviceRow.from_values(row)

    def all(self) -> list[DeviceRow]:
        """Every device, ordered by id (boot restore)."""
        rows = self._db.table("devices").rows_where(order_by="id", select=_COLS)
        return [DeviceRow.from_row(r) for r in rows]

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
        where: list[str] = []
        params: list[str] = []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        clause = " AND ".join(where) if where else None
        table = self._db.table("devices")
        total = table.count_where(clause, params)
        rows = table.rows_where(
            clause,
            params,
            order_by="id",
            select=_COLS,
            limit=max(0, int(limit)),
            offset=max(0, int(offset)),
        )
        return [DeviceRow.from_row(r) for r in rows], int(total)

    def count_by_status(self) -> dict[str, int]:
        """Number of devices per status; statuses with no device are absent."""
        # A grouped count: sqlite-utils has no call for it, only a plain query.
        rows = self._db.query("SELECT status, count(*) AS n FROM devices GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def update(self, device_id: int, **fields: ColumnValue) -> DeviceRow:
        """Set the given columns of a device (any ``DeviceRow`` field but ``id`` and
        ``created_at``) and return the updated row. Nothing is set implicitly: pass
        ``updated_at=now`` where the change should show in ``updatedAt``.

        Error handling: ``NotFound`` if there is no such device; ``Conflict`` if the new
        ``alias`` (per user), ``session_id`` or ``api_key_hash`` is taken; ``TypeError`` for an
        unknown field.
        """
        if fields:
            return self._update(device_id, fields)
        return self._require(device_id)

    def record_transition(
        self,
        device_id: int,
        *,
        from_status: str | None,
        to_status: str,
        reason: str | None,
        at: str,
        **extra_fields: ColumnValue,
    ) -> DeviceRow:
        """Move a device to ``to_status`` and log it: sets ``status``, ``status_reason =
        reason``, ``updated_at = at`` and any ``extra_fields`` (``paired``, ``last_connection``,
        ``jid``, ``push_name``, ...), and appends the history row ``(from_status, to_status,
        reason, at)``.

        ``from_status`` is recorded as given; it is not checked against the stored status (the
        actor owns the state).

        Error handling: ``NotFound`` if there is no such device (nothing written);
        ``TypeError`` for an unknown field.
        """
        fields: dict[str, ColumnValue] = {
            **extra_fields,
            "status": str(to_status),
            "status_reason": reason,
            "updated_at": at,
        }
        row = self._update(device_id, fields)
        self._history.append(
            device_id,
            None if from_status is None else str(from_status),
            str(to_status),
            reason,
            at,
        )
        return row

    def increment_stats(
        self, device_id: int, *, sent: int = 0, received: int = 0, at: str
    ) -> DeviceRow:
        """Add to the message counters and set ``last_activity = at``.

        Error handling: ``NotFound`` if there is no such device.
        """
        # Prepared SQL: an arithmetic update with RETURNING, once per message; sqlite-utils
        # has no equivalent.
        rows = self._db.conn.execute(
            "UPDATE devices SET messages_sent = messages_sent + ?,"
            " messages_received = messages_received + ?, last_activity = ?"
            f" WHERE id = ? RETURNING {_COLS}",
            (sent, received, at, device_id),
        ).fetchall()
        if not rows:
            raise NotFound(f"device {device_id} not found")
        return DeviceRow.from_values(rows[0])

    def delete(self, device_id: int) -> bool:
        """Remove the device and, by cascade, its settings, history, credentials, messages and
        webhook outbox. Returns False if there was no such device (idempotent)."""
        try:
            self._db.table("devices").delete(device_id)
        except NotFoundError:
            return False
        return True

    # -- internals -----------------------------------------------------------------------------

    def _by_id(self, device_id: int) -> DeviceRow | None:
        # Prepared SQL: the actor and the API look devices up by id all the time.
        row = self._db.conn.execute(
            f"SELECT {_COLS} FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
        return None if row is None else DeviceRow.from_values(row)

    def _require(self, device_id: int) -> DeviceRow:
        row = self._by_id(device_id)
        if row is None:
            raise NotFound(f"device {device_id} not found")
        return row

    def _update(self, device_id: int, fields: dict[str, ColumnValue]) -> DeviceRow:
        """Set ``fields`` and return the row as it is afterwards (one statement, ``RETURNING``).

        Prepared SQL: every transition runs this; ``Table.update`` takes five statements (a
        lookup, schema introspection, a savepoint) and no ``RETURNING`` (see the module doc).
        """
        unknown = set(fields) - MUTABLE_DEVICE_FIELDS
        if unknown:
            raise TypeError(f"unknown or read-only device fields: {', '.join(sorted(unknown))}")
        # Column names come from the fixed set above, never from input.
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [_column_value(v) for v in fields.values()]
        try:
            rows = self._db.conn.execute(
                f"UPDATE devices SET {assignments} WHERE id = ? RETURNING {_COLS}",
                [*values, device_id],
            ).fetchall()
        except sqlite3.IntegrityError as exc:
            raise translate_integrity_error(exc) from None
        if not rows:
            raise NotFound(f"device {device_id} not found")
        return DeviceRow.from_values(rows[0])


def _column_value(value: ColumnValue) -> ColumnValue:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)  # a StrEnum member (Status) is stored as its plain value
    return value
