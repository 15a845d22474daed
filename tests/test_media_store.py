"""Tests for supervisor/media.py (the media store) and the media knobs of the command line.

Rules: every store lives under its own ``tmp_path``; a test looks at the files on disk only
to check what the store promises about them (names, atomic writes, what survives a re-open).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

import storage
from api.cli import parse_options, serve_config
from supervisor.config import Config, MediaConfig
from supervisor.media import MediaStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()


async def test_put_names_the_file_by_its_sha256_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 1 << 20)
    data = os.urandom(5000)
    name = await store.put(data)
    assert name == sha(data)
    assert await store.get(name) == data
    assert files(store.cache_dir) == {name}
    assert (store.cache_dir / name).read_bytes() == data
    assert await store.path(name) == store.cache_dir / name
    # The same bytes again are the same file.
    assert await store.put(data) == name
    assert files(store.cache_dir) == {name}
    assert store.statistics().cached_bytes == 5000


async def test_a_missing_file_is_none_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 1 << 20)
    assert await store.get("0" * 64) is None
    assert await store.path("0" * 64) is None
    await store.unpin("0" * 64)  # nothing pinned: nothing happens
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63, ""):
        with pytest.raises(ValueError):
            await store.get(bad)
        with pytest.raises(ValueError):
            await store.path(bad)
        with pytest.raises(ValueError):
            await store.unpin(bad)


async def test_put_is_atomic_a_failed_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MediaStore(tmp_path / "media", 1 << 20)
    await store.put(b"first")  # the directories exist

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        await store.put(b"second")
    monkeypatch.undo()
    assert files(store.cache_dir) == {sha(b"first")}
    assert files(store.tmp_dir) == set()
    assert await store.get(sha(b"second")) is None


async def test_leftovers_of_a_crashed_write_are_removed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp" / f"{'a' * 64}.123456").write_bytes(b"half a fi")
    store = MediaStore(root, 1 << 20)
    assert await store.get("a" * 64) is None
    assert files(store.tmp_dir) == set()


async def test_eviction_beyond_the_cap_removes_the_least_recently_used(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 3000)
    a, b, c, d = (bytes([i]) * 1000 for i in range(4))
    for data in (a, b, c):
        await store.put(data)
    assert files(store.cache_dir) == {sha(a), sha(b), sha(c)}
    # Reading a makes b the least recently used.
    assert await store.get(sha(a)) == a
    await store.put(d)
    assert files(store.cache_dir) == {sha(a), sha(c), sha(d)}
    assert await store.get(sha(b)) is None
    # path() counts as a use too: c was used last, a is now the oldest.
    assert await store.path(sha(c)) is not None
    await store.put(b)
    assert files(store.cache_dir) == {sha(b), sha(c), sha(d)}
    stats = store.statistics()
    assert (stats.cached_files, stats.cached_bytes, stats.evictions) == (3, 3000, 2)


async def test_a_file_larger_than_the_cap_stays_until_the_next(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 1000)
    big = b"x" * 5000
    await store.put(b"small")
    await store.put(big)
    assert files(store.cache_dir) == {sha(big)}  # the caller is about to read it
    assert await store.get(sha(big)) == big
    await store.put(b"next")
    assert files(store.cache_dir) == {sha(b"next")}


async def test_pinned_files_are_never_evicted_nor_counted(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 2000)
    pinned = b"p" * 1500
    name = await store.put(pinned, pin=True)
    assert files(store.pinned_dir) == {name}
    assert files(store.cache_dir) == set()
    for i in range(5):
        await store.put(bytes([i]) * 1000)
    assert files(store.pinned_dir) == {name}
    assert len(files(store.cache_dir)) == 2
    assert store.statistics().cached_bytes == 2000
    assert await store.get(name) == pinned
    assert await store.path(name) == store.pinned_dir / name
    # Putting pinned bytes unpinned leaves them pinned.
    await store.put(pinned)
    assert files(store.pinned_dir) == {name}
    assert name not in files(store.cache_dir)


async def test_unpin_moves_the_file_to_the_cache_where_it_can_be_evicted(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 2000)
    pinned = b"p" * 1000
    name = await store.put(pinned, pin=True)
    await store.unpin(name)
    await store.unpin(name)  # idempotent
    assert files(store.pinned_dir) == set()
    assert files(store.cache_dir) == {name}
    assert await store.get(name) == pinned
    await store.put(b"1" * 1000)
    await store.put(b"2" * 1000)
    assert name not in files(store.cache_dir)
    assert await store.get(name) is None


async def test_pinning_cached_bytes_takes_them_out_of_the_cache(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 2000)
    data = b"d" * 1000
    name = await store.put(data)
    assert await store.put(data, pin=True) == name
    assert files(store.pinned_dir) == {name}
    assert files(store.cache_dir) == set()
    assert store.statistics().cached_bytes == 0


async def test_a_reopened_store_keeps_pins_the_cache_and_its_order(tmp_path: Path) -> None:
    root = tmp_path / "media"
    first = MediaStore(root, 3000)
    pinned = await first.put(b"p" * 2000, pin=True)
    a, b, c = (bytes([i]) * 1000 for i in range(3))
    for data in (a, b, c):
        await first.put(data)
    # Make the order unambiguous on file systems with coarse timestamps.
    for n, data in enumerate((b, c, a)):
        os.utime(first.cache_dir / sha(data), (1_000_000 + n, 1_000_000 + n))

    second = MediaStore(root, 3000)
    assert await second.get(pinned) == b"p" * 2000
    assert second.statistics().cached_bytes == 3000
    await second.put(b"d" * 1000)  # b was the least recently used before the restart
    assert files(second.cache_dir) == {sha(a), sha(c), sha(b"d" * 1000)}
    # A smaller cap on re-open evicts down to it at once, the newest stays.
    third = MediaStore(root, 1000)
    assert await third.get(sha(a)) is None
    assert files(third.cache_dir) == {sha(b"d" * 1000)}
    assert files(third.pinned_dir) == {pinned}


async def test_concurrent_puts_of_the_same_bytes_store_one_file(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", 1 << 20)
    data = os.urandom(200_000)
    names: list[str] = []

    async def put(pin: bool) -> None:
        names.append(await store.put(data, pin=pin))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(put, False)
    assert names == [sha(data)] * 8
    assert files(store.cache_dir) == {sha(data)}
    assert files(store.tmp_dir) == set()
    assert store.statistics().cached_bytes == len(data)
    assert await store.get(sha(data)) == data


def test_media_knobs_come_from_flags_and_the_environment() -> None:
    defaults = parse_options(["serve"], {})
    assert defaults.media == MediaConfig()
    assert Config().media.cache_bytes == 1 << 30
    opts = parse_options(
        ["serve", "--media-max-image", "5000"],
        {"WASUP_MEDIA_CACHE_BYTES": "1000", "WASUP_MEDIA_URL_TIMEOUT": "2.5",
         "WASUP_MEDIA_MAX_IMAGE": "9"},
    )
    config = serve_config(opts)
    assert config.media == MediaConfig(cache_bytes=1000, max_image=5000, url_timeout=2.5)
    assert config.media_dir == config.data_dir / "media"
    for bad in ({"WASUP_MEDIA_CACHE_BYTES": "0"}, {"WASUP_MEDIA_URL_TIMEOUT": "nan"},
                {"WASUP_MEDIA_MAX_VIDEO": "lots"}):
        with pytest.raises(SystemExit):
            parse_options(["serve"], bad)


async def test_messages_keep_the_engines_media_ref(tmp_path: Path) -> None:
    from storage import open_database

    from .test_storage import new_device

    async with open_database(tmp_path / "wasup.db") as db:

        def job(r: storage.Repositories) -> tuple[str | None, ...]:
            device = new_device(r)
            r.messages.insert(device.id, message_id="IMG", chat="c", direction="in", text="",
                              status="received", at="2025-06-19T12:00:00.000Z", type="image",
                              media_ref="ref-of-img")
            r.messages.insert(device.id, message_id="TXT", chat="c", direction="in",
                              text="hi", status="received", at="2025-06-19T12:00:00.000Z")
            r.messages.insert(device.id, message_id="UND", chat="c", direction="in", text="",
                              status="received", at="2025-06-19T12:00:00.000Z",
                              type="undecryptable")
            # An undecryptable message that arrives again decrypted gets its reference then.
            r.messages.decrypted(device.id, "UND", text="", type="video", content=None,
                                 quoted=None, media_ref="ref-of-und")
            return (r.messages.media_ref(device.id, "IMG"), r.messages.media_ref(device.id, "TXT"),
                    r.messages.media_ref(device.id, "UND"), r.messages.media_ref(device.id, "NO"))

        assert await db.run(job) == ("ref-of-img", None, "ref-of-und", None)
