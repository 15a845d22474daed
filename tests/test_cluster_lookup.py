"""A device created on one cluster node is found at once on every node, before the cluster feed
(the mirror's LISTEN/NOTIFY) brought its row; a single node never reads the database for a
device it does not know.

Two in-process cluster nodes on one real PostgreSQL, each with its own in-process simulator.
Node A's mirror is held back (it ignores every announcement), so A knows node B's new device
only by the lookup of a directory miss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from api.server import Server, serve
from api.state import ApiSettings
from storage.devices import SqliteDevices
from storage.models import DeviceRow
from supervisor.cluster.mirror import Mirror
from supervisor.config import ClusterConfig, Config
from tests.conftest import api_client, running_server
from tests.pg_support import TestPostgres
from tests.test_kill9 import free_port

TOKEN = "cluster-lookup-operator-token"
SECRET = "cluster-lookup-secret"
PEER = "+15557654321"


@asynccontextmanager
async def _node(data_dir: Path, url: str, name: str) -> AsyncIterator[Server]:
    port = free_port()
    cluster = ClusterConfig(node_id=name, advertise_url=f"http://127.0.0.1:{port}",
                            secret=SECRET)
    config = Config(data_dir=data_dir, database_url=url, engine="simulator",
                    simulator_latency=0.01, cluster=cluster)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(
            serve, config, TOKEN, host="127.0.0.1", port=port,
            settings=ApiSettings(graceful_timeout=1.0, simulator_routes=True)))
        try:
            yield server
        finally:
            server.shutdown()


@pytest.fixture
def held_feed(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[int]]:
    """The devices whose announcements every mirror ignores (node A's feed held back)."""
    held: set[int] = set()
    refresh = Mirror.refresh

    async def holding(self: Mirror, device_ids: Any) -> None:
        await refresh(self, [d for d in device_ids if d not in held])

    monkeypatch.setattr(Mirror, "refresh", holding)
    yield held


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The references the devices repository was asked for (by id, sessionId or key hash)."""
    seen: list[object] = []
    get, by_key = SqliteDevices.get, SqliteDevices.get_by_key_hash

    def counting_get(self: SqliteDevices, ref: str | int) -> DeviceRow | None:
        seen.append(ref)
        return get(self, ref)

    def counting_by_key(self: SqliteDevices, key_hash: str) -> DeviceRow | None:
        seen.append(key_hash)
        return by_key(self, key_hash)

    monkeypatch.setattr(SqliteDevices, "get", counting_get)
    monkeypatch.setattr(SqliteDevices, "get_by_key_hash", counting_by_key)
    return seen


def _api(server: Server, token: str = TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.api_url, headers={"X-API-TOKEN": token},
                             timeout=30)


async def _connected(api: httpx.AsyncClient, sid: str) -> None:
    with trio.fail_after(30):
        while (await api.get(f"/devices/{sid}")).json()["data"]["status"] != "connected":  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_a_device_created_on_b_is_found_on_a_before_the_feed_brings_it(
    tmp_path: Path, postgres_server: TestPostgres, held_feed: set[int], reads: list[object]
) -> None:
    url = postgres_server.create_database()
    with trio.fail_after(120):
        async with (
            _node(tmp_path / "a", url, "a") as node_a,
            _node(tmp_path / "b", url, "b") as node_b,
            _api(node_a) as a,
            _api(node_b) as b,
        ):
            held_feed.update(range(1, 1000))  # A hears of no device from here on
            r = await b.post("/devices", json={"userId": "u1", "alias": "On B"})
            assert r.status_code == 201, r.text
            device = r.json()["data"]
            sid, device_id = device["sessionId"], device["id"]
            directory = node_a.sup.directory
            assert device_id not in directory

            # a read on A, by sessionId and by id, answers as B does
            on_a = await a.get(f"/devices/{sid}")
            assert on_a.status_code == 200, on_a.text
            on_b = await b.get(f"/devices/{sid}")
            for field in ("id", "sessionId", "userId", "alias", "node"):
                assert on_a.json()["data"][field] == on_b.json()["data"][field]
            assert on_a.json()["data"]["node"] == "b"
            assert device_id in directory  # entered: the next call reads nothing
            directory.drop(device_id)
            assert (await a.get(f"/devices/{device_id}")).status_code == 200

            # the device's own key on A, its first call there: found, and its own device only
            directory.drop(device_id)
            as_device = _api(node_a, device["apiKey"])
            async with as_device:
                r = await as_device.get(f"/devices/{sid}")
                assert r.status_code == 200 and r.json()["data"]["id"] == device_id, r.text
                other = await b.post("/devices", json={"userId": "u1", "alias": "Other"})
                assert other.status_code == 201, other.text
                r = await as_device.get(f"/devices/{other.json()['data']['id']}")
                assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"

                # a send through A, for a device A has not heard of: forwarded to B, answered
                # as B answers it (paired through A's simulator controls, forwarded too)
                with trio.fail_after(30):
                    while (await b.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                directory.drop(device_id)
                r = await a.post(f"/simulator/devices/{sid}/scan", json={})
                assert r.status_code == 200, r.text
                await _connected(b, sid)
                directory.drop(device_id)
                message = {"to": PEER, "text": "hello from A"}
                sent_a = await a.post(f"/devices/{sid}/messages", json=message)
                sent_b = await b.post(f"/devices/{sid}/messages", json=message)
                assert sent_a.status_code == sent_b.status_code == 200, sent_a.text
                assert sent_a.json()["data"].keys() == sent_b.json()["data"].keys()
                directory.drop(device_id)
                r = await as_device.post(f"/devices/{sid}/messages", json=message)
                assert r.status_code == 200, r.text

            # what names no device: 404, at most one indexed read, none for a malformed one
            reads.clear()
            for ref in ("987654", "user_u1_device_nobody"):
                r = await a.get(f"/devices/{ref}")
                assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
            r = await a.get("/devices/no%20such%20device")
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
            r = await a.post("/devices/99999999999999999999/logout")
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
            assert [ref for ref in reads if ref in (987654, "user_u1_device_nobody")] == [
                987654, "user_u1_device_nobody"]
            assert not [ref for ref in reads if isinstance(ref, str) and " " in ref]
            async with _api(node_a, "dev_" + "0" * 32) as stranger:
                assert (await stranger.get(f"/devices/{sid}")).status_code == 401


async def test_a_single_node_answers_a_miss_without_reading_the_database(
    tmp_path: Path, reads: list[object]
) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        reads.clear()
        for ref in ("424242", "user_u1_device_nobody"):
            r = await api.get(f"/devices/{ref}")
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
        async with api_client(server, token="dev_" + "0" * 32) as stranger:
            assert (await stranger.get("/devices/1")).status_code == 401
        assert reads == []
