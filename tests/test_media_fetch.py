"""Fetching a send's ``media.url``: through the SSRF guard, redirects followed only through it,
cut off at the size limit while streaming, bounded in time, failures readable.

A file server on 127.0.0.1 (tests/media_support.py), allowed through ``allow_networks`` where a
test means to reach it; names are resolved by a fake resolver (no DNS).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from supervisor.errors import TooLarge
from supervisor.media_fetch import MediaUrlFailed, MediaUrlRefused, fetch_media
from supervisor.webhooks.ssrf import parse_networks
from tests.media_support import PDF, PNG, start_file_server

LOOPBACK = parse_networks(["127.0.0.0/8"])
BIG = bytes(range(256)) * 1024  # 256 KiB


def resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host} does not resolve")
        return table[host]

    return resolve


async def test_fetches_the_file_and_its_name() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_file_server(nursery)
        server.files["docs/q3%20report.pdf"] = PDF
        data, name = await fetch_media(server.url("docs/q3%20report.pdf"), max_bytes=len(PDF),
                                       timeout=10, allow=LOOPBACK)
        assert data == PDF and name == "q3 report.pdf"
        server.chunked = True
        server.files["x/"] = PNG
        data, name = await fetch_media(server.url("x/"), max_bytes=1000, timeout=10,
                                       allow=LOOPBACK)
        assert data == PNG and name is None
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:9/a.png", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.5/a.png", "private"),
    ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
    ("http://intranet.example/a.png", "private"),
    ("ftp://files.example/a.png", "http"),
    ("http://user:pw@files.example/a.png", "credentials"),
    ("not a url", "http"),
])
async def test_the_guard_refuses(url: str, why: str) -> None:
    with pytest.raises(MediaUrlRefused, match=why):
        await fetch_media(url, max_bytes=1000, timeout=10,
                          resolver=resolver({"intranet.example": ["10.1.2.3"]}))


async def test_redirects_are_followed_only_through_the_guard() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_file_server(nursery)
        server.files["a.png"] = PNG
        server.routes["/moved"] = (302, {"location": "/a.png"})
        server.routes["/meta"] = (301, {"location": "http://169.254.169.254/latest/"})
        server.routes["/ftp"] = (307, {"location": "ftp://127.0.0.1/a.png"})
        server.routes["/loop"] = (302, {"location": "/loop"})
        server.routes["/nowhere"] = (302, {})
        data, name = await fetch_media(server.url("moved"), max_bytes=1000, timeout=10,
                                       allow=LOOPBACK)
        assert data == PNG and name == "a.png"
        with pytest.raises(MediaUrlRefused, match=r"169\.254\.169\.254"):
            await fetch_media(server.url("meta"), max_bytes=1000, timeout=10, allow=LOOPBACK)
        with pytest.raises(MediaUrlRefused, match="http"):
            await fetch_media(server.url("ftp"), max_bytes=1000, timeout=10, allow=LOOPBACK)
        before = len(server.requests)
        with pytest.raises(MediaUrlFailed, match="redirects"):
            await fetch_media(server.url("loop"), max_bytes=1000, timeout=10, allow=LOOPBACK)
        assert len(server.requests) - before == 6
        with pytest.raises(MediaUrlFailed, match="location"):
            await fetch_media(server.url("nowhere"), max_bytes=1000, timeout=10, allow=LOOPBACK)
        nursery.cancel_scope.cancel()


async def test_a_file_beyond_the_limit_is_cut_off() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_file_server(nursery)
        server.files["big.bin"] = BIG
        # the declared length refuses it before its first byte
        with pytest.raises(TooLarge) as info:
            await fetch_media(server.url("big.bin"), max_bytes=len(BIG) - 1, timeout=10,
                              allow=LOOPBACK)
        assert info.value.field == "media"
        # without one, the stream is counted and cut off at the limit
        server.chunked = True
        with pytest.raises(TooLarge):
            await fetch_media(server.url("big.bin"), max_bytes=20_000, timeout=10,
                              allow=LOOPBACK)
        data, _ = await fetch_media(server.url("big.bin"), max_bytes=len(BIG), timeout=10,
                                    allow=LOOPBACK)
        assert data == BIG
        nursery.cancel_scope.cancel()


async def test_failures_are_readable() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_file_server(nursery)
        server.routes["/slow"] = "hang"
        with pytest.raises(MediaUrlFailed, match="http 404"):
            await fetch_media(server.url("missing.png"), max_bytes=1000, timeout=10,
                              allow=LOOPBACK)
        with pytest.raises(MediaUrlFailed, match=r"within 0\.2 seconds"):
            await fetch_media(server.url("slow"), max_bytes=1000, timeout=0.2, allow=LOOPBACK)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()  # nothing listens there now
        with pytest.raises(MediaUrlFailed, match="could not fetch"):
            await fetch_media(f"http://127.0.0.1:{port}/a.png", max_bytes=1000, timeout=10,
                              allow=LOOPBACK)
        with pytest.raises(MediaUrlRefused, match="resolve"):
            await fetch_media("http://nowhere.example/a.png", max_bytes=1000, timeout=10,
                              resolver=resolver({}))
        nursery.cancel_scope.cancel()
