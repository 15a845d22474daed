"""A wasup cluster of real processes for tests: ``wasup serve`` nodes on one PostgreSQL database
and one shared simulator (``wasup simulator serve``), each node on its own 127.0.0.1 port.

Usage::

    async with shared_simulator(tmp_path) as sim:
        cluster = ProcessCluster(tmp_path, url, sim)
        try:
            a = await cluster.add("a")
            sid = await cluster.pair_one(0)
            ...
        finally:
            await cluster.close()          # SIGKILL what is still running

Every node runs ``--engine simulator --simulator-url`` with the cluster's secret, its own data
directory and log (``tmp_path/<node>/server.log``, read it when a test fails), the default
lease timings unless a test passes others, and rate limits out of the way of the load.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from supervisor.engines import simulator_wire as wire
from tests.test_kill9 import free_port
from tests.test_simulator_shared import REPO, SharedSimulator

TOKEN = "cluster-scale-operator-token"
SECRET = "cluster-scale-secret-for-tests"
#: The cluster counters of ``/metrics`` a test reads, by short name.
COUNTERS = {
    "self_stops": "wasup_cluster_self_stops_total",
    "leases_lost": "wasup_cluster_leases_lost_total",
    "fenced_writes": "wasup_cluster_fenced_writes_total",
    "handovers": "wasup_cluster_handovers_total",
}


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str,
                interval: float = 0.1) -> float:
    """Poll ``check`` (another process: nothing to wait on) until it holds; the seconds it
    took. AssertionError naming ``what`` after ``within`` s."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within:g} s")
        await trio.sleep(interval)
    return time.monotonic() - start


