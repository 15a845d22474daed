"""Tests for storage/: the database thread with group commit, migrations, and the repositories.

Rules: every test uses its own database under ``tmp_path``; it writes only through
``Database.run`` and the repositories. To look at the tables themselves a test opens its own
read connection on the file (:func:`peek`; WAL lets it read beside the writer); only the tests
of the writer connection's own settings reach that connection (:func:`writer`).
Where a test needs several jobs in one batch, it parks the database thread on a gate job
(a ``threading.Event``) while it queues them: no sleeps, no timing assumptions.
"""

from __future__ import annotations

import enum
import functools
import os
import re
import signal
import sqlite3
import stat
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlite_utils
import trio
import trio.testing

import storage
import storage.outage
from storage import (
    Conflict,
    Database,
    DatabaseClosed,
    MigrationError,
    NotFound,
    Repositories,
    open_database,
)
from storage.migrations import MIGRATIONS
from storage.models import DeliveryTarget
from storage.repositories import SqliteRepositories
from supervisor.state import Status as DeviceStatus
from tests.store_support import Backend

NOW = "2025-06-19T12:00:00.000Z"
LATER = "2025-06-19T12:05:00.000Z"
REPO = Path(__file__).resolve().parent.parent


def new_device(r: Repositories, n: int | str = 1, **over: Any) -> storage.DeviceRow:
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
    return r.devices.insert(**args)


def peek(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on a read connection of its own (sees what is committed)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(path: Path, table: str) -> int:
    return int(peek(path, f"SELECT count(*) FROM {table}")[0][0])


def writer(r: Repositories) -> sqlite3.Connection:
    """The database thread's own connection (for tests of its settings and guards only)."""
    assert isinstance(r, SqliteRepositories)
    return r.devices._db.conn


class Gate:
    """Parks the database thread inside a job until opened, so later jobs pile up in one batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def job(self, r: Repositories) -> None:
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

        def pragmas(r: Repositories) -> dict[str, Any]:
            return {
                name: writer(r).execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }

        assert await db.run(pragmas) == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": 2,  # FULL
            "busy_timeout": 5000,
        }
        # Foreign keys are enforced, not just declared.
        with pytest.raises(NotFound):
            await db.run(lambda r: r.credentials.put(99, b"\x00"))


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

    def schema() -> tuple[int, set[str]]:
        version = peek(db_path, "PRAGMA user_version")[0][0]
        names = {r[0] for r in peek(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
        return version, names

    async with open_database(db_path) as db:
        version, names = schema()
        assert version == len(MIGRATIONS)
        assert tables <= names
        await db.run(new_device)
    async with open_database(db_path) as db:  # reopen: nothing re-applied, nothing lost
        assert schema()[0] == len(MIGRATIONS)
        assert count(db_path, "devices") == 1

    # Appending a migration applies exactly that one, once.
    calls = []

    def v_next(db: sqlite_utils.Database) -> None:
        calls.append(1)
        db.create_table("extra", {"x": int})
        db.table("devices").add_column("nickname", str)

    extended = [*MIGRATIONS, v_next]
    for _ in range(2):
        async with open_database(db_path, migrations=extended) as db:
            assert schema()[0] == len(extended)
    assert calls == [1]

    # This wasup is now older than the database: refuse, touch nothing.
    with pytest.raises(MigrationError, match="newer"):
        async with open_database(db_path):
            pass


async def test_failed_migration_is_rolled_back(db_path: Path) -> None:
    def broken(db: sqlite_utils.Database) -> None:
        db.create_table("half", {"x": int})
        raise RuntimeError("boom")

    with pytest.raises(MigrationError, match=f"version {len(MIGRATIONS) + 1}"):
        async with open_database(db_path, migrations=[*MIGRATIONS, broken]):
            pass
    async with open_database(db_path):
        assert peek(db_path, "PRAGMA user_version")[0][0] == len(MIGRATIONS)
        assert peek(db_path, "SELECT count(*) FROM sqlite_master WHERE name='half'")[0][0] == 0


async def test_open_failure_is_raised(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(sqlite3.Error):
        async with open_database(tmp_path / "adir"):
            pass


# -- databases made by earlier wasup versions -------------------------------------------------

#: The schema of version 1 exactly as wasup wrote it (``sqlite_master``), frozen here so that a
#: change to a shipped migration fails the tests below.
SCHEMA_V1 = """
CREATE TABLE devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    alias TEXT NOT NULL,
    business_type TEXT,
    phone_number TEXT,
    description TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'qr_timeout', 'connecting', 'connected', 'disconnected', 'logged_out')),
    status_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_connection TEXT,
    paired INTEGER NOT NULL DEFAULT 0 CHECK (paired IN (0, 1)),
    push_name TEXT,
    platform TEXT,
    jid TEXT,
    last_seen TEXT,
    battery INTEGER,
    messages_sent INTEGER NOT NULL DEFAULT 0,
    messages_received INTEGER NOT NULL DEFAULT 0,
    last_activity TEXT,
    api_key_hash TEXT NOT NULL UNIQUE
);

