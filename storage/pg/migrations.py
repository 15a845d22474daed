"""Versioned schema migrations of the PostgreSQL database, tracked in ``wasup_schema``.

``MIGRATIONS[i]`` brings the schema from version ``i`` to ``i + 1``; append only, never edit
one that has shipped. Version 1 is SQLite's schema as of its version 8 (:mod:`storage.migrations`),
table for table and column for column, so the repositories' SQL runs on both; a later change to
SQLite's schema gets its PostgreSQL migration here. The differences are the types
(``BIGINT GENERATED ALWAYS AS IDENTITY`` for SQLite's row ids, ``DOUBLE PRECISION`` for ``REAL``,
``BYTEA`` for ``BLOB``), JSON columns checked by a cast to ``jsonb``, named unique constraints
(:data:`storage.pg.sql.CONSTRAINT_FIELDS` maps them onto the field a ``Conflict`` names) and
``webhook_outbox.seq``, the insertion order SQLite keeps in its ``rowid``.

:func:`migrate` runs at :func:`storage.pg.store.open_postgres`, all pending migrations in one
transaction with the version bump, under an advisory lock: several wasup processes starting on
one database migrate it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg

from storage.errors import MigrationError
from storage.migrations import _STATUSES

Migration = Callable[[psycopg.Connection[tuple[object, ...]]], None]

#: Key of the advisory lock taken while migrating (any constant; "wasup" in ASCII).
_LOCK = 0x7761737570

_V1 = [
    f"""
    CREATE TABLE devices (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id TEXT NOT NULL CONSTRAINT devices_session_id_key UNIQUE,
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
        messages_sent BIGINT NOT NULL DEFAULT 0,
        messages_received BIGINT NOT NULL DEFAULT 0,
        last_activity TEXT,
        api_key_hash TEXT NOT NULL CONSTRAINT devices_api_key_hash_key UNIQUE,
        ban_until DOUBLE PRECISION,
        reconnect_attempt INTEGER NOT NULL DEFAULT 0,
        CONSTRAINT devices_user_alias UNIQUE (user_id, alias)
    )
    """,
    "CREATE INDEX devices_status ON devices (status)",
    """
    CREATE TABLE settings (
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        value TEXT NOT NULL CHECK (value::jsonb IS NOT NULL),
        PRIMARY KEY (device_id, kind)
    )
    """,
    "CREATE INDEX settings_kind ON settings (kind)",
    """
    CREATE TABLE state_history (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        from_status TEXT,
        to_status TEXT NOT NULL,
        reason TEXT,
        at TEXT NOT NULL
    )
    """,
    "CREATE INDEX state_history_device ON state_history (device_id, id)",
    """
    CREATE TABLE credentials (
        device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
        data BYTEA NOT NULL
    )
    """,
    """
    CREATE TABLE messages (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        message_id TEXT NOT NULL,
        chat TEXT NOT NULL,
        sender TEXT,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        text TEXT,
        status TEXT,
        at TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'text',
        content TEXT CHECK (content IS NULL OR content::jsonb IS NOT NULL),
        quoted TEXT,
        media_ref TEXT,
        CONSTRAINT messages_device_message UNIQUE (device_id, message_id)
    )
    """,
    "CREATE INDEX messages_chat ON messages (device_id, chat, id)",
    "CREATE INDEX messages_at ON messages (at)",
    "CREATE INDEX messages_device ON messages (device_id, id)",
    "CREATE INDEX messages_chat_out ON messages (device_id, chat, id) WHERE direction = 'out'",
    "CREATE INDEX messages_chat_unread ON messages (device_id, chat, id, direction, type)"
    " WHERE direction = 'in'"
    " AND type NOT IN ('reaction', 'edit', 'revoke', 'poll_vote', 'undecryptable')",
    """
    CREATE TABLE webhook_outbox (
        id TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed', 'disabled'))
    )
    """,
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at)",
    "CREATE INDEX webhook_outbox_device ON webhook_outbox (device_id, created_at, seq)",
    """
    CREATE TABLE webhook_attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        outbox_id TEXT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms DOUBLE PRECISION
    )
    """,
    "CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id)",
    """
    CREATE TABLE sends (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
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
        accepted_epoch DOUBLE PRECISION NOT NULL,
        expires_epoch DOUBLE PRECISION NOT NULL,
        stuck INTEGER NOT NULL DEFAULT 0,
        payload TEXT CHECK (payload IS NULL OR payload::jsonb IS NOT NULL),
        CONSTRAINT sends_device_message UNIQUE (device_id, message_id),
        CONSTRAINT sends_device_idempotency_key UNIQUE (device_id, idempotency_key)
    )
    """,
    "CREATE INDEX sends_open ON sends (device_id, state, seq)",
    "CREATE INDEX sends_wa ON sends (device_id, wa_id)",
    """
    CREATE TABLE chat_reads (
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        chat TEXT NOT NULL,
        last_id BIGINT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (device_id, chat)
    )
    """,
]


def _v1_initial(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Every table of SQLite's schema version 8 (see the module doc)."""
    for statement in _V1:
        conn.execute(statement)


