"""HTTP throughput of wasup's API: a device GET against a bare JSON endpoint, one run.

Usage::

    .venv/bin/python bench/api_throughput.py [--devices 1000] [--connections 32]
                                              [--duration 5] [--clients 2]
                                              [--database postgresql://…]
                                              [--compare postgresql://…]

The parent process starts the server in a subprocess (``--serve``): ``api.server.serve`` with
the simulator engine, its data in SQLite or, with ``--database``, in that (empty) PostgreSQL
database, the per-credential rate limit raised out of the way, and
``--devices`` devices created directly through the supervisor (they stay in their pairing
cycle, as on a real gateway). The load comes from ``--clients`` other processes
(``--load``), each an httpx client with keep-alive connections, ``--connections`` in all,
running one endpoint at a time for ``--duration`` seconds in all (at most ``--max-requests``
per turn), the endpoints taking turns over ``--rounds`` rounds:

- ``bare``: ``GET /api/whatsapp/_bench/bare``, a route this script adds to the app in the
  server process only (wasup itself has no such route). It goes through everything a real
  route goes through (Hypercorn, Quart routing, the authentication and rate-limit hook, the
  JSON envelope and the after-request hook) and does nothing else: it answers
  ``{"success": true, "data": {}}``.
- ``device``: ``GET /api/whatsapp/devices/{id}``, cycling over every device (session ids).
- ``sessions``: ``GET /api/whatsapp/sessions`` (every device: a large body by design).

It prints requests per second and p50/p99 latency for each, the ratio device/bare (target:
at least 0.7), and as its last line one JSON object with ``device_get_rps``,
``sessions_rps``, ``bare_rps``, ``device_get_p99_ms``, ``bare_p99_ms`` and ``ratio``.
``--compare``: the whole run twice, on SQLite and then on that (empty) PostgreSQL database,
ending with one JSON line of the PostgreSQL/SQLite ratios of each endpoint's requests per
second.
A non-2xx answer counts as an error and is reported; the run fails if any endpoint had one.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENDPOINTS = ("bare", "device", "sessions")
BARE_PATH = "/api/whatsapp/_bench/bare"


# -- server process ---------------------------------------------------------------------------


async def run_server(args: argparse.Namespace) -> None:
    from quart import Blueprint, jsonify

    from api.app import API_PREFIX
    from api.ratelimit import RateLimitPolicy
    from api.server import serve
    from api.state import ApiSettings
    from supervisor.config import Config

    config = Config(data_dir=Path(args.data_dir), database_url=args.database, engine="simulator")
    # The benchmark measures the request path, not the limiter's refusals.
    settings = ApiSettings(rate_limit=RateLimitPolicy(rate=1e9, burst=1_000_000_000))
    bare = Blueprint("bench_bare", __name__)

    @bare.get("/_bench/bare")
    async def bench_bare() -> Any:
        return jsonify({"success": True, "data": {}})

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, args.token, host="127.0.0.1", port=0, settings=settings)
        )
        server.app.register_blueprint(bare, url_prefix=API_PREFIX)
        session_ids: list[str] = []
        limiter = trio.CapacityLimiter(64)

        async def create(i: int) -> None:
            async with limiter:
                row, _key = await server.sup.create_device("bench", f"Bench Device {i}")
                session_ids.append(row.session_id)

        started = time.perf_counter()
        async with trio.open_nursery() as creators:
            for i in range(args.devices):
                creators.start_soon(create, i)
        print(
            json.dumps(
                {
                    "url": server.url,
                    "sessions": sorted(session_ids),
                    "create_s": round(time.perf_counter() - started, 2),
                }
            ),
            flush=True,
        )
        # Serve until the parent closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        server.shutdown()


# -- load process -----------------------------------------------------------------------------


async def run_load(args: argparse.Namespace) -> None:
    import httpx

    paths: list[str]
    if args.endpoint == "bare":
        paths = [BARE_PATH]
    elif args.endpoint == "sessions":
        paths = ["/api/whatsapp/sessions"]
    else:
        paths = [f"/api/whatsapp/devices/{s}" for s in args.sessions]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    budget = args.max_requests
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(
        base_url=args.url, headers={"X-API-TOKEN": args.token}, limits=limits, timeout=30
    ) as client:
        # Warm up: open the connections and touch every code path once.
        async with trio.open_nursery() as nursery:
            for i in range(args.connections):
                nursery.start_soon(client.get, paths[i % len(paths)])
        deadline = trio.current_time() + args.duration
        counter = 0

        async def worker(offset: int) -> None:
            nonlocal counter, budget
            i = offset
            while trio.current_time() < deadline and budget > 0:
                budget -= 1
                path = paths[i % len(paths)]
                i += args.connections
                t0 = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - t0)
                if response.status_code >= 300:
                    key = str(response.status_code)
                    errors[key] = errors.get(key, 0) + 1
                counter += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for offset in range(args.connections):
                nursery.start_soon(worker, offset)
        elapsed = time.perf_counter() - start
    print(json.dumps({"count": counter, "elapsed": elapsed, "latencies": latencies,
                      "errors": errors}))


# -- parent -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def drive(args: argparse.Namespace, url: str, token: str, endpoint: str, sessions_file: str,
          duration: float) -> dict[str, Any]:
    """Run ``endpoint`` from ``args.clients`` load processes at once; their raw results."""
    per_client = max(1, args.connections // args.clients)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--load", "--url", url, "--token", token,
             "--endpoint", endpoint, "--sessions-file", sessions_file,
             "--connections", str(per_client), "--duration", str(duration),
             "--max-requests", str(max(1, args.max_requests // args.clients))],
            stdout=subprocess.PIPE, text=True,
        )
        for _ in range(args.clients)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"load process for {endpoint} failed ({proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    # The processes ran side by side: their counts add up over the longest one's time.
    return {
        "count": sum(r["count"] for r in results),
        "elapsed": max(r["elapsed"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "errors": [r["errors"] for r in results],
    }


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over every round of one endpoint."""
    latencies = sorted(x for r in rounds for x in r["latencies"])
    count = sum(r["count"] for r in rounds)
    elapsed = sum(r["elapsed"] for r in rounds)
    errors: dict[str, int] = {}
    for r in rounds:
        for per_process in r["errors"]:
            for key, n in per_process.items():
                errors[key] = errors.get(key, 0) + n
    return {
        "rps": count / elapsed if elapsed > 0 else 0.0,
        "count": count,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors,
    }


