"""What every cluster node reads of devices other nodes run, on a real PostgreSQL: the stored QR
code (supervisor.cluster.qr_store, storage.pg.qr) and the mirrored directory rows
(supervisor.cluster.mirror)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import trio

from common.clock import now_epoch, now_iso
from storage.models import DeviceRow
from storage.pg import open_postgres
from storage.pg.store import PgStore
from supervisor.cluster.mirror import Mirror
from supervisor.cluster.qr_store import QrStore, stored_qr
from supervisor.directory import DeviceDirectory
from supervisor.qr import QrAttempt
from tests.pg_support import TestPostgres


async def _device(db: PgStore, alias: str) -> DeviceRow:
    row: DeviceRow = await db.run(lambda r: r.devices.insert(
        user_id="u1", alias=alias, session_id=f"user_u1_device_{alias}", business_type=None,
        phone_number=None, description=None, api_key_hash=f"hash-{alias}", status="pending",
        now=now_iso()))
    return row


def _lease(url: str, device_id: int, owner: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device_leases (device_id, owner, expires_at, epoch)"
            " VALUES (%s, %s, now() + interval '15 seconds', 1) ON CONFLICT (device_id)"
            " DO UPDATE SET owner = excluded.owner, epoch = device_leases.epoch + 1",
            (device_id, owner),
        )


def _qr(code: str, attempt: int = 1, seconds: float = 60.0) -> QrAttempt:
    return QrAttempt.expiring(code, attempt=attempt, max_attempts=3,
                              expires_at_epoch=now_epoch() + seconds)


async def test_the_owner_stores_the_qr_code_and_only_the_owner(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        row = await _device(db, "a")
        _lease(url, row.id, "node-b")
        owner, other = QrStore(db, "node-b"), QrStore(db, "node-a")
        assert await stored_qr(db, row.id) is None

        owner.shown(row.id, _qr("2@first", 1))
        owner.shown(row.id, _qr("2@second", 2))  # replaces the first before it is written
        assert await owner.write_pending()
        assert owner.writes == 1
        found = await stored_qr(db, row.id)
        assert found is not None
        assert (found.qr_string, found.attempt, found.max_attempts) == ("2@second", 2, 3)
        assert abs(found.expires_at_epoch - (now_epoch() + 60)) < 5

        other.shown(row.id, _qr("2@stale"))  # a node without the lease changes nothing
        other.shown(row.id, None)
        await other.write_pending()
        found = await stored_qr(db, row.id)
        assert found is not None and found.qr_string == "2@second"

        _lease(url, row.id, "node-a")  # the device moved: the old owner cannot clear it
        owner.shown(row.id, None)
        await owner.write_pending()
        assert await stored_qr(db, row.id) is not None
        other.shown(row.id, None)  # pairing ended on the new owner
        await other.write_pending()
        assert await stored_qr(db, row.id) is None

        other.shown(row.id, _qr("2@expired", seconds=-1))
        await other.write_pending()
        assert await stored_qr(db, row.id) is None  # expired: not shown

        other.shown(row.id, _qr("2@gone"))
        await db.run(lambda r: r.devices.delete(row.id))
        assert await other.write_pending()  # a deleted device: nothing to write, no error


async def _until(check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` holds (at most 5)."""
    started = trio.current_time()
    with trio.fail_after(5):
        while not check():  # noqa: ASYNC110 (the rows change from another connection)
            await trio.sleep(0.005)
    return trio.current_time() - started


async def test_rows_of_other_nodes_follow_their_writes(postgres_server: TestPostgres) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db_a, open_postgres(url) as db_b:
        mine, theirs = await _device(db_b, "mine"), await _device(db_b, "theirs")
        directory = DeviceDirectory()
        directory.put(mine)  # the actor's row: the mirror leaves it alone
        mirror = Mirror(db_a, db_a.listen, directory, owns=lambda d: d == mine.id)
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            assert directory.get(theirs.id) == theirs

            # node B's writes show on node A within a fraction of a second
            await db_b.run(lambda r: r.devices.update(theirs.id, status="connecting"))
            seconds = await _until(
                lambda: (row := directory.get(theirs.id)) is not None
                and row.status == "connecting")
            assert seconds < 1.0
            print(f"a row written on node B read on node A after {seconds * 1000:.0f} ms")

            new = await _device(db_b, "new")  # a new device enters the directory
            await _until(lambda: directory.get(new.id) == new)
            assert directory.resolve(new.session_id) == new.id

            await db_b.run(lambda r: r.devices.delete(theirs.id))  # a deleted one leaves
            await _until(lambda: theirs.id not in directory)

            await db_b.run(lambda r: r.devices.update(mine.id, alias="renamed"))
            await db_b.run(lambda r: r.devices.update(new.id, status="connected"))
            await _until(lambda: (row := directory.get(new.id)) is not None
                         and row.status == "connected")
            assert directory.get(mine.id) == mine  # ours: only its actor writes it here

            # "*": reload everything (a device deleted while no notification came)
            directory.put(theirs)
            reloads = mirror.reloads
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_notify('wasup_devices', '*')")
            await _until(lambda: mirror.reloads > reloads)
            assert theirs.id not in directory and new.id in directory
            assert directory.get(mine.id) == mine
            nursery.cancel_scope.cancel()
