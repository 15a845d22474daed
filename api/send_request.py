"""A send request: the body of ``POST /devices/{deviceId}/messages``, every type, as JSON or as
``multipart/form-data``, checked into a :class:`SendRequest`.

JSON (``type`` is ``text`` when absent)::

    {"to": "+15551234567", "text": "hi @15550001111", "mentions": ["+15550001111"]}
    {"to": …, "type": "image", "media": {"data": "<base64>"}, "caption": "a cat"}
    {"to": …, "type": "document", "media": {"url": "https://…/report.pdf"}, "filename": "r.pdf"}
    {"to": …, "type": "audio", "media": {…}, "voice": true}          # a voice note
    {"to": …, "type": "location", "location": {"latitude": 52.5, "longitude": 13.4}}
    {"to": …, "type": "contact", "contact": {"name": "Ana", "phoneNumber": "+15551234567"}}
    {"to": …, "type": "poll", "poll": {"question": "Lunch?", "options": ["pizza", "soup"]}}

Every type takes ``replyTo`` (a message id to quote) and ``ttl``; :data:`FIELDS` lists each
type's own fields, and any other field is refused. Multipart takes the same fields as form
fields, each given once: strings as they are, ``location``, ``contact``, ``poll`` and
``mentions`` as JSON text, ``voice`` and ``linkPreview`` as ``true`` or ``false``, ``ttl`` as a
number, and the file in a part named ``file`` (instead of ``media``); a document's
``filename`` defaults to the part's.

:func:`read_send` reads and checks the current request; the file is not looked at beyond its
base64 until :func:`api.send_media.prepare` checks it against the type. A JSON body of
:data:`BIG_BODY` bytes or more (a file in base64, up to the media caps) is parsed and decoded in
a worker thread, at most :data:`BIG_BODY_THREADS` at once, so that one big upload does not
hold up every other request and device meanwhile.

Error handling: :class:`InvalidRequest` naming the field at fault (``type``, ``to``,
``mentions``, ``media.data``, ``mimetype``, ``file``, ``location.latitude``, ...).
"""

from __future__ import annotations

import binascii
import posixpath
import re
from typing import Any

import attrs
import trio
from quart import request
from werkzeug.datastructures import MultiDict

from api import validation
from api.content_fields import (
    CAPTION_MAX,
    FILENAME_MAX,
    contact,
    fields,
    flag,
    location,
    poll,
    string,
)
from api.text import is_one_line
from supervisor import message_content as mc
from supervisor import threads
from supervisor.errors import InvalidRequest
from supervisor.jid import InvalidJid, Jid, JidKind

MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
TYPES = ("text", *MEDIA_TYPES, "location", "contact", "poll")

#: The fields every type takes, and each type's own.
COMMON = frozenset({"to", "type", "replyTo", "ttl"})
_CAPTIONED = frozenset({"media", "mimetype", "caption", "mentions"})
FIELDS: dict[str, frozenset[str]] = {
    "text": frozenset({"text", "mentions", "linkPreview"}),
    "image": _CAPTIONED,
    "video": _CAPTIONED,
    "audio": frozenset({"media", "mimetype", "voice"}),
    "document": _CAPTIONED | {"filename"},
    "sticker": frozenset({"media", "mimetype"}),
    "location": frozenset({"location"}),
    "contact": frozenset({"contact"}),
    "poll": frozenset({"poll"}),
}

#: Limits shared with docs/openapi.yaml.
TO_MAX = 100
MENTIONS_MAX = 256
URL_MAX = 2048
TTL_MIN = 1
MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")

#: A JSON body this large (bytes) is parsed and its base64 decoded in a worker thread.
BIG_BODY = 256 * 1024
#: Characters of base64 decoded at a time (a multiple of 4).
BASE64_CHUNK = 1 << 20
#: Big bodies parsed at once (each holds its body several times over in memory meanwhile).
BIG_BODY_THREADS = 2
_big_bodies: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("big_bodies")
MIMETYPE_RE = re.compile(r"[a-z]+/[a-z0-9.+-]{1,100}(?: ?; ?[a-z0-9-]{1,30}=[a-z0-9.+-]{1,60})*",
                         re.IGNORECASE)
#: Recipients a message may go to, and users a message may mention.
RECIPIENT_KINDS = frozenset({JidKind.USER, JidKind.GROUP})
MENTION_KINDS = frozenset({JidKind.USER, JidKind.LID})

#: Multipart form fields given as JSON text (``ttl`` a number, ``null`` for the default), and
#: as ``true`` / ``false``.
JSON_FORM_FIELDS = frozenset({"location", "contact", "poll", "mentions", "ttl"})
BOOL_FORM_FIELDS = frozenset({"voice", "linkPreview"})

@attrs.frozen
class Upload:
    """A multipart request's ``file`` part: its bytes and the file name the client gave."""

    data: bytes
    filename: str | None = None


@attrs.frozen
class MediaSource:
    """Where a media send's file comes from: ``data`` (decoded base64 or an upload) or
    ``url``; ``field`` is the request field named when the file is refused (``media`` or
    ``file``)."""

    data: bytes | None = None
    url: str | None = None
    field: str = "media"
    filename: str | None = None


