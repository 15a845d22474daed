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
15-minute window, a revoke after WhatsApp's 2 days, an action on a revoked message or on an action, and when the device does
not take sends (or, to mark a chat read, is not connected); 429 when its outbound queue is
full; 502 ENGINE_ERROR when WhatsApp refuses read receipts.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from api.auth import resolve_device
from api.routes_devices import ok, read_body
from api.routes_history import canonical_chat
from api.state import current_state
from api.text import check_line, check_text
from api.validation import TEXT_MAX
from storage.models import DeviceRow
from supervisor.actions import action_target
from supervisor.errors import InvalidRequest
from supervisor.message_content import Edit, Reaction, Revoke
from supervisor.outgoing import Outgoing, Target

bp = Blueprint("actions", __name__)


@bp.post("/devices/<device_id>/chats/<chat_id>/read")
async def read_chat(device_id: str, chat_id: str) -> Response:
    row = await resolve_device(device_id)
    chat = canonical_chat(chat_id)
    count = await current_state().sup.mark_read(str(row.id), chat)
    return ok({"chatId": chat, "read": count}, "Chat marked read.")


#: Longest reaction accepted (an emoji with its modifiers; the simulator's bound too).
EMOJI_MAX = 32


def _only(body: Any, name: str) -> Any:
    """The value of ``name``, the only field of a JSON object body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    for key in sorted(body):
        if key != name:
            raise InvalidRequest(f"{key}: unknown field", field=key)
    if name not in body:
        raise InvalidRequest(f"{name}: is required", field=name)
    value = body[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: must be a string", field=name)
    return value


def reaction_request(body: Any) -> str:
    """The emoji of a reaction body (``""``: remove the device's reaction)."""
    emoji: str = _only(body, "emoji")
    check_line("emoji", emoji)
    if len(emoji) > EMOJI_MAX:
        raise InvalidRequest(f"emoji: must be at most {EMOJI_MAX} characters", field="emoji")
    if emoji and not emoji.strip():
        raise InvalidRequest("emoji: must be an emoji, or empty to remove the reaction",
                             field="emoji")
    return emoji


def edit_request(body: Any) -> str:
    """The new text of an edit body, checked as a send's text."""
    text: str = _only(body, "text")
    check_text("text", text)
    if not text.strip():
        raise InvalidRequest("text: must not be empty", field="text")
    if len(text) > TEXT_MAX:
        raise InvalidRequest(f"text: must be at most {TEXT_MAX} characters", field="text")
    return text


async def _act(row: DeviceRow, target: Target, content: Reaction | Edit | Revoke,
               done: str) -> Response:
    """Send the device's action on ``target`` through its outbound queue; 200 or 202."""
    result = await current_state().sup.send(
        str(row.id), target.chat, Outgoing(content, target=target), origin="api"
    )
    data = {"messageId": result["messageId"], "to": result["to"], "status": result["status"],
            "timestamp": result["timestamp"]}
    if data["status"] == "pending":
        return ok(data, "Queued; it goes out when the device may send.", status=202)
    return ok(data, done)


@bp.post("/devices/<device_id>/messages/<message_id>/reaction")
async def react(device_id: str, message_id: str) -> Response:
    row = await resolve_device(device_id)
    emoji = reaction_request(await read_body())
    target = await action_target(current_state().sup.db, row.id, message_id, "reaction")
    done = "Reaction sent." if emoji else "Reaction removed."
    return await _act(row, target, Reaction(target.wa_id, emoji), done)


@bp.patch("/devices/<device_id>/messages/<message_id>")
async def edit(device_id: str, message_id: str) -> Response:
    row = await resolve_device(device_id)
    text = edit_request(await read_body())
    target = await action_target(current_state().sup.db, row.id, message_id, "edit")
    return await _act(row, target, Edit(target.wa_id, text), "Message edited.")


@bp.delete("/devices/<device_id>/messages/<message_id>")
async def revoke(device_id: str, message_id: str) -> Response:
    row = await resolve_device(device_id)
    target = await action_target(current_state().sup.db, row.id, message_id, "revoke")
    return await _act(row, target, Revoke(target.wa_id), "Message deleted for everyone.")
