"""The tests' database, on either backend: SQLite in the data directory or a fresh database on
the session's test PostgreSQL (``tests/pg_support.py``).

Storage tests (the ``backend`` fixture of ``tests/conftest.py`` runs a test once per backend)::

    async def test_something(backend: Backend) -> None:
        async with backend.open() as db:          # storage.Store
            ...
        assert backend.count("devices") == 1      # a read connection of its own

Supervisor and API tests: a module (or a test) marked ``pytest.mark.both_backends`` runs each of
its tests once on SQLite and once on PostgreSQL (ids ``[sqlite]``, ``[postgresql]``); a test of
such a module that is about SQLite itself is marked ``pytest.mark.sqlite_only`` and says so in
its name. The test's :data:`current` backend gives every data directory its own database, as
SQLite does (one file per data directory): ``tests.lifecycle_support.sim_config`` and
``tests.conftest.running_server`` put ``database_url_for(data_dir)`` in the config, so a test
reopening the same data directory reopens the same database. What a test reads or writes behind
wasup's back goes through ``supervisor.supervisor.open_store(config)`` or :func:`peek_config`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import psycopg

import storage
from storage.interface import Store
from storage.pg import open_postgres

if TYPE_CHECKING:
    from supervisor.config import Config
    from tests.pg_support import TestPostgres

BACKENDS = ("sqlite", "postgresql")


@attrs.define
class Backend:
    """One database of one backend (``name``: ``sqlite`` or ``postgresql``); ``location`` is
    the SQLite file or the PostgreSQL URL."""

    name: str
    location: str

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Store]:
        """The store on this database (opened again, the same data)."""
        if self.name == "sqlite":
            async with storage.open_database(Path(self.location)) as db:
                yield db
        else:
            async with open_postgres(self.location, pool_size=4) as pg:
                yield pg

    @property
    def integrity_error(self) -> type[Exception]:
        """What a CHECK constraint failure raises."""
        return sqlite3.IntegrityError if self.name == "sqlite" else psycopg.IntegrityError

    def peek(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on a read connection of its own (sees what is committed); ``?``
        parameters on both backends."""
        if self.name == "sqlite":
            conn = sqlite3.connect(f"file:{self.location}?mode=ro", uri=True)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.location) as pg:
            return pg.execute(sql.replace("?", "%s"), params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement and commit it, behind wasup's back; ``?`` parameters."""
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as conn:
                conn.execute(sql, params)
            conn.close()
            return
        with psycopg.connect(self.location) as pg:
            pg.execute(sql.replace("?", "%s"), params)

    def count(self, table: str) -> int:
        return int(self.peek(f"SELECT count(*) FROM {table}")[0][0])


@attrs.define
class TestBackend:
    """The backend of the running supervisor or API test: SQLite (``server`` None) or the
    session's PostgreSQL, with one database per data directory."""

    __test__ = False  # not a test class, whatever its name

    name: str = "sqlite"
    server: TestPostgres | None = None
    _urls: dict[Path, str] = attrs.field(factory=dict)

    def database_url_for(self, data_dir: Path) -> str | None:
        """The ``Config.database_url`` of ``data_dir``: None on SQLite (the file in it), else
        the PostgreSQL database of that data directory, created on first use."""
        if self.server is None:
            return None
        key = Path(data_dir).resolve()
        if key not in self._urls:
            self._urls[key] = self.server.create_database()
        return self._urls[key]


#: The backend of the test running now (``tests/conftest.py`` sets it for each test).
current = TestBackend()


def use(backend: TestBackend) -> None:
    global current
    current = backend


def database_url_for(data_dir: Path) -> str | None:
    """The current test's database for ``data_dir`` (None: SQLite in it)."""
    return current.database_url_for(data_dir)


def backend_of(config: Config) -> Backend:
    """The database of ``config`` as a :class:`Backend`, to read or write behind wasup's
    back."""
    if config.database_url:
        return Backend("postgresql", config.database_url)
    return Backend("sqlite", str(config.database_path))


def peek_config(config: Config, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` parameters) on the database of ``config``, committed data only."""
    return backend_of(config).peek(sql, params)
