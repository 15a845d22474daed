"""Message history (under ``/api/whatsapp``): a device's chats, a chat's messages, one message.

::

    GET /devices/{deviceId}/chats?before=&limit=
        -> 200 {"success": true, "data": [{"chatId", "isGroup", "lastMessage", "unreadCount"}],
                "pagination": {"limit", "hasMore", "nextCursor"}}
    GET /devices/{deviceId}/chats/{chatId}/messages?before=&limit=&since=&until=&fromMe=&type=
        -> 200 {"success": true, "data": [<message>, ...], "pagination": {...}}  newest first
    GET /devices/{deviceId}/messages/{messageId}
        -> 200 {"success": true, "data": <message>}     404 NOT_FOUND if not stored

A message is ``{"messageId", "chatId", "from", "fromMe", "status", "timestamp"}`` (``timestamp``:
when wasup stored it) with the content fields of ``message_received`` (``type``, ``text``,
``hasMedia``, ``media``, the kind's own object, ``quoted``, ``pushName``: docs/events.md) and what reactions, edits and revokes did to it: ``reactions``
(``{"<sender JID>": "<emoji>"}``), ``edited`` and ``editedAt`` (its text is the new one),
``revoked`` and ``revokedAt`` (deleted for everyone: its text and content are gone, its type
stays). Pages are keyset pages (``storage.history``): pass
``pagination.nextCursor`` as ``before`` for the next, older page; ``hasMore`` false and
``nextCursor`` null on the last. A cursor is opaque to clients (today a row id; any well-formed
value is a valid starting point). The operator token or the device's own API key may call all
three.

Errors: 400 INVALID_REQUEST naming the parameter (``chatId``: a phone number like
``+15551234567`` or a WhatsApp JID; ``before``; ``limit``: 1 to 100; ``since``/``until``: RFC
3339 date-times such as ``2025-06-19T12:00:00Z``; ``fromMe``: ``true`` or ``false``; ``type``:
one of the message types); 404
DEVICE_NOT_FOUND for an unknown device.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from quart import Blueprint, Response, request

from api.auth import resolve_device
from api.routes_devices import ok
from api.state import current_state
from api.validation import int_param
from storage import ChatSummary, MessageRow
from supervisor import polls
from supervisor.errors import InvalidRequest, NotFound
from supervisor.jid import InvalidJid, Jid, JidKind
from supervisor.message_content import CONTENT_TYPES

bp = Blueprint("history", __name__)

LIMIT_DEFAULT = 50
LIMIT_MAX = 100

#: What ``chatId`` may be; the same pattern is in docs/openapi.yaml (``ChatId``). Matched whole
#: (Python's ``$`` also matches before a final line feed, JSON Schema's does not), then read by
#: :meth:`Jid.parse` (strict spellings).
CHAT_ID_PATTERN = (
    r"^(\+?[1-9][0-9]{6,14}"
    r"|[0-9]{5,20}(-[0-9]{5,20})?(:[0-9]{1,3})?@(s\.whatsapp\.net|lid|g\.us|broadcast|newsletter)"
    r"|status(:[0-9]{1,3})?@broadcast)$"
)
#: A cursor (docs/openapi.yaml ``Cursor``): a positive row id of at most 18 digits, matched whole.
CURSOR_PATTERN = r"^[1-9][0-9]{0,17}$"
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EARLIEST = "0000-01-01T00:00:00.000Z"
_LATEST = "9999-12-31T23:59:59.999Z"


def canonical_chat(raw: str) -> str:
    """The canonical JID of a ``chatId`` path segment (a phone number or a JID)."""
    if re.fullmatch(CHAT_ID_PATTERN, raw) is None:
        raise InvalidRequest(
            "chatId: must be a phone number like +15551234567 or a whatsapp jid like "
            "15551234567@s.whatsapp.net or 120363000000000000@g.us",
            field="chatId",
        )
    try:
        return Jid.parse(raw, strict=True).canonical
    except InvalidJid:  # the pattern and the parser agree; kept as a 400 should they not
        raise InvalidRequest("chatId: not a whatsapp jid", field="chatId") from None


def _cursor(name: str = "before") -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if re.fullmatch(CURSOR_PATTERN, raw) is None:
        raise InvalidRequest(f"{name}: must be a cursor from pagination.nextCursor", field=name)
    return int(raw)


def stored_time(name: str, raw: str) -> str:
    """An RFC 3339 date-time as wasup stores times (UTC, milliseconds, ``Z``), so that it
    compares as text with stored ``at`` values. A leap second counts as the second before it;
    times beyond what Python's datetime holds clamp to the ends of year 0 to 9999.

    Raises InvalidRequest(field=name) for anything else.
    """
    m = _RFC3339.fullmatch(raw)
    bad = InvalidRequest(
        f"{name}: must be an RFC 3339 date-time like 2025-06-19T12:00:00Z", field=name
    )
    if m is None:
        raise bad
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7) or "", m.group(8)
    if zone in ("Z", "z"):
        offset = timedelta(0)
    else:
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            raise bad
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=oh, minutes=om)
    if second == 60:  # a leap second (RFC 3339 allows it; datetime does not)
        second, fraction = 59, ".999"
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    try:
        if year == 0:
            datetime(2000, month, day, hour, minute, second)  # validates the rest
            return _EARLIEST
        local = datetime(
            year, month, day, hour, minute, second, micros, tzinfo=timezone(offset)
        )
    except ValueError:
        raise bad from None
    try:
        utc = local.astimezone(UTC)
    except OverflowError:
        return _EARLIEST if offset > timedelta(0) else _LATEST
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _time_arg(name: str) -> str | None:
    raw = request.args.get(name)
    return None if raw is None else stored_time(name, raw)


def _from_me() -> bool | None:
    raw = request.args.get("fromMe")
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise InvalidRequest("fromMe: must be true or false", field="fromMe")
    return raw == "true"


def _type() -> str | None:
    raw = request.args.get("type")
    if raw is None:
        return None
    if raw not in CONTENT_TYPES:
        raise InvalidRequest(f"type: must be one of {', '.join(CONTENT_TYPES)}", field="type")
    return raw


def message_view(row: MessageRow) -> dict[str, Any]:
    """A stored message as the API shows it: its record and its stored content fields (the
    ``message_received`` shape; a message stored without them shows its type and text), with
    what actions did to it (``storage.message_actions``: ``edited``/``editedAt``,
    ``revoked``/``revokedAt``, ``reactions`` by sender; a poll's ``votes`` and ``tally``:
    :func:`supervisor.polls.with_tally`)."""
    view: dict[str, Any] = {
        "messageId": row.message_id,
        "chatId": row.chat,
        "from": row.sender,
        "fromMe": row.direction == "out",
        "type": row.type,
        "text": row.text,
        "hasMedia": False,
        "media": None,
        "quoted": None if row.quoted is None else {"messageId": row.quoted},
        "edited": False,
        "editedAt": None,
        "revoked": False,
        "revokedAt": None,
        "reactions": {},
    }
    if row.content is not None:
        content = json.loads(row.content)
        if isinstance(content, dict):
            view.update(content)
    if isinstance(view.get("poll"), dict):
        view["poll"] = polls.with_tally(view["poll"])
    view["status"] = row.status
    view["timestamp"] = row.at
    return view


def chat_view(chat: ChatSummary) -> dict[str, Any]:
    """A chat of the chat list as the API shows it."""
    try:
        is_group = Jid.parse(chat.chat).kind is JidKind.GROUP
    except InvalidJid:
        is_group = False
    return {
        "chatId": chat.chat,
        "isGroup": is_group,
        "lastMessage": message_view(chat.last_message),
        "unreadCount": chat.unread,
    }


def _pagination(limit: int, next_before: int | None) -> dict[str, Any]:
    return {
        "limit": limit,
        "hasMore": next_before is not None,
        "nextCursor": None if next_before is None else str(next_before),
    }


@bp.get("/devices/<device_id>/chats")
async def list_chats(device_id: str) -> Response:
    row = await resolve_device(device_id)
    before, limit = _cursor(), int_param(request.args, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    page = await current_state().sup.db.run(
        lambda r: r.message_history.chats(row.id, before=before, limit=limit)
    )
    return ok(
        [chat_view(c) for c in page.items], pagination=_pagination(limit, page.next_before)
    )


@bp.get("/devices/<device_id>/chats/<chat_id>/messages")
async def list_messages(device_id: str, chat_id: str) -> Response:
    row = await resolve_device(device_id)
    jid = canonical_chat(chat_id)
    before, limit = _cursor(), int_param(request.args, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    since, until, from_me, kind = _time_arg("since"), _time_arg("until"), _from_me(), _type()
    page = await current_state().sup.db.run(
        lambda r: r.message_history.page(
            row.id, jid, before=before, limit=limit, since=since, until=until, from_me=from_me,
            type=kind,
        )
    )
    return ok(
        [message_view(m) for m in page.items], pagination=_pagination(limit, page.next_before)
    )


@bp.get("/devices/<device_id>/messages/<message_id>")
async def get_message(device_id: str, message_id: str) -> Response:
    row = await resolve_device(device_id)
    message = await current_state().sup.db.run(lambda r: r.messages.get(row.id, message_id))
    if message is None:
        raise NotFound("no such message")
    return ok(message_view(message))
