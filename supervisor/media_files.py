"""A stored message's media file: from the media store, or downloaded by the device's actor.

Usage::

    files = MediaFiles(db, store, call, config.media)     # built by the Devices facade
    found = await files.get(device_id, "3A5F...")         # MediaFile(file, size, mimetype, ...)
    try:
        chunk = await threads.run_sync(found.file.read, 65536)   # stream it
    finally:
        found.file.close()

:meth:`MediaFiles.get` reads the message and the engine's reference to its file
(``messages.media_ref``: a received message's, or the upload's of an own send). A file the store holds under the message's sha256 is served from
there (a cache hit). Otherwise the device's actor downloads it (the
:class:`~supervisor.commands.Download` command: engine calls are made by the actor only)
within ``media.download_timeout``; the bytes are checked against the sha256 the message
states, put in the store's cache and served from there. Requests for the same message while
its download runs wait for that download and get its answer (the file, or the same error)
instead of starting another; at most
:data:`MAX_DOWNLOADS` downloads run at once, over every device.

Error handling: ``NotFound`` for a message the device does not have, or one without media;
``DeviceConflict`` when the file is not kept and the device is not connected;
``MediaExpired`` when WhatsApp no longer has the file (or, for a message without a reference
to download it by, wasup no longer keeps it); ``EngineError`` (``media_corrupt``) when the
downloaded bytes do not match the message's sha256, or the engine's own reason when the
download failed; ``Unresponsive`` when it took longer than ``download_timeout``; ``Busy``
when :data:`MAX_DOWNLOADS` downloads kept it waiting that long; the command errors of the
facade (``Busy``, ``Restarting``).

Resource handling: the file comes open (an open file stays readable when the store evicts
it meanwhile); the caller closes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import attrs
import trio

import storage
from storage.models import MessageRow

from . import commands as cmd
from . import engine as eng
from . import threads
from .config import MediaConfig
from .errors import Busy, DeviceConflict, EngineError, MediaExpired, NotFound
from .media import MediaStore
from .message_content import MediaInfo

log = logging.getLogger("wasup.media")

#: Downloads running at once, over every device (each holds its file in memory meanwhile).
MAX_DOWNLOADS = 4

#: Sends a command to a device's actor and waits for the reply, at most ``timeout`` seconds.
CallActor = Callable[[int, cmd.Download, float], Awaitable[bytes]]


@attrs.frozen
class MediaFile:
    """A message's media file, open for reading, and how to label it (the caller closes
    ``file``)."""

    file: BinaryIO
    size: int
    mimetype: str
    filename: str | None
    type: str


@attrs.define(eq=False)
class _Running:
    """A download under way: set ``done`` when it ended, with its ``error`` if it failed."""

    done: trio.Event = attrs.field(factory=trio.Event)
    error: Exception | None = None


@attrs.frozen
class _Stored:
    row: MessageRow
    media: MediaInfo
    ref: str | None


def media_info(row: MessageRow) -> MediaInfo | None:
    """The media metadata a stored message states (its content's ``media``), or None."""
    if row.content is None:
        return None
    try:
        content = json.loads(row.content)
    except ValueError:
        return None
    media = content.get("media") if isinstance(content, dict) else None
    if not isinstance(media, dict):
        return None

    def text(name: str) -> str | None:
        value = media.get(name)
        return value if isinstance(value, str) and value else None

    size = media.get("size")
    return MediaInfo(
        mimetype=text("mimetype"),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        sha256=text("sha256"),
        filename=text("filename"),
    )


@attrs.define(eq=False)
class MediaFiles:
    """Finds or fetches messages' media files; see the module docstring."""

    db: storage.Store
    store: MediaStore
    call: CallActor
    config: MediaConfig
    limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(MAX_DOWNLOADS))
    #: Downloads under way, by (device id, message id).
    _running: dict[tuple[int, str], _Running] = attrs.field(factory=dict)

    async def get(self, device_id: int, message_id: str) -> MediaFile:
        """The file of the device's message ``message_id``, downloaded if need be.

        Raises: NotFound, DeviceConflict, MediaExpired, EngineError, Unresponsive, Busy,
        Restarting (see the module docstring).
        """
        stored = await self._message(device_id, message_id)
        key = (device_id, message_id)
        while True:
            found = await self._kept(stored)
            if found is not None:
                return found
            running = self._running.get(key)
            if running is None:
                break
            await running.done.wait()
            if running.error is not None:
                raise running.error  # the same answer for every request that waited on it
            # Else the file is in the store now: served by the next turn (downloaded anew in
            # the rare case it was evicted meanwhile, or the download was cancelled).
        job = self._running[key] = _Running()
        try:
            return await self._download(device_id, stored)
        except Exception as exc:
            job.error = exc
            raise
        finally:
            del self._running[key]
            job.done.set()

    async def _message(self, device_id: int, message_id: str) -> _Stored:
        def job(r: storage.Repositories) -> tuple[MessageRow | None, str | None]:
            row = r.messages.get(device_id, message_id)
            return row, None if row is None else r.messages.media_ref(device_id, message_id)

        row, ref = await self.db.run(job)
        if row is None:
            raise NotFound(f"message {message_id} not found")
        media = media_info(row)
        if media is None:
            raise NotFound(f"message {message_id} has no media (it is a {row.type} message)")
        return _Stored(row, media, ref)

    async def _kept(self, stored: _Stored) -> MediaFile | None:
        sha = stored.media.sha256
        if sha is None or not _is_sha256(sha):
            return None
        path = await self.store.path(sha)
        return None if path is None else await self._open(path, stored)

    async def _download(self, device_id: int, stored: _Stored) -> MediaFile:
        if stored.ref is None:
            raise MediaExpired(
                f"the file of message {stored.row.message_id} is no longer kept"
            )
        timeout = self.config.download_timeout
        acquired = False
        with trio.move_on_after(timeout):
            await self.limiter.acquire()
            acquired = True
        if not acquired:
            raise Busy("too many media downloads under way, try again shortly")
        try:
            data = await self.call(device_id, cmd.Download(stored.ref), timeout)
        except EngineError as exc:
            raise _domain(exc) from exc
        finally:
            self.limiter.release()
        expected = stored.media.sha256
        digest = await threads.run_sync(lambda: hashlib.sha256(data).hexdigest())
        if expected is not None and digest != expected.lower():
            log.warning("device %d: message %s: downloaded file does not match its sha256",
                        device_id, stored.row.message_id)
            raise EngineError("media_corrupt", recoverable=False,
                              message="the downloaded file does not match the message's sha256")
        sha = await self.store.put(data)
        path = await self.store.path(sha)
        found = None if path is None else await self._open(path, stored)
        if found is None:  # evicted at once by a flood of other files
            raise EngineError("media_evicted", message="the media cache is too small, try again")
        return found

    async def _open(self, path: Path, stored: _Stored) -> MediaFile | None:
        """The file at ``path`` opened, or None when it was evicted meanwhile."""

        def job() -> tuple[BinaryIO, int] | None:
            try:
                f = open(path, "rb")  # handed to the caller, who closes it
            except FileNotFoundError:
                return None
            return f, os.fstat(f.fileno()).st_size

        opened = await threads.run_sync(job)
        if opened is None:
            return None
        file, size = opened
        return MediaFile(
            file=file, size=size,
            mimetype=stored.media.mimetype or "application/octet-stream",
            filename=stored.media.filename, type=stored.row.type,
        )


async def download(session: eng.EngineSession, ref: str, reply: cmd.Reply[bytes]) -> None:
    """Download ``ref`` with the actor's ``session`` and answer ``reply`` (the actor's task for
    a :class:`~supervisor.commands.Download`). Never raises but ``trio.Cancelled``: an
    engine failure other than :class:`EngineError` is logged and answered as one
    (``download_failed``), since a download that failed is no reason to restart the device.
    """
    try:
        reply.set(await session.download(ref))
    except EngineError as exc:
        reply.fail(exc)
    except Exception as exc:
        log.exception("media download failed")
        reply.fail(EngineError("download_failed", recoverable=False,
                               message=f"download failed: {type(exc).__name__}"))


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _domain(exc: EngineError) -> Exception:
    """The error a failed download is answered with."""
    if exc.reason == "media_expired":
        return MediaExpired("whatsapp no longer has this file (media expire after a while)")
    if exc.recoverable:
        return DeviceConflict(
            "the device is not connected: connect it to download this file"
        )
    return exc
