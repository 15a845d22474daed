"""wasup's storage: one SQLite database behind one thread, with group commit.

Usage::

    from storage import open_database, devices

    async with open_database(path) as db:
        row = await db.run(lambda conn: devices.get_device(conn, "user_u1_device_shop"))

``Database.run(fn)`` runs ``fn(conn)`` in the database thread inside a transaction and returns
after the commit; the repository functions (``storage.devices``, ``.settings``,
``.credentials``, ``.messages``; ``storage.outbox`` for webhooks) are plain functions over that
connection, so several of them in one ``fn`` are atomic together. ``storage`` imports nothing
from ``supervisor`` or ``api``.
"""

from storage import credentials, devices, messages, migrations, outbox, settings
from storage.credentials import delete_credentials, get_credentials, put_credentials
from storage.db import Database, DatabaseStatistics, open_database
from storage.devices import (
    all_devices,
    count_by_status,
    delete_device,
    get_device,
    get_device_by_key_hash,
    history,
    increment_stats,
    insert_device,
    list_devices,
    record_transition,
    update_device,
)
from storage.errors import (
    Conflict,
    DatabaseClosed,
    MigrationError,
    NotFound,
    StorageError,
    TransactionFailed,
)
from storage.messages import (
    get_message,
    insert_message,
    recent_messages,
    update_message_status,
)
from storage.models import DeviceRow, HistoryRow, MessageRow
from storage.settings import delete_settings, get_settings, put_settings

__all__ = [
    "Conflict",
    "Database",
    "DatabaseClosed",
    "DatabaseStatistics",
    "DeviceRow",
    "HistoryRow",
    "MessageRow",
    "MigrationError",
    "NotFound",
    "StorageError",
    "TransactionFailed",
    "all_devices",
    "count_by_status",
    "credentials",
    "delete_credentials",
    "delete_device",
    "delete_settings",
    "devices",
    "get_credentials",
    "get_device",
    "get_device_by_key_hash",
    "get_message",
    "get_settings",
    "history",
    "increment_stats",
    "insert_device",
    "insert_message",
    "list_devices",
    "messages",
    "migrations",
    "open_database",
    "outbox",
    "put_credentials",
    "put_settings",
    "recent_messages",
    "record_transition",
    "settings",
    "update_device",
    "update_message_status",
]
