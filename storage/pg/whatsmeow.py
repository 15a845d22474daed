"""whatsmeow's credential store in wasup's PostgreSQL database: one schema per device.

Synopsis::

    schemas = WhatsmeowSchemas("postgresql://wasup@db/wasup")
    schemas.reset(7)                       # schema whatsmeow_7, empty, ready for a pairing
    dsn = schemas.address(7, "wasup-7-1")  # what neonize's Go side connects with
    schemas.has_credentials(7)             # a paired account stored there?
    schemas.release("wasup-7-1")           # close the connections that client left open
    schemas.wipe(7)                        # the schema dropped, with everything in it

Each device's whatsmeow store (device keys, Signal sessions, pre-keys, app state, contacts, the
LID map) lives in a schema of its own, ``whatsmeow_<device id>``, beside wasup's tables (which
stay in the database's default schema). Why a schema per device and not one schema for all:

- whatsmeow's tables are keyed by the account's JID, but not all of them: ``whatsmeow_lid_map``
  is global and ``whatsmeow_privacy_tokens`` has no foreign key to its device, so devices in
  one schema would share the one and leave the other behind on logout. A schema each keeps
  every byte of a device apart from every other;
- neonize connects a stored account with whatsmeow's ``GetFirstDevice`` (it has no way to name
  the account wasup means), which is right only when the store holds one device;
- wiping is one ``DROP SCHEMA ... CASCADE``: atomic and complete. It is the same model as the
  SQLite backend's file per device, so the engine treats both alike.

whatsmeow creates and upgrades its tables itself (go.mau.fi/util's dbutil) each time neonize
opens the store. One quirk needs help: dbutil asks ``information_schema`` whether its version
table exists without naming a schema, so once one device's schema has it, it would take every
other schema for upgraded and fail. :meth:`WhatsmeowSchemas.reset` therefore creates the schema
with an empty version table, exactly the table dbutil would create; dbutil then finds version 0
there and creates the rest.

The address handed to neonize: neonize opens PostgreSQL through Go's lib/pq when the store's
name starts with ``postgres``. The address is wasup's own database URL rebuilt for lib/pq, with
``search_path`` set to the device's schema (lib/pq sends unknown URL parameters to the server
as settings) and ``application_name`` set to the Go client's name. The user always goes before
the ``@``: neonize first tries the name as a SQLite file URI, and SQLite refuses a URI with an
authority at once (no stray file). A URL without a host gets the host psycopg actually used
(libpq defaults to the Unix socket, lib/pq to ``localhost``).

wasup's own connections for this (checking, resetting, wiping a store; learning the host;
ending a stopped client's connections) come from a small pool of their own (at most
:data:`POOL_SIZE`), opened on first use and closed with the engine (:meth:`close`): a
reconnect or a restore of many devices does not open a server connection per check.

Connections of the Go side: neonize 0.5.2 opens a database pool for every connection attempt and never closes
it, so each attempt would keep an idle server connection for good. :meth:`release` ends the
connections of a client that has stopped (found by their ``application_name``).

Error handling: a database that cannot serve now raises
:class:`~storage.errors.StorageUnavailable`; other psycopg errors propagate. Everything here
blocks: call it from a worker thread.
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from storage.errors import StorageUnavailable
from storage.pg.errors import as_unavailable
from storage.pg.store import CONNECT_TIMEOUT

#: The version table dbutil keeps (whatsmeow names it ``whatsmeow_version``), as dbutil
#: creates it.
VERSION_TABLE = "CREATE TABLE {}.whatsmeow_version (version INTEGER, compat INTEGER)"
#: Longest a wipe or reset waits for a lock on the device's tables.
LOCK_TIMEOUT = "5s"
#: wasup's own connections to the stores at most (they run in the engine's worker threads).
POOL_SIZE = 4


def schema_name(device_id: int) -> str:
    """The PostgreSQL schema of ``device_id``'s whatsmeow store."""
    return f"whatsmeow_{int(device_id)}"


@attrs.define(eq=False)
class WhatsmeowSchemas:
    """The whatsmeow stores of every device, in the PostgreSQL database at ``url`` (see the
    module docstring)."""

    url: str = attrs.field(repr=False)  # may hold a password
    connect_timeout: float = CONNECT_TIMEOUT
    _base: dict[str, str] | None = attrs.field(init=False, default=None, repr=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] | None = (
        attrs.field(init=False, default=None, repr=False))

    def address(self, device_id: int, client: str) -> str:
        """The lib/pq URL neonize opens ``device_id``'s store with, its connections named
        ``client``. Connects once (the first time) to learn the default host."""
        params = dict(self._target())
        user = params.pop("user")
        dbname = params.pop("dbname")
        params["search_path"] = schema_name(device_id)
        params["application_name"] = client
        return (f"postgres://{quote(user, safe='')}@/{quote(dbname, safe='')}?"
                f"{urlencode(params, quote_via=quote)}")

    def has_credentials(self, device_id: int) -> bool:
        """True when the device's schema holds a paired account (a ``whatsmeow_device`` row)."""
        table = f"{schema_name(device_id)}.whatsmeow_device"
        with self._connect() as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if not row or not row[0]:
                return False
            found = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.whatsmeow_device)").format(
                    sql.Identifier(schema_name(device_id)))
            ).fetchone()
            return bool(found and found[0])

    def reset(self, device_id: int) -> None:
        """An empty store for a new pairing: the old schema dropped, a new one with dbutil's
        empty version table (see the module docstring), in one transaction."""
        schema = sql.Identifier(schema_name(device_id))
        with self._connect() as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(LOCK_TIMEOUT))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            conn.execute(sql.SQL(VERSION_TABLE).format(schema))

    def wipe(self, device_id: int) -> None:
        """Drop the device's store with everything in it; a missing one is fine."""
        schema = sql.Identifier(schema_name(device_id))
        with self._connect() as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(LOCK_TIMEOUT))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))

    def release(self, client: str) -> int:
        """End the server connections the stopped Go client ``client`` left open; how many.
        Best effort: 0 when the database cannot be reached (its connections are gone then)."""
        try:
            with self._connect() as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND pid <> pg_backend_pid()"
                    " AND datname = current_database()",
                    (client,),
                ).fetchall()
        except StorageUnavailable:
            return 0
        return sum(1 for (ended,) in rows if ended)

    def close(self) -> None:
        """Close the pool of wasup's own connections (the engine is closing)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- connections -----------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """An autocommit connection of the pool, for the block; StorageUnavailable when the
        server cannot serve."""
        try:
            with self._pool_now().connection(timeout=self.connect_timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            raise as_unavailable(exc) or exc from exc

    def _pool_now(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
        with self._lock:
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self.url, min_size=0, max_size=POOL_SIZE, open=True,
                    kwargs={"autocommit": True,
                            "connect_timeout": max(1, round(self.connect_timeout))},
                    check=psycopg_pool.ConnectionPool.check_connection,
                    name="whatsmeow-stores")
            return self._pool

    def _target(self) -> dict[str, str]:
        """The URL's parameters with user, database and host filled in as psycopg resolved
        them (cached after the first connection)."""
        with self._lock:
            if self._base is not None:
                return self._base
        params = {k: str(v) for k, v in conninfo_to_dict(self.url).items() if v is not None}
        with self._connect() as conn:
            info = conn.info
            params.setdefault("user", info.user or getpass.getuser())
            params.setdefault("dbname", info.dbname or params["user"])
            if not params.get("host") and not params.get("hostaddr"):
                params["host"] = info.host
                params.setdefault("port", str(info.port))
        with self._lock:
            self._base = params
        return params
