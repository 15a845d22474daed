"""A message's media file (under ``/api/whatsapp``)::

    GET /devices/{deviceId}/messages/{messageId}/media
        -> 200 the file's bytes, Content-Type its mimetype, Content-Length its size
               (a document: Content-Disposition attachment with its filename)

The file comes from the media cache, or is downloaded from WhatsApp by the device on first
request and cached (:mod:`supervisor.media_files`); it is streamed from disk in chunks, never
held in memory whole. The operator token or the device's own API key may call it.

Errors: 404 DEVICE_NOT_FOUND (no such device, or another device's key); 404 NOT_FOUND (no such
message, or a message without media); 409 DEVICE_CONFLICT (the file is not cached and the
device is not connected to download it); 410 MEDIA_EXPIRED (WhatsApp no longer has the file and
wasup does not keep it); 502 ENGINE_ERROR (the download failed, or its bytes do not match the
message's sha256); 503 SERVICE_UNAVAILABLE (too many downloads at once, or the device is busy);
504 GATEWAY_TIMEOUT (the download took longer than ``media.download_timeout``).

Resource handling: the response holds the file open until its last chunk is sent (or the
client went away); an open file stays readable when the cache evicts it meanwhile.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from types import TracebackType
from typing import BinaryIO
from urllib.parse import quote

from quart import Blueprint, Response
from quart.wrappers.response import ResponseBody
from werkzeug.http import dump_options_header

from api.auth import resolve_device
from api.state import current_state
from supervisor import threads
from supervisor.media_files import MediaFile

bp = Blueprint("media", __name__)

#: Bytes read from disk and sent per step.
CHUNK = 64 * 1024
#: A mimetype as a header may carry it (``type/subtype`` and parameters, no control characters).
_MIMETYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[\w.+-]+(\s*;[\x20-\x7e]*)?")
#: What an untrusted file may do when a browser opens it at wasup's origin: nothing.
SANDBOX = "default-src 'none'; sandbox"


class OpenFileBody(ResponseBody):
    """A response body that reads an already open file in chunks and closes it at the end."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    async def __aenter__(self) -> OpenFileBody:
        return self

    async def __aexit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.file.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await threads.run_sync(self.file.read, CHUNK):
            yield chunk


def content_disposition(found: MediaFile) -> str | None:
    """``attachment`` with the filename for a document (ASCII ``filename`` and, for other
    names, RFC 6266's ``filename*``); None for the other kinds (shown inline)."""
    if found.type != "document":
        return None
    name = "".join(c for c in found.filename or "" if c.isprintable()).replace("/", "_")
    name = name.replace("\\", "_").strip()
    if not name:
        return "attachment"
    simple = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    options = {"filename": simple or "file"}
    if simple != name:
        options["filename*"] = "UTF-8''" + quote(name, safe="!#$&+^`|~")
    return dump_options_header("attachment", options)


@bp.get("/devices/<device_id>/messages/<message_id>/media")
async def get_media(device_id: str, message_id: str) -> Response:
    row = await resolve_device(device_id)
    found = await current_state().sup.media_file(row.id, message_id)
    try:
        mimetype = found.mimetype if _MIMETYPE.fullmatch(found.mimetype) else None
        response = Response(
            OpenFileBody(found.file), status=200,
            content_type=mimetype or "application/octet-stream",
        )
        response.content_length = found.size
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = SANDBOX
        disposition = content_disposition(found)
        if disposition is not None:
            response.headers["Content-Disposition"] = disposition
    except BaseException:
        found.file.close()
        raise
    return response