CREATE UNIQUE INDEX devices_user_alias ON devices (user_id, alias);

CREATE INDEX devices_status ON devices (status);

CREATE TABLE settings (
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL CHECK (json_valid(value)),
    PRIMARY KEY (device_id, kind)
) WITHOUT ROWID;

CREATE TABLE state_history (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL
);

CREATE INDEX state_history_device ON state_history (device_id, id);

CREATE TABLE credentials (
    device_id INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    data BLOB NOT NULL
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    chat TEXT NOT NULL,
    sender TEXT,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    text TEXT,
    status TEXT,
    at TEXT NOT NULL,
    UNIQUE (device_id, message_id)
);

CREATE INDEX messages_chat ON messages (device_id, chat, id);

CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'disabled'))
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at);

CREATE INDEX webhook_outbox_device ON webhook_outbox (device_id);

CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY,
    outbox_id TEXT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms REAL
);

CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id);
"""

#: What migration 2 adds.
SCHEMA_V2 = """
ALTER TABLE devices ADD COLUMN ban_until REAL;
ALTER TABLE devices ADD COLUMN reconnect_attempt INTEGER NOT NULL DEFAULT 0;
"""

SCHEMA_HISTORY = """
CREATE INDEX "messages_at" ON "messages" ("at");
CREATE INDEX "messages_device" ON "messages" ("device_id", "id");
CREATE INDEX messages_chat_out ON messages (device_id, chat, id) WHERE direction = 'out';
"""

#: What migration 4 adds.
SCHEMA_V4 = """
ALTER TABLE messages ADD COLUMN type TEXT NOT NULL DEFAULT 'text';
ALTER TABLE messages ADD COLUMN content TEXT CHECK (content IS NULL OR json_valid(content));
ALTER TABLE messages ADD COLUMN quoted TEXT;
"""

#: What migration 5 adds.
SCHEMA_V5 = """
CREATE TABLE sends (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    idempotency_key TEXT,
    chat TEXT NOT NULL,
    text TEXT NOT NULL,
    origin TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'done')),
    status TEXT NOT NULL,
    reason TEXT,
    wa_id TEXT,
    created_at TEXT NOT NULL,
    accepted_epoch REAL NOT NULL,
    expires_epoch REAL NOT NULL,
    stuck INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, message_id),
    UNIQUE (device_id, idempotency_key)
);
CREATE INDEX sends_open ON sends (device_id, state, seq);
CREATE INDEX sends_wa ON sends (device_id, wa_id);
"""

#: What migration 6 adds.
SCHEMA_V6 = """
ALTER TABLE sends ADD COLUMN payload TEXT CHECK (payload IS NULL OR json_valid(payload));
"""

#: A text send queued by a wasup at schema 5 (before sends carried a payload).
OLD_SEND = """
INSERT INTO sends (device_id, message_id, chat, text, origin, state, status, created_at,
    accepted_epoch, expires_epoch)
    VALUES (7, 'msg_old', '1666@s.whatsapp.net', 'queued before', 'api', 'queued', 'pending',
    '2025-06-19T12:06:00.000Z', 1750334760.0, 1750335060.0);
"""

#: What migration 7 adds.
SCHEMA_V7 = """
CREATE TABLE chat_reads (
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    chat TEXT NOT NULL,
    last_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (device_id, chat)
) WITHOUT ROWID;
CREATE INDEX messages_chat_unread ON messages (device_id, chat, id, direction, type)
    WHERE direction = 'in'
    AND type NOT IN ('reaction', 'edit', 'revoke', 'poll_vote', 'undecryptable');
"""

#: What migration 8 adds: the engine's reference to a media message's file.
SCHEMA_V8 = """
ALTER TABLE messages ADD COLUMN media_ref TEXT;
"""

SCHEMA_V9 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
CREATE INDEX events_device ON events (device_id, id);
ALTER TABLE webhook_outbox ADD COLUMN event_id INTEGER;
CREATE INDEX webhook_outbox_event ON webhook_outbox (event_id) WHERE event_id IS NOT NULL;
"""

OLD_ROWS = """
INSERT INTO devices (id, session_id, user_id, alias, business_type, status, status_reason,
    created_at, updated_at, paired, jid, messages_sent, api_key_hash)
    VALUES (7, 'user_u1_device_shop', 'u1', 'Shop', 'retail', 'connected', 'engine_connected',
    '2025-06-19T12:00:00.000Z', '2025-06-19T12:05:00.000Z', 1, '1555@s.whatsapp.net', 3, 'h7');
INSERT INTO state_history (device_id, from_status, to_status, reason, at)
    VALUES (7, NULL, 'pending', 'created', '2025-06-19T12:00:00.000Z'),
           (7, 'pending', 'connected', 'engine_connected', '2025-06-19T12:05:00.000Z');
INSERT INTO settings (device_id, kind, value)
    VALUES (7, 'webhook', '{"url":"https://hooks.example/x","events":["message_received"]}');
INSERT INTO credentials (device_id, data) VALUES (7, x'00ff');
INSERT INTO messages (device_id, message_id, chat, sender, direction, text, status, at)
    VALUES (7, 'm1', 'c1', NULL, 'out', 'hello', 'read', '2025-06-19T12:06:00.000Z');
INSERT INTO webhook_outbox (id, device_id, event_type, payload, created_at, next_attempt_at,
    attempts, status)
    VALUES ('msg_1', 7, 'message_received', '{"type":"message_received"}',
    '2025-06-19T12:06:00.000Z', 0, 1, 'delivered');
INSERT INTO webhook_attempts (outbox_id, at, status_code, error, duration_ms)
    VALUES ('msg_1', '2025-06-19T12:06:01.000Z', 200, NULL, 12.5);
"""


