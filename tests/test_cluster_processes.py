"""Events and webhooks across real ``wasup serve`` cluster nodes on one PostgreSQL: a WebSocket
on node A sees, live and in order, the events of a device that node B runs; deliveries that a
node had in flight when it was killed with SIGKILL reach the receiver through another node.

Real processes, real sockets on 127.0.0.1, Trio's real clock, the test session's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import trio
from trio_websocket import open_websocket_url

from common.clock import parse_iso
from tests.pg_support import TestPostgres
from tests.test_webhook_crash import free_port, kill, wait_connected, wait_ready
from tests.webhook_support import start_receiver

TOKEN = "cluster-test-operator-token"


@asynccontextmanager
async def cluster_node(
    tmp_path: Path, url: str, node_id: str
) -> AsyncIterator[tuple[trio.Process, httpx.AsyncClient, int]]:
    """``wasup serve`` as cluster node ``node_id`` on ``url``; its process, an API client on
    it (once it answers) and its port. Killed on exit."""
    port = free_port()
    data_dir = tmp_path / node_id
    data_dir.mkdir()
    env = {
        **os.environ, "WASUP_API_TOKEN": TOKEN, "WASUP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "WASUP_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())",
        "serve", "--engine", "simulator", "--data-dir", str(data_dir), "--port", str(port),
        "--database", url, "--node-id", node_id,
        "--advertise-url", f"http://127.0.0.1:{port}", "--cluster-secret", "a-cluster-secret-for-tests",
    ]
    with (tmp_path / f"{node_id}.log").open("ab") as log:  # the node's log, for a failure
        process = await trio.lowlevel.open_process(
            command, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}/api/whatsapp",
            headers={"X-API-TOKEN": TOKEN}, timeout=10,
        ) as api:
            await wait_ready(api)
            yield process, api, port
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                await kill(process)


async def paired(api: httpx.AsyncClient, alias: str) -> str:
    """A new device of user ``u1`` on the node ``api`` talks to, paired through the
    simulator and connected; its session id."""
    r = await api.post("/devices", json={"userId": "u1", "alias": alias})
    assert r.status_code == 201, r.text
    sid = str(r.json()["data"]["sessionId"])
    r = await api.post(f"/simulator/devices/{sid}/scan", json={})
    assert r.status_code == 200, r.text
    await wait_connected(api, sid)
    return sid


async def test_a_websocket_on_node_a_sees_node_bs_device_live_and_in_order(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    lags: list[float] = []
    with trio.fail_after(120):
        async with (
            cluster_node(tmp_path, url, "a") as (_, _, port_a),
            cluster_node(tmp_path, url, "b") as (_, on_b, _),
            open_websocket_url(f"ws://127.0.0.1:{port_a}/?token={TOKEN}") as ws,
        ):
            seen: list[dict[str, object]] = []
            texts = [f"message {n}" for n in range(5)]
            done = trio.Event()

            async def read() -> None:  # at once, as they come: the latency is the node's
                while not done.is_set():
                    event = json.loads(await ws.get_message())
                    lags.append(time.time() - parse_iso(event["timestamp"]))
                    seen.append(event)
                    if [e["data"]["text"] for e in seen  # type: ignore[index]
                            if e["type"] == "message_received"] == texts:
                        done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                sid = await paired(on_b, "On B")
                for text in texts:
                    r = await on_b.post(f"/simulator/devices/{sid}/messages",
                                        json={"from": "+15550001111", "text": text})
                    assert r.status_code == 200, r.text
                await done.wait()
            r = await on_b.get("/events", params={"sessionId": sid, "limit": 100})
            assert r.status_code == 200, r.text
            logged = [e["id"] for e in r.json()["data"]]
    assert [e["sessionId"] for e in seen] == [sid] * len(seen)
    types = [e["type"] for e in seen]
    assert types[0] in {"device_status", "qr_code"} and "device_connected" in types
    assert [e["id"] for e in seen] == logged[: len(seen)]  # the log's order, nothing missed
    assert max(lags) < 1.0, lags
    print(f"\nnode B's events on node A's WebSocket: {len(seen)} events, latency "
          f"max {max(lags) * 1000:.0f} ms, median {sorted(lags)[len(lags) // 2] * 1000:.0f} ms")


def held(url: str, node_id: str) -> set[str]:
    """The pending deliveries ``node_id`` holds a claim on."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id FROM webhook_outbox WHERE claimed_by = %s AND status = 'pending'",
            (node_id,),
        ).fetchall()
    return {str(row[0]) for row in rows}


def attempts(url: str) -> dict[str, tuple[str, int]]:
    """Every delivery's status and recorded attempts."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, status, attempts FROM webhook_outbox").fetchall()
    return {str(row[0]): (str(row[1]), int(row[2])) for row in rows}


async def test_deliveries_in_flight_on_a_killed_node_are_delivered_by_another(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    """Nodes A and B share the outbox; A's device queues deliveries, which the receiver holds
    unanswered; A is killed with SIGKILL while it has some in flight; once A's claims expire,
    node B delivers them (A never recorded an attempt of theirs): every event arrives."""
    url = postgres_server.create_database()
    count = 12
    with trio.fail_after(150):
        async with (
            trio.open_nursery() as nursery,
            cluster_node(tmp_path, url, "a") as (node_a, on_a, _),
            cluster_node(tmp_path, url, "b"),
        ):
            receiver = await start_receiver(nursery, *["hang"] * count)
            r = await on_a.post("/devices", json={"userId": "u1", "alias": "On A"})
            sid = r.json()["data"]["sessionId"]
            r = await on_a.put(f"/devices/{sid}/settings/webhook",
                               json={"url": receiver.url, "events": ["message_received"]})
            assert r.status_code == 200, r.text
            await on_a.post(f"/simulator/devices/{sid}/scan", json={})
            await wait_connected(on_a, sid)
            texts = [f"message {n}" for n in range(count)]
            for text in texts:
                r = await on_a.post(f"/simulator/devices/{sid}/messages",
                                    json={"from": "+15550001111", "text": text})
                assert r.status_code == 200, r.text
            await receiver.wait_requests(count)  # every one in flight, unanswered
            in_flight_on_a = held(url, "a")
            await kill(node_a)
            killed = time.monotonic()
            # Both dispatchers take rows as they come: A holds some (all twelve taken by B
            # would be a 1 in 4096 chance were they even).
            assert in_flight_on_a
            # Recorded after the answers: poll the outbox.
            while sum(s == "delivered" for s, _ in attempts(url).values()) < count:  # noqa: ASYNC110
                await trio.sleep(0.05)
            waited = time.monotonic() - killed
            nursery.cancel_scope.cancel()
    answered = {q.headers["webhook-id"] for q in receiver.requests[count:]}
    texts_answered = {json.loads(q.body)["data"]["text"] for q in receiver.requests[count:]}
    assert texts_answered == set(texts)  # every event reached the receiver
    final = attempts(url)
    assert all(status == "delivered" for status, _ in final.values())
    # A was killed mid-delivery: its deliveries carry B's attempt alone.
    assert in_flight_on_a <= answered
    assert {final[i] for i in in_flight_on_a} == {("delivered", 1)}
    print(f"\n{len(in_flight_on_a)} of {count} deliveries in flight on the killed node were "
          f"delivered by the other {waited:.1f} s after the kill")
