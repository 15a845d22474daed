"""The file of a media send: fetched, checked against its type and its size limit, stored.

:func:`prepare` turns a checked :class:`api.send_request.SendRequest` into the
:class:`~supervisor.outgoing.Outgoing` to send::

    message = await prepare(req, config.media, config.allow_networks, store)

A ``media.url`` is fetched through the SSRF guard (:mod:`supervisor.media_fetch`), cut off at
the type's size limit. The mimetype is detected from the bytes (libmagic, through
python-magic) and must fit the type: ``image/*`` for an image, ``video/*`` for a video,
``audio/*`` for audio, ``image/webp`` for a sticker, anything for a document. A ``mimetype``
the client gave must say what the bytes are; a document may name a more precise type than
libmagic's generic answers (``text/csv`` for ``text/plain``, an Office type for
``application/zip``). Only a file that passes every check reaches ``store`` (the media
store's ``put``, pinned), which names it by its sha256 for the Outgoing's
:class:`~supervisor.message_content.MediaInfo`.

Error handling: :class:`InvalidRequest` naming ``media.url`` (refused or failed fetch),
``mimetype`` (a declaration the bytes contradict), ``media`` or ``file`` (an empty file, or
one not of the type); :class:`TooLarge` (413) naming ``media`` or ``file`` beyond the type's
limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from api.content_fields import FILENAME_MAX
from api.send_request import MEDIA_TYPES, SendRequest
from api.text import is_one_line
from supervisor import message_content as mc
from supervisor.config import MediaConfig
from supervisor.errors import InvalidRequest, TooLarge, WasupError
from supervisor.media_fetch import MediaUrlFailed, MediaUrlRefused, fetch_media
from supervisor.outgoing import Outgoing
from supervisor.webhooks.ssrf import IPNetwork

#: What libmagic says of files it cannot name more precisely: a document may declare better.
GENERIC_MIMETYPES = frozenset({
    "application/octet-stream", "text/plain", "application/zip", "application/x-ole-storage",
    "application/cdfv2",
})
#: Containers libmagic names as video (or generically) that hold audio alone in an audio send.
AUDIO_CONTAINERS = {"video/mp4": "audio/mp4", "application/ogg": "audio/ogg",
                    "video/ogg": "audio/ogg", "video/webm": "audio/webm"}
#: Other spellings of the same mimetype.
ALIASES = {"image/jpg": "image/jpeg", "audio/mp3": "audio/mpeg", "audio/x-wav": "audio/wav",
           "audio/x-m4a": "audio/mp4", "audio/m4a": "audio/mp4"}


def max_bytes(kind: str, media: MediaConfig) -> int:
    """The largest file a ``kind`` message may carry (WhatsApp's limit, configurable)."""
    return {"image": media.max_image, "video": media.max_video, "audio": media.max_audio,
            "document": media.max_document, "sticker": media.max_sticker}[kind]


def body_max(media: MediaConfig) -> int:
    """The largest body the send route reads: the largest file in base64, and room for the
    other fields."""
    largest = max(max_bytes(kind, media) for kind in MEDIA_TYPES)
    return (largest + 2) // 3 * 4 + 64 * 1024


Store = Callable[[bytes], Awaitable[str]]


async def prepare(req: SendRequest, media: MediaConfig, allow: Sequence[IPNetwork],
                  store: Store) -> Outgoing:
    """The Outgoing of ``req``; a media file is fetched if need be, checked, and handed to
    ``store`` (which keeps it and returns its sha256) before the Outgoing is made.

    Error handling: InvalidRequest naming ``media.url``, ``mimetype``, ``media`` or ``file``;
    TooLarge naming ``media`` or ``file``.
    """
    if req.media is None:
        assert req.content is not None
        return Outgoing(req.content, mentions=req.mentions, link_preview=req.link_preview)
    source = req.media
    cap = max_bytes(req.type, media)
    data, url_name = source.data, None
    if data is None:
        assert source.url is not None
        data, url_name = await _fetch(source.url, req.type, media, allow)
    if len(data) > cap:
        raise _too_large(req.type, source.field, cap)
    if not data:
        raise InvalidRequest(f"{source.field}: the file is empty", field=source.field)
    detected = await trio.to_thread.run_sync(detect, data)
    mimetype = check_mimetype(req.type, detected, req.mimetype, source.field)
    filename = req.filename
    if filename is None and req.type == "document":
        filename = source.filename or url_name
    sha256 = await store(data)
    info = mc.MediaInfo(mimetype=mimetype, size=len(data), sha256=sha256, filename=filename)
    return Outgoing(_content(req, info, data), mentions=req.mentions)


class DetectionUnavailable(WasupError):
    """Raised by :func:`detect` when python-magic cannot load the libmagic system library."""


def detect(data: bytes) -> str:
    """The mimetype libmagic reads in ``data`` (blocking: call it in a worker thread).

    python-magic loads libmagic when imported: here, not when wasup starts, so that the
    simulator engine runs on a machine without it (the whatsmeow engine needs it anyway, and
    :mod:`api.startup` says so in one line).

    Error handling: :class:`DetectionUnavailable` without libmagic.
    """
    try:
        import magic  # loads libmagic: see the docstring
    except ImportError as exc:
        raise DetectionUnavailable(
            "media sends need the libmagic system library (Debian/Ubuntu: apt install libmagic1)"
        ) from exc
    return str(magic.from_buffer(data, mime=True))


async def _fetch(url: str, kind: str, media: MediaConfig,
                 allow: Sequence[IPNetwork]) -> tuple[bytes, str | None]:
    cap = max_bytes(kind, media)
    try:
        data, name = await fetch_media(url, max_bytes=cap, timeout=media.url_timeout,
                                       allow=allow)
    except (MediaUrlRefused, MediaUrlFailed) as exc:
        raise InvalidRequest(f"media.url: {exc}", field="media.url") from None
    except TooLarge:
        raise _too_large(kind, "media", cap) from None
    ok = name is not None and len(name) <= FILENAME_MAX and is_one_line(name)
    return data, name if ok else None


def _too_large(kind: str, field: str, cap: int) -> TooLarge:
    return TooLarge(f"{field}: a {kind} may be at most {_size(cap)} (this file is larger)",
                    field=field)


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _base(mimetype: str) -> str:
    return mimetype.split(";", 1)[0].strip().lower()


def check_mimetype(kind: str, detected: str, declared: str | None, field: str) -> str:
    """The mimetype of a ``kind`` file libmagic names ``detected``, when the client declared
    ``declared`` (or None).

    Error handling: InvalidRequest naming ``mimetype`` when the declaration contradicts the
    bytes; naming ``field`` when the file is not of the kind (a PDF sent as an image).
    """
    found = ALIASES.get(_base(detected), _base(detected))
    if kind == "audio":
        found = AUDIO_CONTAINERS.get(found, found)
    mimetype = found
    if declared is not None:
        said = ALIASES.get(_base(declared), _base(declared))
        generic = kind == "document" and found in GENERIC_MIMETYPES
        if said != found and not generic:
            raise InvalidRequest(f"mimetype: the file is {found}, not {said}", field="mimetype")
        mimetype = declared.strip().lower() if said == _base(declared) else said
    if not _fits(kind, _base(mimetype)):
        raise InvalidRequest(f"{field}: {_expected(kind)}, this file is {found}", field=field)
    return mimetype


def _fits(kind: str, mimetype: str) -> bool:
    match kind:
        case "image":
            return mimetype.startswith("image/")
        case "video":
            return mimetype.startswith("video/")
        case "audio":
            return mimetype.startswith("audio/")
        case "sticker":
            return mimetype == "image/webp"
    return True


def _expected(kind: str) -> str:
    return {"image": "an image must be image/*", "video": "a video must be video/*",
            "audio": "audio must be audio/*", "sticker": "a sticker must be image/webp"}[kind]


def _content(req: SendRequest, info: mc.MediaInfo, data: bytes) -> mc.Content:
    match req.type:
        case "image":
            return mc.Image(info, caption=req.caption)
        case "video":
            return mc.Video(info, caption=req.caption)
        case "document":
            return mc.Document(info, caption=req.caption)
        case "sticker":
            return mc.Sticker(info, animated=animated_webp(data))
    return mc.Voice(info) if req.voice else mc.Audio(info)


def animated_webp(data: bytes) -> bool:
    """Whether a WebP file is animated (its VP8X header's animation flag)."""
    return len(data) > 20 and data[12:16] == b"VP8X" and bool(data[20] & 0x02)
