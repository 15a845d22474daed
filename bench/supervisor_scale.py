"""How far one wasup process goes: N simulated devices paired, then restored after a restart.

Usage: ``python bench/supervisor_scale.py [--devices 10000] [--max-concurrent-logins 50]
[--database postgresql://… | --compare postgresql://…]``

``--database``: the devices part runs on that PostgreSQL database (it must be empty: the run
leaves its devices there) instead of SQLite in a temporary directory. ``--compare``: the devices
part runs twice, on SQLite and then on that (empty) PostgreSQL database, and the run ends with
the PostgreSQL/SQLite ratios of pairing and restore (wall and CPU time) instead.

In one run it measures, each part in a fresh child process so that neither sees the other's
freed memory:

- ``devices``: start a supervisor on an empty database with the simulator engine (zero
  handshake latency), create N devices, show each its first QR code, scan them all and wait until
  every one is connected (``pair_all_s``); the RSS growth per device; then close the supervisor,
  open a new one on the same database and wait until every device is connected again
  (``restore_all_s``).
- ``bare``: the RSS growth per bare Trio task blocked on its own memory channel, the cheapest
  possible "actor".

It prints the figures and, last, one JSON line with ``devices``, ``pair_all_s``,
``restore_all_s``, ``bytes_per_device``, ``bytes_per_bare_task`` and ``ratio_vs_bare_task``.
Absolute times vary with the machine's load; the ratio is what compares.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name (Linux), to tell the Trio thread from the database's."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name.split(":")[0] for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _gather(fns: list, width: int = 1000) -> None:
    """Run the zero-argument async functions concurrently, ``width`` at a time."""
    for start in range(0, len(fns), width):
        async with trio.open_nursery() as nursery:
            for fn in fns[start : start + width]:
                nursery.start_soon(fn)


async def _all_connected(sub, ids: list[int]) -> None:
    """Wait until every device in ``ids`` has reported a change to ``connected`` on ``sub``."""
    pending = set(ids)
    while pending:
        event = await sub.receive()
        if event.data.after == "connected":
            pending.discard(event.device_id)


def _subscribe(bus, n: int):
    return bus.subscribe(types=frozenset({"device_status"}), maxsize=n * 8 + 16)


async def run_devices(n: int, max_logins: int, data_dir: Path, database: str | None) -> dict:
    from supervisor.config import Config
    from supervisor.events import EventBus
    from supervisor.supervisor import open_supervisor

    config = Config(
        data_dir=data_dir,
        database_url=database,
        engine="simulator",
        simulator_latency=0.0,
        max_concurrent_logins=max_logins,
        qr_first_timeout=600,
        qr_next_timeout=600,
    )
    result: dict = {}
    async with open_supervisor(config) as sup:
        engine = sup.engine
        gc.collect()
        base = rss_bytes()
        t0 = time.perf_counter()
        c0 = cpu_seconds()
        ids: list[int] = []

        async def create(i: int) -> None:
            row, _ = await sup.create_device(f"user{i % 100}", f"device {i}")
            ids.append(row.id)

        await _gather([lambda i=i: create(i) for i in range(n)])

        async def pair(device: int) -> None:
            qr = await sup.wait_qr(device, 600)
            assert qr is not None
            await engine.scan(device)

        async def pair_all() -> None:
            await _gather([lambda d=d: pair(d) for d in ids])

        async with _subscribe(sup.bus, n) as sub, trio.open_nursery() as nursery:
            nursery.start_soon(pair_all)
            await _all_connected(sub, ids)
        result["pair_all_s"] = time.perf_counter() - t0
        result["pair_cpu_s"] = cpu_seconds() - c0
        result["pair_threads"] = thread_cpu()
        gc.collect()
        result["bytes_per_device"] = (rss_bytes() - base) / n
        assert all(sup.rows[i].status == "connected" for i in ids)
    bus = EventBus()
    t1 = time.perf_counter()
    c1 = cpu_seconds()
    async with _subscribe(bus, n) as sub, open_supervisor(config, bus=bus) as sup:
        await _all_connected(sub, ids)
        result["restore_all_s"] = time.perf_counter() - t1
        result["restore_cpu_s"] = cpu_seconds() - c1
        assert len(sup.rows) == n
        result["db"] = str(sup.db.statistics())
    return result


async def run_bare(n: int) -> dict:
    gc.collect()
    base = rss_bytes()
    async with trio.open_nursery() as nursery:
        senders = []
        for _ in range(n):
            send, receive = trio.open_memory_channel[object](64)
            senders.append(send)

            async def task(receive=receive) -> None:
                async for _ in receive:
                    pass

            nursery.start_soon(task)
        await trio.sleep(0.2)
        gc.collect()
        per_task = (rss_bytes() - base) / n
        nursery.cancel_scope.cancel()
    return {"bytes_per_bare_task": per_task}


def child(part: str, n: int, max_logins: int, database: str | None) -> None:
    logging.basicConfig(level=logging.WARNING)
    from supervisor.runtime import tune_gc

    tune_gc()  # as `wasup serve` does
    if part == "bare":
        out = trio.run(run_bare, n)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = trio.run(run_devices, n, max_logins, Path(tmp), database)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--max-concurrent-logins", type=int, default=50)
    parser.add_argument("--database", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--compare", metavar="URL",
                        help="run on SQLite and on this empty PostgreSQL database; print ratios")
    parser.add_argument("--part", choices=["bare", "devices"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        child(args.part, args.devices, args.max_concurrent_logins, args.database)
        return

    def run(part: str, database: str | None = args.database) -> dict:
        proc = subprocess.run(
            [sys.executable, __file__, "--part", part, "--devices", str(args.devices),
             "--max-concurrent-logins", str(args.max_concurrent_logins),
             *(["--database", database] if database else [])],
            check=True, capture_output=True, text=True,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])

    if args.compare:
        compare(args.devices, run("devices", None), run("devices", args.compare))
        return

    devices = run("devices")
    bare = run("bare")
    n = args.devices
    ratio = devices["bytes_per_device"] / bare["bytes_per_bare_task"]
    print(f"devices:                 {n} (max_concurrent_logins={args.max_concurrent_logins},"
          f" {'PostgreSQL' if args.database else 'SQLite'})")
    print(f"pair all:                {devices['pair_all_s']:.2f} s (CPU {devices['pair_cpu_s']:.2f} s)")
    print(f"restore and reconnect:   {devices['restore_all_s']:.2f} s (CPU {devices['restore_cpu_s']:.2f} s)")
    print(f"RSS per device:          {devices['bytes_per_device']:.0f} B")
    print(f"RSS per bare Trio task:  {bare['bytes_per_bare_task']:.0f} B")
    print(f"ratio device/bare task:  {ratio:.2f}")
    print(f"database:                {devices['db']}")
    print(f"CPU by thread (pairing): {devices['pair_threads']}")
    print(json.dumps({
        "devices": n,
        "database": "postgresql" if args.database else "sqlite",
        "pair_all_s": round(devices["pair_all_s"], 3),
        "restore_all_s": round(devices["restore_all_s"], 3),
        "bytes_per_device": round(devices["bytes_per_device"]),
        "bytes_per_bare_task": round(bare["bytes_per_bare_task"]),
        "ratio_vs_bare_task": round(ratio, 3),
    }))


def compare(n: int, sqlite: dict, pg: dict) -> None:
    """Print both backends' figures and the PostgreSQL/SQLite ratios."""
    ratios = {}
    print(f"devices: {n}          {'SQLite':>10} {'PostgreSQL':>11} {'ratio':>7}")
    for key, label in (("pair_all_s", "pair all (s)"), ("pair_cpu_s", "pair CPU (s)"),
                       ("restore_all_s", "restore (s)"), ("restore_cpu_s", "restore CPU (s)")):
        ratios[key] = pg[key] / sqlite[key] if sqlite[key] else 0.0
        print(f"{label:20s} {sqlite[key]:10.2f} {pg[key]:11.2f} {ratios[key]:7.2f}")
    print(f"database: {pg['db']}")
    print(json.dumps({"devices": n, **{f"{k}_pg_over_sqlite": round(v, 3)
                                       for k, v in ratios.items()}}))


if __name__ == "__main__":
    main()
