"""Tracked sends in SQLite: the ``sends`` repository, what the outbound queue keeps on disk.

A send is stored when the device accepts it, before anything leaves (``state`` ``queued``); it is
marked ``sending`` in its own transaction just before the engine is asked to send it, and ``done``
once the engine answered (``status`` ``sent`` with WhatsApp's id) or it failed (``status``
``failed`` with a ``reason``). After a crash the queued rows are the queue, in ``seq`` order, and
a row still ``sending`` is one whose fate is unknown: it is failed (``interrupted``), never sent
again, so no send goes out twice. The ``Idempotency-Key`` of a request is unique per device and
kept with the row, so a retry finds the send it made, across restarts too. ``payload`` is the
message itself as JSON (what kind, its content, the message it quotes or acts on), so a queued
send of any kind survives a restart.

Bound to the database thread's connection and called inside ``Database.run``.
"""

from __future__ import annotations

import json
import sqlite3

import attrs
import sqlite_utils

from storage._sql import names_nothing, translate_integrity_error
from storage.models import SendRow

_COLS = (
    "device_id, message_id, idempotency_key, chat, text, origin, state, status, reason, wa_id,"
    " created_at, accepted_epoch, expires_epoch, stuck, payload"
)


def _row(values: tuple[object, ...]) -> SendRow:
    (device_id, message_id, key, chat, text, origin, state, status, reason, wa_id, created_at,
     accepted, expires, stuck, payload) = values
    return SendRow(
        device_id=int(str(device_id)), message_id=str(message_id),
        idempotency_key=None if key is None else str(key), chat=str(chat), text=str(text),
        origin=str(origin), state=str(state), status=str(status),
        reason=None if reason is None else str(reason), wa_id=None if wa_id is None else str(wa_id),
        created_at=str(created_at), accepted_epoch=float(str(accepted)),
        expires_epoch=float(str(expires)), stuck=bool(stuck),
        payload=None if payload is None else json.loads(str(payload)),
    )


@attrs.define(eq=False)
class SqliteSends:
    """The ``sends`` table, unique per ``(device_id, message_id)`` and per
    ``(device_id, idempotency_key)``."""

    _db: sqlite_utils.Database

    def insert(self, row: SendRow) -> None:
        """Store a new send.

        Error handling: ``Conflict`` (``field`` ``message_id`` or ``idempotency_key``) if the
        device has that id or key already; ``NotFound`` if there is no such device.
        """
        values = attrs.astuple(row, recurse=False)[:-1]
        payload = None if row.payload is None else json.dumps(row.payload, ensure_ascii=False)
        try:
            self._db.conn.execute(
                f"INSERT INTO sends ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, payload),
            )
        except sqlite3.IntegrityError as exc:
            raise translate_integrity_error(exc) from None

    def by_key(self, device_id: int, key: str) -> SendRow | None:
        """The device's send made with this idempotency key, or None."""
        found = self._db.conn.execute(
            f"SELECT {_COLS} FROM sends WHERE device_id = ? AND idempotency_key = ?",
            (device_id, key),
        ).fetchone()
        return None if found is None else _row(found)

    def get(self, device_id: int, message_id: str) -> SendRow | None:
        """The device's send with this (wasup) message id, or None (also for an id holding a
        NUL: :func:`storage._sql.names_nothing`)."""
        if names_nothing(message_id):
            return None
        found = self._db.conn.execute(
            f"SELECT {_COLS} FROM sends WHERE device_id = ? AND message_id = ?",
            (device_id, message_id),
        ).fetchone()
        return None if found is None else _row(found)

    def by_wa_id(self, device_id: int, wa_id: str) -> SendRow | None:
        """The device's send WhatsApp knows by ``wa_id``, or None (a message sent elsewhere;
        an id holding a NUL: :func:`storage._sql.names_nothing`)."""
        if names_nothing(wa_id):
            return None
        found = self._db.conn.execute(
            f"SELECT {_COLS} FROM sends WHERE device_id = ? AND wa_id = ?", (device_id, wa_id)
        ).fetchone()
        return None if found is None else _row(found)

    def open(self, device_id: int) -> list[SendRow]:
        """The device's sends not done yet (``queued`` and ``sending``), in queue order."""
        rows = self._db.conn.execute(
            f"SELECT {_COLS} FROM sends WHERE device_id = ? AND state != 'done' ORDER BY seq",
            (device_id,),
        ).fetchall()
        return [_row(r) for r in rows]

    def update(
        self,
        device_id: int,
        message_id: str,
        *,
        state: str,
        status: str | None = None,
        reason: str | None = None,
        wa_id: str | None = None,
    ) -> None:
        """Move a send on: its ``state``, and its ``status``, ``reason``, ``wa_id`` when given."""
        self._db.conn.execute(
            "UPDATE sends SET state = ?, status = COALESCE(?, status), reason = COALESCE(?, reason),"
            " wa_id = COALESCE(?, wa_id) WHERE device_id = ? AND message_id = ?",
            (state, status, reason, wa_id, device_id, message_id),
        )

    def mark_stuck(self, device_id: int, message_id: str) -> None:
        """Record that ``message_stuck`` was raised for this send (it is raised once)."""
        self._db.conn.execute(
            "UPDATE sends SET stuck = 1 WHERE device_id = ? AND message_id = ?",
            (device_id, message_id),
        )
