"""Real ``wasup serve`` nodes on one PostgreSQL (tests/server_process.py), each with its own
in-process simulator (pairing across nodes is not meaningful here: each device's pairing is
cancelled, which leaves it ``disconnected``, free to move; a device in a login is never asked
for), with short lease timings passed by the flags:

- devices created on a node run there: the ownership splits between the nodes;
- kill -9 of a node: the other claims its devices within lease + scan (measured, printed);
- a node that joins takes devices from the loaded one, no faster than --rebalance-per-minute;
- SIGSTOP of a node past the lease: the other takes its devices; on SIGCONT it stops its
  engines by its own clock (the self-stop, counted in /metrics) and rejoins;
- SIGTERM: the node hands every device over and leaves, and its devices are claimed at once.

Trio's real clock and real sockets on 127.0.0.1; the PostgreSQL of tests/pg_support.py.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import psycopg
import trio

from tests.pg_support import TestPostgres
from tests.server_process import Launcher
from tests.test_kill9 import free_port, wait_ready

TOKEN = "cluster-test-operator-token"
SECRET = "cluster-test-secret-0123456789"
LEASE, RENEW, SCAN = 3.0, 1.0, 0.5
RATE = 2  # devices a joining node takes per minute
DEVICES_PER_NODE = 3


def owners(url: str) -> dict[str, int]:
    """Live leases per node, by the database."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT owner, count(*) FROM device_leases WHERE owner IS NOT NULL"
            " AND expires_at > now() GROUP BY owner"
        ).fetchall()
    return {str(owner): int(n) for owner, n in rows}


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float) -> float:
    """Wait until ``check()`` holds; the seconds it took."""
    start = trio.current_time()
    with trio.fail_after(within):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return trio.current_time() - start
            await trio.sleep(0.05)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


class Node:
    """One ``wasup serve`` node: its launcher and its API client."""

    def __init__(self, stack: AsyncExitStack, tmp_path: Path, name: str, url: str) -> None:
        self.name = name
        self.port = free_port()
        args = (
            "--database", url, "--node-id", name,
            "--advertise-url", f"http://127.0.0.1:{self.port}", "--cluster-secret", SECRET,
            "--lease-seconds", str(LEASE), "--lease-renew-seconds", str(RENEW),
            "--lease-scan-seconds", str(SCAN), "--rebalance-per-minute", str(RATE),
            "--qr-wait", "0",
        )
        env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "info"}
        self.launcher = Launcher(tmp_path / name / "data", self.port, env, args)
        self.stack = stack
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}/api/whatsapp",
                                     headers={"X-API-TOKEN": TOKEN}, timeout=10)

    async def start(self) -> None:
        (self.launcher.data_dir.parent).mkdir(parents=True, exist_ok=True)
        if self.launcher._process is None:
            await self.stack.enter_async_context(self.launcher)
            await self.stack.enter_async_context(self.api)
        await self.launcher.start()
        await wait_ready(self.api)

    def signal(self, signum: int) -> None:
        assert self.launcher.pid is not None
        os.kill(self.launcher.pid, signum)

    async def metrics(self) -> str:
        answer = await self.api.get("/metrics")
        assert answer.status_code == 200, answer.text
        return answer.text

    async def cluster(self) -> dict[str, dict[str, object]]:
        answer = await self.api.get("/cluster")
        assert answer.status_code == 200, answer.text
        return {n["nodeId"]: n for n in answer.json()["data"]["nodes"]}


async def test_two_then_three_nodes_share_fail_over_fence_and_drain(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with AsyncExitStack() as stack:
        a, b, c = (Node(stack, tmp_path, name, url) for name in ("a", "b", "c"))
        with trio.fail_after(300):
            await a.start()
            await b.start()
            # Devices created on a node run there.
            for n in range(DEVICES_PER_NODE):  # in turns: the split stays fair, nothing moves
                for node in (a, b):
                    created = await node.api.post(
                        "/devices", json={"userId": "u1", "alias": f"{node.name} {n}"})
                    assert created.status_code == 201, created.text
                    device = created.json()["data"]["id"]
                    detail = (await node.api.get(f"/devices/{device}")).json()["data"]
                    assert detail["node"] == node.name
                    cancelled = await node.api.post(f"/sessions/{detail['sessionId']}/cancel")
                    assert cancelled.status_code == 200, cancelled.text
            assert owners(url) == {"a": 3, "b": 3}
            view = await b.cluster()
            assert {n: (v["devices"], v["alive"]) for n, v in view.items()} == {
                "a": (3, True), "b": (3, True)}

            # kill -9 of a: b claims its devices once their leases expired.
            a.launcher.kill()
            await a.launcher.reaped()
            failover = await until(lambda: owners(url) == {"b": 6}, within=LEASE + SCAN + 10)
            print(f"\nfailover after kill -9: {failover:.2f} s (lease {LEASE:g} s, scan {SCAN:g} s)")
            assert failover <= LEASE + SCAN + 2
            assert not (await b.cluster())["a"]["alive"]

            # c joins: it asks b for its fair share (3), at most RATE a minute.
            await c.start()
            await until(lambda: owners(url).get("c", 0) == RATE, within=LEASE + 10)
            await trio.sleep(3 * SCAN + RENEW)
            assert owners(url) == {"b": 6 - RATE, "c": RATE}  # the rate holds it at RATE
            assert metric(await b.metrics(), "wasup_cluster_handovers_total") == RATE

            # SIGSTOP of c past its lease: b takes c's devices; on SIGCONT c stops its engines
            # by its own clock (it cannot have renewed) and rejoins.
            c.signal(signal.SIGSTOP)
            try:
                await until(lambda: owners(url) == {"b": 6}, within=LEASE + SCAN + 10)
                await trio.sleep(LEASE)
            finally:
                c.signal(signal.SIGCONT)
            text = await c.metrics()
            assert metric(text, "wasup_cluster_self_stops_total") == 1
            assert metric(text, "wasup_cluster_leases_held") == 0
            fenced = metric(text, "wasup_cluster_fenced_writes_total")
            print(f"writes fenced on the resumed node: {fenced:g}")
            await until(lambda: owners(url).get("c", 0) >= 1, within=60 + LEASE)  # rejoined
            assert (await c.cluster())["c"]["alive"]

            # SIGTERM of b: it hands everything over and leaves; c claims at once.
            held_by_b = owners(url)["b"]
            assert held_by_b >= 1
            b.signal(signal.SIGTERM)
            handed = await until(lambda: owners(url) == {"c": 6}, within=LEASE + 10)
            print(f"drain of {held_by_b} devices to the other node: {handed:.2f} s")
            assert handed < LEASE  # released, not expired
            await b.launcher.reaped()
            assert set(await c.cluster()) == {"a", "c"}  # b left; a died without leaving
