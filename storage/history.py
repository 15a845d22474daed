"""Message history: the read queries of the ``messages`` table (chats, pages) and its retention.

Synopsis::

    page = await db.run(lambda r: r.message_history.page(device_id, chat, limit=50))
    page.items, page.next_before          # newest first; pass next_before back as ``before``
    chats = await db.run(lambda r: r.message_history.chats(device_id, limit=20))
    deleted = await db.run(lambda r: r.message_history.prune_older(cutoff_iso, limit=500))

Every query here is a keyset query on an index, so a page costs the same however many messages
are stored (``bench/messages.py`` measures it):

- a chat's messages come from ``messages_chat (device_id, chat, id)``, newest first (``id``
  order is the order wasup stored them, which is ``at`` order: ``at`` is the storage time). A
  page starts below the cursor's id; ``since``/``until`` become id bounds through
  ``messages_at (at)`` (two index lookups), then also filter the rows themselves.
  ``from_me`` and ``type`` filter the rows the index walk meets: a page of a rare value may
  walk further.
- the chat list walks the distinct chats of a device on ``messages_chat`` (one index seek per
  chat, a "skip scan"), takes each chat's newest message (one seek), and orders them newest
  first; its cost grows with the number of chats, not of messages. The cursor is the id of the
  last chat's newest message: a chat that gets a new message meanwhile moves to the top.
- a chat's unread count is the incoming messages (reactions, edits, revokes, poll votes and
  undecryptable messages aside) after both the chat's read mark (``storage.reads``) and the
  device's last outgoing message (found on the partial index ``messages_chat_out``; an answer
  marks the chat read, as on the phone), counted on the partial index
  ``messages_chat_unread`` up to :data:`UNREAD_CAP`.
- retention deletes in small batches on ``messages_at`` (older than a date) and on
  ``messages_device (device_id, id)`` (beyond a count per device), so each job holds the
  single writer briefly.

Cursors are plain ids here; the API makes them opaque. Bound to the database thread's
connection and called inside ``Database.run``, as every repository.
"""

from __future__ import annotations

import attrs
import sqlite_utils

from storage.models import MessageRow

#: Most incoming messages counted as unread in one chat (the count says "at least" beyond it).
UNREAD_CAP = 1000

_COLS = "device_id, message_id, chat, direction, text, status, at, sender, type, content, quoted"


@attrs.frozen
class MessagePage:
    """One page of a chat's messages, newest first; ``next_before`` is the cursor of the next
    (older) page, None when this page is the last."""

    items: tuple[MessageRow, ...]
    next_before: int | None


@attrs.frozen
class ChatSummary:
    """A chat of a device: its newest message and how many incoming messages follow its read
    mark and the device's last outgoing message (at most :data:`UNREAD_CAP`)."""

    chat: str
    last_message: MessageRow
    unread: int
    #: The chat list's cursor value of this chat (its newest message's row id).
    key: int


@attrs.frozen
class ChatPage:
    """One page of a device's chats, most recent first; ``next_before`` as in MessagePage."""

    items: tuple[ChatSummary, ...]
    next_before: int | None


