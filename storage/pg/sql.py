"""The PostgreSQL connection as the repositories speak to it: ``execute(sql, params)``.

The SQL of wasup's repositories is written once, for SQLite, in the portable subset both
databases share (``?`` parameters, ``RETURNING``, ``ON CONFLICT ... DO UPDATE``, ``FILTER``,
recursive CTEs). :class:`PgSql` runs that SQL on a psycopg connection, so a SQLite repository
method that uses only ``conn.execute`` runs unchanged on PostgreSQL:

- ``?`` and ``?N`` parameters become psycopg's ``%s`` (``?N`` repeated or reordered as needed),
  and a literal ``%`` is escaped;
- SQLite's ``INDEXED BY`` hints are dropped (PostgreSQL's planner picks its indexes);
- an ``INSERT`` or ``UPDATE`` runs in a savepoint, so a unique or foreign-key violation raises
  :class:`~storage.errors.Conflict` / :class:`~storage.errors.NotFound` (as
  ``storage._sql.translate_integrity_error`` does for SQLite) and leaves the job's
  transaction usable: the job may catch it and go on, as it may on SQLite.

What SQLite alone has (sqlite-utils' table calls, ``json_each``) the PostgreSQL repositories in
this package write themselves. Statements run in the job's transaction (see
:mod:`storage.pg.store`); nothing here commits.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

import psycopg
import psycopg.errors

from storage.errors import Conflict, NotFound

_PARAM = re.compile(r"\?(\d*)")
_INDEXED_BY = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.IGNORECASE)
_GUARDED = ("INSERT", "UPDATE")

#: The unique constraints (named in :mod:`storage.pg.migrations`) and the field a
#: :class:`Conflict` names, as SQLite's repositories name them.
CONSTRAINT_FIELDS = {
    "devices_session_id_key": "session_id",
    "devices_user_alias": "alias",
    "devices_api_key_hash_key": "api_key_hash",
    "messages_device_message": "message_id",
    "sends_device_message": "message_id",
    "sends_device_idempotency_key": "idempotency_key",
}


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """SQLite-style SQL as psycopg takes it, and the order of the parameters to pass (None:
    as given)."""
    text = _INDEXED_BY.sub("", sql).replace("%", "%%")
    order: list[int] = []
    numbered = False

    def placeholder(match: re.Match[str]) -> str:
        nonlocal numbered
        if match.group(1):
            numbered = True
            order.append(int(match.group(1)) - 1)
        else:  # SQLite: an unnumbered ? is one more than the largest number so far
            order.append(max(order, default=-1) + 1)
        return "%s"

    text = _PARAM.sub(placeholder, text)
    return text, (tuple(order) if numbered else None)


def conflict_of(exc: psycopg.errors.UniqueViolation) -> Conflict:
    """The :class:`Conflict` a unique violation means."""
    name = exc.diag.constraint_name or ""
    field = CONSTRAINT_FIELDS.get(name, name)
    return Conflict(f"{field} already exists", field=field)


class PgSql:
    """A psycopg connection inside a job's transaction, taking the repositories' SQL.

    ``conn`` is the object itself: the SQLite repositories reach their connection as
    ``self._db.conn``.
    """

    __slots__ = ("pg",)

    def __init__(self, pg: psycopg.Connection[tuple[object, ...]]) -> None:
        self.pg = pg

    @property
    def conn(self) -> PgSql:
        return self

    def execute(self, sql: str, params: Sequence[object] = ()) -> psycopg.Cursor[tuple[object, ...]]:
        """Run one statement; the cursor holds its rows (``fetchone``, ``fetchall``,
        iteration) and ``rowcount``.

        Error handling: ``Conflict`` for a unique violation, ``NotFound`` for a foreign key
        violation (of an ``INSERT`` or ``UPDATE``; the job's transaction stays usable);
        other ``psycopg`` errors propagate.
        """
        text, order = translate(sql)
        args = list(params) if order is None else [params[i] for i in order]
        cursor = self.pg.cursor()
        if not text.lstrip().upper().startswith(_GUARDED):
            cursor.execute(text, args)
            return cursor
        try:
            with self.pg.transaction():  # a savepoint inside the job's transaction
                cursor.execute(text, args)
        except psycopg.errors.UniqueViolation as exc:
            raise conflict_of(exc) from None
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound("device not found") from None
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run one statement for each of ``rows``, in one savepoint (errors as :meth:`execute`)."""
        text, order = translate(sql)
        args = [list(r) if order is None else [r[i] for i in order] for r in rows]
        try:
            with self.pg.transaction(), self.pg.cursor() as cursor:
                cursor.executemany(text, args)
        except psycopg.errors.UniqueViolation as exc:
            raise conflict_of(exc) from None
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound("device not found") from None

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, object]]:
        """The rows of a query as dicts by column name."""
        cursor = self.execute(sql, params)
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def pg_of(db: object) -> PgSql:
    """The :class:`PgSql` a repository was bound to (its ``_db``, typed as SQLite's)."""
    assert isinstance(db, PgSql)
    return db
