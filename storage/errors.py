"""Errors raised by wasup's storage layer.

Small and flat. The supervisor maps them onto the API's exceptions (``Conflict`` becomes
``DeviceConflict``, ``NotFound`` becomes ``DeviceNotFound``); storage itself knows nothing of HTTP.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the storage layer raises on purpose."""


class Conflict(StorageError):
    """A unique value is taken already (``session_id``, ``alias`` per user, ``api_key_hash``,
    a message id on the same device).

    ``field`` names the column that clashed, when SQLite says which one. Nothing was written by
    the statement that raised; earlier statements of the same ``Database.run`` job are rolled back
    only if the exception leaves the job.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(StorageError):
    """The row the operation needs (usually a device) does not exist."""


class DatabaseClosed(StorageError):
    """``Database.run`` was called after the database started closing, or its thread died."""


class TransactionFailed(StorageError):
    """SQLite could not begin or commit the transaction that carried the job.

    The job's own work succeeded but is rolled back with the whole batch, so nothing it wrote is
    stored. ``__cause__`` is the ``sqlite3.Error`` that SQLite raised.
    """


class MigrationError(StorageError):
    """The database's schema version is newer than this wasup, or a migration failed."""