def old_database(path: Path, version: int) -> None:
    """A database as an earlier wasup left it at schema ``version``, with a row in each table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(SCHEMA_V1 + (SCHEMA_V2 if version >= 2 else "")
                           + (SCHEMA_HISTORY if version >= 3 else "")
                           + (SCHEMA_V4 if version >= 4 else "")
                           + (SCHEMA_V5 if version >= 5 else "") + OLD_ROWS
                           + (OLD_SEND if version >= 5 else ""))
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
async def test_database_of_an_earlier_wasup_opens_with_nothing_lost(
    db_path: Path, version: int
) -> None:
    old_database(db_path, version)
    async with open_database(db_path) as db:
        assert peek(db_path, "PRAGMA user_version")[0][0] == len(MIGRATIONS)
        row = await db.run(lambda r: r.devices.get("user_u1_device_shop"))
        assert row is not None
        assert (row.id, row.status, row.paired, row.jid, row.messages_sent) == (
            7,
            "connected",
            True,
            "1555@s.whatsapp.net",
            3,
        )
        assert (row.ban_until, row.reconnect_attempt) == (None, 0)
        assert [h.to_status for h in await db.run(lambda r: r.history.of(7))] == [
            "pending",
            "connected",
        ]
        assert await db.run(lambda r: r.credentials.get(7)) == b"\x00\xff"
        hook = await db.run(lambda r: r.settings.get(7, "webhook"))
        assert hook == {"url": "https://hooks.example/x", "events": ["message_received"]}
        message = await db.run(lambda r: r.messages.get(7, "m1"))
        assert message is not None and message.text == "hello" and message.status == "read"
        assert (message.type, message.content, message.quoted) == ("text", None, None)
        if version >= 5:  # a text send queued before sends had a payload: still queued, text
            [queued] = await db.run(lambda r: r.sends.open(7))
            assert (queued.message_id, queued.text, queued.payload) == (
                "msg_old", "queued before", None)
        (delivery,), total = await db.run(lambda r: r.outbox.list_deliveries(7))
        assert total == 1 and delivery["status"] == "delivered"
        assert delivery["attemptLog"] == [
            {"at": "2025-06-19T12:06:01.000Z", "statusCode": 200, "error": None, "durationMs": 12.5}
        ]
        # And the upgraded database takes the columns of the later schema.
        row = await db.run(
            lambda r: r.devices.record_transition(
                7,
                from_status="connected",
                to_status="disconnected",
                reason="banned",
                at=LATER,
                ban_until=1.5e9,
                reconnect_attempt=2,
            )
        )
        assert (row.ban_until, row.reconnect_attempt) == (1.5e9, 2)


async def test_a_new_database_has_the_shipped_schema(db_path: Path, tmp_path: Path) -> None:
    def schema(path: Path) -> list[tuple[str, str]]:
        return [
            (name, " ".join(sql.split()))  # the same statements, however indented
            for name, sql in peek(path, "SELECT name, sql FROM sqlite_master ORDER BY name")
            if sql is not None and name != "sqlite_sequence"
        ]

    async with open_database(db_path):
        pass
    shipped = tmp_path / "shipped.db"
    conn = sqlite3.connect(shipped, isolation_level=None)
    conn.executescript(SCHEMA_V1 + SCHEMA_V2 + SCHEMA_HISTORY + SCHEMA_V4 + SCHEMA_V5
                       + SCHEMA_V6 + SCHEMA_V7 + SCHEMA_V8 + SCHEMA_V9)
    conn.close()
    assert schema(db_path) == schema(shipped)


async def test_schema_accepts_exactly_the_statuses_of_the_state_machine(db_path: Path) -> None:
    async with open_database(db_path):
        pass
    ((sql,),) = peek(db_path, "SELECT sql FROM sqlite_master WHERE name = 'devices'")
    match = re.search(r"CHECK \(status IN \(([^)]*)\)\)", sql)
    assert match is not None
    allowed = {value.strip().strip("'") for value in match.group(1).split(",")}
    assert allowed == {s.value for s in DeviceStatus}


# -- the database thread: group commit, failures, close, cancellation --------------------------


async def test_failing_job_rolls_back_alone_within_its_batch(db_path: Path) -> None:
    async with open_database(db_path) as db, trio.open_nursery() as nursery:
        gate = Gate()
        await gate.close(db, nursery)
        before = db.statistics()
        results: dict[str, Any] = {}

        async def submit(name: str, fail: bool) -> None:
            def job(r: Repositories) -> int:
                row = new_device(r, name)
                r.settings.put(row.id, "ai", {"on": True})
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
        sessions = [row.session_id for row in await db.run(lambda r: r.devices.all())]
        assert sorted(sessions) == ["user_u1_device_shop-a", "user_u1_device_shop-c"]
        assert count(db_path, "settings") == 2
        assert count(db_path, "state_history") == 2


@attrs.define
class ThreeJobs:
    """Three jobs run side by side: ``a`` catches a Conflict and keeps its other writes, ``b``
    raises after writing (its own device, and a change to the keeper's) and loses all of it,
    ``c`` commits whole. ``check`` runs between their calls (a test of the transaction)."""

    keeper: int
    check: Callable[[Repositories], None] = lambda r: None
    results: dict[str, Any] = attrs.field(factory=dict)

    def a(self, r: Repositories) -> int:
        row = new_device(r, "a")
        self.check(r)
        with pytest.raises(Conflict):
            new_device(r, "a")  # rolled back to a savepoint of its own
        self.check(r)
        r.credentials.put(row.id, b"a")
        r.settings.put(row.id, "ai", {"on": True})
        assert r.settings.delete(row.id, "ai") is True
        assert r.settings.delete(row.id, "ai") is False
        self.check(r)
        return row.id

    def b(self, r: Repositories) -> None:
        row = new_device(r, "b")
        r.credentials.put(row.id, b"b")
        r.settings.put(self.keeper, "ai", {"by": "b"})
        assert r.devices.delete(self.keeper) is True
        self.check(r)
        raise ValueError("b failed")

    def c(self, r: Repositories) -> int:
        row = new_device(r, "c")
        r.credentials.put(row.id, b"c")
        self.check(r)
        return row.id

    def start(self, db: storage.Store, nursery: trio.Nursery) -> None:
        async def submit(name: str, job: Callable[[Repositories], Any]) -> None:
            try:
                self.results[name] = await db.run(job)
            except ValueError as exc:
                self.results[name] = exc

        for name, job in [("a", self.a), ("b", self.b), ("c", self.c)]:
            nursery.start_soon(submit, name, job)

    async def check_stored(self, db: storage.Store) -> None:
        """Assert that a's and c's work is stored and none of b's."""
        assert isinstance(self.results["b"], ValueError)
        sessions = {row.session_id for row in await db.run(lambda r: r.devices.all())}
        assert sessions == {f"user_u1_device_shop-{n}" for n in ("keeper", "a", "c")}
        assert await db.run(lambda r: r.credentials.all()) == {
            self.results["a"]: b"a",
            self.results["c"]: b"c",
        }
        assert await db.run(lambda r: r.settings.get(self.keeper, "ai")) is None


async def test_repository_calls_keep_the_batch_transaction(db_path: Path) -> None:
    # The repositories use sqlite-utils, whose writes wrap themselves in a savepoint: neither a
    # call that succeeds nor one that fails inside the library may commit or roll back the
    # transaction the batch shares. A job that catches a Conflict keeps its other writes; a job
    # that fails loses all of its own and nothing of its neighbours'.
    async with open_database(db_path) as db:
        keeper = await db.run(lambda r: new_device(r, "keeper"))

        def still_open(r: Repositories) -> None:
            assert writer(r).in_transaction

        jobs = ThreeJobs(keeper.id, still_open)
        async with trio.open_nursery() as nursery:
            gate = Gate()
            await gate.close(db, nursery)
            before = db.statistics()
            jobs.start(db, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert db.statistics().queued == 3
            gate.release.set()

        after = db.statistics()
        assert after.batches - before.batches == 1
        assert after.failed_jobs - before.failed_jobs == 1
        await jobs.check_stored(db)


async def test_a_failing_job_loses_its_own_work_only(backend: Backend) -> None:
    # The same three jobs on either backend: each job's work is stored whole or not at all.
    async with backend.open() as db:
        keeper = await db.run(lambda r: new_device(r, "keeper"))
        jobs = ThreeJobs(keeper.id)
        async with trio.open_nursery() as nursery:
            jobs.start(db, nursery)
        await jobs.check_stored(db)
    assert backend.count("state_history") == 3


async def test_group_commit_batches_concurrent_callers(db_path: Path) -> None:
    async with open_database(db_path) as db:
        before = db.statistics()
        ids: list[int] = []

        async def one(n: int) -> None:
            row = await db.run(lambda r: new_device(r, n))
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
        assert count(db_path, "devices") == 1000


async def test_max_batch_bounds_a_transaction(db_path: Path) -> None:
    async with open_database(db_path, max_batch=7) as db:
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(db.run, functools.partial(new_device, n=n))
        stats = db.statistics()
        assert stats.largest_batch <= 7
        assert stats.commits >= 50 // 7


async def test_close_finishes_queued_work(backend: Backend) -> None:
    done = []
    async with trio.open_nursery() as nursery:
        async with backend.open() as db:
            gate = Gate()
            await gate.close(db, nursery)

            async def one(n: int) -> None:
                await db.run(lambda r: new_device(r, n))
                done.append(n)

            for n in range(20):
                nursery.start_soon(one, n)
            await trio.testing.wait_all_tasks_blocked()
            gate.release.set()
        # Leaving the block waited for the queued jobs and their commit.
        with pytest.raises(DatabaseClosed):
            await db.run(lambda r: None)
    assert sorted(done) == list(range(20))
    async with backend.open() as db:
        assert backend.count("devices") == 20


async def test_cancelled_caller_work_still_commits(backend: Backend) -> None:
    async with backend.open() as db:
        with trio.move_on_after(0) as scope:
            await db.run(new_device)  # submitted, then cancelled while waiting
        assert scope.cancelled_caught
        # The job ran and committed anyway (documented): once committed, the next job sees it
        # (PostgreSQL runs jobs side by side: the next one may otherwise start first).
        while db.statistics().commits < 1:
            await trio.lowlevel.checkpoint()
        assert await db.run(lambda r: r.devices.get(1)) is not None


async def test_job_that_ends_the_transaction_is_refused(db_path: Path) -> None:
    async with open_database(db_path) as db:
        with pytest.raises(sqlite3.ProgrammingError, match="must not end the transaction"):
            await db.run(lambda r: writer(r).execute("COMMIT"))
        # The thread carries on.
        row = await db.run(new_device)
        assert row.id == 1


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    async with backend.open() as db:
        row = await db.run(new_device)
        await db.run(lambda r: r.credentials.put(row.id, b"\x00secret\xff"))
    async with backend.open() as db:
        assert await db.run(lambda r: r.devices.get(row.session_id)) == row
        assert await db.run(lambda r: r.credentials.get(row.id)) == b"\x00secret\xff"


CHILD = """
import sys, trio
from storage import open_database

async def main(path):
    async with open_database(path) as db:
        n = 0
        while True:
            n += 1
            await db.run(lambda r: r.devices.insert(
                user_id="u", alias=f"a{n}", session_id=f"s{n}", business_type=None,
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
        stored = {row.session_id for row in await db.run(lambda r: r.devices.all())}
    assert {f"s{n}" for n in acked} <= stored


# -- devices -----------------------------------------------------------------------------------


class Status(enum.StrEnum):  # stands in for supervisor.state.Status (storage must not import it)
    PENDING = "pending"
    CONNECTING = "connecting"
    CONNECTED = "connected"


async def test_insert_and_get_device(backend: Backend) -> None:
    async with backend.open() as db:
        row = await db.run(lambda r: new_device(r, 1, status=Status.PENDING))
        assert row.id == 1
        assert row.status == "pending" and type(row.status) is str
        assert row.created_at == row.updated_at == NOW
        assert row.paired is False and row.messages_sent == 0 and row.battery is None
        assert await db.run(lambda r: r.devices.get(1)) == row
        assert await db.run(lambda r: r.devices.get("1")) == row
        assert await db.run(lambda r: r.devices.get(row.session_id)) == row
        assert await db.run(lambda r: r.devices.get_by_key_hash("hash-1")) == row
        assert await db.run(lambda r: r.devices.get(2)) is None
        assert await db.run(lambda r: r.devices.get("nope")) is None
        assert await db.run(lambda r: r.devices.get_by_key_hash("x")) is None
        hist = await db.run(lambda r: r.history.of(row.id))
        assert hist == [storage.HistoryRow(None, "pending", "created", NOW)]


async def test_duplicates_conflict_and_lose_nothing(backend: Backend) -> None:
    async with backend.open() as db:
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
        assert await db.run(lambda r: r.devices.all()) == [first]
        assert backend.count("state_history") == 1
        # The same alias for another user is fine.
        other = await db.run(
            lambda r: new_device(r, 1, user_id="u2", session_id="s2", api_key_hash="h2")
        )
        assert other.id > first.id  # ids only grow (PostgreSQL spends one on a failed insert)


async def test_update_device(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(lambda r: new_device(r, 1))
        await db.run(lambda r: new_device(r, 2))
        row = await db.run(
            lambda r: r.devices.update(
                a.id, alias="Renamed", description="d", battery=80, updated_at=LATER
            )
        )
        assert (row.alias, row.description, row.battery, row.updated_at) == (
            "Renamed",
            "d",
            80,
            LATER,
        )
        with pytest.raises(Conflict) as info:
            await db.run(lambda r: r.devices.update(a.id, alias="Shop 2"))
        assert info.value.field == "alias"
        with pytest.raises(NotFound):
            await db.run(lambda r: r.devices.update(99, alias="x"))
        with pytest.raises(TypeError, match="created_at"):
            await db.run(lambda r: r.devices.update(a.id, created_at=LATER))
        assert await db.run(lambda r: r.devices.get(a.id)) == row


async def test_record_transition_updates_and_appends_history(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(new_device)
        row = await db.run(
            lambda r: r.devices.record_transition(
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
        hist = await db.run(lambda r: r.history.of(a.id))
        assert hist[-1] == storage.HistoryRow("pending", "connecting", "scanned", LATER)
        assert len(hist) == 2
        # Unknown device: NotFound, and no orphan history row.
        with pytest.raises(NotFound):
            await db.run(
                lambda r: r.devices.record_transition(
                    99, from_status="pending", to_status="connected", reason=None, at=LATER
                )
            )
        # The schema refuses a status outside the six.
        with pytest.raises(backend.integrity_error):
            await db.run(
                lambda r: r.devices.record_transition(
                    a.id, from_status="connecting", to_status="bogus", reason=None, at=LATER
                )
            )
        assert len(await db.run(lambda r: r.history.of(a.id))) == 2


async def test_list_and_count_devices(backend: Backend) -> None:
    async with backend.open() as db:

        def populate(r: Repositories) -> None:
            for n in range(1, 8):
                user = "u1" if n <= 5 else "u2"
                row = new_device(r, n, user_id=user)
                if n % 2 == 0:
                    r.devices.record_transition(
                        row.id,
                        from_status="pending",
                        to_status="connected",
                        reason=None,
                        at=LATER,
                    )

        await db.run(populate)
        rows, total = await db.run(lambda r: r.devices.page(offset=0, limit=3))
        assert [r.id for r in rows] == [1, 2, 3] and total == 7
        rows, total = await db.run(
            lambda r: r.devices.page(user_id="u1", status="connected", offset=1, limit=10)
        )
        assert [r.id for r in rows] == [4] and total == 2
        rows, total = await db.run(lambda r: r.devices.page(user_id="nobody"))
        assert rows == [] and total == 0
        assert await db.run(lambda r: r.devices.count_by_status()) == {"pending": 4, "connected": 3}
        assert [r.id for r in await db.run(lambda r: r.devices.all())] == list(range(1, 8))


async def test_increment_stats(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(new_device)
        await db.run(lambda r: r.devices.increment_stats(a.id, sent=2, at=NOW))
        row = await db.run(lambda r: r.devices.increment_stats(a.id, received=3, at=LATER))
        assert (row.messages_sent, row.messages_received, row.last_activity) == (2, 3, LATER)
        with pytest.raises(NotFound):
            await db.run(lambda r: r.devices.increment_stats(99, sent=1, at=NOW))


async def test_delete_cascades(backend: Backend) -> None:
    tables = [
        "devices",
        "settings",
        "state_history",
        "credentials",
        "messages",
        "webhook_outbox",
        "webhook_attempts",
    ]

    def populate(r: Repositories) -> int:
        row = new_device(r)
        r.settings.put(
            row.id, "webhook", {"url": "https://example.com/h", "events": ["device_connected"]}
        )
        r.credentials.put(row.id, b"creds")
        r.messages.insert(
            row.id, message_id="m1", chat="c", direction="in", text="hi", status=None, at=NOW
        )
        envelope = {"type": "device_connected", "sessionId": row.session_id, "data": {}}
        assert r.outbox.enqueue_events(row.id, [envelope], wanted={"device_connected"}, now=0) == 1
        target = DeliveryTarget("https://example.com/h", ("whsec_x",))
        (due,) = r.outbox.claim_due(now=0, limit=1, target=lambda _device: target)
        r.outbox.record_attempt(
            due.id, at=NOW, status_code=500, error=None, duration_ms=1, status="pending"
        )
        return row.id

    async with backend.open() as db:
        device_id = await db.run(populate)
        other = await db.run(lambda r: new_device(r, 2).id)
        counts = {t: backend.count(t) for t in tables}
        assert all(counts.values()), counts
        assert await db.run(lambda r: r.devices.delete(device_id)) is True
        assert await db.run(lambda r: r.devices.delete(device_id)) is False
        left = {t: backend.count(t) for t in tables}
        assert left == {t: 1 if t in ("devices", "state_history") else 0 for t in tables}
        # Ids are never reused after a delete.
        assert await db.run(lambda r: new_device(r, 3).id) == other + 1


# -- settings, credentials, messages -----------------------------------------------------------


async def test_settings_roundtrip(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(new_device)
        assert await db.run(lambda r: r.settings.get(a.id, "ai")) is None
        value = {"enabled": True, "model": "m", "nested": {"x": [1, 2]}}
        await db.run(lambda r: r.settings.put(a.id, "ai", value))
        await db.run(lambda r: r.settings.put(a.id, "ai", {**value, "enabled": False}))
        assert await db.run(lambda r: r.settings.get(a.id, "ai")) == {
            **value,
            "enabled": False,
        }
        assert await db.run(lambda r: r.settings.get(a.id, "webhook")) is None
        assert await db.run(lambda r: r.settings.devices_with("ai")) == [a.id]
        assert await db.run(lambda r: r.settings.devices_with("webhook")) == []
        with pytest.raises(NotFound):
            await db.run(lambda r: r.settings.put(99, "ai", value))
        assert await db.run(lambda r: r.settings.delete(a.id, "ai")) is True
        assert await db.run(lambda r: r.settings.get(a.id, "ai")) is None


async def test_credentials_roundtrip(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(new_device)
        assert await db.run(lambda r: r.credentials.get(a.id)) is None
        await db.run(lambda r: r.credentials.put(a.id, b"one"))
        await db.run(lambda r: r.credentials.put(a.id, b"two"))
        assert await db.run(lambda r: r.credentials.get(a.id)) == b"two"
        assert await db.run(lambda r: r.credentials.delete(a.id)) is True
        assert await db.run(lambda r: r.credentials.delete(a.id)) is False
        with pytest.raises(NotFound):
            await db.run(lambda r: r.credentials.put(99, b"x"))


async def test_messages(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(new_device)

        def add(r: Repositories, n: int, chat: str = "chat1") -> storage.MessageRow:
            return r.messages.insert(
                a.id,
                message_id=f"m{n}",
                chat=chat,
                direction="out" if n % 2 else "in",
                text=f"text {n}",
                status="sent" if n % 2 else None,
                at=NOW,
                sender="s",
            )

        first = await db.run(lambda r: add(r, 1))
        for n in range(2, 7):
            await db.run(functools.partial(add, n=n))
        await db.run(lambda r: add(r, 7, chat="chat2"))
        assert await db.run(lambda r: r.messages.get(a.id, "m1")) == first
        # An id holding a NUL names nothing, on both backends (PostgreSQL refuses it in a query).
        assert await db.run(lambda r: r.messages.get(a.id, "m1\x00")) is None
        with pytest.raises(Conflict) as info:
            await db.run(lambda r: add(r, 1))
        assert info.value.field == "message_id"

        recent = await db.run(lambda r: r.messages.recent(a.id, "chat1", 3))
        assert [m.message_id for m in recent] == ["m4", "m5", "m6"]  # the last 3, oldest first

        def status(s: str) -> Any:
            return db.run(lambda r: r.messages.update_status(a.id, "m1", s))

        assert (await status("read")).status == "read"
        assert (await status("delivered")).status == "read"  # a late receipt never goes back
        assert await db.run(lambda r: r.messages.update_status(a.id, "zz", "read")) is None
        with pytest.raises(NotFound):
            await db.run(
                lambda r: r.messages.insert(
                    99, message_id="x", chat="c", direction="in", text=None, status=None, at=NOW
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


# -- storage outages: a full disk, a lock held elsewhere --------------------------------------


def fill_up(r: Repositories) -> None:
    """Cap the database at the pages it has now: the next write that needs a page fails with
    SQLITE_FULL, exactly as on a full disk (this job itself writes nothing)."""
    conn = writer(r)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free_space(r: Repositories) -> None:
    writer(r).execute("PRAGMA max_page_count = 1073741823")


def big_device(r: Repositories, n: int) -> storage.DeviceRow:
    return new_device(r, n, description="x" * 20_000)  # needs pages of its own


async def test_a_full_database_is_an_outage_not_an_error(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_database(db_path) as db:
        kept = await db.run(functools.partial(new_device, n=0))
        await db.run(fill_up)
        assert db.outage is None
        caplog.clear()
        for n in range(1, 6):
            with pytest.raises(storage.StorageUnavailable) as info:
                await db.run(functools.partial(big_device, n=n))
            assert info.value.reason == "database or disk is full"
            assert info.value.retry_after > 0
        outage = db.outage
        assert outage is not None and outage.reason == "database or disk is full"
        assert outage.refused == 5
        with pytest.raises(storage.StorageUnavailable):
            db.raise_if_unavailable()  # refused up front: a write failed moments ago
        # What was stored stays readable, and reads answer during the outage.
        assert await db.run(lambda r: r.devices.get(kept.id)) == kept
        assert await db.run(lambda r: [d.id for d in r.devices.all()]) == [kept.id]
        # One log line for the whole episode, no traceback.
        lines = [r for r in caplog.records if r.name == "storage.outage"]
        assert [r.levelname for r in lines] == ["ERROR"]
        assert "storage unavailable: database or disk is full" in lines[0].getMessage()
        assert lines[0].exc_info is None

        await db.run(free_space)
        assert db.outage is not None  # a write that stores nothing ends no outage
        stored = await db.run(functools.partial(big_device, n=9))
        assert db.outage is None
        db.raise_if_unavailable()
        recovery = [r for r in caplog.records if r.name == "storage.outage"][1:]
        assert len(recovery) == 1 and "available again" in recovery[0].getMessage()
        assert "5 writes refused" in recovery[0].getMessage()
    assert count(db_path, "devices") == 2
    assert {r[0] for r in peek(db_path, "SELECT id FROM devices")} == {kept.id, stored.id}


async def test_an_outage_fails_every_job_of_the_transaction_it_broke(db_path: Path) -> None:
    # SQLite rolls back the whole transaction on a full disk, so the writes batched before the
    # one that hit it fail too, with StorageUnavailable like it (never with an error that
    # would read as their own fault), and nothing of theirs is stored. A read batched with them
    # lost nothing: its answer stands (a GET next to a refused write still answers).
    async with open_database(db_path) as db, trio.open_nursery() as nursery:
        await db.run(fill_up)
        gate = Gate()
        await gate.close(db, nursery)
        outcomes: dict[str, str] = {}

        async def submit(name: str, job: Any) -> None:
            try:
                await db.run(job)
                outcomes[name] = "ok"
            except storage.StorageUnavailable:
                outcomes[name] = "unavailable"

        jobs = [
            ("read", lambda r: r.devices.all()),
            ("small", functools.partial(new_device, n=3)),
            ("big", functools.partial(big_device, n=1)),
            ("big2", functools.partial(big_device, n=2)),
        ]
        for queued, (name, job) in enumerate(jobs, 1):  # queued in this order
            nursery.start_soon(submit, name, job)
            await trio.testing.wait_all_tasks_blocked()
            assert db.statistics().queued == queued
        gate.release.set()
    assert outcomes == {
        "read": "ok", "small": "unavailable", "big": "unavailable", "big2": "unavailable"
    }
    assert count(db_path, "devices") == 0


async def test_a_lock_held_elsewhere_beyond_the_busy_timeout_is_an_outage(db_path: Path) -> None:
    async with open_database(db_path) as db:
        await db.run(lambda r: writer(r).execute("PRAGMA busy_timeout = 20"))
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(storage.StorageUnavailable, match="database is locked"):
                await db.run(new_device)
            assert db.outage is not None
            other.execute("ROLLBACK")
        finally:
            other.close()
        await db.run(new_device)
        assert db.outage is None


async def test_probe_ends_an_outage_once_writes_commit_again(
    autojump_clock: trio.testing.MockClock, db_path: Path
) -> None:
    async with open_database(db_path) as db:
        assert await db.probe() is None
        await db.run(lambda r: writer(r).execute("PRAGMA busy_timeout = 0"))
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(storage.StorageUnavailable):
                await db.run(new_device)
            assert await db.probe() is not None  # moments after the failure: not tried again
            await trio.sleep(storage.outage.RETRY_AFTER)
            db.raise_if_unavailable()  # a while later, writes get through to find out
            outage = await db.probe()  # tried, and still failing
            assert outage is not None and outage.refused == 2
        finally:
            other.close()  # releases the lock
        await trio.sleep(storage.outage.RETRY_AFTER)
        assert await db.probe() is None
        assert db.outage is None
        assert await db.run(lambda r: r.devices.all()) == []


async def test_new_database_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "data" / "wasup.db"
    async with open_database(path) as db:
        await db.run(lambda r: r.devices.all())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_only_storage_speaks_sql() -> None:
    # The repositories are the only layer with SQL or a connection in it. The one exception is
    # the whatsmeow engine peeking into whatsmeow's own store file, which is not wasup's database.
    foreign_store = REPO / "supervisor" / "engines" / "whatsmeow_store.py"
    offenders = []
    for package in ("common", "supervisor", "api", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            if path == foreign_store:
                continue
            if re.search(r"^\s*(import sqlite3|from sqlite3 )|\.execute(many)?\(", text, re.M):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


async def test_sends_roundtrip(backend: Backend) -> None:
    async with backend.open() as db:
        a = await db.run(new_device)
        row = storage.SendRow(
            device_id=a.id, message_id="msg_1", idempotency_key="k1", chat="c", text="hi",
            origin="api", state="queued", status="pending", reason=None, wa_id=None,
            created_at=NOW, accepted_epoch=1.0, expires_epoch=2.0, stuck=False,
            payload={"type": "text", "text": "hi"},
        )
        await db.run(lambda r: r.sends.insert(row))
        with pytest.raises(Conflict):  # its message id and its idempotency key are taken
            await db.run(lambda r: r.sends.insert(row))
        assert await db.run(lambda r: r.sends.by_key(a.id, "k1")) == row
        await db.run(lambda r: r.sends.mark_stuck(a.id, "msg_1"))
        await db.run(
            lambda r: r.sends.update(a.id, "msg_1", state="done", status="sent", wa_id="3EB0")
        )
        done = await db.run(lambda r: r.sends.by_wa_id(a.id, "3EB0"))
        assert done is not None and (done.state, done.status, done.stuck) == ("done", "sent", True)
        # An id holding a NUL names nothing, on both backends (PostgreSQL refuses it in a query).
        assert await db.run(lambda r: (r.sends.get(a.id, "msg_1\x00"),
                                       r.sends.by_wa_id(a.id, "3EB0\x00"))) == (None, None)
        assert await db.run(lambda r: r.sends.open(a.id)) == []
