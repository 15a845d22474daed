"""Sends per second through the API, as a ratio of a bare endpoint in the same run.

The send half of ``bench/messages.py`` (which runs it after the history half): a server
process (``api.server.serve``, the simulator engine, the rate limit and the send pacing raised
out of the way, the queue made large) with one connected device, and this process as the load:
``--connections`` keep-alive connections (httpx) for ``--duration`` seconds in all per endpoint,
the endpoints taking turns over ``--rounds`` rounds so a change of the machine's load weighs on
each alike:

- ``health``: ``GET /api/whatsapp/health``, the bare endpoint (no device, no storage);
- ``text``: ``POST …/devices/{id}/messages`` ``{"to", "text"}``: stored, queued, handed to the
  simulated WhatsApp and answered ``sent``;
- ``image``: the same with ``{"type": "image", "media": {"data": <base64>}}`` of an image of
  ``--image-kb`` KiB (a PNG header and random bytes): decoded, kept in the media store, stored,
  sent with its file.

It prints requests per second and p50/p99 latency of each, and the ratios ``text / health``
and ``image / health`` (1.0: a send costs what a bare request costs). :func:`run` returns the
figures as a dict for the last JSON line. A non-2xx answer counts as an error; the run fails if
any endpoint had one.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
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

ENDPOINTS = ("health", "text", "image")
TO = "+15550002222"


# -- server process ---------------------------------------------------------------------------


async def run_server(data_dir: str, token: str) -> None:
    """Serve with one connected simulator device; print the URL and its session id, then
    serve until stdin closes."""
    from api.ratelimit import RateLimitPolicy
    from api.server import serve
    from api.state import ApiSettings
    from supervisor.config import Config, SendingConfig
    from supervisor.engines.simulator import SimulatorEngine

    config = Config(
        data_dir=Path(data_dir), engine="simulator", simulator_latency=0.01,
        sending=SendingConfig(queue_size=1_000_000, rate_per_minute=1e9, burst=1_000_000,
                              jitter=0.0),
    )
    settings = ApiSettings(rate_limit=RateLimitPolicy(rate=1e9, burst=1_000_000_000))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, token, host="127.0.0.1", port=0, settings=settings))
        sup = server.sup
        engine = sup.engine
        assert isinstance(engine, SimulatorEngine)
        row, _key = await sup.create_device("bench", "Bench Sender")
        async with sup.bus.subscribe(device_ids=frozenset({row.id})) as events:
            await sup.wait_qr(row.id, 30)
            await engine.scan(row.id)
            while sup.rows[row.id].status != "connected":
                await events.receive()
        print(json.dumps({"url": server.url, "session": row.session_id}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        server.shutdown()


# -- load (this process) ----------------------------------------------------------------------


def request_of(endpoint: str, session: str, image: str) -> tuple[str, str, Any]:
    if endpoint == "health":
        return "GET", "/api/whatsapp/health", None
    path = f"/api/whatsapp/devices/{session}/messages"
    if endpoint == "text":
        return "POST", path, {"to": TO, "text": "Yes, we are open until 9 pm."}
    return "POST", path, {"to": TO, "type": "image", "media": {"data": image},
                          "caption": "our menu"}


async def load(client: Any, endpoint: str, session: str, image: str, connections: int,
               duration: float) -> dict[str, Any]:
    method, path, body = request_of(endpoint, session, image)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = trio.current_time() + duration

    async def worker() -> None:
        while trio.current_time() < deadline:
            t0 = time.perf_counter()
            response = await client.request(method, path, json=body)
            latencies.append(time.perf_counter() - t0)
            if response.status_code >= 300:
                key = f"{response.status_code} {response.text[:120]}"
                errors[key] = errors.get(key, 0) + 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return {"count": len(latencies), "elapsed": time.perf_counter() - start,
            "latencies": latencies, "errors": errors}


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for r in rounds for x in r["latencies"])
    count = sum(r["count"] for r in rounds)
    elapsed = sum(r["elapsed"] for r in rounds)
    errors: dict[str, int] = {}
    for r in rounds:
        for key, n in r["errors"].items():
            errors[key] = errors.get(key, 0) + n
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"rps": count / elapsed if elapsed else 0.0, "count": count,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": p99 * 1000,
            "errors": errors}


async def drive(url: str, token: str, session: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    raw = b"\x89PNG\r\n\x1a\n" + os.urandom(args.image_kb * 1024 - 8)
    image = base64.b64encode(raw).decode()
    limits = httpx.Limits(max_connections=args.connections,
                          max_keepalive_connections=args.connections)
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ENDPOINTS}
    async with httpx.AsyncClient(base_url=url, headers={"X-API-TOKEN": token}, limits=limits,
                                 timeout=60) as client:
        for endpoint in ENDPOINTS:  # warm up: connections open, every path touched once
            method, path, body = request_of(endpoint, session, image)
            response = await client.request(method, path, json=body)
            if response.status_code >= 300:
                raise SystemExit(f"{endpoint}: {response.status_code} {response.text}")
        for _ in range(args.rounds):
            for endpoint in ENDPOINTS:
                runs[endpoint].append(await load(client, endpoint, session, image,
                                                 args.connections, args.duration / args.rounds))
    return {endpoint: merge(runs[endpoint]) for endpoint in ENDPOINTS}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, drive it, print the figures; returns them for the JSON line."""
    token = "bench-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="wasup-bench-sends-") as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(Path(tmp) / "data"), token],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "WASUP_LOG_LEVEL": "warning"},
        )
        try:
            assert server.stdout is not None
            ready = json.loads(server.stdout.readline())
            figures = trio.run(drive, ready["url"], token, ready["session"], args)
        finally:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"sends through the API: {args.connections} connections, {args.duration} s per "
          f"endpoint in {args.rounds} rounds, an image of {args.image_kb} KiB")
    for endpoint, f in figures.items():
        print(f"{endpoint:7s} {f['rps']:9.1f} req/s  p50 {f['p50_ms']:7.2f} ms  "
              f"p99 {f['p99_ms']:7.2f} ms  n={f['count']}"
              f"{'  errors=' + json.dumps(f['errors']) if f['errors'] else ''}")
    bare = figures["health"]["rps"]
    result: dict[str, Any] = {"image_kb": args.image_kb}
    for endpoint, f in figures.items():
        result[f"{endpoint}_rps"] = round(f["rps"], 1)
        result[f"{endpoint}_p99_ms"] = round(f["p99_ms"], 2)
    for endpoint in figures:
        if endpoint != "health":
            ratio = result[f"{endpoint}_ratio"] = (
                round(figures[endpoint]["rps"] / bare, 3) if bare else 0.0)
            print(f"ratio {endpoint} / health = {ratio:.3f}")
    result["errors"] = sum(sum(f["errors"].values()) for f in figures.values())
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the endpoints")
    parser.add_argument("--image-kb", type=int, default=100, help="the image's size in KiB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        trio.run(run_server, sys.argv[2], sys.argv[3])
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
        add_arguments(parser)
        print(json.dumps(run(parser.parse_args())))