def main_parent(args: argparse.Namespace) -> int:
    token = "bench-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="wasup-bench-") as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--data-dir", str(Path(tmp) / "data"),
             "--token", token, "--devices", str(args.devices),
             *(["--database", args.database] if args.database else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert server.stdout is not None
            ready = json.loads(server.stdout.readline())
            url, sessions = ready["url"], ready["sessions"]
            if len(sessions) != args.devices:
                raise SystemExit(f"server created {len(sessions)} devices, not {args.devices}")
            sessions_file = str(Path(tmp) / "sessions.json")
            Path(sessions_file).write_text(json.dumps(sessions))
            print(f"server {url}: {len(sessions)} simulator devices created in "
                  f"{ready['create_s']} s; {args.clients} load processes, "
                  f"{args.connections} keep-alive connections, {args.duration} s per endpoint "
                  f"in {args.rounds} rounds")
            figures: dict[str, dict[str, Any]] = {}
            labels = {
                "bare": f"GET {BARE_PATH} (bench-only route: auth + rate limit + JSON, no work)",
                "device": "GET /api/whatsapp/devices/{id} (1,000 devices, round robin)",
                "sessions": "GET /api/whatsapp/sessions (all devices in one body)",
            }
            # Endpoints take turns, round after round, so that a change in the machine's load
            # during the run weighs on each of them alike.
            runs: dict[str, list[dict[str, Any]]] = {endpoint: [] for endpoint in ENDPOINTS}
            for _ in range(args.rounds):
                for endpoint in ENDPOINTS:
                    runs[endpoint].append(
                        drive(args, url, token, endpoint, sessions_file,
                              args.duration / args.rounds)
                    )
            for endpoint in ENDPOINTS:
                result = figures[endpoint] = merge(runs[endpoint])
                print(f"{endpoint:9s} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:7.2f} ms"
                      f"  p99 {result['p99_ms']:7.2f} ms  n={result['count']}"
                      f"{'  errors=' + json.dumps(result['errors']) if result['errors'] else ''}"
                      f"  {labels[endpoint]}")
        finally:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    ratio = figures["device"]["rps"] / figures["bare"]["rps"] if figures["bare"]["rps"] else 0.0
    verdict = "ok" if ratio >= 0.7 else "BELOW TARGET"
    print(f"ratio device-GET / bare = {ratio:.3f} (target >= 0.7: {verdict})")
    args.figures = figures
    print(json.dumps({
        "device_get_rps": round(figures["device"]["rps"], 1),
        "sessions_rps": round(figures["sessions"]["rps"], 1),
        "bare_rps": round(figures["bare"]["rps"], 1),
        "device_get_p99_ms": round(figures["device"]["p99_ms"], 2),
        "bare_p99_ms": round(figures["bare"]["p99_ms"], 2),
        "ratio": round(ratio, 3),
    }))
    return 1 if any(f["errors"] for f in figures.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", help="an empty PostgreSQL database for the server's data "
                        "(default: SQLite in a temporary directory)")
    parser.add_argument("--compare", metavar="URL", help="run on SQLite and on this empty "
                        "PostgreSQL database; print the ratios")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", choices=ENDPOINTS, help=argparse.SUPPRESS)
    parser.add_argument("--sessions-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(run_server, args)
        return 0
    if args.load:
        if args.endpoint == "device":
            args.sessions = json.loads(Path(args.sessions_file).read_text())
        trio.run(run_load, args)
        return 0
    if args.compare:
        failed = main_parent(args)
        sqlite = args.figures
        args.database = args.compare
        failed |= main_parent(args)
        print(json.dumps({f"{endpoint}_rps_pg_over_sqlite":
                          round(args.figures[endpoint]["rps"] / sqlite[endpoint]["rps"], 3)
                          if sqlite[endpoint]["rps"] else 0.0 for endpoint in ENDPOINTS}))
        return failed
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