def _v2_event_log(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """SQLite's version 9: the event log (``events``; an identity is never handed out twice)
    and ``webhook_outbox.event_id``."""
    for statement in [
        """
        CREATE TABLE events (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            device_id BIGINT NOT NULL,
            session_id TEXT NOT NULL,
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            timestamp TEXT NOT NULL
        )
        """,
        "CREATE INDEX events_device ON events (device_id, id)",
        "ALTER TABLE webhook_outbox ADD COLUMN event_id BIGINT",
        "CREATE INDEX webhook_outbox_event ON webhook_outbox (event_id)"
        " WHERE event_id IS NOT NULL",
    ]:
        conn.execute(statement)


def _v3_cluster(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Several nodes on one database (PostgreSQL only; SQLite is one node).

    - ``nodes``: one row per node, its heartbeat by the database's clock.
    - ``device_leases``: a device's owner node, its lease expiry by the database's clock and its
      fencing epoch, which grows on every change of owner. No row, or ``owner`` NULL: free.
    - ``device_qr``: the QR code a device shows now, so any node can answer for it.
    - ``webhook_outbox.claimed_by`` / ``claimed_until``: a delivery taken by a node; another
      node may take it again once ``claimed_until`` passed (the node died mid-delivery).
    - Notifications, sent at commit: ``wasup_devices`` (payload: the device id) on every
      change of a device's row, ``wasup_events`` on every batch of appended events and
      ``wasup_outbox`` on every batch of enqueued webhook deliveries (no payload).
    """
    for statement in [
        """
        CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY,
            advertise_url TEXT NOT NULL,
            capacity INTEGER,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            draining BOOLEAN NOT NULL DEFAULT false
        )
        """,
        """
        CREATE TABLE device_leases (
            device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
            owner TEXT,
            expires_at TIMESTAMPTZ,
            epoch BIGINT NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX device_leases_owner ON device_leases (owner, expires_at)",
        """
        CREATE TABLE device_qr (
            device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
            qr_string TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            expires_at_epoch DOUBLE PRECISION NOT NULL
        )
        """,
        "ALTER TABLE webhook_outbox ADD COLUMN claimed_by TEXT",
        "ALTER TABLE webhook_outbox ADD COLUMN claimed_until TIMESTAMPTZ",
        """
        CREATE FUNCTION wasup_notify_device() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM pg_notify('wasup_devices', OLD.id::text);
            ELSE
                PERFORM pg_notify('wasup_devices', NEW.id::text);
            END IF;
            RETURN NULL;
        END $$
        """,
        "CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE ON devices"
        " FOR EACH ROW EXECUTE FUNCTION wasup_notify_device()",
        """
        CREATE FUNCTION wasup_notify_table() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(TG_ARGV[0], '');
            RETURN NULL;
        END $$
        """,
        "CREATE TRIGGER events_notify AFTER INSERT ON events"
        " FOR EACH STATEMENT EXECUTE FUNCTION wasup_notify_table('wasup_events')",
        "CREATE TRIGGER outbox_notify AFTER INSERT ON webhook_outbox"
        " FOR EACH STATEMENT EXECUTE FUNCTION wasup_notify_table('wasup_outbox')",
    ]:
        conn.execute(statement)


def _v4_lease_wanted(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Rebalancing: ``device_leases.wanted_by``, the node that asked the owner for the device
    (the owner stops it, releases the lease, and the asking node claims it first)."""
    conn.execute("ALTER TABLE device_leases ADD COLUMN wanted_by TEXT")


def _v5_node_run_token(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """``nodes.run_token``: a random token the running process of a node id wrote when it
    joined; its lease work goes on only while the row carries it (a second process started
    with the same node id takes the id over, and the first one stops)."""
    conn.execute("ALTER TABLE nodes ADD COLUMN run_token TEXT")


#: Ordered; the schema version after applying ``MIGRATIONS[:n]`` is ``n``. Append only.
MIGRATIONS: list[Migration] = [
    _v1_initial, _v2_event_log, _v3_cluster, _v4_lease_wanted, _v5_node_run_token,
]


def migrate(
    conn: psycopg.Connection[tuple[object, ...]], migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Apply the pending migrations; return ``(version_before, version_after)``.

    ``conn`` must be outside a transaction. Everything pending runs in one transaction with the
    version bump, so it is applied completely or not at all.

    Error handling: a migration that raises is rolled back and re-raised wrapped in
    ``MigrationError``; a database whose version is newer than ``len(migrations)`` raises
    ``MigrationError`` without touching anything. Connection errors propagate.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS wasup_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM wasup_schema").fetchone()
        before = 0 if row is None else int(str(row[0]))
        if before > len(migrations):
            raise MigrationError(
                f"database schema version {before} is newer than this wasup ({len(migrations)})"
            )
        if before == len(migrations):
            return before, before
        version = before
        try:
            with conn.transaction():
                for version in range(before + 1, len(migrations) + 1):
                    migrations[version - 1](conn)
                if row is None:
                    conn.execute("INSERT INTO wasup_schema (version) VALUES (%s)", (version,))
                else:
                    conn.execute("UPDATE wasup_schema SET version = %s", (version,))
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            raise MigrationError(f"migration to version {version} failed: {exc}") from exc
    return before, len(migrations)
