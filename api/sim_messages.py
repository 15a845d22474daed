"""The simulator's incoming-message body: every kind of message someone can send a device.

``POST /api/whatsapp/simulator/devices/{deviceId}/messages`` takes ``{"from", "type"?, ...}``
with ``type`` one of :data:`TYPES` (``text`` by default) and the fields of that type (the
``SimMessageRequest`` schema of docs/openapi.yaml lists them; this module and that schema
accept the same bodies)::

    {"from": "+15551234567", "text": "hi"}
    {"from": "+15551234567", "type": "image", "media": {"data": "<base64>"}, "caption": "a cat"}
    {"from": "+15551234567", "type": "reaction", "messageId": "3EB0...", "emoji": "👍"}
    {"from": "+15551234567", "type": "poll_vote", "messageId": "3EB0...", "options": ["Yes"]}

:func:`sim_incoming` turns it into a :class:`SimIncoming`: the sender, the typed content
(:mod:`supervisor.message_content`), the text, the quoted message id, the push name and the
media file's bytes. A media message's metadata is computed from the bytes: size, SHA-256, and
the mimetype when not given (from the file's first bytes, else the type's usual one). A poll
vote names its choice (``options``, ``[]`` withdraws the vote); the simulator checks the names
against the poll and carries their hashes, as WhatsApp does
(:mod:`supervisor.engines.simulator_polls`).

Error handling: :class:`InvalidRequest` naming the field at fault (``body``, ``type``,
``media.data``, ``location.latitude``, ...).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import attrs

from api import validation
from api.content_fields import (
    CAPTION_MAX,
    FILENAME_MAX,
    OPTION_MAX,
    POLL_OPTIONS,
    contact,
    fields,
    flag,
    location,
    poll,
    string,
)
from supervisor import message_content as mc
from supervisor.errors import InvalidRequest

#: The message types the simulator delivers: those wasup sends, and those only a phone does.
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
TYPES = ("text", *MEDIA_TYPES, "location", "contact", "poll", "poll_vote", "reaction", "edit",
         "revoke", "undecryptable", "unsupported")

COMMON = frozenset({"from", "type", "replyTo", "pushName"})
FIELDS: dict[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "image": frozenset({"media", "caption"}),
    "video": frozenset({"media", "caption"}),
    "audio": frozenset({"media", "voice"}),
    "document": frozenset({"media", "caption"}),
    "sticker": frozenset({"media"}),
    "location": frozenset({"location"}),
    "contact": frozenset({"contact"}),
    "poll": frozenset({"poll"}),
    "poll_vote": frozenset({"messageId", "options"}),
    "reaction": frozenset({"messageId", "emoji"}),
    "edit": frozenset({"messageId", "text"}),
    "revoke": frozenset({"messageId"}),
    "undecryptable": frozenset({"reason"}),
    "unsupported": frozenset({"kind"}),
}

EMOJI_MAX = 32
KIND_MAX = 100
MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
MIMETYPE_RE = re.compile(r"[a-z]+/[A-Za-z0-9.+-]{1,100}")
UNDECRYPTABLE_REASONS = ("decrypt_failed", "unavailable")

#: A media type's mimetype when neither the body nor the file's first bytes say.
DEFAULT_MIMETYPES = {
    "image": "image/jpeg", "video": "video/mp4", "audio": "audio/ogg; codecs=opus",
    "document": "application/octet-stream", "sticker": "image/webp",
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"), (b"%PDF-", "application/pdf"), (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
)


@attrs.frozen
class SimIncoming:
    """An incoming message to simulate (``media``: the file of a media message)."""

    sender: str
    content: mc.Content
    quoted: str | None = None
    push_name: str | None = None
    media: bytes | None = None

    @property
    def text(self) -> str:
        return mc.text_of(self.content)


def _message_id(body: dict[str, Any], key: str, field: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not MESSAGE_ID_RE.fullmatch(value):
        raise InvalidRequest(
            f"{field}: must be a message id (1 to 128 letters, digits, '_' or '-')", field=field
        )
    return value


def _choice(value: Any) -> tuple[str, ...]:
    """A vote's chosen options: a list of at most as many names as a poll has options
    (empty: the vote is withdrawn), each given once."""
    high = POLL_OPTIONS[1]
    if not isinstance(value, list) or len(value) > high:
        raise InvalidRequest(f"options: must be a list of 0 to {high} option names",
                             field="options")
    names = tuple(string({"o": o}, "o", "options", OPTION_MAX) or "" for o in value)
    if len(set(names)) != len(names):
        raise InvalidRequest("options: each option at most once", field="options")
    return names


def _media(kind: str, value: Any) -> tuple[mc.MediaInfo, bytes]:
    media = fields(value, "media", frozenset({"data", "mimetype", "filename"}))
    data = media.get("data")
    if not isinstance(data, str) or len(data) < 4 or not BASE64_RE.fullmatch(data):
        raise InvalidRequest("media.data: must be the file in base64", field="media.data")
    raw = base64.b64decode(data)
    mimetype = media.get("mimetype")
    if "mimetype" in media and (not isinstance(mimetype, str)
                                or not MIMETYPE_RE.fullmatch(mimetype)):
        raise InvalidRequest("media.mimetype: must be a mimetype like image/png",
                             field="media.mimetype")
    filename = string(media, "filename", "media.filename", FILENAME_MAX, required=False)
    if mimetype is None:
        mimetype = next((m for magic, m in _MAGIC if raw.startswith(magic)),
                        DEFAULT_MIMETYPES[kind])
    info = mc.MediaInfo(mimetype=mimetype, size=len(raw), sha256=hashlib.sha256(raw).hexdigest(),
                        filename=filename)
    return info, raw


def _content(kind: str, body: dict[str, Any]) -> tuple[mc.Content, bytes | None]:
    if kind in MEDIA_TYPES:
        info, raw = _media(kind, body.get("media"))
        caption = string(body, "caption", "caption", CAPTION_MAX, required=False,
                          one_line=False) or ""
        match kind:
            case "image":
                return mc.Image(info, caption=caption), raw
            case "video":
                return mc.Video(info, caption=caption), raw
            case "document":
                return mc.Document(info, caption=caption), raw
            case "sticker":
                return mc.Sticker(info), raw
        return (mc.Voice(info) if flag(body, "voice") else mc.Audio(info)), raw
    match kind:
        case "text":
            text = string(body, "text", "text", validation.TEXT_MAX, one_line=False)
            assert text is not None
            return mc.Text(text), None
        case "location":
            return location(body.get("location")), None
        case "contact":
            return contact(body.get("contact")), None
        case "poll":
            return poll(body.get("poll")), None
        case "poll_vote":
            return mc.PollVote(_message_id(body, "messageId", "messageId"),
                               options=_choice(body.get("options"))), None
        case "reaction":
            target = _message_id(body, "messageId", "messageId")
            emoji = string(body, "emoji", "emoji", EMOJI_MAX, empty=True)
            assert emoji is not None
            return mc.Reaction(target, emoji), None
        case "edit":
            target = _message_id(body, "messageId", "messageId")
            text = string(body, "text", "text", validation.TEXT_MAX, one_line=False)
            assert text is not None
            return mc.Edit(target, text), None
        case "revoke":
            return mc.Revoke(_message_id(body, "messageId", "messageId")), None
        case "undecryptable":
            reason = body.get("reason", "decrypt_failed")
            if reason not in UNDECRYPTABLE_REASONS:
                raise InvalidRequest("reason: must be decrypt_failed or unavailable",
                                     field="reason")
            return mc.Undecryptable(reason), None
    kind_name = string(body, "kind", "kind", KIND_MAX, required=False)
    return mc.Unsupported(kind_name or "unknownMessage"), None


def sim_incoming(body: Any) -> SimIncoming:
    """The simulated incoming message ``body`` describes.

    Error handling: :class:`InvalidRequest` naming the field at fault.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    kind = body.get("type", "text")
    if not isinstance(kind, str) or kind not in FIELDS:
        raise InvalidRequest(f"type: must be one of {', '.join(TYPES)}", field="type")
    fields(body, "body", COMMON | FIELDS[kind])
    sender = body.get("from")
    if not isinstance(sender, str):
        raise InvalidRequest("from: must be a string", field="from")
    validation.check_phone(sender, "from")
    push_name = string(body, "pushName", "pushName", validation.PUSH_NAME_MAX, required=False)
    reply_to = _message_id(body, "replyTo", "replyTo") if "replyTo" in body else None
    content, raw = _content(kind, body)
    return SimIncoming(sender, content, quoted=reply_to, push_name=push_name, media=raw)