@attrs.define(eq=False)
class NodeProcess:
    """One ``wasup serve`` cluster node and an API client on it."""

    name: str
    port: int
    process: trio.Process
    api: httpx.AsyncClient
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/?token={TOKEN}"

    async def data(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        r = await self.api.request(method, path, **kwargs)
        assert r.status_code == status, f"{method} {path} on {self.name}: {r.status_code} {r.text}"
        return r.json()["data"]

    async def device(self, sid: str) -> dict[str, Any]:
        device: dict[str, Any] = await self.data("GET", f"/devices/{sid}")
        return device

    async def counters(self) -> dict[str, int]:
        text = (await self.api.get("/metrics")).text
        out = {}
        for key, name in COUNTERS.items():
            found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
            out[key] = int(float(found.group(1))) if found else 0
        return out


@attrs.define(eq=False)
class ProcessCluster:
    """Nodes started by :meth:`add`; :meth:`close` kills what is left."""

    tmp_path: Path
    database: str
    simulator: SharedSimulator
    nodes: dict[str, NodeProcess] = attrs.field(factory=dict)

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.alive]

    def other_than(self, *names: str) -> list[NodeProcess]:
        return [n for n in self.live() if n.name not in names]

    async def add(self, name: str, *args: str) -> NodeProcess:
        """Start node ``name`` (extra ``wasup serve`` options ``args``); it answers when this
        returns."""
        port = free_port()
        data_dir = self.tmp_path / name / "data"
        data_dir.mkdir(parents=True)
        log = self.tmp_path / name / "server.log"
        env = {
            **os.environ, "WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "info",
            "WASUP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        }
        command = [
            sys.executable, "-m", "api.cli", "serve", "--engine", "simulator",
            "--simulator-url", self.simulator.url, "--data-dir", str(data_dir),
            "--host", "127.0.0.1", "--port", str(port), "--database", self.database,
            "--node-id", name, "--advertise-url", f"http://127.0.0.1:{port}",
            "--cluster-secret", SECRET, "--qr-wait", "0",
            "--rate-limit", "1000000", "--rate-burst", "1000000", *args,
        ]
        with log.open("ab") as out:
            process = await trio.lowlevel.open_process(
                command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                                headers={"X-API-TOKEN": TOKEN}, timeout=30, limits=limits)
        node = NodeProcess(name, port, process, api, log)
        self.nodes[name] = node

        async def answers() -> bool:
            assert node.alive, f"node {name} exited; see {log}"
            try:
                return (await api.get("/sessions")).status_code == 200
            except httpx.TransportError:
                return False
        await until(answers, 90, f"node {name} answering", 0.05)
        return node

    async def owners(self) -> dict[str, int]:
        """Live devices per live node, as ``GET /cluster`` on some node counts them."""
        view = await self.live()[0].data("GET", "/cluster")
        return {n["nodeId"]: int(n["devices"]) for n in view["nodes"] if n["alive"]}

    async def owner_of(self, sids: list[str],
                       asker: NodeProcess | None = None) -> dict[str, str | None]:
        """Each device's owner, as its detail on ``asker`` (else some live node) names it."""
        asker = asker or self.live()[0]
        return {sid: (await asker.device(sid)).get("node") for sid in sids}

    async def all_connected(self, sids: list[str], not_on: str | None = None) -> bool:
        """Every one of ``sids`` connected and owned by a live node (not ``not_on``)."""
        live = {n.name for n in self.live()} - {not_on}
        asker = self.other_than(not_on or "")[0]
        for sid in sids:
            d = await asker.device(sid)
            if d["status"] != "connected" or d.get("node") not in live:
                return False
        return True

    async def pair(self, count: int, width: int = 12) -> list[str]:
        """Create ``count`` devices on the live nodes in turn; each one's QR code read on the
        next node and scanned through the one after (any node answers for any device); wait
        until each is connected. Their session ids, in creation order."""
        sids: list[str | None] = [None] * count
        limiter = trio.CapacityLimiter(width)

        async def one(i: int) -> None:
            async with limiter:
                nodes = self.live()
                creator, reader, scanner = (nodes[(i + k) % len(nodes)] for k in range(3))
                created = await creator.data(
                    "POST", "/devices", 201, json={"userId": f"user{i % 7}", "alias": f"d{i}"})
                sid = created["sessionId"]
                sids[i] = sid

                async def shown() -> bool:
                    r = await reader.api.get(f"/devices/{sid}/qr")
                    assert r.status_code in (200, 404, 409), r.text
                    assert r.status_code == 200 or r.json()["code"] != "DEVICE_NOT_FOUND", (
                        f"{sid} created on {creator.name} unknown to {reader.name}")
                    return r.status_code == 200
                await until(shown, 60, f"QR of {sid} on {reader.name}", 0.05)
                await scanner.data("POST", f"/simulator/devices/{sid}/scan", json={})

                async def connected() -> bool:
                    return (await reader.device(sid))["status"] == "connected"
                await until(connected, 60, f"{sid} connected", 0.1)

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        return [sid for sid in sids if sid is not None]

    async def stop(self, name: str, signum: int = signal.SIGTERM, within: float = 30) -> int:
        """Send ``signum`` to node ``name`` and wait for its exit; its status."""
        node = self.nodes[name]
        node.process.send_signal(signum)
        with trio.fail_after(within):
            return await node.process.wait()

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            for node in self.nodes.values():
                if node.alive:
                    node.process.kill()
                    await node.process.wait()
                await node.api.aclose()


async def write_to(simulator: SharedSimulator, device_id: int, sender: str, text: str) -> None:
    """Someone writes ``text`` to the device, straight on the shared simulator (WhatsApp's
    side: it queues the message while the device has no connection)."""
    args = wire.encode_args(wire.CONTROL_METHODS, "incoming_message", {
        "device_id": device_id, "sender": sender, "text": text, "content": None,
        "quoted": None, "push_name": None, "media": None})
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{simulator.url}/controls/incoming_message", json={"args": args})
    assert r.status_code == 200, r.text


def replaced_devices(simulator_log: Path) -> list[int]:
    """The devices whose live connection the simulator replaced (``stream_replaced``), in
    order, from its log."""
    out = []
    for line in simulator_log.read_text(errors="replace").splitlines():
        found = re.search(r"stream_replaced: device (\d+):", line)
        if found:
            out.append(int(found.group(1)))
    return out


def event_json(message: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(message)
    return event