@attrs.frozen
class SendRequest:
    """A checked send request, its file not fetched yet. ``content`` is the content of a
    type without a file; a media type has ``media`` and its ``caption``, ``mimetype`` (as
    given), ``filename`` and ``voice`` instead."""

    to: Jid
    type: str
    content: mc.Content | None = None
    media: MediaSource | None = None
    caption: str = ""
    mimetype: str | None = None
    filename: str | None = None
    voice: bool = False
    mentions: tuple[str, ...] = ()
    link_preview: bool = False
    reply_to: str | None = None
    ttl: float | None = None


def normalize_recipient(to: str) -> Jid:
    """``to`` as a Jid: ``+1 555-123-4567`` -> ``15551234567@s.whatsapp.net``.

    Raises InvalidRequest(field="to") for anything that is neither a phone number nor a
    user or group JID in the strict spellings.
    """
    value = to.strip()
    if len(value) > TO_MAX:
        raise InvalidRequest(f"to: must be at most {TO_MAX} characters", field="to")
    jid = _jid(value)
    if jid is None or jid.kind not in RECIPIENT_KINDS:
        raise InvalidRequest(
            "to: must be a phone number like +15551234567 or a whatsapp jid like "
            "15551234567@s.whatsapp.net",
            field="to",
        )
    return jid


def _jid(value: str) -> Jid | None:
    try:
        return Jid.parse(value, strict=True)
    except InvalidJid:
        return None


