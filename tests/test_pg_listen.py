"""PostgreSQL notifications in Trio (storage/pg/listen.py, ``PgStore.listen``) on a real
server: payloads in commit order, a ``"*"`` after the server restarts or after a subscriber
fell behind, and nothing left running once the store is closed."""

from __future__ import annotations

import threading

import psycopg
import pytest
import trio

import storage.pg.listen as listen
from storage import Repositories
from storage.pg import open_postgres
from tests.pg_support import TestPostgres
from tests.test_storage import new_device

WAIT = 10.0  # seconds: generous, the machine is shared


def notify(url: str, channel: str, *payloads: str) -> None:
    """Send ``payloads`` on ``channel``, each from a transaction of its own."""
    with psycopg.connect(url, autocommit=True) as conn:
        for payload in payloads:
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def receive(payloads: trio.MemoryReceiveChannel[str], n: int) -> list[str]:
    got: list[str] = []
    with trio.fail_after(WAIT):
        for _ in range(n):
            got.append(await payloads.receive())
    return got


def listener_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wasup-listen")]


async def test_payloads_arrive_in_commit_order(postgres_server: TestPostgres) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        async with db.listen("wasup_devices") as devices, db.listen("wasup_devices") as again:
            async with db.listen("wasup_outbox") as outbox:
                first = await db.run(new_device)
                second = await db.run(lambda r: new_device(r, 2))

                def rolled_back(r: Repositories) -> None:
                    r.devices.update(first.id, alias="never")
                    raise RuntimeError("undo")

                with pytest.raises(RuntimeError):
                    await db.run(rolled_back)
                await db.run(lambda r: r.devices.update(second.id, alias="b"))
                await db.run(lambda r: r.devices.update(first.id, alias="a"))
                expected = [str(first.id), str(second.id), str(second.id), str(first.id)]
                assert await receive(devices, 4) == expected
                assert await receive(again, 4) == expected  # every subscriber gets each
                assert outbox.statistics().current_buffer_used == 0  # not its channel
            notify(url, "wasup_devices", "after")
            assert await receive(devices, 1) == ["after"]


async def test_a_restarted_server_sends_reload_and_notifications_go_on(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db, db.listen("wasup_devices") as devices:
        notify(url, "wasup_devices", "before")
        assert await receive(devices, 1) == ["before"]
        await trio.to_thread.run_sync(postgres_server.stop_server)
        await trio.to_thread.run_sync(postgres_server.start_server)
        # Whatever was sent while it was away is lost: reload everything.
        assert await receive(devices, 1) == [listen.RELOAD]
        row = await db.run(new_device)
        assert await receive(devices, 1) == [str(row.id)]


async def test_a_subscriber_that_falls_behind_gets_one_reload(
    postgres_server: TestPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listen, "QUEUE_SIZE", 3)
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        async with db.listen("wasup_devices") as slow, db.listen("wasup_outbox") as marker:
            notify(url, "wasup_devices", *[str(n) for n in range(10)])
            notify(url, "wasup_outbox", "done")  # after every one of the ten, in order
            assert await receive(marker, 1) == ["done"]
            assert await receive(slow, 4) == ["0", "1", "2", listen.RELOAD]
            assert slow.statistics().current_buffer_used == 0  # 3..9: covered by the reload
            notify(url, "wasup_devices", "later")
            assert await receive(slow, 1) == ["later"]


async def test_closing_the_store_ends_subscribers_and_its_thread(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    before = len(listener_threads())
    listening, ended = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        async with open_postgres(url) as db:

            async def consume() -> None:
                async with db.listen("wasup_events") as events:
                    listening.set()
                    async for _ in events:
                        pass
                ended.set()

            nursery.start_soon(consume)
            with trio.fail_after(WAIT):
                await listening.wait()
            assert len(listener_threads()) == before + 1
        with trio.fail_after(WAIT):
            await ended.wait()
    assert len(listener_threads()) == before
    with pytest.raises(RuntimeError, match="closed"):
        async with db.listen("wasup_events"):
            pass


async def test_a_bad_channel_name_is_refused(postgres_server: TestPostgres) -> None:
    async with open_postgres(postgres_server.create_database()) as db:
        with pytest.raises(ValueError, match="channel"):
            async with db.listen("x; DROP TABLE devices"):
                pass
