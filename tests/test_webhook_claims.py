"""Webhook deliveries claimed by cluster nodes on PostgreSQL (storage/pg/outbox.py): a scan
writes its claims with ``FOR UPDATE SKIP LOCKED``, so nodes scanning at once take disjoint rows
without waiting for each other; another node's claim keeps a row out until it expires, then
any node takes it; recording the attempt clears the claim. SQLite takes no claim (one node).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from common import clock
from storage import Repositories, open_database
from storage.models import Claim, DeliveryTarget
from storage.pg import open_postgres
from storage.pg.repositories import PgRepositories
from storage.pg.sql import PgSql, configure
from supervisor.config import ClusterConfig, Config
from supervisor.webhooks.dispatcher import WebhookDispatcher
from tests.pg_support import TestPostgres
from tests.webhook_support import add_device, enqueue, envelope, start_receiver
from tests.webhook_support import configure as configure_webhook

TARGET = DeliveryTarget("http://127.0.0.1:9/hook", ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",))


def claim(repos: Repositories, node: str, limit: int = 10, exclude: set[str] | None = None,
          seconds: float = 30.0) -> list[str]:
    due = repos.outbox.claim_due(
        now=clock.now_epoch() + 1, limit=limit, exclude=exclude or set(),
        target=lambda device_id: TARGET, claim=Claim(node, seconds),
    )
    return [row.id for row in due]


@contextmanager
def transaction(url: str) -> Iterator[PgRepositories]:
    """The repositories in a transaction of a connection of its own, open for the body."""
    with psycopg.connect(url, autocommit=True) as conn:
        configure(conn)
        with conn.transaction():
            yield PgRepositories.bind(PgSql(conn))


def claims(url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, claimed_by FROM webhook_outbox").fetchall()
    return {str(row[0]): None if row[1] is None else str(row[1]) for row in rows}


async def test_nodes_claim_disjoint_rows_and_take_expired_claims(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        device, session = await add_device(db)
        await configure_webhook(db, device, TARGET.url)
        assert await enqueue(db, device, *[envelope(session) for _ in range(6)]) == 6
    with transaction(url) as a:
        mine = claim(a, "a", limit=2)
        # While a's scan holds its rows, b's scan passes them over instead of waiting.
        with transaction(url) as b:
            theirs = claim(b, "b")
        assert len(mine) == 2 and len(theirs) == 4 and not set(mine) & set(theirs)
    held = claims(url)
    assert {held[i] for i in mine} == {"a"} and {held[i] for i in theirs} == {"b"}
    with transaction(url) as c:
        assert claim(c, "c") == []  # every row is claimed, and no claim has expired
        upcoming = c.outbox.next_due(claim=Claim("c", 30.0))
        assert upcoming is not None and upcoming > clock.now_epoch() + 20  # when they expire
        # A node takes back its own claims (its in-flight rows are excluded by the caller).
        assert sorted(claim(c, "b", exclude=set(theirs[:3]))) == sorted(theirs[3:])
    # Node a died: once its claims expire, another node takes its rows.
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE webhook_outbox SET claimed_until = now() - interval '1 second'"
                     " WHERE claimed_by = 'a'")
    with transaction(url) as c:
        assert sorted(claim(c, "c")) == sorted(mine)
        assert c.outbox.record_attempt(mine[0], at=clock.now_iso(), status_code=200, error=None,
                                       duration_ms=1.0, status="delivered")
    assert claims(url)[mine[0]] is None  # recording the attempt clears the claim


async def test_sqlite_takes_no_claim(tmp_path: Path) -> None:
    async with open_database(tmp_path / "wasup.db") as db:
        device, session = await add_device(db)
        await configure_webhook(db, device, TARGET.url)
        await enqueue(db, device, envelope(session))

        def scan(r: Repositories) -> Any:
            return claim(r, "a")

        with pytest.raises(ValueError, match="PostgreSQL"):
            await db.run(scan)
        due = await db.run(lambda r: r.outbox.claim_due(
            now=clock.now_epoch() + 1, limit=10, target=lambda d: TARGET))
        assert len(due) == 1  # without a claim, as before


def delivered(device: int, repos: Repositories) -> int:
    return repos.outbox.list_deliveries(device, status="delivered", limit=0)[1]


def node_config(node_id: str) -> Config:
    return Config(
        allow_networks=("127.0.0.0/8",),
        cluster=ClusterConfig(node_id=node_id, advertise_url="http://127.0.0.1:1", secret="s"),
    )


async def test_two_nodes_dispatchers_share_the_outbox_and_deliver_each_row_once(
    postgres_server: TestPostgres,
) -> None:
    """Two nodes' dispatchers on one outbox: rows queued through either node are delivered
    by one or the other, each once (no row is taken by both), and a node's dispatcher wakes
    when the other node queues rows (``wasup_outbox``), not a second later."""
    url = postgres_server.create_database()
    count = 40
    async with (
        open_postgres(url) as on_a, open_postgres(url) as on_b, trio.open_nursery() as nursery,
    ):
        receiver = await start_receiver(nursery)
        device, session = await add_device(on_a)
        await configure_webhook(on_a, device, receiver.url)
        a = WebhookDispatcher(on_a, node_config("a"))
        b = WebhookDispatcher(on_b, node_config("b"))
        await nursery.start(a.run)
        await nursery.start(b.run)
        with trio.fail_after(30):
            for n in range(count):
                # Queued by node a only, as its device's actor would, without telling its
                # own dispatcher: only the notification wakes them.
                await enqueue(on_a, device, envelope(session, text=f"m{n}"))
            await receiver.wait_requests(count)
            ids = [request.headers["webhook-id"] for request in receiver.requests]
            assert len(set(ids)) == count
            # The attempts are recorded after the answers: nothing to wait on but the table.
            while await on_a.run(partial(delivered, device)) < count:  # noqa: ASYNC110
                await trio.sleep(0.01)
        # Both took part: each was woken by the other store's notifications alone.
        assert a.statistics().attempts > 0 and b.statistics().attempts > 0
        assert a.statistics().attempts + b.statistics().attempts == count  # none twice
        assert all(held is None for held in claims(url).values())  # every claim cleared
        nursery.cancel_scope.cancel()


async def test_a_node_that_stops_releases_its_claims_to_the_others(
    postgres_server: TestPostgres,
) -> None:
    """A node's dispatcher that stops mid-delivery (a shutdown) clears its claims, so another
    node delivers those rows at once rather than when the claims would have expired."""
    url = postgres_server.create_database()
    async with open_postgres(url) as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, "hang", "hang")
        device, session = await add_device(db)
        await configure_webhook(db, device, receiver.url)
        with trio.fail_after(10):  # well within the claims' 30 s
            async with trio.open_nursery() as node_a:
                await node_a.start(WebhookDispatcher(db, node_config("a")).run)
                await enqueue(db, device, envelope(session), envelope(session))
                await receiver.wait_requests(2)
                assert set(claims(url).values()) == {"a"}
                node_a.cancel_scope.cancel()
            assert set(claims(url).values()) == {None}
            await nursery.start(WebhookDispatcher(db, node_config("b")).run)
            await receiver.wait_requests(4)
            while await db.run(partial(delivered, device)) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
