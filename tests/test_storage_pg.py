"""Tests of what the PostgreSQL store has of its own: its migrations, its pool of worker
threads, and a server that stops and starts again. The repositories' behaviour is tested on
both backends in tests/test_storage.py, tests/test_history_storage.py and
tests/test_read_marks.py.
"""

from __future__ import annotations

import functools
import threading

import psycopg
import pytest
import trio
import trio.testing

import storage
from storage import MigrationError, Repositories
from storage.pg import open_postgres
from storage.pg.migrations import MIGRATIONS
from tests.pg_support import TestPostgres
from tests.test_storage import new_device


def version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM wasup_schema").fetchone()
    assert row is not None
    return int(row[0])


async def test_migrations_record_their_version_and_run_once(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        row = await db.run(new_device)
    assert version(url) == len(MIGRATIONS)
    added: list[int] = []

    def extra(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        added.append(1)
        conn.execute("ALTER TABLE devices ADD COLUMN note TEXT")

    async with open_postgres(url, migrations=[*MIGRATIONS, extra]) as db:
        assert await db.run(lambda r: r.devices.get(row.id)) == row  # nothing lost
    async with open_postgres(url, migrations=[*MIGRATIONS, extra]):
        pass
    assert added == [1] and version(url) == len(MIGRATIONS) + 1
    with pytest.raises(MigrationError, match="newer than this wasup"):
        async with open_postgres(url):
            pass


async def test_a_failed_migration_changes_nothing(postgres_server: TestPostgres) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url):
        pass

    def broken(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(MigrationError, match="boom"):
        async with open_postgres(url, migrations=[*MIGRATIONS, broken]):
            pass
    assert version(url) == len(MIGRATIONS)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)


async def test_jobs_beyond_the_pool_wait_their_turn(postgres_server: TestPostgres) -> None:
    entered = threading.Semaphore(0)
    release = threading.Event()

    def parked(r: Repositories) -> None:
        entered.release()
        assert release.wait(10)

    async with open_postgres(postgres_server.create_database(), pool_size=2) as db:
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(db.run, parked)
            for _ in range(2):
                await trio.to_thread.run_sync(entered.acquire)
            done: list[int] = []

            async def third() -> None:
                done.append((await db.run(new_device)).id)

            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert db.statistics().queued == 1 and done == []  # two threads, both busy
            release.set()
        assert done == [1]
        stats = db.statistics()
        assert (stats.jobs, stats.commits, stats.queued) == (3, 3, 0)


async def test_a_failing_job_keeps_the_connection_usable(postgres_server: TestPostgres) -> None:
    # A statement error aborts a PostgreSQL transaction: the job's rollback must leave the
    # pooled connection clean for the next job.
    async with open_postgres(postgres_server.create_database(), pool_size=1) as db:
        def bad_sql(r: Repositories) -> None:
            r.devices.page(status="pending", limit=-1)
            r.messages.recent(999, "c", limit=1)
            raise ValueError("job failed")

        with pytest.raises(ValueError):
            await db.run(bad_sql)
        assert (await db.run(new_device)).id == 1


async def test_a_server_that_stops_is_an_outage_and_the_store_recovers(
    postgres_server: TestPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url, connect_timeout=0.5) as db:
        kept = await db.run(new_device)
        caplog.clear()
        postgres_server.stop_server()
        try:
            for n in range(2, 5):
                with pytest.raises(storage.StorageUnavailable) as info:
                    await db.run(functools.partial(new_device, n=n))
                assert info.value.retry_after > 0
            outage = db.outage
            assert outage is not None and outage.refused == 3
            with pytest.raises(storage.StorageUnavailable):
                db.raise_if_unavailable()
            assert await db.probe() is not None  # moments after a failure: not tried again
        finally:
            postgres_server.start_server()
        lines = [r for r in caplog.records if r.name == "storage.outage"]
        assert [r.levelname for r in lines] == ["ERROR"]  # one line for the whole episode
        assert "storage unavailable" in lines[0].getMessage() and lines[0].exc_info is None
        # Back: the next job commits (the pool connects again by itself) and ends the outage.
        stored = await db.run(functools.partial(new_device, n=9))
        assert db.outage is None
        recovery = [r for r in caplog.records if r.name == "storage.outage"][1:]
        assert len(recovery) == 1 and "available again" in recovery[0].getMessage()
        ids = [d.id for d in await db.run(lambda r: r.devices.all())]
        assert kept.id in ids and stored.id in ids and len(ids) == 2


async def test_changes_are_announced_to_listeners_at_commit(postgres_server: TestPostgres) -> None:
    """Other nodes learn of a changed device, new events and new webhook deliveries from the
    database's notifications, sent only when the change commits."""
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        with psycopg.connect(url, autocommit=True) as listener:
            for channel in ("wasup_devices", "wasup_events", "wasup_outbox"):
                listener.execute(f"LISTEN {channel}")
            row = await db.run(new_device)

            def rolled_back(r: Repositories) -> None:
                r.devices.update(row.id, alias="never")
                raise RuntimeError("undo")

            with pytest.raises(RuntimeError):
                await db.run(rolled_back)
            await db.run(lambda r: r.devices.update(row.id, alias="renamed"))
            with psycopg.connect(url, autocommit=True) as other:
                other.execute(
                    "INSERT INTO events (device_id, session_id, type, data, timestamp)"
                    " VALUES (%s, 's', 'x', '{}', 't'), (%s, 's', 'y', '{}', 't')",
                    (row.id, row.id),
                )
            got = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=3)]
    assert got == [
        ("wasup_devices", str(row.id)),  # the insert
        ("wasup_devices", str(row.id)),  # the rename; the rolled-back change sent nothing
        ("wasup_events", ""),  # one for the two events
    ]
