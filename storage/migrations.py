"""Versioned schema migrations, tracked in SQLite's ``PRAGMA user_version``.

``MIGRATIONS[i]`` brings the schema from version ``i`` to ``i + 1``. To change the schema,
append a function to the list; never edit one that has shipped. ``migrate`` runs at
``open_database`` in the database thread, each pending migration in its own transaction
together with the bump of ``user_version``, so a crash mid-way leaves the database at the last
completed version and the next start resumes from there.

A migration is a plain function over the connection that issues SQL with ``conn.execute``. It
must not commit or roll back, and must not use ``executescript`` (which commits first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from storage.errors import MigrationError

Migration = Callable[[sqlite3.Connection], None]


def execute_all(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    """Run each statement in turn, inside the caller's transaction."""
    for statement in statements:
        conn.execute(statement)


_STATUSES = "'pending', 'qr_timeout', 'connecting', 'connected', 'disconnected', 'logged_out'"

_V1 = [
    # AUTOINCREMENT: a deleted device's id is never handed out again, so an old id in a
    # client's hands, a log line or a webhook never points at a different device.
    f"""
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        alias TEXT NOT NULL,
        business_type TEXT,
        phone_number TEXT,
        description TEXT,
        status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
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
    )
    """,
    "CREATE UNIQUE INDEX devices_user_alias ON devices (user_id, alias)",
    "CREATE INDEX devices_status ON devices (status)",
    """
    CREATE TABLE settings (
        device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        value TEXT NOT NULL CHECK (json_valid(value)),
        PRIMARY KEY (device_id, kind)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE state_history (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        from_status TEXT,
        to_status TEXT NOT NULL,
        reason TEXT,
        at TEXT NOT NULL
    )
    """,
    "CREATE INDEX state_history_device ON state_history (device_id, id)",
    """
    CREATE TABLE credentials (
        device_id INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
        data BLOB NOT NULL
    )
    """,
    """
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
    )
    """,
    "CREATE INDEX messages_chat ON messages (device_id, chat, id)",
    """
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
    )
    """,
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at)",
    "CREATE INDEX webhook_outbox_device ON webhook_outbox (device_id)",
    """
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        outbox_id TEXT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms REAL
    )
    """,
    "CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id)",
]


def _v1_initial(conn: sqlite3.Connection) -> None:
    """Every table of the contract: devices (with the API-key hash), settings, state history,
    credentials, messages, webhook outbox and webhook attempts."""
    execute_all(conn, _V1)


def _v2_reconnect_state(conn: sqlite3.Connection) -> None:
    """Where a device's reconnect backoff stands, so a restart neither resets the schedule nor
    tries before a temporary ban from WhatsApp ends."""
    execute_all(
        conn,
        [
            "ALTER TABLE devices ADD COLUMN ban_until REAL",
            "ALTER TABLE devices ADD COLUMN reconnect_attempt INTEGER NOT NULL DEFAULT 0",
        ],
    )


#: Ordered; the schema version after applying ``MIGRATIONS[:n]`` is ``n``. Append only.
MIGRATIONS: list[Migration] = [
    _v1_initial,
    _v2_reconnect_state,
]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Apply the pending migrations in order; return ``(version_before, version_after)``.

    The connection must be in autocommit mode (``isolation_level=None``) and outside a
    transaction. Each migration runs in ``BEGIN IMMEDIATE ... COMMIT`` with its
    ``user_version`` bump, so it is applied completely or not at all.

    Error handling: a migration that raises is rolled back and re-raised wrapped in
    ``MigrationError`` (earlier migrations stay committed). A database whose version is newer
    than ``len(migrations)`` raises ``MigrationError`` without touching anything.
    """
    before = schema_version(conn)
    if before > len(migrations):
        raise MigrationError(
            f"database schema version {before} is newer than this wasup ({len(migrations)})"
        )
    for version in range(before + 1, len(migrations) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[version - 1](conn)
            # PRAGMA takes no parameters; version is an int we computed.
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration to version {version} failed: {exc}") from exc
    return before, len(migrations)
