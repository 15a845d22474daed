"""The media store: media files on disk, named by the sha256 of their bytes.

Usage::

    store = MediaStore(config.data_dir / "media", config.media.cache_bytes)
    sha = await store.put(data, pin=True)     # a queued send's file: kept until unpinned
    data = await store.get(sha)               # bytes, or None when the store has no such file
    path = await store.path(sha)              # for streaming the file without reading it whole
    await store.unpin(sha)                    # the send is done: the file joins the cache

Layout under ``root``::

    pinned/<sha256>   files a queued send still needs: never evicted, kept across restarts
    cache/<sha256>    everything else (downloads, sent files): least recently used first out
    tmp/              files being written (emptied when the store opens)

The cache is kept at or under ``cache_bytes``: each file that joins it evicts the least recently
used cached files beyond the cap. Pinned files are not counted against the cap and never
evicted. The newest cached file is kept even when it alone exceeds the cap (it is the one a
caller is about to read), and goes with the next file that joins the cache. :meth:`get` and
:meth:`path` of a cached file count as a use (its modification time is set to now, so the
order survives a restart). A file is the same file wherever it is: ``put`` of bytes already
stored only marks the use (and pins them if asked).

A pin is not counted: one :meth:`unpin` moves the file to the cache, whatever number of
``put(…, pin=True)`` of the same bytes came before it. A caller with several queued sends of
one file unpins it when the last of them is done.

Error handling: a name that is not a sha256 in lowercase hex raises ``ValueError`` (a file
name never comes from outside unchecked). ``OSError`` of the file system (a full disk)
propagates from :meth:`put` and :meth:`unpin`; the partly written file is removed. A file
that disappears under a reader (evicted meanwhile) reads as absent.

Resource handling: every file operation runs in a worker thread; the in-memory index of the
cache is read and changed on the Trio thread only. Writes are atomic: the bytes go to ``tmp/``,
are flushed to disk and renamed into place, so a reader never sees a partial file and a crash
leaves no torn file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections import OrderedDict
from pathlib import Path

import attrs
import trio

from . import threads

log = logging.getLogger("wasup.media")

_SHA256 = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class MediaStatistics:
    """``MediaStore.statistics()``: what the store holds now."""

    cached_files: int
    cached_bytes: int
    cache_bytes: int
    evictions: int


def check_sha256(sha256: str) -> str:
    """``sha256`` if it names a file (64 lowercase hex digits). Raises: ValueError."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 in lowercase hex: {sha256!r}")
    return sha256


