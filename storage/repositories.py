"""The SQLite repositories, bundled: what a ``Database.run`` job receives.

``SqliteRepositories.bind(conn)`` wraps the database thread's connection in one
``sqlite_utils.Database`` and builds every repository over it, once per connection; each job of
that thread gets the same bundle, which implements :class:`storage.interface.Repositories`.

What sqlite-utils may do here: its write calls (``insert``, ``upsert``, ``delete``) run inside
the job's transaction and wrap their statements in ``atomic()``, which, with a transaction open,
is a ``SAVEPOINT`` released on success and rolled back to on error: a library call never commits
or rolls back the writer's transaction. ``Database.execute`` commits only when no transaction is
open, which never happens in a job. Plugins are not loaded and no PRAGMA is changed.
"""

from __future__ import annotations

import sqlite3

import attrs
import sqlite_utils

from storage.credentials import SqliteCredentials
from storage.devices import SqliteDevices, SqliteHistory
from storage.events import SqliteEvents
from storage.history import SqliteMessageHistory
from storage.message_actions import SqliteMessageActions
from storage.messages import SqliteMessages
from storage.outbox import SqliteOutbox
from storage.reads import SqliteReads
from storage.sends import SqliteSends
from storage.settings import SqliteSettings


def wrap(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """``conn`` as a ``sqlite_utils.Database``, leaving the connection's settings as they are.

    Resource handling: the wrapper owns nothing; the caller keeps closing ``conn``. Call it
    outside a transaction: sqlite-utils probes the SQLite version's upsert syntax once, with a
    scratch table, here rather than inside a job.
    """
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    if not db.supports_on_conflict:  # probed now, cached for every job
        raise sqlite3.NotSupportedError("SQLite 3.24 or newer is needed (ON CONFLICT upserts)")
    return db


@attrs.frozen
class SqliteRepositories:
    """Every SQLite repository, over one connection (see the module doc)."""

    devices: SqliteDevices
    history: SqliteHistory
    messages: SqliteMessages
    message_history: SqliteMessageHistory
    settings: SqliteSettings
    credentials: SqliteCredentials
    outbox: SqliteOutbox
    sends: SqliteSends
    message_actions: SqliteMessageActions
    reads: SqliteReads
    events: SqliteEvents

    @classmethod
    def bind(cls, db: sqlite_utils.Database) -> SqliteRepositories:
        """The repositories over ``db`` (see :func:`wrap`)."""
        history = SqliteHistory(db)
        settings = SqliteSettings(db)
        return cls(
            devices=SqliteDevices(db, history),
            history=history,
            messages=SqliteMessages(db),
            message_history=SqliteMessageHistory(db),
            settings=settings,
            credentials=SqliteCredentials(db),
            outbox=SqliteOutbox(db, settings),
            sends=SqliteSends(db),
            message_actions=SqliteMessageActions(db),
            reads=SqliteReads(db),
            events=SqliteEvents(db),
        )
