"""Versioned schema migrations, tracked in SQLite's ``PRAGMA user_version``.

``MIGRATIONS[i]`` brings the schema from version ``i`` to ``i + 1``. To change the schema,
append a function to the list; never edit one that has shipped. ``migrate`` runs at
``open_database`` in the database thread, each pending migration in its own transaction
together with the bump of ``user_version``, so a crash mid-way leaves the database at the last
completed version and the next start resumes from there.

A migration is a plain function over a ``sqlite_utils.Database``. New migrations use
sqlite-utils for what it does well: ``db.create_table(...)``, ``db[table].add_column(...)``,
``db[table].create_index(...)``; each of these runs inside the migration's transaction (sqlite-utils
commits only when no transaction is open). A migration must not commit or roll back, and must not
use ``executescript`` (which commits first) or ``Table.transform`` on a table that others
reference with ``ON DELETE CASCADE`` (sqlite-utils refuses that inside a transaction).

Migrations 1 and 2 have shipped and stay the SQL text they were: CHECK constraints, ``ON DELETE
CASCADE``, ``AUTOINCREMENT``, composite ``UNIQUE`` and ``WITHOUT ROWID`` have no public
sqlite-utils equivalent, and a database made by an earlier wasup must have exactly this schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlite_utils

from storage.errors import MigrationError

Migration = Callable[[sqlite_utils.Database], None]


def execute_all(db: sqlite_utils.Database, statements: Sequence[str]) -> None:
    """Run each statement in turn, inside the caller's transaction."""
    for statement in statements:
        db.execute(statement)


#: The device statuses the schema accepts; a test checks this equals ``supervisor.state.Status``.
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


def _v1_initial(db: sqlite_utils.Database) -> None:
    """Every table of the contract: devices (with the API-key hash), settings, state history,
    credentials, messages, webhook outbox and webhook attempts."""
    execute_all(db, _V1)


def _v2_reconnect_state(db: sqlite_utils.Database) -> None:
    """Where a device's reconnect backoff stands, so a restart neither resets the schedule nor
    tries before a temporary ban from WhatsApp ends."""
    execute_all(
        db,
        [
            "ALTER TABLE devices ADD COLUMN ban_until REAL",
            "ALTER TABLE devices ADD COLUMN reconnect_attempt INTEGER NOT NULL DEFAULT 0",
        ],
    )


def _v3_message_history(db: sqlite_utils.Database) -> None:
    """Indexes for message history: retention by age (``at``) and by count per device
    (``device_id, id``), and each chat's last outgoing message for unread counts (partial:
    outgoing only); chat pages use ``messages_chat`` (see ``storage.history``)."""
    messages = db.table("messages")
    messages.create_index(["at"], index_name="messages_at")
    messages.create_index(["device_id", "id"], index_name="messages_device")
    # sqlite-utils has no partial index: plain SQL.
    db.execute(
        "CREATE INDEX messages_chat_out ON messages (device_id, chat, id) WHERE direction = 'out'"
    )


def _v4_message_content(db: sqlite_utils.Database) -> None:
    """Every kind of message: its ``type`` (``text`` for the messages stored before), its
    content as the JSON of the ``message_received`` event's content fields, and the id of the
    message it quotes."""
    execute_all(
        db,
        [
            "ALTER TABLE messages ADD COLUMN type TEXT NOT NULL DEFAULT 'text'",
            "ALTER TABLE messages ADD COLUMN content TEXT CHECK (content IS NULL OR json_valid(content))",
            "ALTER TABLE messages ADD COLUMN quoted TEXT",
        ],
    )


def _v5_sends(db: sqlite_utils.Database) -> None:
    """Version 5: the ``sends`` table, the tracked sends of the outbound queue.

    One row per send a device accepted: what to send, its place in the queue (``seq``), its
    ``state`` (``queued``, ``sending``, ``done``), the ``Idempotency-Key`` it came with (unique
    per device), the id WhatsApp gave it once sent and when it expires if still queued.
    """
    execute_all(
        db,
        [
            """
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
            )
            """,
            "CREATE INDEX sends_open ON sends (device_id, state, seq)",
            "CREATE INDEX sends_wa ON sends (device_id, wa_id)",
        ],
    )


