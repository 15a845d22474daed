"""Group commit on PostgreSQL (storage/pg/batch.py): jobs that queue while every connection is
busy commit together, a failing job still fails alone, a job may catch a conflict and go on,
and a pooled connection that broke while idle does not fail a job."""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

import storage
from storage import Repositories
from storage.pg import open_postgres
from storage.pg.store import PgStore
from tests.pg_support import TestPostgres
from tests.test_storage import new_device


async def queued_behind_one(db: PgStore, jobs: list[Callable[[Repositories], Any]]) -> list[Any]:
    """Run ``jobs`` while the store's only thread is busy (so they queue, in order, and run as
    one batch); each job's value or the exception it raised."""
    entered, release = threading.Event(), threading.Event()

    def parked(r: Repositories) -> None:
        entered.set()
        assert release.wait(10)

    results: list[Any] = [None] * len(jobs)

    async def one(i: int) -> None:
        try:
            results[i] = await db.run(jobs[i])
        except Exception as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.run, parked)
        await trio.to_thread.run_sync(entered.wait)
        for i in range(len(jobs)):
            nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
        assert db.statistics().queued == len(jobs)
        release.set()
    return results


async def test_queued_jobs_commit_in_one_transaction(postgres_server: TestPostgres) -> None:
    async with open_postgres(postgres_server.create_database(), pool_size=1) as db:
        rows = await queued_behind_one(db, [functools.partial(new_device, n=n)
                                            for n in range(1, 21)])
        assert [row.id for row in rows] == list(range(1, 21))  # in the order they came
        stats = db.statistics()
        assert (stats.jobs, stats.batches, stats.largest_batch, stats.commits) == (21, 2, 20, 2)
        assert len(await db.run(lambda r: r.devices.all())) == 20


async def test_a_failing_job_fails_alone_within_its_batch(postgres_server: TestPostgres) -> None:
    def half_then_fail(r: Repositories) -> None:
        new_device(r, n=99)
        raise ValueError("job failed")

    async with open_postgres(postgres_server.create_database(), pool_size=1) as db:
        jobs: list[Callable[[Repositories], Any]] = [
            functools.partial(new_device, n=n) for n in range(1, 6)]
        jobs.insert(2, half_then_fail)
        results = await queued_behind_one(db, jobs)
        assert isinstance(results[2], ValueError)
        stored = {row.alias for row in await db.run(lambda r: r.devices.all())}
        assert stored == {f"Shop {n}" for n in range(1, 6)}  # the failing job's insert undone
        assert db.outage is None


async def test_a_job_may_catch_a_conflict_and_go_on(postgres_server: TestPostgres) -> None:
    def retry_with_another_alias(r: Repositories) -> str:
        try:
            new_device(r, n=1)  # taken: Conflict
        except storage.Conflict as exc:
            assert exc.field in ("alias", "session_id", "api_key_hash")
        return new_device(r, n=2).alias

    async with open_postgres(postgres_server.create_database(), pool_size=1) as db:
        await db.run(new_device)
        assert await db.run(retry_with_another_alias) == "Shop 2"  # alone
        results = await queued_behind_one(
            db, [functools.partial(new_device, n=3), retry_with_another_alias_3,
                 functools.partial(new_device, n=5)])
        assert [getattr(v, "alias", v) for v in results] == ["Shop 3", "Shop 4", "Shop 5"]
        stored = sorted(row.alias for row in await db.run(lambda r: r.devices.all()))
        assert stored == [f"Shop {n}" for n in range(1, 6)]


def retry_with_another_alias_3(r: Repositories) -> str:
    try:
        new_device(r, n=3)  # taken by the job before it, in the same batch
    except storage.Conflict:
        pass
    return new_device(r, n=4).alias


async def test_a_connection_broken_while_idle_does_not_fail_a_job(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url, pool_size=1) as db:
        await db.run(new_device)  # the pool's connection, used moments ago: lent unchecked
        with psycopg.connect(url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'").fetchone()
        assert ended is not None and ended[0] >= 1
        row = await db.run(functools.partial(new_device, n=2))  # moved to a new connection
        assert row.id == 2 and db.outage is None
        assert db.statistics().failed_jobs == 0


async def test_an_outage_fails_the_whole_batch_at_once() -> None:
    server = TestPostgres.start()  # a server of its own, to stop
    try:
        async with open_postgres(server.create_database(), pool_size=1,
                                 connect_timeout=0.5) as db:
            entered, release = threading.Event(), threading.Event()

            def parked(r: Repositories) -> None:
                entered.set()
                assert release.wait(10)

            failures: list[BaseException] = []

            async def one(n: int) -> None:
                with pytest.raises(storage.StorageUnavailable) as info:
                    await db.run(functools.partial(new_device, n=n))
                failures.append(info.value)

            async def park() -> None:
                with pytest.raises(storage.StorageUnavailable):
                    await db.run(parked)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(park)
                await trio.to_thread.run_sync(entered.wait)
                for n in range(1, 11):
                    nursery.start_soon(one, n)
                await trio.testing.wait_all_tasks_blocked()
                await trio.to_thread.run_sync(server.stop_server)
                release.set()
            assert len(failures) == 10
            outage = db.outage
            assert outage is not None and outage.refused == 11
            assert db.statistics().batches == 2  # the ten did not each wait for the server
    finally:
        with contextlib.suppress(RuntimeError):  # stopped above already
            server.stop_server("immediate")
        shutil.rmtree(server.root, ignore_errors=True)
