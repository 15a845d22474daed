"""Messages in PostgreSQL: SQLite's repository (:mod:`storage.messages`) with its one plain
sqlite-utils query written here."""

from __future__ import annotations

import attrs

from storage.messages import _COLS, SqliteMessages
from storage.models import MessageRow
from storage.pg.sql import pg_of


@attrs.define(eq=False)
class PgMessages(SqliteMessages):
    """The ``messages`` table, unique per ``(device_id, message_id)``."""

    def recent(self, device_id: int, chat: str, limit: int = 20) -> list[MessageRow]:
        """The last ``limit`` messages of one chat, oldest first."""
        rows = pg_of(self._db).execute(
            f"SELECT {_COLS} FROM (SELECT * FROM messages WHERE device_id = ? AND chat = ?"
            " ORDER BY id DESC LIMIT ?) AS recent ORDER BY id",
            (device_id, chat, max(0, limit)),
        ).fetchall()
        return [MessageRow(*r) for r in rows]  # type: ignore[arg-type]
