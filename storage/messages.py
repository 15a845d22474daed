"""Messages a device sent or received, in SQLite: the ``messages`` repository.

Kept for statistics, receipts and auto-reply context; bound to the database thread's connection
and called inside ``Database.run``. An insert and a receipt happen once per message, so they keep
prepared SQL: through ``Table.insert`` a message insert costs 127 µs against 13 µs prepared
(measured in one transaction on the same machine; sqlite-utils introspects the schema and opens a
savepoint on each call). The chat history for auto-reply is a plain query.
"""

from __future__ import annotations

import json
import sqlite3

import attrs
import sqlite_utils

from storage._sql import names_nothing, translate_integrity_error
from storage.interface import JsonObject
from storage.models import MessageRow

#: Receipt order; ``update_status`` never moves a message backwards along it (receipts can arrive
#: out of order). A status not listed here always applies.
STATUS_ORDER = {"pending": 0, "sent": 1, "delivered": 2, "read": 3, "played": 4}

_COLS = "device_id, message_id, chat, direction, text, status, at, sender, type, content, quoted"


@attrs.define(eq=False)
class SqliteMessages:
    """The ``messages`` table, unique per ``(device_id, message_id)``."""

    _db: sqlite_utils.Database

    def insert(
        self,
        device_id: int,
        *,
        message_id: str,
        chat: str,
        direction: str,
        text: str | None,
        status: str | None,
        at: str,
        sender: str | None = None,
        type: str = "text",
        content: JsonObject | None = None,
        quoted: str | None = None,
        media_ref: str | None = None,
    ) -> MessageRow:
        """Store one message (``direction`` ``"in"`` or ``"out"``) and return it; ``type`` is
        its kind, ``content`` its content fields (stored as JSON), ``quoted`` the id of the
        message it replies to, ``media_ref`` the engine's reference to its media file.

        Error handling: ``Conflict`` (``field="message_id"``) if the device has a message with
        this id already (a redelivery: nothing written); ``NotFound`` if there is no such device;
        ``sqlite3.IntegrityError`` for a bad ``direction``.
        """
        encoded = None if content is None else json.dumps(content, ensure_ascii=False)
        try:
            self._db.conn.execute(
                "INSERT INTO messages (device_id, message_id, chat, sender, direction, text,"
                " status, at, type, content, quoted, media_ref)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, message_id, chat, sender, direction, text, status, at, type,
                 encoded, quoted, media_ref),
            )
        except sqlite3.IntegrityError as exc:
            raise translate_integrity_error(exc) from None
        return MessageRow(
            device_id=device_id,
            message_id=message_id,
            chat=chat,
            direction=direction,
            text=text,
            status=status,
            at=at,
            sender=sender,
            type=type,
            content=encoded,
            quoted=quoted,
        )

    def decrypted(
        self,
        device_id: int,
        message_id: str,
        *,
        text: str | None,
        type: str,
        content: JsonObject | None,
        quoted: str | None,
        media_ref: str | None = None,
    ) -> bool:
        """Fill in a message stored as ``undecryptable`` that arrived again decrypted; False
        (nothing written) when the device has no undecryptable message with this id.

        Error handling: nothing of its own.
        """
        encoded = None if content is None else json.dumps(content, ensure_ascii=False)
        cursor = self._db.conn.execute(
            "UPDATE messages SET text = ?, type = ?, content = ?, quoted = ?, media_ref = ?"
            " WHERE device_id = ? AND message_id = ? AND type = 'undecryptable'",
            (text, type, encoded, quoted, media_ref, device_id, message_id),
        )
        return cursor.rowcount > 0

    def get(self, device_id: int, message_id: str) -> MessageRow | None:
        """The device's message with this id, or None (also for an id holding a NUL:
        :func:`storage._sql.names_nothing`)."""
        if names_nothing(message_id):
            return None
        row = self._db.conn.execute(
            f"SELECT {_COLS} FROM messages WHERE device_id = ? AND message_id = ?",
            (device_id, message_id),
        ).fetchone()
        return None if row is None else MessageRow(*row)

    def set_media_ref(self, device_id: int, message_id: str, media_ref: str) -> None:
        """Keep the engine's reference to the media file of an own send."""
        self._db.conn.execute(
            "UPDATE messages SET media_ref = ? WHERE device_id = ? AND message_id = ?",
            (media_ref, device_id, message_id),
        )

    def media_ref(self, device_id: int, message_id: str) -> str | None:
        """The engine's reference to the media file of the device's message, or None (no such
        message, no media, or none kept)."""
        row = self._db.conn.execute(
            "SELECT media_ref FROM messages WHERE device_id = ? AND message_id = ?",
            (device_id, message_id),
        ).fetchone()
        return None if row is None else row[0]

    def update_status(self, device_id: int, message_id: str, status: str) -> MessageRow | None:
        """Record a receipt. Returns the message as stored afterwards, or None if the device has
        no message with this id (e.g. one sent from the phone). A receipt older than the stored
        status (``delivered`` after ``read``) leaves the status unchanged."""
        current = self.get(device_id, message_id)
        if current is None:
            return None
        old = STATUS_ORDER.get(current.status or "")
        new = STATUS_ORDER.get(status)
        if old is not None and new is not None and new < old:
            return current
        self._db.conn.execute(
            "UPDATE messages SET status = ? WHERE device_id = ? AND message_id = ?",
            (status, device_id, message_id),
        )
        return attrs.evolve(current, status=status)

    def recent(self, device_id: int, chat: str, limit: int = 20) -> list[MessageRow]:
        """The last ``limit`` messages of one chat, oldest first (ready to use as a
        conversation)."""
        # The newest n in ascending order needs a subquery: a plain query, no table call fits.
        rows = self._db.query(
            f"SELECT {_COLS} FROM (SELECT * FROM messages WHERE device_id = ? AND chat = ?"
            " ORDER BY id DESC LIMIT ?) ORDER BY id",
            [device_id, chat, max(0, limit)],
        )
        return [MessageRow.from_row(r) for r in rows]
