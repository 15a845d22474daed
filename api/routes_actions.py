"""Actions on messages and chats (under ``/api/whatsapp``): react, edit, revoke, mark read.

::

    POST   /devices/{deviceId}/messages/{messageId}/reaction  {"emoji": "👍"}   ("" removes it)
    PATCH  /devices/{deviceId}/messages/{messageId}           {"text": "new text"}
    DELETE /devices/{deviceId}/messages/{messageId}           (revoke: deleted for everyone)
        -> 200 {"success": true, "data": {"messageId", "to", "status": "sent", "timestamp"}}
        -> 202 the same with "status": "pending" (queued: paced, or waiting for the connection)
    POST   /devices/{deviceId}/chats/{chatId}/read
        -> 200 {"success": true, "data": {"chatId", "read": <messages marked read>}}

The operator token or the device's own API key may call them all. ``messageId`` is wasup's id
of a message (``msg_...`` for the device's own sends, WhatsApp's id for the others) or
WhatsApp's id of an own send. A reaction, an edit and a revoke are sends of their own: they go
through the device's outbound queue (:mod:`supervisor.outbound`) like any message, answer the
new message's id, raise ``message_sent`` of their type and ``message_status`` events, and
change their target once WhatsApp took them (the history shows ``reactions``, ``edited``,
``revoked``). ``chatId`` is as in the history routes; marking a chat read sends read receipts
for its incoming messages since the last time (see :mod:`supervisor.reads`).

Errors: 400 INVALID_REQUEST naming the field (``emoji``: one line of at most
:data:`EMOJI_MAX` characters; ``text``: as a send's text; ``chatId``; ``body``); 404
DEVICE_NOT_FOUND for an unknown device, NOT_FOUND for a message the device does not have;
409 DEVICE_CONFLICT, saying why, for a message that has not left yet (or failed), an edit or
revoke of someone else's message, an edit of a kind without text or after WhatsApp's
15-minute window, an action on a revoked message or on an action, and when the device does
not take sends (or, to mark a chat read, is not connected); 429 when its outbound queue is
full; 502 ENGINE_ERROR when WhatsApp refuses read receipts.
"""

from __future__ import annotations

from quart import Blueprint, Response

from api.auth import resolve_device
from api.routes_devices import ok
from api.routes_history import canonical_chat
from api.state import current_state

bp = Blueprint("actions", __name__)


@bp.post("/devices/<device_id>/chats/<chat_id>/read")
async def read_chat(device_id: str, chat_id: str) -> Response:
    row = await resolve_device(device_id)
    chat = canonical_chat(chat_id)
    count = await current_state().sup.mark_read(str(row.id), chat)
    return ok({"chatId": chat, "read": count}, "Chat marked read.")
