"""wasup's storage: repositories over one SQLite database behind one thread, with group commit.

Usage::

    import storage

    async with storage.open_database(path) as db:
        row = await db.run(lambda repos: repos.devices.get("user_u1_device_shop"))

``Database.run(job)`` runs ``job(repos)`` in the database thread inside a transaction and returns
after the commit. ``repos`` (:class:`Repositories`) holds ``devices``, ``history``, ``messages``,
``message_history``, ``settings``, ``credentials``, ``outbox``, ``sends``,
``message_actions``, ``reads`` and ``events`` (the event log), all bound to that
transaction, so several calls in one job are atomic together. :mod:`storage.interface` defines these as protocols: the core
depends on them (and on :class:`Store`), never on SQLite. The repositories are the only layer
that speaks SQL. ``storage`` imports nothing from ``supervisor`` or ``api``.
"""

from storage.db import Database, open_database
from storage.errors import (
    Conflict,
    DatabaseClosed,
    MigrationError,
    NotFound,
    StorageError,
    StorageUnavailable,
    TransactionFailed,
)
from storage.history import UNREAD_CAP, ChatPage, ChatSummary, MessagePage
from storage.interface import (
    ColumnValue,
    CredentialRepository,
    DeviceRepository,
    EventRepository,
    HistoryRepository,
    JsonObject,
    OutboundEvent,
    OutboxRepository,
    Repositories,
    SettingsRepository,
    Store,
)
from storage.message_interface import (
    MessageActionRepository,
    MessageHistoryRepository,
    MessageRepository,
    ReadRepository,
    SendRepository,
)
from storage.models import (
    OUTBOX_STATUSES,
    DatabaseStatistics,
    DeviceRow,
    Due,
    EventQuery,
    EventRow,
    HistoryRow,
    LoggedEvent,
    MessageRow,
    Outage,
    SendRow,
)
from storage.reads import UnreadMessage

__all__ = [
    "OUTBOX_STATUSES",
    "UNREAD_CAP",
    "ChatPage",
    "ChatSummary",
    "ColumnValue",
    "Conflict",
    "CredentialRepository",
    "Database",
    "DatabaseClosed",
    "DatabaseStatistics",
    "DeviceRepository",
    "DeviceRow",
    "Due",
    "EventQuery",
    "EventRepository",
    "EventRow",
    "HistoryRepository",
    "HistoryRow",
    "JsonObject",
    "LoggedEvent",
    "MessageActionRepository",
    "MessageHistoryRepository",
    "MessagePage",
    "MessageRepository",
    "MessageRow",
    "MigrationError",
    "NotFound",
    "Outage",
    "OutboundEvent",
    "OutboxRepository",
    "ReadRepository",
    "Repositories",
    "SendRepository",
    "SendRow",
    "SettingsRepository",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "TransactionFailed",
    "UnreadMessage",
    "open_database",
]