@attrs.define(eq=False)
class MediaStore:
    """Media files under ``root``, named by their sha256; see the module docstring."""

    root: Path = attrs.field(converter=Path)
    cache_bytes: int
    #: Cached files by name, least recently used first, with their sizes.
    _index: OrderedDict[str, int] = attrs.field(init=False, factory=OrderedDict)
    _cached: int = attrs.field(init=False, default=0)
    _evictions: int = attrs.field(init=False, default=0)
    _loaded: bool = attrs.field(init=False, default=False)
    _load_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)

    @property
    def pinned_dir(self) -> Path:
        return self.root / "pinned"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def statistics(self) -> MediaStatistics:
        """The cache's size and evictions so far. Raises: nothing."""
        return MediaStatistics(
            cached_files=len(self._index), cached_bytes=self._cached,
            cache_bytes=self.cache_bytes, evictions=self._evictions,
        )

    # -- the interface -----------------------------------------------------------------------

    async def put(self, data: bytes, *, pin: bool = False) -> str:
        """Store ``data`` (pinned if asked) and answer its sha256. Raises: OSError."""
        await self._load()
        sha = await threads.run_sync(_digest, data)
        if pin:
            await threads.run_sync(self._put_pinned, sha, data)
            self._drop(sha)
            return sha
        size = await threads.run_sync(self._put_cached, sha, data)
        if size is not None:  # None: the file is pinned, nothing joins the cache
            self._add(sha, size)
            await self._evict(keep=sha)
        return sha

    async def get(self, sha256: str) -> bytes | None:
        """The file's bytes, or None if the store has none (counts as a use). Raises: ValueError."""
        check_sha256(sha256)
        await self._load()
        data = await threads.run_sync(self._read, sha256)
        if data is None:
            self._drop(sha256)
        else:
            self._touched(sha256)
        return data

    async def path(self, sha256: str) -> Path | None:
        """The file's path, or None if the store has none (counts as a use). Raises: ValueError.

        The file may be evicted after this returns: open it at once, and treat a
        ``FileNotFoundError`` as absent (an open file stays readable when it is evicted).
        """
        check_sha256(sha256)
        await self._load()
        found = await threads.run_sync(self._locate, sha256)
        if found is None:
            self._drop(sha256)
        else:
            self._touched(sha256)
        return found

    async def unpin(self, sha256: str) -> None:
        """Move a pinned file to the cache (nothing if it is not pinned). Raises: ValueError, OSError."""
        check_sha256(sha256)
        await self._load()
        size = await threads.run_sync(self._move_to_cache, sha256)
        if size is not None:
            self._add(sha256, size)
            await self._evict(keep=sha256)

    # -- the index (Trio thread) -------------------------------------------------------------

    async def _load(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            entries = await threads.run_sync(self._scan)
            for sha, size in entries:
                self._add(sha, size)
            self._loaded = True
            log.info("media store %s: %d cached files, %d bytes", self.root, len(entries), self._cached)
            await self._evict(keep=None)

    def _add(self, sha: str, size: int) -> None:
        old = self._index.pop(sha, None)
        if old is not None:
            self._cached -= old
        self._index[sha] = size
        self._cached += size

    def _drop(self, sha: str) -> None:
        size = self._index.pop(sha, None)
        if size is not None:
            self._cached -= size

    def _touched(self, sha: str) -> None:
        if sha in self._index:
            self._index.move_to_end(sha)

    async def _evict(self, keep: str | None) -> None:
        victims: list[str] = []
        while self._cached > self.cache_bytes and self._index:
            sha = next(iter(self._index))
            if sha == keep:
                break  # the newest file stays even when it alone exceeds the cap
            self._drop(sha)
            victims.append(sha)
        if victims:
            self._evictions += len(victims)
            log.debug("media cache: evicting %d files", len(victims))
            await threads.run_sync(self._unlink_cached, victims)

    # -- file operations (worker threads) ----------------------------------------------------

    def _scan(self) -> list[tuple[str, int]]:
        for d in (self.pinned_dir, self.cache_dir, self.tmp_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        found: list[tuple[float, str, int]] = []
        for entry in os.scandir(self.cache_dir):
            if not _SHA256.fullmatch(entry.name):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, entry.name, st.st_size))
        found.sort()
        return [(name, size) for _, name, size in found]

    def _write(self, target: Path, data: bytes) -> None:
        """Write ``data`` to ``target`` atomically (tmp file, fsync, rename)."""
        tmp = self.tmp_dir / f"{target.name}.{secrets.token_hex(6)}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def _put_pinned(self, sha: str, data: bytes) -> None:
        target = self.pinned_dir / sha
        if target.exists():
            return
        try:
            os.replace(self.cache_dir / sha, target)
            _fsync_dir(self.pinned_dir)
        except FileNotFoundError:
            self._write(target, data)

    def _put_cached(self, sha: str, data: bytes) -> int | None:
        if (self.pinned_dir / sha).exists():
            return None
        target = self.cache_dir / sha
        try:
            os.utime(target)
        except FileNotFoundError:
            self._write(target, data)
        return len(data)

    def _read(self, sha: str) -> bytes | None:
        for d, touch in ((self.pinned_dir, False), (self.cache_dir, True)):
            try:
                with open(d / sha, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            if touch:
                _touch(d / sha)
            return data
        return None

    def _locate(self, sha: str) -> Path | None:
        pinned = self.pinned_dir / sha
        if pinned.exists():
            return pinned
        cached = self.cache_dir / sha
        return cached if _touch(cached) else None

    def _move_to_cache(self, sha: str) -> int | None:
        source = self.pinned_dir / sha
        try:
            size = source.stat().st_size
            os.replace(source, self.cache_dir / sha)
        except FileNotFoundError:
            return None
        _touch(self.cache_dir / sha)
        _fsync_dir(self.cache_dir)
        return size

    def _unlink_cached(self, names: list[str]) -> None:
        for name in names:
            (self.cache_dir / name).unlink(missing_ok=True)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _touch(path: Path) -> bool:
    """Set ``path``'s modification time to now; False if there is no such file."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
