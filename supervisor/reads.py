"""Marking a chat read: read receipts to WhatsApp, then the chat's read mark in storage.

``POST .../chats/{chatId}/read`` comes here through the device's actor (so it never races
the device's other work)::

    count = await mark_chat_read(ctx.db, session, device_id, "1555...@s.whatsapp.net")

Every incoming message of the chat above its read mark (``storage.reads``), the newest
:data:`READ_BATCH` of them at most, gets a read receipt through
:meth:`~supervisor.engine.EngineSession.mark_read` (in a group, naming each message's sender
as WhatsApp needs), and only once the engine took them the mark moves up to the newest: a
failed call marks nothing, and the next one sends them again. Older messages beyond the batch
are marked read with it, without a receipt of their own (as the phone does for a chat it
never scrolled back through).

Error handling: the engine's :class:`~supervisor.errors.EngineError` propagates (the caller
maps a recoverable one to "not connected"); storage errors propagate.
"""

from __future__ import annotations

import storage
from common.clock import now_iso

from .engine import EngineSession
from .jid import InvalidJid, Jid, JidKind

#: Most messages one call sends read receipts for (the newest unread ones).
READ_BATCH = storage.UNREAD_CAP


def is_group(chat: str) -> bool:
    """Whether ``chat`` is a group's JID (its receipts name each message's sender)."""
    try:
        return Jid.parse(chat).kind is JidKind.GROUP
    except InvalidJid:
        return False


async def mark_chat_read(
    db: storage.Store, session: EngineSession, device_id: int, chat: str
) -> int:
    """Send read receipts for the chat's unread incoming messages and move its read mark;
    how many messages were marked (0: nothing was unread, nothing sent)."""
    unread = await db.run(lambda r: r.reads.unread(device_id, chat, limit=READ_BATCH))
    if not unread:
        return 0
    group = is_group(chat)
    await session.mark_read(
        chat, [(m.message_id, m.sender if group else None) for m in unread]
    )
    newest, at = unread[-1].row, now_iso()
    await db.run(lambda r: r.reads.mark(device_id, chat, newest, at))
    return len(unread)
