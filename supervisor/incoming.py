"""An incoming message as a device stores and publishes it (the actor's receive path).

:func:`payload` is the event an engine's :class:`~supervisor.engine.MessageReceived` becomes:
``message_received``, or ``message_undecryptable`` for a message the device could not decrypt.
:func:`store` writes it to the ``messages`` table with its kind, its content fields (the
``message_received`` content fields as JSON, with ``quoted`` and ``pushName``), the id of
the message it quotes and the engine's reference to its media file (never published), and says how much it adds to ``messagesReceived``: 1 for an incoming
message, 0 for one the account sent and for reactions, edits, revokes, poll votes and
undecryptable messages (they act on a message or stand for one; an undecryptable message that
arrives again decrypted is counted then).
"""

from __future__ import annotations

import storage
from common.clock import iso
from storage.interface import JsonObject
from storage.message_interface import MessageRepository

from . import engine as eng
from . import message_content as mc
from .payloads import MessageReceived, MessageUndecryptable, content_wire, converter


def payload(ev: eng.MessageReceived, at: str) -> MessageReceived | MessageUndecryptable:
    """The event ``ev`` is published as; ``at`` stands in for a missing timestamp."""
    timestamp = iso(ev.timestamp) if ev.timestamp else at
    if isinstance(ev.content, mc.Undecryptable):
        return MessageUndecryptable(
            message_id=ev.message_id, sender=ev.sender, chat=ev.chat, is_group=ev.is_group,
            from_me=ev.from_me, timestamp=timestamp, reason=ev.content.reason,
            sender_lid=ev.sender_lid, sender_pn=ev.sender_pn, push_name=ev.push_name,
        )
    return MessageReceived(
        message_id=ev.message_id, sender=ev.sender, chat=ev.chat, text=ev.text,
        is_group=ev.is_group, from_me=ev.from_me, timestamp=timestamp,
        sender_lid=ev.sender_lid, sender_pn=ev.sender_pn, content=ev.content,
        quoted=ev.quoted, push_name=ev.push_name,
    )


def stored_content(ev: eng.MessageReceived) -> JsonObject:
    """The content fields kept with the message (the shape of ``message_received``'s)."""
    fields: JsonObject = content_wire(converter, ev.content)
    fields["quoted"] = None if ev.quoted is None else converter.unstructure(ev.quoted)
    fields["pushName"] = ev.push_name
    return fields


def store(messages: MessageRepository, device_id: int, ev: eng.MessageReceived,
          at: str) -> int | None:
    """Store ``ev``; return what it adds to ``messagesReceived``, or None when the device
    has it already (a redelivery: nothing written, nothing to publish).

    Error handling: ``storage.NotFound`` if the device is gone; nothing else of its own.
    """
    quoted = None if ev.quoted is None else ev.quoted.message_id
    content = stored_content(ev)
    try:
        messages.insert(
            device_id, message_id=ev.message_id, sender=ev.sender, chat=ev.chat,
            direction="out" if ev.from_me else "in", text=ev.text, status="received", at=at,
            type=ev.content.type, content=content, quoted=quoted, media_ref=ev.media_ref,
        )
    except storage.Conflict:
        undecryptable = isinstance(ev.content, mc.Undecryptable)
        if undecryptable or not messages.decrypted(
            device_id, ev.message_id, text=ev.text, type=ev.content.type, content=content,
            quoted=quoted, media_ref=ev.media_ref,
        ):
            return None
    return 0 if ev.from_me or not mc.counted(ev.content) else 1
