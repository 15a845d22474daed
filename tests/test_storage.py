"""Tests for storage/: the database thread with group commit, migrations, and the repositories.

Rules: every test uses its own database under ``tmp_path``; SQLite is reached only through
``Database.run`` (never on the Trio thread), except in the child process of the kill test.
Where a test needs several jobs in one batch, it parks the database thread on a gate job
(a ``threading.Event``) while it queues them: no sleeps, no timing assumptions.
"""

from __future__ import annotations

import enum
import functools
import os
import signal
import sqlite3
import stat
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import storage
from storage import (
    Conflict,
    Database,
    DatabaseClosed,
    MigrationError,
    NotFound,
    open_database,
)
from storage.migrations import MIGRATIONS

NOW = "2025-06-19T12:00:00.000Z"
LATER = "2025-06-19T12:05:00.000Z"
REPO = Path(__file__).resolve().parent.parent


def new_device(conn: sqlite3.Connection, n: int | str = 1, **over: Any) -> storage.DeviceRow:
    args: dict[str, Any] = dict(
        user_id="u1",
        alias=f"Shop {n}",
        session_id=f"user_u1_device_shop-{n}",
        business_type="retail",
        phone_number=None,
        description=None,
        api_key_hash=f"hash-{n}",
        status="pending",
        now=NOW,
    )
    args.update(over)
    return storage.insert_device(conn, **args)


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


