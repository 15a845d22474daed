"""Errors raised by wasup's storage layer.

Small and flat. The supervisor maps them onto the API's exceptions (``Conflict`` becomes
``DeviceConflict``, ``NotFound`` becomes ``DeviceNotFound``); storage itself knows nothing of HTTP.
``StorageUnavailable`` is the exception: the API answers it as it is (503 with Retry-After).
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


class StorageUnavailable(StorageError):
    """The database cannot store anything now, for a reason that is not the caller's: the disk
    is full, an I/O error, the database file became read-only, or another process holds its
    lock beyond the busy timeout.

    Nothing the failed job wrote is stored; the same job may well succeed later (once space is
    freed), so callers treat this as an outage: answer "try again later" or retry, never crash.
    ``reason`` is SQLite's message (no path, no data); ``retry_after`` the seconds after which
    trying again makes sense.
    """

    def __init__(self, reason: str, retry_after: float = 5.0) -> None:
        super().__init__(f"storage unavailable: {reason}")
        self.reason = reason
        self.retry_after = retry_after


class MigrationError(StorageError):
    """The database's schema version is newer than this wasup, or a migration failed."""
