"""Read marks in SQLite: the ``chat_reads`` repository, how far a device has read each chat.

Synopsis::

    unread = r.reads.unread(device_id, chat, limit=1000)   # oldest first, after the mark
    r.reads.mark(device_id, chat, unread[-1].row, at)      # everything up to it is read

A mark is the row id (in ``messages``) of the newest incoming message the device marked read
in that chat; every incoming message at or below it counts as read. Row ids only grow, so a
mark stays right when retention deletes older messages, and a mark never moves back. What is
unread is what the partial index ``messages_chat_unread`` holds above the mark: incoming
messages of their own (reactions, edits, revokes, poll votes and undecryptable messages are
not counted; see migration 6). The chat list's unread count (``storage.history``) reads the
same mark.

Bound to the database thread's connection and called inside ``Database.run``.
"""

from __future__ import annotations

import sqlite3

import attrs
import sqlite_utils

from storage._sql import translate_integrity_error


@attrs.frozen
class UnreadMessage:
    """An incoming message not marked read: its row id (the mark), WhatsApp's id and sender."""

    row: int
    message_id: str
    sender: str | None


@attrs.define(eq=False)
class SqliteReads:
    """The ``chat_reads`` table, one row per ``(device_id, chat)`` (see the module doc)."""

    _db: sqlite_utils.Database

    def mark_of(self, device_id: int, chat: str) -> int:
        """The chat's read mark (0: nothing marked read yet).

        Error handling: nothing of its own.
        """
        row = self._db.conn.execute(
            "SELECT last_id FROM chat_reads WHERE device_id = ? AND chat = ?", (device_id, chat)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def unread(self, device_id: int, chat: str, *, limit: int) -> list[UnreadMessage]:
        """The newest ``limit`` incoming messages of the chat above its read mark, oldest
        first.

        Error handling: nothing of its own (an unknown device or chat has none).
        """
        rows = self._db.conn.execute(
            """
            SELECT id, message_id, sender FROM (
                SELECT id, message_id, sender FROM messages INDEXED BY messages_chat_unread
                WHERE device_id = ?1 AND chat = ?2 AND direction = 'in'
                    AND type NOT IN ('reaction', 'edit', 'revoke', 'poll_vote', 'undecryptable')
                    AND id > coalesce((SELECT last_id FROM chat_reads
                                       WHERE device_id = ?1 AND chat = ?2), 0)
                ORDER BY id DESC LIMIT ?3) AS unread
            ORDER BY id
            """,
            (device_id, chat, limit),
        ).fetchall()
        return [UnreadMessage(int(r[0]), str(r[1]), None if r[2] is None else str(r[2]))
                for r in rows]

    def mark(self, device_id: int, chat: str, row: int, at: str) -> None:
        """Mark every incoming message of the chat up to row id ``row`` read (a mark below the
        stored one changes nothing); ``at``: when (ISO).

        Error handling: ``NotFound`` if there is no such device.
        """
        try:
            self._db.conn.execute(
                "INSERT INTO chat_reads (device_id, chat, last_id, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id, chat) DO UPDATE SET last_id = excluded.last_id,"
                " at = excluded.at WHERE excluded.last_id > chat_reads.last_id",
                (device_id, chat, row, at),
            )
        except sqlite3.IntegrityError as exc:
            raise translate_integrity_error(exc) from None
