"""Where the whatsmeow engine keeps each device's WhatsApp credentials (whatsmeow's store:
device keys, Signal sessions, pre-keys, app state).

Synopsis::

    stores = credential_stores(data_dir, database_url)   # FileStores or WhatsmeowSchemas
    stores.reset(7)                                        # empty, for a new pairing
    address = stores.address(7, "wasup-7-1-ab12cd34")      # what neonize opens
    stores.has_credentials(7)
    stores.release("wasup-7-1-ab12cd34")                   # after that Go client stopped
    stores.wipe(7)                                         # logout, delete

Two backends, one model: a store per device, nothing shared between devices.

- SQLite (wasup's default): one file per device, ``<data_dir>/whatsmeow/<device id>.db``
  (absolute, mode 0600, its directory 0700): :class:`FileStores`.
- PostgreSQL (``--database postgresql://...``): one schema per device, ``whatsmeow_<device
  id>``, in wasup's own database, so a device paired on one machine connects from any other
  that uses the same database: :class:`storage.pg.whatsmeow.WhatsmeowSchemas`.

Every method blocks: call them from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Protocol

import attrs

from storage.pg.whatsmeow import WhatsmeowSchemas


class CredentialStores(Protocol):
    """The whatsmeow stores of every device of one engine."""

    def address(self, device_id: int, client: str) -> str:
        """The store's name as neonize takes it (a file path or a ``postgres://`` URL) for
        the Go client named ``client``."""
        ...

    def has_credentials(self, device_id: int) -> bool:
        """True when the store holds a paired account (read-only)."""
        ...

    def reset(self, device_id: int) -> None:
        """An empty store for a new pairing, the old credentials wiped."""
        ...

    def wipe(self, device_id: int) -> None:
        """Delete the store; a missing one is fine."""
        ...

    def release(self, client: str) -> int:
        """Free what the stopped Go client ``client`` left open in the store; how much."""
        ...

    def close(self) -> None:
        """Close what the stores hold open themselves (the engine is closing)."""
        ...


#: Characters a data directory may not contain: neonize puts the store path unescaped into a
#: SQLite URI (``file:<path>?_foreign_keys=on``).
URI_UNSAFE = "?#%"


class DataDirUnusable(OSError):
    """The data directory's path cannot hold whatsmeow's stores (raised when the engine is
    made, so at start: an operator error, reported in one line)."""


def credential_stores(data_dir: Path, database_url: str | None) -> CredentialStores:
    """The stores for wasup's database: PostgreSQL schemas when ``database_url`` is set,
    else SQLite files in ``data_dir``.

    Error handling: :class:`DataDirUnusable` when ``data_dir`` is needed and its path contains
    ``?``, ``#`` or ``%``.
    """
    if database_url:
        return WhatsmeowSchemas(database_url)
    bad = sorted({c for c in str(data_dir) if c in URI_UNSAFE})
    if bad:
        raise DataDirUnusable(
            f"the whatsmeow engine cannot use the data directory {str(data_dir)!r}: "
            f"its path contains {' '.join(repr(c) for c in bad)}, which SQLite would read "
            "as part of a URI; choose a directory without '?', '#' or '%'"
        )
    return FileStores(data_dir)


# -- SQLite: one file per device ---------------------------------------------------------------


def store_path(data_dir: Path, device_id: int) -> Path:
    return data_dir / "whatsmeow" / f"{device_id}.db"


def prepare_store(path: Path) -> None:
    """Create the store's directory (0700) and an empty file (0600) for whatsmeow to fill.

    SQLite keeps an existing file's mode and gives its journal the same, so credentials are
    never readable by other users.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def wipe_store(path: Path) -> None:
    """Delete the store and its journals; missing files are fine."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def reset_store(path: Path) -> None:
    """An empty store (0600) for a new pairing: the old credentials wiped."""
    wipe_store(path)
    prepare_store(path)


def has_credentials(path: Path) -> bool:
    """True when the store holds a paired account (whatsmeow's ``whatsmeow_device`` row)."""
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute("SELECT count(*) FROM whatsmeow_device").fetchone()
        return bool(row and row[0])
    except sqlite3.Error:
        return False
    finally:
        conn.close()


@attrs.frozen
class FileStores:
    """One SQLite file per device below ``data_dir`` (see the module docstring).

    neonize 0.5.2 opens a SQLite container per connection attempt and never closes it: one
    file descriptor each, which :meth:`release` cannot give back (the engine's preflight keeps
    offline retries from reaching Go at all).
    """

    data_dir: Path

    def address(self, device_id: int, client: str) -> str:
        return str(store_path(self.data_dir, device_id))

    def has_credentials(self, device_id: int) -> bool:
        return has_credentials(store_path(self.data_dir, device_id))

    def reset(self, device_id: int) -> None:
        reset_store(store_path(self.data_dir, device_id))

    def wipe(self, device_id: int) -> None:
        wipe_store(store_path(self.data_dir, device_id))

    def release(self, client: str) -> int:
        return 0

    def close(self) -> None:
        pass
