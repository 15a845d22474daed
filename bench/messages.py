"""Messages: sends per second through the API, and the cost of a history page with 1,000 stored
messages against 1,000,000.

Usage: ``python bench/messages.py [--small 1000] [--large 1000000] [--chats 5] [--repeat 200]
[--connections 16] [--duration 6] [--rounds 3] [--image-kb 100] [--skip-sends]
[--skip-history]``

The send half is ``bench/sends.py`` (see there): text and image sends per second through the
API as a ratio of ``GET /health`` in the same run. The history half follows.

In one run, on one fresh SQLite database in a temporary directory (``storage.open_database``,
the repositories wasup itself uses, through ``Database.run`` and its thread): one device stores
``--small`` messages spread over ``--chats`` chats, in and out, and each of these is timed
(median of ``--repeat`` runs):

- ``page``: the newest page (50) of one chat (``GET …/chats/{chatId}/messages``);
- ``deep``: a page of the same chat from a cursor at the middle of the chat (``before``);
- ``filtered``: a page of the same chat with ``fromMe`` and a ``since``/``until`` window;
- ``chats``: the chat list with last messages and unread counts (``GET …/chats``);
- ``message``: one message by id (``GET …/messages/{messageId}``);
- ``noop``: a job that does nothing, the fixed cost of a trip to the database thread that every
  query above includes (for reference: it does not depend on what is stored).

Then the device stores more, up to ``--large`` messages, and the same queries are timed again.
It prints both times and their ratio for each (1.0: a page costs the same). The last line is
one JSON object with both halves: ``sends`` (``health_rps``, ``text_rps``, ``image_rps``, their
p99 latencies, ``text_ratio`` and ``image_ratio``) and ``history`` (``small``, ``large``,
``<query>_small_ms``, ``<query>_large_ms`` and ``<query>_ratio`` for each query, and ``ratio``,
the newest page's). Absolute figures vary with the machine; the ratios are what compares.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import sends  # noqa: E402
from common.clock import iso  # noqa: E402  (after the path is set)
from storage import Database, Repositories, open_database  # noqa: E402

PAGE = 50
BATCH = 20_000  # messages stored per job while filling
BASE = 1_750_000_000.0  # the first message's storage time (epoch)
STEP = 0.01  # seconds between two stored messages


def chat_of(i: int, chats: int) -> str:
    return f"1555{i % chats:07d}@s.whatsapp.net"


async def fill(db: Database, device: int, start: int, stop: int, chats: int) -> None:
    """Store messages ``start`` to ``stop - 1``: in each chat, every fourth one outgoing."""
    for lo in range(start, stop, BATCH):
        hi = min(stop, lo + BATCH)

        def job(r: Repositories, lo: int = lo, hi: int = hi) -> None:
            for i in range(lo, hi):
                out = (i // chats) % 4 == 0
                r.messages.insert(
                    device, message_id=f"M{i:08d}", chat=chat_of(i, chats),
                    direction="out" if out else "in", text=f"message {i}",
                    status="sent" if out else "received", at=iso(BASE + i * STEP),
                    sender=None if out else chat_of(i, chats),
                )

        await db.run(job)


async def timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    """The median time of ``call`` in milliseconds, after two warm-up calls."""
    for _ in range(2):
        await call()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def measure(db: Database, device: int, stored: int, chats: int, repeat: int) -> dict[str, float]:
    """The median time of each query with ``stored`` messages in the database."""
    chat = chat_of(stored - 1, chats)  # the chat of the newest message
    middle = await db.run(
        lambda r: r.message_history.page(device, chat, limit=max(1, stored // chats // 2))
    )
    cursor = middle.next_before
    newest = iso(BASE + (stored - 1) * STEP)
    window_start = iso(BASE + (stored // 2) * STEP)
    some_id = f"M{stored // 2:08d}"
    results: dict[str, float] = {}
    results["page"] = await timed(
        repeat, lambda: db.run(lambda r: r.message_history.page(device, chat, limit=PAGE))
    )
    results["deep"] = await timed(
        repeat,
        lambda: db.run(
            lambda r: r.message_history.page(device, chat, before=cursor, limit=PAGE)
        ),
    )
    results["filtered"] = await timed(
        repeat,
        lambda: db.run(
            lambda r: r.message_history.page(
                device, chat, limit=PAGE, from_me=False, since=window_start, until=newest
            )
        ),
    )
    results["chats"] = await timed(
        repeat, lambda: db.run(lambda r: r.message_history.chats(device, limit=PAGE))
    )
    results["message"] = await timed(
        repeat, lambda: db.run(lambda r: r.messages.get(device, some_id))
    )
    results["noop"] = await timed(repeat, lambda: db.run(lambda r: None))
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wasup-bench-") as tmp:
        async with open_database(Path(tmp) / "wasup.db") as db:
            device = await db.run(
                lambda r: r.devices.insert(
                    user_id="bench", alias="Bench", session_id="user_bench_device_bench",
                    business_type=None, phone_number=None, description=None,
                    api_key_hash="bench", status="connected", now=iso(BASE),
                ).id
            )
            t0 = time.perf_counter()
            await fill(db, device, 0, args.small, args.chats)
            small = await measure(db, device, args.small, args.chats, args.repeat)
            await fill(db, device, args.small, args.large, args.chats)
            fill_s = time.perf_counter() - t0
            large = await measure(db, device, args.large, args.chats, args.repeat)
    print(f"stored {args.large} messages in {fill_s:.1f} s ({args.chats} chats)")
    result: dict[str, Any] = {"small": args.small, "large": args.large}
    print(f"{'query':10} {args.small:>12} {args.large:>12}  ratio")
    for name in small:
        ratio = large[name] / small[name]
        print(f"{name:10} {small[name]:10.3f}ms {large[name]:10.3f}ms  {ratio:5.2f}")
        result[f"{name}_small_ms"] = round(small[name], 4)
        result[f"{name}_large_ms"] = round(large[name], 4)
        result[f"{name}_ratio"] = round(ratio, 3)
    result["ratio"] = result["page_ratio"]
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sends.add_arguments(parser)
    parser.add_argument("--skip-sends", action="store_true", help="only the history half")
    parser.add_argument("--skip-history", action="store_true", help="only the send half")
    parser.add_argument("--small", type=int, default=1000, help="messages stored first")
    parser.add_argument("--large", type=int, default=1_000_000, help="messages stored then")
    parser.add_argument("--chats", type=int, default=5, help="chats the messages spread over")
    parser.add_argument("--repeat", type=int, default=200, help="timed runs of each query")
    args = parser.parse_args(argv)
    # Each chat needs two pages and more at --small, or the small case does less work.
    if not (0 < args.chats and 4 * PAGE * args.chats <= args.small < args.large):
        parser.error(f"need 0 < --chats, {4 * PAGE} * --chats <= --small < --large")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    both: dict[str, Any] = {}
    if not arguments.skip_sends:
        both["sends"] = sends.run(arguments)
    if not arguments.skip_history:
        both["history"] = trio.run(main, arguments)
    print(json.dumps(both))
    sys.exit(1 if both.get("sends", {}).get("errors") else 0)
