"""The storage tests' database, on either backend: SQLite in ``tmp_path`` or a fresh database on
the session's test PostgreSQL (``tests/pg_support.py``).

Usage (the ``backend`` fixture of ``tests/conftest.py`` runs a test once per backend)::

    async def test_something(backend: Backend) -> None:
        async with backend.open() as db:          # storage.Store
            ...
        assert backend.count("devices") == 1      # a read connection of its own
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import psycopg

import storage
from storage.interface import Store
from storage.pg import open_postgres

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

    def count(self, table: str) -> int:
        return int(self.peek(f"SELECT count(*) FROM {table}")[0][0])
