"""A wasup cluster of 1, 2 and 3 ``wasup serve`` nodes on one PostgreSQL and one shared simulator.

Usage::

    .venv/bin/python bench/cluster.py [--devices 60] [--duration 5] [--connections 16]
                                      [--database postgresql://…] [--lease-seconds 3]
                                      [--lease-renew-seconds 1] [--lease-scan-seconds 0.5]
                                      [--rebalance-per-minute 600] [--workdir DIR]

It starts one ``wasup simulator serve`` process and, without ``--database``, one PostgreSQL
(``tests/pg_support.py``'s TestPostgres, a throwaway server in a temporary directory). Then for
1, 2 and 3 nodes in turn (each a real ``wasup serve --engine simulator --simulator-url …``
process on a free 127.0.0.1 port, its own data directory, the lease timings of the options):

- ``pair``: ``--devices`` devices created through the nodes in turn (the creations' own
  turns: each node creates every k-th device), each one's QR code read,
  scanned through the simulator controls of the API (``POST /simulator/devices/{id}/scan``)
  and awaited until ``connected``, every call on some node (round robin, not the owner's):
  devices paired per second, and the devices moved between nodes meanwhile (none should).
- ``api``: ``--connections`` clients for ``--duration`` seconds, each call on the next node for
  a random device (any node for any device): three ``GET /devices/{id}`` to one
  ``POST /devices/{id}/messages``; calls per second. A non-2xx answer is an error.
- with 3 nodes, ``join``: a fourth node joins; the seconds until the devices are balanced (no
  node short of the even share, devices / nodes rounded down, by the tolerance the nodes ask
  from: ``supervisor.cluster.book.balanced``) and all connected, and the devices per node.
- with 2 and 3 nodes, ``failover``: kill -9 of one node; the seconds until every device it
  held is ``connected`` on another node (its detail names a live owner, and the simulator
  counts every device's connection live again).

Between the runs the nodes are stopped (SIGTERM, all at once) and the database emptied (its
public schema dropped: ``--database`` must be a database the run may wipe); each run's device
ids start at the node count times 100000, so that the shared simulator never sees an id twice.
Throughout, the simulator counts ``streamReplaced``: a device connected from two nodes at once;
it must stay 0. The live nodes' cluster counters (self-stops, leases lost, fenced writes,
handovers, from ``/metrics``) are printed after each run.

It prints the figures, each rate also as a ratio to the one-node run, and as its last line one
JSON object of all figures. It stops everything it started (also on an error or Ctrl-C). This
machine's cores are shared by every node, the simulator, PostgreSQL and the load: the ratios
say what the cluster costs here, not how it scales over several machines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEER = "+15557654321"
API = "/api/whatsapp"
PROCESSES: list[subprocess.Popen[bytes]] = []  # everything started, for the final cleanup


class BenchError(RuntimeError):
    """The cluster misbehaved: the run stops and says what it saw."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process in its own session (a Ctrl-C reaches this script only, which stops it)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
    PROCESSES.append(process)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process in PROCESSES:
        PROCESSES.remove(process)


def stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process in PROCESSES:
            PROCESSES.remove(process)


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str,
                interval: float = 0.1) -> float:
    """Wait until ``check()`` holds; the seconds it took. BenchError after ``within``."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > within:
            raise BenchError(f"{what}: not within {within:g} s")
        await trio.sleep(interval)
    return time.perf_counter() - start


class Simulator:
    def __init__(self, workdir: Path, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "simulator.log"
        self.process = spawn(
            [sys.executable, "-m", "api.cli", "simulator", "serve", "--port", str(self.port),
             "--latency", str(latency), "--log-level", "warning"], self.log)
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30)

    async def ready(self) -> None:
        async def up() -> bool:
            try:
                return (await self.client.get("/health")).status_code == 200
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise BenchError(f"the simulator exited; see {self.log}") from None
                return False
        await until(up, 60, "the simulator answering /health")

    async def stats(self) -> dict[str, int]:
        stats: dict[str, int] = (await self.client.get("/simulator/stats")).json()
        return stats


class Node:
    def __init__(self, name: str, workdir: Path, database: str, simulator: Simulator,
                 args: argparse.Namespace, token: str, secret: str) -> None:
        self.name = name
        self.port = free_port()
        data_dir = workdir / name / "data"
        data_dir.mkdir(parents=True)
        self.log = workdir / name / "server.log"
        self.process = spawn(
            [sys.executable, "-m", "api.cli", "serve", "--engine", "simulator",
             "--simulator-url", simulator.url, "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--database", database,
             "--node-id", name, "--advertise-url", f"http://127.0.0.1:{self.port}",
             "--cluster-secret", secret, "--lease-seconds", str(args.lease_seconds),
             "--lease-renew-seconds", str(args.lease_renew_seconds),
             "--lease-scan-seconds", str(args.lease_scan_seconds),
             "--rebalance-per-minute", str(args.rebalance_per_minute),
             "--qr-wait", "0", "--rate-limit", "1000000", "--rate-burst", "1000000"],
            self.log, {"WASUP_API_TOKEN": token, "WASUP_LOG_LEVEL": "info"})
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}{API}",
                                     headers={"X-API-TOKEN": token}, timeout=30, limits=limits)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    async def ready(self) -> None:
        async def up() -> bool:
            try:
                return (await self.api.get("/sessions")).status_code == 200
            except httpx.TransportError:
                if not self.alive:
                    raise BenchError(f"node {self.name} exited; see {self.log}") from None
                return False
        await until(up, 90, f"node {self.name} answering", 0.05)

    async def data(self, method: str, path: str, ok: tuple[int, ...] = (200,),
                   **kwargs: Any) -> Any:
        r = await self.api.request(method, path, **kwargs)
        if r.status_code not in ok:
            raise BenchError(f"{method} {path} on node {self.name}: {r.status_code} {r.text[:300]}")
        return r.json()["data"] if r.content else None

    async def owners(self) -> dict[str, tuple[int, bool]]:
        """Live leases and liveness per node, by ``GET /cluster``."""
        view = await self.data("GET", "/cluster")
        return {n["nodeId"]: (int(n["devices"]), bool(n["alive"])) for n in view["nodes"]}

    async def close(self) -> None:
        stop(self.process)
        await self.api.aclose()


class Run:
    """One cluster of ``k`` nodes on the shared database and simulator."""

    def __init__(self, k: int, ctx: dict[str, Any]) -> None:
        self.k = k
        self.ctx = ctx
        self.nodes: list[Node] = []
        self.sids: list[str] = []
        self._turn = itertools.count()
        self._creations = itertools.count()  # creations take turns of their own
        self.rescans = 0  # QR codes scanned after the first (a pairing restarted elsewhere)
        self.scan_refusals: list[str] = []
        self.unseen: list[float] = []  # a device GET answered 404 after its creation: when

    def node(self, turns: itertools.count[int] | None = None) -> Node:
        """The next live node, round robin (over ``turns``: the calls' own by default)."""
        live = [n for n in self.nodes if n.alive]
        return live[next(self._turn if turns is None else turns) % len(live)]

    async def add_node(self, name: str) -> Node:
        c = self.ctx
        node = Node(name, c["workdir"], c["database"], c["simulator"], c["args"], c["token"],
                    c["secret"])
        self.nodes.append(node)
        await node.ready()
        return node

    async def pair(self, n: int, width: int) -> float:
        """Create, show, scan and connect ``n`` devices, ``width`` at a time; the seconds."""
        limiter = trio.CapacityLimiter(width)

        async def one(i: int) -> None:
            async with limiter:
                created = await self.node(self._creations).data(
                    "POST", "/devices", (201,), json={"userId": "bench", "alias": f"b{self.k}-{i}"})
                sid = created["sessionId"]
                self.sids.append(sid)

                # Scan each QR code shown once; a device handed over between nodes meanwhile
                # (rebalancing) answers 503 "try again shortly" and starts a new pairing on
                # its new owner, whose QR code is scanned in turn.
                scanned: set[str] = set()
                deadline = time.perf_counter() + 120
                created_at = time.perf_counter()
                while True:
                    node = self.node()
                    r = await node.api.get(f"/devices/{sid}")
                    if r.status_code == 404:  # not yet known on this node: its lag
                        self.unseen.append(time.perf_counter() - created_at)
                        if time.perf_counter() - created_at > 30:
                            raise BenchError(f"device {sid}: still 404 on {node.name} 30 s "
                                             "after its creation")
                        await trio.sleep(0.05)
                        continue
                    if r.status_code != 200:
                        raise BenchError(f"GET /devices/{sid} on {node.name}: {r.status_code} "
                                         f"{r.text[:200]}")
                    d = r.json()["data"]
                    if d["status"] == "connected":
                        break
                    if time.perf_counter() > deadline:
                        raise BenchError(f"device {sid}: not connected within 120 s "
                                         f"(status {d['status']}, scans {len(scanned)})")
                    r = await self.node().api.get(f"/devices/{sid}/qr")
                    if r.status_code == 200 and r.json()["data"]["qrString"] not in scanned:
                        qr = r.json()["data"]["qrString"]
                        node = self.node()
                        r = await node.api.post(f"/simulator/devices/{sid}/scan", json={})
                        if r.status_code == 200:
                            scanned.add(qr)
                        else:  # scanned again at the next turn
                            self.scan_refusals.append(
                                f"{node.name} {sid}: {r.status_code} {r.text[:160]}")
                    await trio.sleep(0.1)
                self.rescans += max(0, len(scanned) - 1)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        return time.perf_counter() - start

    async def load(self, duration: float, connections: int) -> dict[str, Any]:
        """Device GETs and sends on any node for any device; calls per second."""
        counts = {"get": 0, "send": 0}
        errors: dict[str, int] = {}
        samples: list[str] = []
        deadline = time.perf_counter() + duration
        rng = random.Random(self.k)

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < deadline:
                node = self.node()
                sid = rng.choice(self.sids)
                if i % 4 == 3:
                    kind = "send"
                    r = await node.api.post(f"/devices/{sid}/messages",
                                            json={"to": PEER, "text": f"bench {i}"})
                else:
                    kind = "get"
                    r = await node.api.get(f"/devices/{sid}")
                i += 1
                counts[kind] += 1
                if r.status_code >= 300:
                    key = f"{kind} {r.status_code}"
                    errors[key] = errors.get(key, 0) + 1
                    if len(samples) < 5:
                        samples.append(f"{key} on {node.name} for {sid}: {r.text[:200]}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for w in range(connections):
                nursery.start_soon(worker, w)
        elapsed = time.perf_counter() - start
        total = counts["get"] + counts["send"]
        return {"rps": total / elapsed, "gets": counts["get"], "sends": counts["send"],
                "errors": errors, "samples": samples}

    async def all_connected(self, exclude: str | None = None) -> bool:
        """Every device connected, owned by a live node other than ``exclude``, and the
        simulator counting every device's connection live."""
        stats = await self.ctx["simulator"].stats()
        if stats["live"] < len(self.sids):
            return False
        for sid in self.sids:
            d = await self.node().data("GET", f"/devices/{sid}")
            if d["status"] != "connected" or d.get("node") in (None, exclude):
                return False
        return True

    async def failover(self, victim: Node, within: float) -> tuple[float, int]:
        held = [sid for sid in self.sids
                if (await victim.data("GET", f"/devices/{sid}")).get("node") == victim.name]
        victim.process.kill()  # kill -9
        victim.process.wait()
        start = time.perf_counter()
        await until(lambda: self.all_connected(exclude=victim.name), within,
                    f"failover of node {victim.name}'s {len(held)} devices", 0.1)
        return time.perf_counter() - start, len(held)

    async def join(self, name: str, within: float) -> tuple[float, dict[str, int]]:
        from supervisor.cluster.book import balanced, fair_share  # the nodes' own rule

        await self.add_node(name)
        start = time.perf_counter()
        live = len([n for n in self.nodes if n.alive])
        share = fair_share(len(self.sids), live, None)

        async def done() -> bool:
            owners = await self.node().owners()
            counts = [d for d, alive in owners.values() if alive]
            if len(counts) < live or sum(counts) != len(self.sids):
                return False
            if not balanced(counts, share):  # a node would still ask: not done moving
                return False
            return await self.all_connected()
        await until(done, within, f"balance after {name} joined", 0.25)
        seconds = time.perf_counter() - start
        owners = await self.node().owners()
        return seconds, {n: d for n, (d, alive) in owners.items() if alive}

    async def counters(self) -> dict[str, int]:
        """The live nodes' cluster counters (``/metrics``), summed."""
        names = {"self_stops": "wasup_cluster_self_stops_total",
                 "leases_lost": "wasup_cluster_leases_lost_total",
                 "fenced_writes": "wasup_cluster_fenced_writes_total",
                 "handovers": "wasup_cluster_handovers_total"}
        out = dict.fromkeys(names, 0)
        for node in self.nodes:
            if not node.alive:
                continue
            text = (await node.api.get("/metrics")).text
            for key, name in names.items():
                found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
                if found:
                    out[key] += int(float(found.group(1)))
        return out

    async def close(self) -> None:
        """SIGTERM to every node at once (each drains), then wait; SIGKILL after 20 s."""
        with trio.CancelScope(shield=True):
            stop_all([node.process for node in self.nodes])
            for node in self.nodes:
                await node.api.aclose()


def say(line: str) -> None:
    print(line, flush=True)


async def bench(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    from tests.pg_support import renumber, wipe  # the database's SQL stays out of bench/

    simulator: Simulator = ctx["simulator"]
    await simulator.ready()
    fig: dict[str, Any] = {"devices": args.devices, "nodes": {}}
    for k in (1, 2, 3):
        run = Run(k, ctx)
        per: dict[str, Any] = {}
        try:
            if k > 1:
                wipe(ctx["database"])
            for i in range(k):
                await run.add_node(f"r{k}n{i + 1}")
            renumber(ctx["database"], k * 100_000)
            seconds = await run.pair(args.devices, args.pair_width)
            per["pair_s"] = round(seconds, 2)
            per["pair_rescans"] = run.rescans
            per["pair_scan_refusals"] = len(run.scan_refusals)
            per["pair_404s"] = len(run.unseen)
            per["pair_404_max_s"] = round(max(run.unseen, default=0.0), 3)
            per["pair_handovers"] = (await run.counters())["handovers"]  # should stay 0
            if run.unseen:
                say(f"{k} node(s): {len(run.unseen)} device GETs answered 404 right after the "
                    f"device's creation on another node (up to {per['pair_404_max_s']} s after)")
            if run.scan_refusals:
                say(f"{k} node(s): {len(run.scan_refusals)} scans refused, {run.rescans} QR codes "
                    f"scanned again; first: {run.scan_refusals[:3]}")
            per["pairs_per_s"] = round(args.devices / seconds, 2)
            owners = await run.nodes[0].owners()
            per["devices_per_node"] = {n: d for n, (d, alive) in owners.items() if alive}
            if sum(per["devices_per_node"].values()) != args.devices:
                raise BenchError(f"{k} nodes: leases {per['devices_per_node']} do not add up "
                                 f"to {args.devices} devices")
            say(f"{k} node(s): {args.devices} devices paired in {seconds:.2f} s = "
                f"{per['pairs_per_s']:.2f}/s; owners {per['devices_per_node']}; "
                f"{per['pair_handovers']} devices moved meanwhile")
            load = await run.load(args.duration, args.connections)
            per["api_rps"] = round(load["rps"], 1)
            per["api_gets"], per["api_sends"] = load["gets"], load["sends"]
            per["api_errors"] = load["errors"]
            say(f"{k} node(s): {load['rps']:.1f} API calls/s over {k} node(s) "
                f"({load['gets']} device GETs, {load['sends']} sends, {args.connections} "
                f"clients, {args.duration:g} s)"
                + (f"; ERRORS {load['errors']}: {load['samples']}" if load["errors"] else ""))
            if k == 3:
                seconds, per_node = await run.join("r3n4", args.join_within)
                per["join_balance_s"] = round(seconds, 2)
                per["after_join_devices_per_node"] = per_node
                say(f"3 nodes + r3n4 joining: balanced and all connected after {seconds:.2f} s; "
                    f"devices per node {per_node} (fair share {math.ceil(args.devices / 4)})")
            if k >= 2:
                victim = run.nodes[0]
                seconds, held = await run.failover(victim, args.failover_within)
                per["failover_s"] = round(seconds, 2)
                per["failover_devices"] = held
                survivors = len([n for n in run.nodes if n.alive])
                say(f"{k} node(s): kill -9 of {victim.name} ({held} devices): all connected on "
                    f"the {survivors} other node(s) after {seconds:.2f} s"
                    f" (lease {args.lease_seconds:g} s, scan {args.lease_scan_seconds:g} s)")
            stats = await simulator.stats()
            per["stream_replaced"] = stats["streamReplaced"]
            per["counters"] = await run.counters()
            say(f"{k} node(s): streamReplaced so far {stats['streamReplaced']}; live nodes' "
                f"cluster counters {per['counters']}")
        finally:
            fig["nodes"][str(k)] = per
            await run.close()
    stats = await simulator.stats()
    await simulator.client.aclose()
    fig["stream_replaced"] = stats["streamReplaced"]
    one = fig["nodes"]["1"]
    for key in ("2", "3"):
        per = fig["nodes"][key]
        per["pairs_ratio"] = round(per["pairs_per_s"] / one["pairs_per_s"], 3)
        per["api_ratio"] = round(per["api_rps"] / one["api_rps"], 3)
        say(f"{key} nodes / 1 node: pairing x{per['pairs_ratio']:.3f}, API calls x{per['api_ratio']:.3f}")
    verdict = "ok" if stats["streamReplaced"] == 0 else "DOUBLE CONNECTIONS"
    say(f"simulator: streamReplaced {stats['streamReplaced']} ({verdict}); "
        f"connections {stats['connections']}, live {stats['live']}")
    return fig


def leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of API load per run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--pair-width", type=int, default=20, help="devices pairing at once")
    parser.add_argument("--database", help="an empty PostgreSQL database (default: a PostgreSQL "
                        "server of our own, tests/pg_support.py)")
    parser.add_argument("--lease-seconds", type=float, default=3.0)
    parser.add_argument("--lease-renew-seconds", type=float, default=1.0)
    parser.add_argument("--lease-scan-seconds", type=float, default=0.5)
    parser.add_argument("--rebalance-per-minute", type=int, default=600)
    parser.add_argument("--simulator-latency", type=float, default=0.05,
                        help="seconds of each simulated pairing or login handshake")
    parser.add_argument("--failover-within", type=float, default=60.0)
    parser.add_argument("--join-within", type=float, default=120.0)
    parser.add_argument("--workdir", help="keep the nodes' data and logs here (default: a "
                        "temporary directory, removed at the end)")
    args = parser.parse_args()

    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="wasup-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    postgres = None
    failed = True
    try:
        database = args.database
        if database is None:
            from tests.pg_support import TestPostgres
            postgres = TestPostgres.start()
            database = postgres.create_database()
        ctx: dict[str, Any] = {"args": args, "workdir": workdir, "database": database,
               "simulator": Simulator(workdir, args.simulator_latency),
               "token": "bench-" + secrets.token_urlsafe(16),
               "secret": "bench-" + secrets.token_urlsafe(24)}
        say(f"cluster bench: {args.devices} devices; lease {args.lease_seconds:g} s, renewal "
            f"{args.lease_renew_seconds:g} s, scan {args.lease_scan_seconds:g} s, rebalance "
            f"{args.rebalance_per_minute}/min; database "
            f"{'given' if args.database else 'own PostgreSQL'}; logs in {workdir}")
        fig = trio.run(bench, args, ctx)
        failed = fig["stream_replaced"] != 0 or any(
            per.get("api_errors") for per in fig["nodes"].values())
        print(json.dumps(fig))
    except* BenchError as group:
        for exc in leaves(group):
            say(f"FAILED: {exc} (logs in {workdir})")
    finally:
        for process in list(PROCESSES):
            stop(process, 10.0)
        if postgres is not None:
            postgres.stop()
        if not keep and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
