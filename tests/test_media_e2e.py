"""Media files end to end: the simulator delivers media over its HTTP control, ``GET
…/messages/{messageId}/media`` answers the file byte for byte, from the cache after the first
download, and every refusal has its status. Real sockets and a real clock, with deadlines;
downloads are counted at the simulated WhatsApp (``SimulatorEngine.downloads``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from api.server import Server
from supervisor.config import MediaConfig
from supervisor.engines.simulator import SimulatorEngine

from .conftest import TEST_TOKEN, api_client, running_server
from .media_support import PNG
from .test_messaging_e2e import create, wait_status
from .webhook_support import start_receiver

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 10.0
PEER = "+15557654321"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(size: int, seed: int = 0) -> bytes:
    """A PNG-looking file of ``size`` bytes, different per ``seed``."""
    return b"\x89PNG\r\n\x1a\n" + hashlib.shake_256(bytes([seed])).digest(size - 8)


@asynccontextmanager
async def connected(
    tmp_path: Path, **config: Any
) -> AsyncIterator[tuple[Server, httpx.AsyncClient, dict[str, Any]]]:
    """A server with one connected device (and the config fields given)."""
    async with running_server(tmp_path / "data", **config) as server, api_client(server) as api:
        device = await create(api, "Shop")
        await wait_status(api, device["sessionId"], "pending")
        r = await api.post(f"/simulator/devices/{device['sessionId']}/scan", json={})
        assert r.status_code == 200, r.text
        await wait_status(api, device["sessionId"], "connected")
        yield server, api, device


async def disconnect(api: httpx.AsyncClient, sid: str) -> None:
    """Stop the device's session (it stays disconnected until a login)."""
    r = await api.post(f"/sessions/{sid}/cancel")
    assert r.status_code == 200, r.text
    await wait_status(api, sid, "disconnected")


def engine(server: Server) -> SimulatorEngine:
    sim = server.sup.engine
    assert isinstance(sim, SimulatorEngine)
    return sim


async def deliver(api: httpx.AsyncClient, sid: str, body: dict[str, Any]) -> str:
    """The simulator delivers ``body`` from PEER; returns the message id once stored."""
    r = await api.post(f"/simulator/devices/{sid}/messages", json={"from": PEER, **body})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "delivered"
    message_id: str = r.json()["data"]["messageId"]
    return message_id


async def deliver_image(api: httpx.AsyncClient, sid: str, data: bytes) -> str:
    return await deliver(api, sid, {"type": "image", "media": {"data": b64(data)}})