def parse(body: Any, max_ttl: float, upload: Upload | None = None, *,
          form: bool = False) -> SendRequest:
    """Check a decoded send request; ``form``: it came as multipart/form-data, whose file part
    is ``upload`` (None when there is none).

    Error handling: InvalidRequest naming the field at fault.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    kind = body.get("type", "text")
    if not isinstance(kind, str) or kind not in FIELDS:
        raise InvalidRequest(f"type: must be one of {', '.join(TYPES)}", field="type")
    fields(body, "body", COMMON | FIELDS[kind])
    to = body.get("to")
    if to is None:
        raise InvalidRequest("to: is required", field="to")
    if not isinstance(to, str):
        raise InvalidRequest("to: must be a string", field="to")
    req = SendRequest(
        to=normalize_recipient(string(body, "to", "to", TO_MAX) or ""),
        type=kind,
        mentions=_mentions(body.get("mentions", [])),
        reply_to=_reply_to(body),
        ttl=None if body.get("ttl") is None else float(
            validation.number("ttl", body["ttl"], TTL_MIN, max_ttl)),
    )
    if kind in MEDIA_TYPES:
        return _media_request(req, body, upload, form)
    if upload is not None:
        raise InvalidRequest(f"file: a {kind} message takes no file", field="file")
    match kind:
        case "text":
            return attrs.evolve(req, content=mc.Text(_text(body)),
                                link_preview=flag(body, "linkPreview"))
        case "location":
            return attrs.evolve(req, content=location(body.get("location")))
        case "contact":
            return attrs.evolve(req, content=contact(body.get("contact")))
    return attrs.evolve(req, content=poll(body.get("poll")))


def _text(body: dict[str, Any]) -> str:
    text = string(body, "text", "text", validation.TEXT_MAX, one_line=False)
    assert text is not None
    if not text.strip():
        raise InvalidRequest("text: must not be empty", field="text")
    return text


def _mentions(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MENTIONS_MAX:
        raise InvalidRequest(
            f"mentions: must be a list of at most {MENTIONS_MAX} phone numbers or user jids",
            field="mentions")
    found: list[str] = []
    for item in value:
        jid = _jid(item.strip()) if isinstance(item, str) and len(item) <= TO_MAX else None
        if jid is None or jid.kind not in MENTION_KINDS:
            raise InvalidRequest(
                "mentions: each must be a phone number like +15551234567 or a user jid",
                field="mentions")
        if jid.canonical not in found:
            found.append(jid.canonical)
    return tuple(found)


def _reply_to(body: dict[str, Any]) -> str | None:
    if "replyTo" not in body:
        return None
    value = body["replyTo"]
    if not isinstance(value, str) or not MESSAGE_ID_RE.fullmatch(value):
        raise InvalidRequest(
            "replyTo: must be a message id (1 to 128 letters, digits, '_' or '-')",
            field="replyTo")
    return value


def _media_request(req: SendRequest, body: dict[str, Any], upload: Upload | None,
                   form: bool) -> SendRequest:
    if upload is not None:
        source = MediaSource(data=upload.data, field="file", filename=upload.filename)
    elif form:
        raise InvalidRequest(f"file: is required for a {req.type} message", field="file")
    elif "media" not in body:
        raise InvalidRequest(f"media: is required for a {req.type} message", field="media")
    else:
        source = _media_source(body["media"])
    if source.data is not None and not source.data:
        raise InvalidRequest(f"{source.field}: the file is empty", field=source.field)
    mimetype = body.get("mimetype")
    if "mimetype" in body and (not isinstance(mimetype, str) or len(mimetype) > 255
                               or not MIMETYPE_RE.fullmatch(mimetype)):
        raise InvalidRequest("mimetype: must be a mimetype like image/png", field="mimetype")
    caption = string(body, "caption", "caption", CAPTION_MAX, required=False,
                     one_line=False) or ""
    if caption and not caption.strip():
        caption = ""
    return attrs.evolve(
        req, media=source, caption=caption, mimetype=mimetype, voice=flag(body, "voice"),
        filename=string(body, "filename", "filename", FILENAME_MAX, required=False),
    )


def _media_source(value: Any) -> MediaSource:
    given = fields(value, "media", frozenset({"data", "url"}))
    if ("data" in given) == ("url" in given):
        raise InvalidRequest("media: must hold either data (base64) or url", field="media")
    if "url" in given:
        url = string(given, "url", "media.url", URL_MAX)
        return MediaSource(url=url)
    data = given["data"]
    if not isinstance(data, str):
        raise InvalidRequest("media.data: must be the file in base64", field="media.data")
    raw = decode_base64(data)
    if raw is None:
        raise InvalidRequest("media.data: must be the file in base64", field="media.data")
    return MediaSource(data=raw)


def decode_base64(data: str) -> bytes | None:
    """``data`` decoded as strict base64 (the standard alphabet, padded, nothing else), None if
    it is not. Decoded :data:`BASE64_CHUNK` characters at a time, so that a worker thread
    decoding a big file lets the Trio thread run between chunks."""
    if not data.isascii() or len(data) % 4 or data.find("=", 0, len(data) - 2) != -1:
        return None
    try:
        return b"".join(binascii.a2b_base64(data[at:at + BASE64_CHUNK], strict_mode=True)
                        for at in range(0, len(data), BASE64_CHUNK))
    except binascii.Error:
        return None


# -- the current request ----------------------------------------------------------------------


async def read_send(max_ttl: float) -> SendRequest:
    """The current request's send (JSON or multipart/form-data).

    Error handling: InvalidRequest naming the field at fault.
    """
    if request.mimetype == "multipart/form-data":
        form = await request.form
        files = await request.files
        body, upload = await from_form(form, files)
        return parse(body, max_ttl, upload, form=True)
    data = await request.get_data()
    assert isinstance(data, bytes)
    if len(data) < BIG_BODY:
        return parse_body(data, max_ttl)
    return await threads.run_sync(parse_body, data, max_ttl, limiter=_big_body_limiter())


def parse_body(data: bytes, max_ttl: float) -> SendRequest:
    """A JSON send request's body, parsed and checked (blocking for a big one: its base64 is
    decoded here). Error handling: InvalidRequest naming the field at fault."""
    return parse(validation.parse_json(data), max_ttl)


def _big_body_limiter() -> trio.CapacityLimiter:
    try:
        return _big_bodies.get()
    except LookupError:
        limiter = trio.CapacityLimiter(BIG_BODY_THREADS)
        _big_bodies.set(limiter)
        return limiter


async def from_form(form: MultiDict[str, str],
                     files: MultiDict[str, Any]) -> tuple[dict[str, Any], Upload | None]:
    """A multipart request's fields as the JSON body they stand for, and its file."""
    body: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        if len(values) > 1:
            raise InvalidRequest(f"{key[:64]}: given twice in the form", field=key[:64])
        body[key] = _form_value(key, values[0])
    validation.check_strings(body)
    for key in files:
        if key != "file":
            raise InvalidRequest(f"{key[:64]}: unknown field (the file part is named file)",
                                 field=key[:64])
    parts = files.getlist("file")
    if len(parts) > 1:
        raise InvalidRequest("file: given twice in the form", field="file")
    if not parts:
        return body, None
    part = parts[0]
    data = await trio.to_thread.run_sync(part.stream.read)
    name = posixpath.basename((part.filename or "").replace("\\", "/"))
    ok = name and len(name) <= FILENAME_MAX and is_one_line(name)
    return body, Upload(data, name if ok else None)


def _form_value(key: str, value: str) -> Any:
    if key == "media":
        raise InvalidRequest("media: send the file as the part named file", field="media")
    if key in JSON_FORM_FIELDS:
        try:
            return validation.parse_json(value.encode("utf-8", "surrogatepass"))
        except InvalidRequest:
            what = "a number" if key == "ttl" else "JSON text"
            raise InvalidRequest(f"{key}: must be {what}", field=key) from None
    if key in BOOL_FORM_FIELDS:
        if value not in ("true", "false"):
            raise InvalidRequest(f"{key}: must be true or false", field=key)
        return value == "true"
    return value


def response_data(result: dict[str, Any], req: SendRequest) -> dict[str, Any]:
    """The ``data`` of a send's answer: messageId, to, status, timestamp and type."""
    return {
        "messageId": result["messageId"],
        "to": result.get("to", req.to.canonical),
        "status": result.get("status", "sent"),
        "timestamp": result.get("timestamp"),
        "type": req.type,
    }