class Gate:
    """Parks the database thread inside a job until opened, so later jobs pile up in one batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def job(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        assert self.release.wait(10), "gate never opened"

    async def close(self, db: Database, nursery: trio.Nursery) -> None:
        """Start the gate job and return once the thread is parked in it."""
        nursery.start_soon(db.run, self.job)
        await trio.to_thread.run_sync(self.entered.wait)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "wasup.db"


# -- connection settings and migrations --------------------------------------------------------


async def test_pragmas_are_on(db_path: Path) -> None:
    async with open_database(db_path) as db:

        def pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
            return {
                name: conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }

        assert await db.run(pragmas) == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": 2,  # FULL
            "busy_timeout": 5000,
        }
        # Foreign keys are enforced, not just declared.
        with pytest.raises(sqlite3.IntegrityError):
            await db.run(
                lambda c: c.execute("INSERT INTO credentials (device_id, data) VALUES (99, x'00')")
            )


async def test_migrations_set_user_version_and_are_idempotent(db_path: Path) -> None:
    tables = {
        "devices",
        "settings",
        "state_history",
        "credentials",
        "messages",
        "webhook_outbox",
        "webhook_attempts",
    }

    def schema(conn: sqlite3.Connection) -> tuple[int, set[str]]:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return version, names

    async with open_database(db_path) as db:
        version, names = await db.run(schema)
        assert version == len(MIGRATIONS)
        assert tables <= names
        await db.run(new_device)
    async with open_database(db_path) as db:  # reopen: nothing re-applied, nothing lost
        assert (await db.run(schema))[0] == len(MIGRATIONS)
        assert await db.run(lambda c: count(c, "devices")) == 1

    # Appending a migration applies exactly that one, once.
    calls = []

    def v_next(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("CREATE TABLE extra (x INTEGER)")

    extended = [*MIGRATIONS, v_next]
    for _ in range(2):
        async with open_database(db_path, migrations=extended) as db:
            assert (await db.run(schema))[0] == len(extended)
    assert calls == [1]

    # This wasup is now older than the database: refuse, touch nothing.
    with pytest.raises(MigrationError, match="newer"):
        async with open_database(db_path):
            pass


async def test_failed_migration_is_rolled_back(db_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(MigrationError, match=f"version {len(MIGRATIONS) + 1}"):
        async with open_database(db_path, migrations=[*MIGRATIONS, broken]):
            pass
    async with open_database(db_path) as db:
        version = await db.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        half = await db.run(
            lambda c: c.execute("SELECT count(*) FROM sqlite_master WHERE name='half'").fetchone()
        )
        assert version == len(MIGRATIONS)
        assert half[0] == 0


async def test_open_failure_is_raised(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(sqlite3.Error):
        async with open_database(tmp_path / "adir"):
            pass


# -- the database thread: group commit, failures, close, cancellation --------------------------


async def test_failing_job_rolls_back_alone_within_its_batch(db_path: Path) -> None:
    async with open_database(db_path) as db, trio.open_nursery() as nursery:
        gate = Gate()
        await gate.close(db, nursery)
        before = db.statistics()
        results: dict[str, Any] = {}

        async def submit(name: str, fail: bool) -> None:
            def job(conn: sqlite3.Connection) -> int:
                row = new_device(conn, name)
                storage.put_settings(conn, row.id, "ai", {"on": True})
                if fail:
                    raise ValueError(f"job {name} failed")
                return row.id

            try:
                results[name] = await db.run(job)
            except ValueError as exc:
                results[name] = exc

        for name, fail in [("a", False), ("b", True), ("c", False)]:
            nursery.start_soon(submit, name, fail)
        await trio.testing.wait_all_tasks_blocked()
        assert db.statistics().queued == 3
        gate.release.set()

    after = db.statistics()
    assert after.batches - before.batches == 1  # (the gate's batch began before) a, b, c together
    assert after.largest_batch == 3
    assert isinstance(results["b"], ValueError)
    assert str(results["b"]) == "job b failed"
    async with open_database(db_path) as db:
        sessions = await db.run(
            lambda c: [r[0] for r in c.execute("SELECT session_id FROM devices ORDER BY id")]
        )
        assert sorted(sessions) == ["user_u1_device_shop-a", "user_u1_device_shop-c"]
        assert await db.run(lambda c: count(c, "settings")) == 2
        assert await db.run(lambda c: count(c, "state_history")) == 2


async def test_group_commit_batches_concurrent_callers(db_path: Path) -> None:
    async with open_database(db_path) as db:
        before = db.statistics()
        ids: list[int] = []

        async def one(n: int) -> None:
            row = await db.run(lambda c: new_device(c, n))
            ids.append(row.id)

        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(one, n)
        after = db.statistics()
        assert after.jobs - before.jobs == 1000
        assert after.failed_jobs == before.failed_jobs
        commits = after.commits - before.commits
        assert 1 <= commits <= 100, commits  # one fsync serves many callers
        assert sorted(ids) == list(range(1, 1001))
        assert await db.run(lambda c: count(c, "devices")) == 1000


async def test_max_batch_bounds_a_transaction(db_path: Path) -> None:
    async with open_database(db_path, max_batch=7) as db:
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(db.run, functools.partial(new_device, n=n))
        stats = db.statistics()
        assert stats.largest_batch <= 7
        assert stats.commits >= 50 // 7


async def test_close_finishes_queued_work(db_path: Path) -> None:
    done = []
    async with trio.open_nursery() as nursery:
        async with open_database(db_path) as db:
            gate = Gate()
            await gate.close(db, nursery)

            async def one(n: int) -> None:
                await db.run(lambda c: new_device(c, n))
                done.append(n)

            for n in range(20):
                nursery.start_soon(one, n)
            await trio.testing.wait_all_tasks_blocked()
            gate.release.set()
        # Leaving the block waited for the queued jobs and their commit.
        with pytest.raises(DatabaseClosed):
            await db.run(lambda c: None)
    assert sorted(done) == list(range(20))
    async with open_database(db_path) as db:
        assert await db.run(lambda c: count(c, "devices")) == 20


async def test_cancelled_caller_work_still_commits(db_path: Path) -> None:
    async with open_database(db_path) as db:
        with trio.move_on_after(0) as scope:
            await db.run(new_device)  # submitted, then cancelled while waiting
        assert scope.cancelled_caught
        # The job ran and committed anyway (documented): the next job sees it.
        assert await db.run(lambda c: storage.get_device(c, 1)) is not None


async def test_job_that_ends_the_transaction_is_refused(db_path: Path) -> None:
    async with open_database(db_path) as db:
        with pytest.raises(sqlite3.ProgrammingError, match="must not end the transaction"):
            await db.run(lambda c: c.execute("COMMIT"))
        # The thread carries on.
        row = await db.run(new_device)
        assert row.id == 1


async def test_data_survives_close_and_reopen(db_path: Path) -> None:
    async with open_database(db_path) as db:
        row = await db.run(new_device)
        await db.run(lambda c: storage.put_credentials(c, row.id, b"\x00secret\xff"))
    async with open_database(db_path) as db:
        assert await db.run(lambda c: storage.get_device(c, row.session_id)) == row
        assert await db.run(lambda c: storage.get_credentials(c, row.id)) == b"\x00secret\xff"


CHILD = """
import sys, trio
from storage import open_database, insert_device

