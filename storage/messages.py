"""Messages a device sent or received: for statistics, receipts and auto-reply context.

Plain functions over a ``sqlite3.Connection``; call them inside ``Database.run``.
"""

from __future__ import annotations

import sqlite3

from storage._sql import translate_integrity_error
from storage.models import MessageRow

#: Receipt order; ``update_message_status`` never moves a message backwards along it
#: (receipts can arrive out of order). A status not listed here always applies.
STATUS_ORDER = {"pending": 0, "sent": 1, "delivered": 2, "read": 3, "played": 4}


def insert_message(
    conn: sqlite3.Connection,
    device_id: int,
    *,
    message_id: str,
    chat: str,
    direction: str,
    text: str | None,
    status: str | None,
    at: str,
    sender: str | None = None,
) -> MessageRow:
    """Store one message (``direction`` ``"in"`` or ``"out"``) and return it.

    Error handling: ``Conflict`` (``field="message_id"``) if the device has a message with
    this id already (a redelivery: nothing written); ``NotFound`` if there is no such device;
    ``sqlite3.IntegrityError`` for a bad ``direction``.
    """
    try:
        conn.execute(
            "INSERT INTO messages (device_id, message_id, chat, sender, direction, text,"
            " status, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, message_id, chat, sender, direction, text, status, at),
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
    )


def get_message(conn: sqlite3.Connection, device_id: int, message_id: str) -> MessageRow | None:
    row = conn.execute(
        "SELECT * FROM messages WHERE device_id = ? AND message_id = ?", (device_id, message_id)
    ).fetchone()
    return None if row is None else MessageRow.from_row(row)


def update_message_status(
    conn: sqlite3.Connection, device_id: int, message_id: str, status: str
) -> MessageRow | None:
    """Record a receipt. Returns the message as stored afterwards, or None if the device has no
    message with this id (e.g. one sent from the phone). A receipt older than the stored status
    (``delivered`` after ``read``) leaves the status unchanged."""
    current = get_message(conn, device_id, message_id)
    if current is None:
        return None
    old = STATUS_ORDER.get(current.status or "")
    new = STATUS_ORDER.get(status)
    if old is not None and new is not None and new < old:
        return current
    conn.execute(
        "UPDATE messages SET status = ? WHERE device_id = ? AND message_id = ?",
        (status, device_id, message_id),
    )
    return get_message(conn, device_id, message_id)


def recent_messages(
    conn: sqlite3.Connection, device_id: int, chat: str, limit: int = 20
) -> list[MessageRow]:
    """The last ``limit`` messages of one chat, oldest first (ready to use as a conversation)."""
    rows = conn.execute(
        "SELECT * FROM (SELECT * FROM messages WHERE device_id = ? AND chat = ?"
        " ORDER BY id DESC LIMIT ?) ORDER BY id",
        (device_id, chat, max(0, limit)),
    ).fetchall()
    return [MessageRow.from_row(r) for r in rows]