@attrs.define(eq=False)
class SqliteMessageHistory:
    """History reads and retention over the ``messages`` table (see the module doc)."""

    _db: sqlite_utils.Database

    def page(
        self,
        device_id: int,
        chat: str,
        *,
        before: int | None = None,
        limit: int = 50,
        since: str | None = None,
        until: str | None = None,
        from_me: bool | None = None,
        type: str | None = None,
    ) -> MessagePage:
        """Up to ``limit`` messages of one chat older than the cursor ``before``, newest first,
        stored at ``since`` or later and at ``until`` or earlier (ISO strings as stored),
        sent by the device (``from_me``) or not, of one ``type`` (``text``, ``image``...).

        Error handling: nothing of its own (an unknown device or chat is an empty page).
        """
        conn = self._db.conn
        where = ["device_id = ?", "chat = ?"]
        args: list[object] = [device_id, chat]
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if since is not None:
            # The first message stored at `since` or later bounds the walk from below.
            row = conn.execute(
                "SELECT id FROM messages WHERE at >= ? ORDER BY at, id LIMIT 1", (since,)
            ).fetchone()
            if row is None:
                return MessagePage((), None)
            where += ["id >= ?", "at >= ?"]
            args += [row[0], since]
        if until is not None:
            row = conn.execute(
                "SELECT id FROM messages WHERE at <= ? ORDER BY at DESC, id DESC LIMIT 1",
                (until,),
            ).fetchone()
            if row is None:
                return MessagePage((), None)
            where += ["id <= ?", "at <= ?"]
            args += [row[0], until]
        if from_me is not None:
            where.append("direction = ?")
            args.append("out" if from_me else "in")
        if type is not None:
            where.append("type = ?")
            args.append(type)
        # One more row than asked says whether an older page exists.
        rows = conn.execute(
            f"SELECT id, {_COLS} FROM messages INDEXED BY messages_chat"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        items = tuple(MessageRow(*r[1:]) for r in rows[:limit])
        next_before = rows[limit - 1][0] if len(rows) > limit else None
        return MessagePage(items, next_before)

    def chats(self, device_id: int, *, before: int | None = None, limit: int = 50) -> ChatPage:
        """Up to ``limit`` chats of the device, the one with the newest message first, each
        with its newest message and unread count; ``before``: the cursor of the previous page.

        Error handling: nothing of its own (an unknown device has no chats).
        """
        conn = self._db.conn
        # Skip scan over messages_chat: each step seeks the next distinct chat, then its
        # newest message; one row per chat, whatever the number of messages.
        newest = conn.execute(
            """
            WITH RECURSIVE c(chat) AS (
                SELECT (SELECT chat FROM messages WHERE device_id = ?1 ORDER BY chat LIMIT 1)
                UNION ALL
                SELECT (SELECT m.chat FROM messages AS m WHERE m.device_id = ?1
                        AND m.chat > c.chat ORDER BY m.chat LIMIT 1)
                FROM c WHERE c.chat IS NOT NULL
            )
            SELECT (SELECT m.id FROM messages AS m WHERE m.device_id = ?1 AND m.chat = c.chat
                    ORDER BY m.id DESC LIMIT 1) AS last
            FROM c WHERE c.chat IS NOT NULL
            """,
            (device_id,),
        ).fetchall()
        keys = sorted((r[0] for r in newest if before is None or r[0] < before), reverse=True)
        chosen = keys[:limit]
        items: list[ChatSummary] = []
        for key in chosen:
            row = conn.execute(f"SELECT {_COLS} FROM messages WHERE id = ?", (key,)).fetchone()
            last = MessageRow(*row)
            items.append(ChatSummary(last.chat, last, self._unread(device_id, last.chat), key))
        next_before = chosen[-1] if len(keys) > limit else None
        return ChatPage(tuple(items), next_before)

    def _unread(self, device_id: int, chat: str) -> int:
        """Incoming messages after the chat's read mark and the device's last outgoing message
        (capped)."""
        # The read mark is one primary-key lookup, the last outgoing message one seek on the
        # partial index of outgoing messages; what follows both is counted on the partial index
        # of unread-able incoming messages without reading a row.
        row = self._db.conn.execute(
            """
            SELECT COUNT(*) FROM (
                SELECT 1 FROM messages INDEXED BY messages_chat_unread
                WHERE device_id = ?1 AND chat = ?2 AND direction = 'in'
                    AND type NOT IN ('reaction', 'edit', 'revoke', 'poll_vote', 'undecryptable')
                    AND id > coalesce((SELECT MAX(id) FROM messages INDEXED BY messages_chat_out
                                       WHERE device_id = ?1 AND chat = ?2 AND direction = 'out'), 0)
                    AND id > coalesce((SELECT last_id FROM chat_reads
                                       WHERE device_id = ?1 AND chat = ?2), 0)
                LIMIT ?3) AS unread
            """,
            (device_id, chat, UNREAD_CAP),
        ).fetchone()
        return int(row[0])

    def prune_older(self, cutoff: str, *, limit: int) -> int:
        """Delete up to ``limit`` messages (any device) stored before ``cutoff`` (ISO, as
        stored), oldest first; how many were deleted.

        Error handling: nothing of its own.
        """
        cur = self._db.conn.execute(
            "DELETE FROM messages WHERE id IN"
            " (SELECT id FROM messages INDEXED BY messages_at WHERE at < ? ORDER BY at LIMIT ?)",
            (cutoff, limit),
        )
        return cur.rowcount

    def prune_beyond(self, device_id: int, keep: int, *, limit: int) -> int:
        """Delete up to ``limit`` of the device's oldest messages beyond its newest ``keep``;
        how many were deleted.

        Error handling: nothing of its own.
        """
        conn = self._db.conn
        # The newest message that goes: the (keep+1)-th newest, an index-only walk of `keep`.
        row = conn.execute(
            "SELECT id FROM messages INDEXED BY messages_device WHERE device_id = ?"
            " ORDER BY id DESC LIMIT 1 OFFSET ?",
            (device_id, keep),
        ).fetchone()
        if row is None:
            return 0
        cur = conn.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages INDEXED BY"
            " messages_device WHERE device_id = ? AND id <= ? ORDER BY id LIMIT ?)",
            (device_id, row[0], limit),
        )
        return cur.rowcount

    def devices(self) -> list[int]:
        """The ids of the devices that have stored messages (retention walks them).

        Error handling: nothing of its own.
        """
        # A skip scan on messages_device: one seek per device.
        rows = self._db.conn.execute(
            """
            WITH RECURSIVE d(id) AS (
                SELECT (SELECT device_id FROM messages ORDER BY device_id LIMIT 1)
                UNION ALL
                SELECT (SELECT device_id FROM messages WHERE device_id > d.id
                        ORDER BY device_id LIMIT 1)
                FROM d WHERE d.id IS NOT NULL
            )
            SELECT id FROM d WHERE id IS NOT NULL
            """
        ).fetchall()
        return [r[0] for r in rows]