async def main(path):
    async with open_database(path) as db:
        n = 0
        while True:
            n += 1
            await db.run(lambda c: insert_device(
                c, user_id="u", alias=f"a{n}", session_id=f"s{n}", business_type=None,
                phone_number=None, description=None, api_key_hash=f"h{n}", status="pending",
                now="2025-06-19T12:00:00.000Z"))
            print("ok", n, flush=True)

trio.run(main, sys.argv[1])
"""


async def test_acknowledged_writes_survive_sigkill(db_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acked: list[int] = []
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(script), str(db_path)], stdout=-1, env=env
        )
        assert proc.stdout is not None
        buffer = b""
        try:
            while len(acked) < 30:
                chunk = await proc.stdout.receive_some()
                assert chunk, "child exited early"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                acked += [int(line.split()[1]) for line in lines if line.startswith(b"ok")]
        finally:
            proc.send_signal(signal.SIGKILL)  # mid-stream: writes are still in flight
            await proc.wait()
            await proc.stdout.aclose()
    assert proc.returncode == -signal.SIGKILL
    async with open_database(db_path) as db:
        stored = set(
            await db.run(lambda c: [r[0] for r in c.execute("SELECT session_id FROM devices")])
        )
    assert {f"s{n}" for n in acked} <= stored


# -- devices -----------------------------------------------------------------------------------


class Status(enum.StrEnum):  # stands in for supervisor.state.Status (storage must not import it)
    PENDING = "pending"
    CONNECTING = "connecting"
    CONNECTED = "connected"


async def test_insert_and_get_device(db_path: Path) -> None:
    async with open_database(db_path) as db:
        row = await db.run(lambda c: new_device(c, 1, status=Status.PENDING))
        assert row.id == 1
        assert row.status == "pending" and type(row.status) is str
        assert row.created_at == row.updated_at == NOW
        assert row.paired is False and row.messages_sent == 0 and row.battery is None
        assert await db.run(lambda c: storage.get_device(c, 1)) == row
        assert await db.run(lambda c: storage.get_device(c, "1")) == row
        assert await db.run(lambda c: storage.get_device(c, row.session_id)) == row
        assert await db.run(lambda c: storage.get_device_by_key_hash(c, "hash-1")) == row
        assert await db.run(lambda c: storage.get_device(c, 2)) is None
        assert await db.run(lambda c: storage.get_device(c, "nope")) is None
        assert await db.run(lambda c: storage.get_device_by_key_hash(c, "x")) is None
        hist = await db.run(lambda c: storage.history(c, row.id))
        assert hist == [storage.HistoryRow(None, "pending", "created", NOW)]


async def test_duplicates_conflict_and_lose_nothing(db_path: Path) -> None:
    async with open_database(db_path) as db:
        first = await db.run(new_device)
        clashes: dict[str, dict[str, Any]] = {
            "session_id": dict(alias="Other", api_key_hash="h2"),
            "alias": dict(session_id="other", api_key_hash="h2"),
            "api_key_hash": dict(alias="Other", session_id="other"),
        }
        for field, over in clashes.items():
            with pytest.raises(Conflict) as info:
                await db.run(functools.partial(new_device, n=1, **over))
            assert info.value.field == field
        assert await db.run(storage.all_devices) == [first]
        assert await db.run(lambda c: count(c, "state_history")) == 1
        # The same alias for another user is fine.
        other = await db.run(
            lambda c: new_device(c, 1, user_id="u2", session_id="s2", api_key_hash="h2")
        )
        assert other.id == 2


async def test_update_device(db_path: Path) -> None:
    async with open_database(db_path) as db:
        a = await db.run(lambda c: new_device(c, 1))
        await db.run(lambda c: new_device(c, 2))
        row = await db.run(
            lambda c: storage.update_device(
                c, a.id, alias="Renamed", description="d", battery=80, updated_at=LATER
            )
        )
        assert (row.alias, row.description, row.battery, row.updated_at) == (
            "Renamed",
            "d",
            80,
            LATER,
        )
        with pytest.raises(Conflict) as info:
            await db.run(lambda c: storage.update_device(c, a.id, alias="Shop 2"))
        assert info.value.field == "alias"
        with pytest.raises(NotFound):
            await db.run(lambda c: storage.update_device(c, 99, alias="x"))
        with pytest.raises(TypeError, match="created_at"):
            await db.run(lambda c: storage.update_device(c, a.id, created_at=LATER))
        assert await db.run(lambda c: storage.get_device(c, a.id)) == row


async def test_record_transition_updates_and_appends_history(db_path: Path) -> None:
    async with open_database(db_path) as db:
        a = await db.run(new_device)
        row = await db.run(
            lambda c: storage.record_transition(
                c,
                a.id,
                from_status=Status.PENDING,
                to_status=Status.CONNECTING,
                reason="scanned",
                at=LATER,
                paired=True,
                jid="123@s.whatsapp.net",
                push_name="Ann",
            )
        )
        assert (row.status, row.status_reason, row.updated_at) == ("connecting", "scanned", LATER)
        assert row.paired is True and row.jid == "123@s.whatsapp.net" and row.push_name == "Ann"
        assert row.created_at == NOW
        hist = await db.run(lambda c: storage.history(c, a.id))
        assert hist[-1] == storage.HistoryRow("pending", "connecting", "scanned", LATER)
        assert len(hist) == 2
        # Unknown device: NotFound, and no orphan history row.
        with pytest.raises(NotFound):
            await db.run(
                lambda c: storage.record_transition(
                    c, 99, from_status="pending", to_status="connected", reason=None, at=LATER
                )
            )
        # The schema refuses a status outside the six.
        with pytest.raises(sqlite3.IntegrityError):
            await db.run(
                lambda c: storage.record_transition(
                    c, a.id, from_status="connecting", to_status="bogus", reason=None, at=LATER
                )
            )
        assert len(await db.run(lambda c: storage.history(c, a.id))) == 2


async def test_list_and_count_devices(db_path: Path) -> None:
    async with open_database(db_path) as db:

        def populate(conn: sqlite3.Connection) -> None:
            for n in range(1, 8):
                user = "u1" if n <= 5 else "u2"
                row = new_device(conn, n, user_id=user)
                if n % 2 == 0:
                    storage.record_transition(
                        conn,
                        row.id,
                        from_status="pending",
                        to_status="connected",
                        reason=None,
                        at=LATER,
                    )

        await db.run(populate)
        rows, total = await db.run(lambda c: storage.list_devices(c, offset=0, limit=3))
        assert [r.id for r in rows] == [1, 2, 3] and total == 7
        rows, total = await db.run(
            lambda c: storage.list_devices(c, user_id="u1", status="connected", offset=1, limit=10)
        )
        assert [r.id for r in rows] == [4] and total == 2
        rows, total = await db.run(lambda c: storage.list_devices(c, user_id="nobody"))
        assert rows == [] and total == 0
        assert await db.run(storage.count_by_status) == {"pending": 4, "connected": 3}
        assert [r.id for r in await db.run(storage.all_devices)] == list(range(1, 8))


async def test_increment_stats(db_path: Path) -> None:
    async with open_database(db_path) as db:
        a = await db.run(new_device)
        await db.run(lambda c: storage.increment_stats(c, a.id, sent=2, at=NOW))
        row = await db.run(lambda c: storage.increment_stats(c, a.id, received=3, at=LATER))
        assert (row.messages_sent, row.messages_received, row.last_activity) == (2, 3, LATER)
        with pytest.raises(NotFound):
            await db.run(lambda c: storage.increment_stats(c, 99, sent=1, at=NOW))


async def test_delete_cascades(db_path: Path) -> None:
    tables = [
        "devices",
        "settings",
        "state_history",
        "credentials",
        "messages",
        "webhook_outbox",
        "webhook_attempts",
    ]

    def populate(conn: sqlite3.Connection) -> int:
        row = new_device(conn)
        storage.put_settings(conn, row.id, "webhook", {"url": "https://example.com/h"})
        storage.put_credentials(conn, row.id, b"creds")
        storage.insert_message(
            conn,
            row.id,
            message_id="m1",
            chat="c",
            direction="in",
            text="hi",
            status=None,
            at=NOW,
        )
        conn.execute(
            "INSERT INTO webhook_outbox (id, device_id, event_type, payload, created_at,"
            " next_attempt_at) VALUES ('msg_1', ?, 'device_connected', '{}', ?, 0)",
            (row.id, NOW),
        )
        conn.execute(
            "INSERT INTO webhook_attempts (outbox_id, at, status_code) VALUES ('msg_1', ?, 500)",
            (NOW,),
        )
        return row.id

    async with open_database(db_path) as db:
        device_id = await db.run(populate)
        other = await db.run(lambda c: new_device(c, 2).id)
        counts = await db.run(lambda c: {t: count(c, t) for t in tables})
        assert all(counts.values()), counts
        assert await db.run(lambda c: storage.delete_device(c, device_id)) is True
        assert await db.run(lambda c: storage.delete_device(c, device_id)) is False
        left = await db.run(lambda c: {t: count(c, t) for t in tables})
        assert left == {t: 1 if t in ("devices", "state_history") else 0 for t in tables}
        # Ids are never reused after a delete.
        assert await db.run(lambda c: new_device(c, 3).id) == other + 1


# -- settings, credentials, messages -----------------------------------------------------------


async def test_settings_roundtrip(db_path: Path) -> None:
    async with open_database(db_path) as db:
        a = await db.run(new_device)
        assert await db.run(lambda c: storage.get_settings(c, a.id, "ai")) is None
        value = {"enabled": True, "model": "m", "nested": {"x": [1, 2]}}
        await db.run(lambda c: storage.put_settings(c, a.id, "ai", value))
        await db.run(lambda c: storage.put_settings(c, a.id, "ai", {**value, "enabled": False}))
        assert await db.run(lambda c: storage.get_settings(c, a.id, "ai")) == {
            **value,
            "enabled": False,
        }
        assert await db.run(lambda c: storage.get_settings(c, a.id, "webhook")) is None
        with pytest.raises(NotFound):
            await db.run(lambda c: storage.put_settings(c, 99, "ai", value))
        assert await db.run(lambda c: storage.delete_settings(c, a.id, "ai")) is True
        assert await db.run(lambda c: storage.get_settings(c, a.id, "ai")) is None


async def test_credentials_roundtrip(db_path: Path) -> None:
    async with open_database(db_path) as db:
        a = await db.run(new_device)
        assert await db.run(lambda c: storage.get_credentials(c, a.id)) is None
        await db.run(lambda c: storage.put_credentials(c, a.id, b"one"))
        await db.run(lambda c: storage.put_credentials(c, a.id, b"two"))
        assert await db.run(lambda c: storage.get_credentials(c, a.id)) == b"two"
        assert await db.run(lambda c: storage.delete_credentials(c, a.id)) is True
        assert await db.run(lambda c: storage.delete_credentials(c, a.id)) is False
        with pytest.raises(NotFound):
            await db.run(lambda c: storage.put_credentials(c, 99, b"x"))


async def test_messages(db_path: Path) -> None:
    async with open_database(db_path) as db:
        a = await db.run(new_device)

        def add(conn: sqlite3.Connection, n: int, chat: str = "chat1") -> storage.MessageRow:
            return storage.insert_message(
                conn,
                a.id,
                message_id=f"m{n}",
                chat=chat,
                direction="out" if n % 2 else "in",
                text=f"text {n}",
                status="sent" if n % 2 else None,
                at=NOW,
                sender="s",
            )

        first = await db.run(lambda c: add(c, 1))
        for n in range(2, 7):
            await db.run(functools.partial(add, n=n))
        await db.run(lambda c: add(c, 7, chat="chat2"))
        assert await db.run(lambda c: storage.get_message(c, a.id, "m1")) == first
        with pytest.raises(Conflict) as info:
            await db.run(lambda c: add(c, 1))
        assert info.value.field == "message_id"

        recent = await db.run(lambda c: storage.recent_messages(c, a.id, "chat1", 3))
        assert [m.message_id for m in recent] == ["m4", "m5", "m6"]  # the last 3, oldest first

        def status(s: str) -> Any:
            return db.run(lambda c: storage.update_message_status(c, a.id, "m1", s))

        assert (await status("read")).status == "read"
        assert (await status("delivered")).status == "read"  # a late receipt never goes back
        assert await db.run(lambda c: storage.update_message_status(c, a.id, "zz", "read")) is None
        with pytest.raises(NotFound):
            await db.run(
                lambda c: storage.insert_message(
                    c, 99, message_id="x", chat="c", direction="in", text=None, status=None, at=NOW
                )
            )


async def test_virtual_time_stands_still_while_the_thread_works(
    autojump_clock: trio.testing.MockClock, db_path: Path
) -> None:
    # Without care the autojumping clock would see an idle run loop while the database thread
    # works and leap to the next deadline: every DB call would look like it took ages.
    async with open_database(db_path) as db, trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(trio.sleep, 100)
        for n in range(20):
            await db.run(functools.partial(new_device, n=n))
        assert trio.current_time() == start
        nursery.cancel_scope.cancel()


async def test_new_database_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "data" / "wasup.db"
    async with open_database(path) as db:
        await db.run(lambda c: c.execute("SELECT 1").fetchall())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