async def test_an_image_comes_back_byte_for_byte_then_from_the_cache(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid, data = device["sessionId"], png(300_000)
        mid = await deliver_image(api, sid, data)
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 200, r.text
        assert r.content == data
        assert r.headers["content-type"] == "image/png"
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "content-disposition" not in r.headers
        assert engine(server).downloads(device["id"]) == 1
        # Again: from the cache, WhatsApp is not asked.
        r = await api.get(f"/devices/{device['id']}/messages/{mid}/media")
        assert r.status_code == 200 and r.content == data
        assert engine(server).downloads(device["id"]) == 1
        cached = server.sup.config.media_dir / "cache" / hashlib.sha256(data).hexdigest()
        assert cached.read_bytes() == data
        # Even when the device is offline.
        await disconnect(api, sid)
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 200 and r.content == data


async def test_the_device_key_may_fetch_its_own_media_only(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        other = await create(api, "Other")
        sid, data = device["sessionId"], png(1000)
        mid = await deliver_image(api, sid, data)
        url = f"/devices/{sid}/messages/{mid}/media"
        async with api_client(server, token=device["apiKey"]) as own:
            r = await own.get(url)
            assert r.status_code == 200 and r.content == data
        async with api_client(server, token=other["apiKey"]) as key:
            r = await key.get(url)
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
            r = await key.get(f"/devices/{other['sessionId']}/messages/{mid}/media")
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        async with api_client(server, token=None) as anonymous:
            assert (await anonymous.get(url)).status_code == 401


async def test_no_such_message_or_no_media_is_404(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid = device["sessionId"]
        text = await deliver(api, sid, {"text": "hello"})
        r = await api.get(f"/devices/{sid}/messages/{text}/media")
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "NOT_FOUND" and "no media" in r.json()["error"]
        r = await api.get(f"/devices/{sid}/messages/3AFFFFFFFFFFFFFFFF/media")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        r = await api.get(f"/devices/nope/messages/{text}/media")
        assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
        assert engine(server).downloads(device["id"]) == 0


async def test_not_connected_and_not_cached_is_409(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid = device["sessionId"]
        mid = await deliver_image(api, sid, png(500))
        await disconnect(api, sid)
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "DEVICE_CONFLICT"
        assert engine(server).downloads(device["id"]) == 0


async def test_a_file_whatsapp_no_longer_has_is_410_gone(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid = device["sessionId"]
        mid = await deliver_image(api, sid, png(500))
        engine(server).server.media.discard((device["id"], mid))  # expired at WhatsApp
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 410, r.text
        assert r.json()["code"] == "MEDIA_EXPIRED"


async def test_a_download_that_does_not_match_its_sha256_is_502(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid = device["sessionId"]
        mid = await deliver_image(api, sid, png(500))
        engine(server).server.keep_media(device["id"], mid, png(500, seed=9))  # tampered
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 502, r.text
        assert r.json()["code"] == "ENGINE_ERROR" and "sha256" in r.json()["error"]
        assert list((server.sup.config.media_dir / "cache").iterdir()) == []


async def test_a_download_slower_than_the_timeout_is_504(tmp_path: Path) -> None:
    async with connected(tmp_path, media=MediaConfig(download_timeout=0.3)) as (
        server, api, device
    ):
        sid = device["sessionId"]
        mid = await deliver_image(api, sid, png(500))
        engine(server).server.download_latency = 5.0
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 504, r.text
        assert r.json()["code"] == "GATEWAY_TIMEOUT"
        # The device kept working meanwhile: another request is answered at once.
        r = await api.get(f"/devices/{sid}")
        assert r.status_code == 200 and r.json()["data"]["status"] == "connected"


async def test_a_document_carries_its_filename(tmp_path: Path) -> None:
    async with connected(tmp_path) as (_server, api, device):
        sid, pdf = device["sessionId"], b"%PDF-1.4\n" + os.urandom(2000)
        cases = [("report.pdf", 'attachment; filename=report.pdf'),
                 ("Übersicht 2025.pdf",
                  "attachment; filename=\"Ubersicht 2025.pdf\"; "
                  "filename*=UTF-8''%C3%9Cbersicht%202025.pdf"),
                 ('a"b\\c/d.pdf', 'attachment; filename="a\\"b_c_d.pdf"')]
        for name, disposition in cases:
            mid = await deliver(api, sid, {
                "type": "document", "media": {"data": b64(pdf), "filename": name},
            })
            r = await api.get(f"/devices/{sid}/messages/{mid}/media")
            assert r.status_code == 200 and r.content == pdf
            assert r.headers["content-type"] == "application/pdf"
            assert r.headers["content-disposition"] == disposition


async def test_the_cache_cap_evicts_the_least_recently_used(tmp_path: Path) -> None:
    size = 100_000
    async with connected(tmp_path, media=MediaConfig(cache_bytes=2 * size)) as (
        server, api, device
    ):
        sid = device["sessionId"]
        files = [png(size, seed=i) for i in range(3)]
        ids = [await deliver_image(api, sid, data) for data in files]

        async def fetch(i: int) -> None:
            r = await api.get(f"/devices/{sid}/messages/{ids[i]}/media")
            assert r.status_code == 200 and r.content == files[i]

        await fetch(0)
        await fetch(1)
        await fetch(0)  # 1 is now the least recently used
        assert engine(server).downloads(device["id"]) == 2
        await fetch(2)  # evicts 1
        assert engine(server).downloads(device["id"]) == 3
        cache = server.sup.config.media_dir / "cache"
        assert {p.name for p in cache.iterdir()} == {
            hashlib.sha256(files[i]).hexdigest() for i in (0, 2)
        }
        await fetch(0)
        assert engine(server).downloads(device["id"]) == 3  # still cached
        await fetch(1)  # downloaded again
        assert engine(server).downloads(device["id"]) == 4
        assert sum(p.stat().st_size for p in cache.iterdir()) <= 2 * size


async def test_concurrent_requests_share_one_download(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid, data = device["sessionId"], png(50_000)
        mid = await deliver_image(api, sid, data)
        engine(server).server.download_latency = 0.2
        bodies: list[bytes] = []

        async def fetch() -> None:
            r = await api.get(f"/devices/{sid}/messages/{mid}/media")
            assert r.status_code == 200
            bodies.append(r.content)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(fetch)
        assert bodies == [data] * 5
        assert engine(server).downloads(device["id"]) == 1


async def test_a_cached_file_survives_a_restart(tmp_path: Path) -> None:
    data = png(20_000)
    async with connected(tmp_path) as (server, api, device):
        sid = device["sessionId"]
        mid = await deliver_image(api, sid, data)
        assert (await api.get(f"/devices/{sid}/messages/{mid}/media")).content == data
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        r = await api.get(f"/devices/{sid}/messages/{mid}/media")
        assert r.status_code == 200 and r.content == data
        assert engine(server).downloads(device["id"]) == 0


async def test_event_payloads_never_carry_the_bytes(tmp_path: Path) -> None:
    data = png(200_000)
    encoded = b64(data)
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with connected(tmp_path, allow_networks=("127.0.0.0/8",)) as (server, api, device):
            sid = device["sessionId"]
            r = await api.put(f"/devices/{sid}/settings/webhook",
                              json={"url": receiver.url, "events": ["message_received"]})
            assert r.status_code == 200, r.text
            url = f"{server.ws_url}/?token={TEST_TOKEN}&events=message_received"
            async with open_websocket_url(url) as ws:
                await trio.sleep(0.05)  # subscribed
                mid = await deliver_image(api, sid, data)
                with trio.fail_after(DEADLINE):
                    event = await ws.get_message()
            with trio.fail_after(DEADLINE):
                await receiver.wait_requests(1)
            hook = receiver.requests[0].body.decode()
            for payload in (event, hook):
                assert mid in payload and '"hasMedia": true' in payload.replace('":true', '": true')
                assert encoded[:64] not in payload
                assert len(payload) < 4000
            assert json.loads(event)["data"]["media"]["sha256"] == hashlib.sha256(data).hexdigest()
        nursery.cancel_scope.cancel()


async def test_concurrent_requests_for_an_expired_file_share_one_answer(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, device):
        sid = device["sessionId"]
        mid = await deliver_image(api, sid, png(500))
        sim = engine(server)
        sim.server.media.discard((device["id"], mid))
        sim.server.download_latency = 0.2
        answers: list[tuple[int, str]] = []

        async def fetch() -> None:
            r = await api.get(f"/devices/{sid}/messages/{mid}/media")
            answers.append((r.status_code, r.json()["code"]))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(fetch)
        assert answers == [(410, "MEDIA_EXPIRED")] * 5
        assert sim.downloads(device["id"]) == 1


async def test_an_own_sends_file_is_served_from_the_cache_then_from_whatsapp(
    tmp_path: Path,
) -> None:
    size = 100_000
    async with connected(tmp_path, media=MediaConfig(cache_bytes=2 * size)) as (
        server, api, device
    ):
        sid = device["sessionId"]
        mine = PNG + os.urandom(size - len(PNG))  # a real PNG's head: detected as image/png
        r = await api.post(f"/devices/{sid}/messages", json={
            "to": "+15557654321", "type": "image", "media": {"data": b64(mine)}})
        assert r.status_code == 200 and r.json()["data"]["status"] == "sent", r.text
        sent_id = r.json()["data"]["messageId"]
        r = await api.get(f"/devices/{sid}/messages/{sent_id}/media")
        assert r.status_code == 200 and r.content == mine
        assert engine(server).downloads(device["id"]) == 0  # from wasup's own copy
        # Two received files push the sent one out of the cache...
        for seed in (8, 9):
            data = png(size, seed=seed)
            message_id = await deliver_image(api, sid, data)
            r = await api.get(f"/devices/{sid}/messages/{message_id}/media")
            assert r.status_code == 200 and r.content == data
        cache = server.sup.config.media_dir / "cache"
        assert hashlib.sha256(mine).hexdigest() not in {p.name for p in cache.iterdir()}
        # ...and it comes back from WhatsApp, byte for byte, as a received one would.
        before = engine(server).downloads(device["id"])
        r = await api.get(f"/devices/{sid}/messages/{sent_id}/media")
        assert r.status_code == 200 and r.content == mine
        assert r.headers["content-type"] == "image/png"
        assert engine(server).downloads(device["id"]) == before + 1