def _v6_send_payload(db: sqlite_utils.Database) -> None:
    """Sends of every kind: ``sends.payload`` is the message to send as JSON (its content, the
    message it quotes or acts on, its mentions); NULL for the text sends stored before, which
    ``text`` describes whole."""
    execute_all(
        db,
        [
            "ALTER TABLE sends ADD COLUMN payload TEXT"
            " CHECK (payload IS NULL OR json_valid(payload))",
        ],
    )


def _v7_read_marks(db: sqlite_utils.Database) -> None:
    """Version 7, read marks: per chat of a device, the row id of the newest incoming message marked read
    (``POST .../chats/{chatId}/read``), and the partial index the unread count walks: incoming
    messages that are messages of their own (not reactions, edits, revokes, poll votes or
    undecryptable ones)."""
    # ON DELETE CASCADE and WITHOUT ROWID have no sqlite-utils equivalent: plain SQL.
    db.execute(
        """
        CREATE TABLE chat_reads (
            device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            chat TEXT NOT NULL,
            last_id INTEGER NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (device_id, chat)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        # direction and type are in the index too, so a count reads the index alone.
        "CREATE INDEX messages_chat_unread ON messages (device_id, chat, id, direction, type)"
        " WHERE direction = 'in'"
        " AND type NOT IN ('reaction', 'edit', 'revoke', 'poll_vote', 'undecryptable')"
    )


def _v8_message_media_ref(db: sqlite_utils.Database) -> None:
    """Version 8: ``messages.media_ref``, the engine's reference to a media message's file
    (what its ``download`` fetches the file with; never shown in an event or the API)."""
    execute_all(db, ["ALTER TABLE messages ADD COLUMN media_ref TEXT"])


def _v9_event_log(db: sqlite_utils.Database) -> None:
    """Version 9: the durable event log (``events``), and the webhook outbox's reference to
    the logged event a delivery sends (``webhook_outbox.event_id``; its ``payload`` is then
    empty until retention prunes the event, when the body moves into the row)."""
    execute_all(
        db,
        [
            # AUTOINCREMENT: an id is never handed out twice, even after retention has emptied
            # the table, so a client resuming from an id never skips a newer event.
            """
            CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                device_id INTEGER NOT NULL,
                session_id TEXT NOT NULL,
                type TEXT NOT NULL,
                data TEXT NOT NULL,
                timestamp TEXT NOT NULL
            )
            """,
            "CREATE INDEX events_device ON events (device_id, id)",
            "ALTER TABLE webhook_outbox ADD COLUMN event_id INTEGER",
            "CREATE INDEX webhook_outbox_event ON webhook_outbox (event_id)"
            " WHERE event_id IS NOT NULL",
        ],
    )


#: Ordered; the schema version after applying ``MIGRATIONS[:n]`` is ``n``. Append only.
MIGRATIONS: list[Migration] = [
    _v1_initial,
    _v2_reconnect_state,
    _v3_message_history,
    _v4_message_content,
    _v5_sends,
    _v6_send_payload,
    _v7_read_marks,
    _v8_message_media_ref,
    _v9_event_log,
]


def schema_version(db: sqlite_utils.Database) -> int:
    """The schema version the database is at (``PRAGMA user_version``)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    db: sqlite_utils.Database, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Apply the pending migrations in order; return ``(version_before, version_after)``.

    The connection must be in autocommit mode (``isolation_level=None``) and outside a
    transaction. Each migration runs in ``BEGIN IMMEDIATE ... COMMIT`` with its
    ``user_version`` bump, so it is applied completely or not at all.

    Error handling: a migration that raises is rolled back and re-raised wrapped in
    ``MigrationError`` (earlier migrations stay committed). A database whose version is newer
    than ``len(migrations)`` raises ``MigrationError`` without touching anything.
    """
    conn = db.conn
    before = schema_version(db)
    if before > len(migrations):
        raise MigrationError(
            f"database schema version {before} is newer than this wasup ({len(migrations)})"
        )
    for version in range(before + 1, len(migrations) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[version - 1](db)
            if not conn.in_transaction:
                raise RuntimeError("the migration ended its own transaction")
            # PRAGMA takes no parameters; version is an int we computed.
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration to version {version} failed: {exc}") from exc
    return before, len(migrations)
