"""Memory per device: wasup on the whatsmeow engine vs bare neonize clients, offline.

    .venv/bin/python bench/engine_memory.py [--devices 50]

Each measurement runs in a subprocess of its own (so the two never share memory):

* ``wasup``: a whole supervisor (database, actors, event bus) on the whatsmeow engine with
  N devices. Offline, each device's pairing connect fails and it waits in ``disconnected``
  for its backoff (the backoff is long here, so every device makes exactly one attempt through
  neonize, as a bare client does below). The engine's preflight is off, so the attempt goes
  through Go; a second wasup run with the preflight on (its default) is printed as well.
* ``bare``: N neonize ``NewClient`` objects, one SQLite store each, each connecting once
  (offline, the connect fails) and kept alive, without wasup.

Each subprocess warms up first (one device or client: Go's runtime, the SQLite driver, the
imports), reads its RSS, adds N, reads its RSS again; per device is the difference over N
(after ``gc.collect()`` and ``malloc_trim(0)``). Each measurement runs ``--repeat`` times
(default 3) in fresh subprocesses and the median is reported (RSS per device is noisy: Go's
heap and the C allocator's arenas grow in steps). The last line of output is one JSON object:
``devices``, ``wasup_bytes_per_device``, ``bare_bytes_per_device``, ``overhead_fraction``
(wasup over bare, minus one), ``wasup_preflight_bytes_per_device`` and
``engine_only_bytes_per_device`` (the engine's sessions without the supervisor: what the
engine itself adds over bare neonize, apart from wasup's per-device state).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def rss() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_wasup(n: int, data_dir: Path, preflight: bool) -> dict[str, Any]:
    import trio

    from supervisor.config import Config
    from supervisor.engines.whatsmeow import WhatsmeowEngine
    from supervisor.supervisor import open_supervisor

    async def main() -> dict[str, Any]:
        config = Config(
            data_dir=data_dir, engine="whatsmeow", backoff_base=3600.0, backoff_cap=3600.0,
            backoff_jitter=0.0, connect_timeout=600.0,
            # One handshake at a time, as the bare clients below connect one after another.
            max_concurrent_logins=1,
        )
        engine = WhatsmeowEngine(data_dir, preflight_host="web.whatsapp.com" if preflight else None)
        async with open_supervisor(config, engine=engine) as sup:

            async def settle(count: int) -> None:
                with trio.fail_after(120):
                    for _ in range(120_000):
                        if sum(1 for r in sup.rows.values() if r.status == "disconnected") >= count:
                            return
                        await trio.sleep(0.01)

            await sup.create_device("bench", "warm")
            await settle(1)
            base = rss()
            for i in range(n):
                await sup.create_device("bench", f"device {i}")
            await settle(n + 1)
            await trio.sleep(0.2)
            after = rss()
            reasons = sorted({r.status_reason or "" for r in sup.rows.values()})
            stats = engine.statistics()
        return {
            "base": base, "after": after, "per_device": (after - base) / n, "reasons": reasons,
            "live_clients": stats.live_clients,
        }

    result: dict[str, Any] = trio.run(main)
    return result


def measure_engine(n: int, data_dir: Path) -> dict[str, Any]:
    """The whatsmeow engine's sessions alone (no supervisor), 5 attempts at a time."""
    import trio

    from supervisor.engines.whatsmeow import WhatsmeowEngine
    from supervisor.errors import EngineError

    async def main() -> dict[str, Any]:
        engine = WhatsmeowEngine(data_dir, preflight_host=None)
        sessions: list[Any] = []
        reasons: set[str] = set()
        limiter = trio.CapacityLimiter(5)

        async def one(device_id: int) -> None:
            async with limiter:
                session = engine.session(device_id, f"s{device_id}", lambda _event: None)
                try:
                    await session.start_pairing()
                except EngineError as exc:
                    reasons.add(exc.reason)
                await session.stop()
                sessions.append(session)

        await one(1_000_000)
        base = rss()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        after = rss()
        return {"base": base, "after": after, "per_device": (after - base) / n,
                "reasons": sorted(reasons)}

    result: dict[str, Any] = trio.run(main)
    return result


def measure_bare(n: int, data_dir: Path) -> dict[str, Any]:
    from neonize.client import NewClient
    from neonize.exc import NeonizeError

    data_dir.mkdir(parents=True, exist_ok=True)
    clients: list[Any] = []
    errors: set[str] = set()

    def one(name: str) -> None:
        client = NewClient(str(data_dir / f"{name}.db"), uuid=name, new_device=True)
        try:
            client.connect()
        except NeonizeError as exc:
            errors.add(str(exc).split("dial tcp: ")[-1])
        client.stop()
        clients.append(client)

    one("warm")
    base = rss()
    for i in range(n):
        one(f"bare-{i}")
    after = rss()
    return {"base": base, "after": after, "per_device": (after - base) / n,
            "errors": sorted(errors)}


def run_median(kind: str, n: int, repeat: int) -> dict[str, Any]:
    """``repeat`` fresh subprocesses; the run with the median bytes per device."""
    runs = sorted((run_child(kind, n) for _ in range(repeat)), key=lambda r: r["per_device"])
    result = runs[len(runs) // 2]
    result["all"] = [round(r["per_device"]) for r in runs]
    return result


def run_child(kind: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"wasup-bench-{kind}-") as tmp:
        proc = subprocess.run(
            [sys.executable, __file__, "--measure", kind, "--devices", str(n), "--data-dir", tmp],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{kind} measurement failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="subprocesses per measurement")
    parser.add_argument("--measure", choices=["wasup", "wasup-preflight", "engine", "bare"])
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    n = args.devices
    if args.measure:
        sys.path.insert(0, str(ROOT))
        data_dir = args.data_dir / "data"
        if args.measure == "bare":
            out = measure_bare(n, data_dir)
        elif args.measure == "engine":
            out = measure_engine(n, data_dir)
        else:
            out = measure_wasup(n, data_dir, preflight=args.measure == "wasup-preflight")
        print(json.dumps(out))
        return

    r = args.repeat
    bare = run_median("bare", n, r)
    wasup = run_median("wasup", n, r)
    pre = run_median("wasup-preflight", n, r)
    engine = run_median("engine", n, r)
    print(f"devices: {n} (offline: every connect fails; one attempt each); median of {r} runs")
    print(f"bare neonize: {bare['per_device'] / 1024:.1f} KiB/device "
          f"(runs {bare['all']} B; {bare['errors']})")
    print(f"wasup whatsmeow engine: {wasup['per_device'] / 1024:.1f} KiB/device "
          f"(runs {wasup['all']} B; {wasup['reasons']})")
    print(f"wasup with preflight (default): {pre['per_device'] / 1024:.1f} KiB/device "
          f"(no Go client per failed attempt; {pre['reasons']})")
    print(f"whatsmeow engine alone (no supervisor, 5 at a time): "
          f"{engine['per_device'] / 1024:.1f} KiB/device (runs {engine['all']} B)")
    overhead = wasup["per_device"] / bare["per_device"] - 1 if bare["per_device"] > 0 else None
    if overhead is not None:
        print(f"wasup overhead over bare neonize: {overhead * 100:+.1f}% (target <= 5%)")
    print(json.dumps({
        "devices": n,
        "wasup_bytes_per_device": round(wasup["per_device"]),
        "bare_bytes_per_device": round(bare["per_device"]),
        "overhead_fraction": None if overhead is None else round(overhead, 4),
        "wasup_preflight_bytes_per_device": round(pre["per_device"]),
        "engine_only_bytes_per_device": round(engine["per_device"]),
    }))


if __name__ == "__main__":
    main()
