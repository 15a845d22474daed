"""Message history in storage: chat pages by cursor with filters, the chat list with unread
counts, retention by age and by count, and that every query walks an index (no table scan, no
sort), so a page costs the same at a million messages as at ten."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import storage
from storage import Repositories, open_database
from storage.pg.repositories import PgRepositories
from storage.repositories import SqliteRepositories
from tests.store_support import Backend
from tests.test_storage import new_device


def at(n: int) -> str:
    """A storage timestamp, one minute per step."""
    return f"2025-06-19T{10 + n // 60:02d}:{n % 60:02d}:00.000Z"


def add(r: Repositories, device: int, chat: str, direction: str, n: int) -> None:
    r.messages.insert(
        device, message_id=f"m{device}-{n}", chat=chat, direction=direction,
        text=f"text {n}", status="sent" if direction == "out" else "received", at=at(n),
    )


def conn_of(r: Repositories) -> sqlite3.Connection:
    """The job's connection (on PostgreSQL, storage.pg.sql.PgSql, which takes the same calls)."""
    assert isinstance(r, SqliteRepositories | PgRepositories)
    return r.devices._db.conn


A = "15550000001@s.whatsapp.net"
B = "15550000002@s.whatsapp.net"
G = "120363000000000001@g.us"


async def test_chat_pages_newest_first_by_cursor_with_filters(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            other = new_device(r, 2).id
            for n in range(25):
                add(r, d, A if n % 5 else B, "out" if n % 3 == 0 else "in", n)
            add(r, other, A, "in", 100)
            return d

        d = await db.run(fill)
        in_a = [n for n in range(25) if n % 5]
        # Pages of 7 walk the whole chat, newest first, without a gap or a repeat.
        seen: list[str] = []
        before = None
        pages = 0
        while True:
            page = await db.run(
                lambda r, b=before: r.message_history.page(d, A, before=b, limit=7)
            )
            seen += [m.message_id for m in page.items]
            pages += 1
            if page.next_before is None:
                break
            before = page.next_before
        assert seen == [f"m{d}-{n}" for n in reversed(in_a)]
        assert pages == 3  # 20 messages: 7 + 7 + 6, the last page says it is the last

        # An exact fit says there is no further page.
        page = await db.run(lambda r: r.message_history.page(d, B, limit=5))
        assert len(page.items) == 5 and page.next_before is None

        # fromMe, since, until.
        mine = await db.run(lambda r: r.message_history.page(d, A, from_me=True))
        assert [m.message_id for m in mine.items] == [
            f"m{d}-{n}" for n in reversed(in_a) if n % 3 == 0
        ]
        assert all(m.direction == "out" for m in mine.items)
        window = await db.run(
            lambda r: r.message_history.page(d, A, since=at(6), until=at(12))
        )
        assert [m.message_id for m in window.items] == [f"m{d}-{n}" for n in (12, 11, 9, 8, 7, 6)]
        later = await db.run(lambda r: r.message_history.page(d, A, since=at(500)))
        assert later.items == () and later.next_before is None
        early = await db.run(lambda r: r.message_history.page(d, A, until="2000-01-01T00:00:00Z"))
        assert early.items == ()
        # A window paged: the cursor and the filters together.
        first = await db.run(
            lambda r: r.message_history.page(d, A, since=at(6), until=at(12), limit=4)
        )
        rest = await db.run(
            lambda r: r.message_history.page(
                d, A, since=at(6), until=at(12), limit=4, before=first.next_before
            )
        )
        assert [m.message_id for m in first.items + rest.items] == [
            m.message_id for m in window.items
        ]
        # type: everything stored here is text.
        texts = await db.run(lambda r: r.message_history.page(d, A, type="text", limit=100))
        assert len(texts.items) == len(in_a) and texts.items[0].type == "text"
        assert (await db.run(lambda r: r.message_history.page(d, A, type="image"))).items == ()
        # Another device's chat of the same JID is not mixed in; an unknown chat is empty.
        assert (await db.run(lambda r: r.message_history.page(d, G))).items == ()


async def test_chat_list_most_recent_first_with_unread_counts(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            add(r, d, A, "in", 1)
            add(r, d, A, "out", 2)  # answered: nothing unread before this
            add(r, d, A, "in", 3)
            add(r, d, A, "in", 4)
            add(r, d, G, "in", 5)
            add(r, d, B, "out", 6)
            add(r, d, B, "in", 7)
            add(r, d, G, "in", 8)
            add(r, d, A, "out", 9)
            return d

        d = await db.run(fill)
        page = await db.run(lambda r: r.message_history.chats(d, limit=2))
        assert [(c.chat, c.last_message.message_id, c.unread) for c in page.items] == [
            (A, f"m{d}-9", 0),
            (G, f"m{d}-8", 2),
        ]
        assert page.next_before is not None
        rest = await db.run(lambda r: r.message_history.chats(d, before=page.next_before))
        assert [(c.chat, c.unread) for c in rest.items] == [(B, 1)]
        assert rest.next_before is None
        assert (await db.run(lambda r: r.message_history.chats(999))).items == ()


async def test_unread_count_is_capped(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            conn_of(r).executemany(
                "INSERT INTO messages (device_id, message_id, chat, direction, at)"
                " VALUES (?, ?, ?, 'in', ?)",
                [(d, f"x{n}", A, at(0)) for n in range(storage.UNREAD_CAP + 5)],
            )
            return d

        d = await db.run(fill)
        page = await db.run(lambda r: r.message_history.chats(d))
        assert page.items[0].unread == storage.UNREAD_CAP


async def test_retention_by_age_and_by_count_in_batches(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> tuple[int, int]:
            d1 = new_device(r).id
            d2 = new_device(r, 2).id
            for n in range(30):
                add(r, d1, A, "in", n)
                add(r, d2, B, "in", 30 + n)
            return d1, d2

        d1, d2 = await db.run(fill)
        assert await db.run(lambda r: r.message_history.devices()) == [d1, d2]
        # Age: 10 + 10 messages of d1 stored before at(20), in batches of 7.
        deleted = [await db.run(lambda r: r.message_history.prune_older(at(20), limit=7))
                   for _ in range(4)]
        assert deleted == [7, 7, 6, 0]
        left = await db.run(lambda r: r.message_history.page(d1, A, limit=100))
        assert [m.at for m in left.items][-1] == at(20)
        # Count: d2 keeps its newest 12 of 30.
        deleted = [await db.run(lambda r: r.message_history.prune_beyond(d2, 12, limit=10))
                   for _ in range(3)]
        assert deleted == [10, 8, 0]
        kept = await db.run(lambda r: r.message_history.page(d2, B, limit=100))
        assert [m.message_id for m in kept.items] == [f"m{d2}-{n}" for n in range(59, 47, -1)]
        assert await db.run(lambda r: r.message_history.prune_beyond(d1, 12, limit=10)) == 0


def _plans(db_file: Path, calls: Callable[[SqliteRepositories], Any]) -> list[tuple[str, str]]:
    """Each statement ``calls`` runs, with its query plan."""
    conn = sqlite3.connect(db_file)
    from storage.repositories import wrap

    repos = SqliteRepositories.bind(wrap(conn))
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    calls(repos)
    conn.set_trace_callback(None)
    plans = []
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH", "DELETE")):
            continue
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
        plans.append((sql, "\n".join(r[3] for r in rows)))
    conn.close()
    return plans


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.message_history.page(1, A),
        lambda r: r.message_history.page(1, A, before=5, limit=10),
        lambda r: r.message_history.page(1, A, since=at(3), until=at(9), from_me=True),
        lambda r: r.message_history.page(1, A, type="image", before=7),
        lambda r: r.message_history.chats(1, before=10),
        lambda r: r.message_history.prune_older(at(3), limit=10),
        lambda r: r.message_history.prune_beyond(1, 3, limit=10),
        lambda r: r.message_history.devices(),
    ],
)
async def test_every_history_query_walks_an_index(
    tmp_path: Path, call: Callable[[SqliteRepositories], Any]
) -> None:
    path = tmp_path / "wasup.db"
    async with open_database(path) as db:

        def fill(r: Repositories) -> None:
            d = new_device(r).id
            for n in range(12):
                add(r, d, A if n % 2 else B, "in" if n % 3 else "out", n)

        await db.run(fill)
    plans = _plans(path, call)
    assert plans
    for sql, plan in plans:
        for line in plan.splitlines():
            if (line.startswith("SCAN") and " messages" in line) or line.startswith("SCAN m "):
                # Only the first step of the device skip scan may scan, and it takes one row.
                assert line == "SCAN messages USING COVERING INDEX messages_device", (sql, plan)
                assert "ORDER BY device_id LIMIT 1" in sql, (sql, plan)
        assert "TEMP B-TREE" not in plan, (sql, plan)
