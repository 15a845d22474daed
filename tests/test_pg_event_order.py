"""Event appends on PostgreSQL commit in id order (storage/pg/events.py): a reader tailing the
log by id, as a resuming WebSocket or a node's cluster feed does, never skips an event,
however many transactions append side by side. And the log's filters on both backends."""

from __future__ import annotations

import random
from functools import partial

import trio

from storage import EventQuery, EventRow, LoggedEvent, Repositories
from storage.pg import open_postgres
from storage.pg.sql import pg_of
from tests.pg_support import TestPostgres
from tests.store_support import Backend
from tests.test_storage import new_device

APPENDERS = 8
JOBS = 40


async def test_a_tailing_reader_sees_every_id_in_order_while_many_append(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    rng = random.Random(7)
    async with open_postgres(url, pool_size=APPENDERS + 2) as db:
        device = await db.run(new_device)
        event = LoggedEvent(device.id, device.session_id, "message_received", "{}", "t")
        appended: list[int] = []

        def job(count: int, linger: float, r: Repositories) -> list[int]:
            ids = r.events.append([event] * count)
            if linger:  # more work after the append (as the webhook outbox rows)
                pg_of(r.events._db).execute("SELECT pg_sleep(?)", (linger,))
            return ids

        async def appender() -> None:
            for _ in range(JOBS):
                linger = rng.choice([0.0, 0.0, 0.001, 0.003])
                appended.extend(await db.run(partial(job, rng.randint(1, 3), linger)))

        def read(since: int, r: Repositories) -> list[EventRow]:
            return r.events.after(since, until=2**62, limit=500)

        seen: list[int] = []
        last = 0
        finished = False

        async def tail() -> None:
            nonlocal last
            while True:
                done = finished  # read after this: every append has committed
                rows = await db.run(partial(read, last))
                for row in rows:
                    assert row.id > last
                    seen.append(row.id)
                    last = row.id
                if done and not rows:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tail)
            async with trio.open_nursery() as appenders:
                for _ in range(APPENDERS):
                    appenders.start_soon(appender)
            finished = True
    assert len(appended) >= APPENDERS * JOBS
    assert seen == sorted(appended)  # every id, in order, none skipped


async def test_filters_that_name_sessions_only_or_nothing_page_on_both_backends(
    backend: Backend,
) -> None:
    """A selection by session id alone (no numeric id), or a filter that names nothing, is a
    query PostgreSQL takes too (``IN ()`` is SQLite's only)."""
    async with backend.open() as db:
        ids = await db.run(lambda r: r.events.append([
            LoggedEvent(1, "s1", "message_received", "{}", "t"),
            LoggedEvent(2, "s2", "qr_code", "{}", "t"),
        ]))

        async def page(query: EventQuery) -> list[int]:
            rows = await db.run(lambda r: r.events.after(0, until=10**9, limit=10, query=query))
            return [row.id for row in rows]

        assert await page(EventQuery(selected_sessions=frozenset({"s2"}))) == [ids[1]]
        assert await page(EventQuery(selected_ids=frozenset({1}))) == [ids[0]]
        assert await page(EventQuery(device_ids=frozenset())) == []
        assert await page(EventQuery(types=frozenset())) == []
