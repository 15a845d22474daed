"""Cluster-wide events (supervisor/cluster/feed.py): two wasup nodes on one PostgreSQL, a
WebSocket on node A sees the events of a device on node B, live, in id order, within a
second; a resume (``?since=``) meets the live stream with no gap and no duplicate; the local
consumers of B's bus keep receiving B's events.

The nodes are served in this process (tests/test_ws.py's ``serve``), each with its own store,
bus, feed and in-process simulator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from common.clock import now_epoch, parse_iso
from supervisor.config import ClusterConfig
from tests.pg_support import TestPostgres
from tests.test_ws import TIMEOUT, TOKEN, Server, connect, create_device, scan, serve, wait_for
from tests.test_ws_resume import logged_ids


def node(node_id: str) -> ClusterConfig:
    return ClusterConfig(node_id=node_id, advertise_url="http://127.0.0.1:1", secret="s")


def counter_value(metrics: str, name: str) -> float:
    (line,) = [line for line in metrics.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


@asynccontextmanager
async def two_nodes(tmp_path: Path, url: str) -> AsyncIterator[tuple[Server, Server]]:
    async with (
        serve(tmp_path / "a", database_url=url, cluster=node("a")) as a,
        serve(tmp_path / "b", database_url=url, cluster=node("b")) as b,
    ):
        yield a, b


async def test_a_websocket_on_one_node_sees_another_nodes_device_live_in_order(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    with trio.fail_after(TIMEOUT):
        async with two_nodes(tmp_path, url) as (a, b), b.client() as on_b:
            async with b.sup.bus.subscribe() as local, connect(f"{a.ws_url}/?token={TOKEN}") as conn:
                device = await create_device(on_b, "Shop")
                qr, _ = await wait_for(conn, "qr_code", device["sessionId"])
                assert qr["data"]["qrCode"].startswith("data:image/png;base64,")  # rendered
                await scan(on_b, device["id"])
                connected, seen = await wait_for(conn, "device_connected", device["sessionId"])
                lags = [now_epoch() - parse_iso(connected["timestamp"])]
                response = await on_b.post(
                    f"/simulator/devices/{device['id']}/messages",
                    json={"from": "+15550001111", "text": "through the log"},
                )
                assert response.status_code == 200, response.text
                message, more = await wait_for(conn, "message_received", device["sessionId"])
                lags.append(now_epoch() - parse_iso(message["timestamp"]))
                assert message["data"]["text"] == "through the log"
                got = [qr["id"], *[e["id"] for e in seen], *[e["id"] for e in more]]
                # Every event of the log, once, in order (the device's only: no other device).
                logged = await logged_ids(b.sup)
                assert got == logged[logged.index(qr["id"]):][: len(got)]
                assert max(lags) < 1.0, lags
                # A's feed counts what it handed on, in A's /metrics.
                async with a.client() as on_a:
                    metrics = (await on_a.get("/metrics")).text
                fed = counter_value(metrics, "wasup_cluster_feed_events_total")
                assert fed >= len(got), metrics
                assert counter_value(metrics, "wasup_cluster_feed_reads_total") >= 1
                # B's own subscribers still get B's events from its bus, as on one node.
                assert (await local.receive()).session_id == device["sessionId"]
            print(f"feed latency: {max(lags) * 1000:.0f} ms (event timestamp to node A's socket)")


async def test_resume_on_another_node_has_no_gap_and_no_duplicate(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    with trio.fail_after(TIMEOUT):
        async with two_nodes(tmp_path, url) as (a, b), b.client() as on_b:
            device = await create_device(on_b, "Shop")
            await scan(on_b, device["id"])
            async with connect(f"{b.ws_url}/?token={TOKEN}") as watch:
                await wait_for(watch, "device_connected", device["sessionId"])
            since = (await logged_ids(b.sup))[-1]
            sent = 0

            async def chatter() -> None:
                nonlocal sent
                for n in range(30):
                    response = await on_b.post(
                        f"/simulator/devices/{device['id']}/messages",
                        json={"from": "+15550001111", "text": f"m{n}"},
                    )
                    assert response.status_code == 200, response.text
                    sent += 1
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chatter)
                await trio.sleep(0.1)  # some events before the resume, some during, some after
                async with connect(f"{a.ws_url}/?token={TOKEN}&since={since}") as conn:
                    texts: list[str] = []
                    ids: list[int] = []
                    while len(texts) < 30:
                        event = json.loads(await conn.get_message())
                        ids.append(event["id"])
                        if event["type"] == "message_received":
                            texts.append(event["data"]["text"])
            assert texts == [f"m{n}" for n in range(30)]
            assert ids == (await logged_ids(b.sup, since=since))[: len(ids)]  # no gap, no dup
