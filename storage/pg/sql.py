"""The PostgreSQL connection as the repositories speak to it: ``execute(sql, params)``.

The SQL of wasup's repositories is written once, for SQLite, in the portable subset both
databases share (``?`` parameters, ``RETURNING``, ``ON CONFLICT ... DO UPDATE``, ``FILTER``,
recursive CTEs). :class:`PgSql` runs that SQL on a psycopg connection, so a SQLite repository
method that uses only ``conn.execute`` runs unchanged on PostgreSQL:

- ``?`` and ``?N`` parameters become psycopg's ``%s`` (``?N`` repeated or reordered as needed),
  and a literal ``%`` is escaped;
- SQLite's ``INDEXED BY`` hints are dropped (PostgreSQL's planner picks its indexes);
- a Python ``bool`` is sent as the integer 0 or 1, as SQLite stores it (wasup's flags, such as
  ``devices.paired`` and ``sends.stuck``, are ``INTEGER`` columns on both);
- a unique or foreign-key violation of an ``INSERT`` or ``UPDATE`` raises
  :class:`~storage.errors.Conflict` / :class:`~storage.errors.NotFound` (as
  ``storage._sql.translate_integrity_error`` does for SQLite). A job may catch it and go on,
  as it may on SQLite: in a *careful* :class:`PgSql` each such statement runs in a savepoint,
  which keeps the transaction usable. An *optimistic* one runs without savepoints (a
  savepoint costs two round trips) and notes in :attr:`PgSql.failed` that the transaction is
  spoiled; :mod:`storage.pg.batch` then runs the job again, carefully.

What SQLite alone has (sqlite-utils' table calls, ``json_each``) the PostgreSQL repositories in
this package write themselves. Statements run in the job's transaction (see
:mod:`storage.pg.store`); nothing here commits.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

import psycopg
import psycopg.adapt
import psycopg.errors
import psycopg.postgres

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


class BoolAsInteger(psycopg.adapt.Dumper):
    """Dumps a ``bool`` as the integer 0 or 1 (see the module doc)."""

    oid = psycopg.postgres.types["int4"].oid

    def dump(self, obj: object) -> bytes:
        return b"1" if obj else b"0"


def configure(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Set up a new connection of the pool for the repositories' SQL."""
    conn.adapters.register_dumper(bool, BoolAsInteger)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, tuple[int, ...] | None, bool]:
    """SQLite-style SQL as psycopg takes it, the order of the parameters to pass (None: as
    given), and whether it is an ``INSERT`` or ``UPDATE`` (whose violations are translated)."""
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
    return text, (tuple(order) if numbered else None), text.lstrip().upper().startswith(_GUARDED)


def conflict_of(exc: psycopg.errors.UniqueViolation) -> Conflict:
    """The :class:`Conflict` a unique violation means."""
    name = exc.diag.constraint_name or ""
    field = CONSTRAINT_FIELDS.get(name, name)
    return Conflict(f"{field} already exists", field=field)


class PgSql:
    """A psycopg connection inside a job's transaction, taking the repositories' SQL.

    ``conn`` is the object itself: the SQLite repositories reach their connection as
    ``self._db.conn``. ``careful``: violations in savepoints (see the module doc); ``failed``:
    a statement failed in an optimistic transaction, which cannot commit now.
    """

    __slots__ = ("careful", "failed", "pg")

    def __init__(self, pg: psycopg.Connection[tuple[object, ...]], *, careful: bool = True) -> None:
        self.pg = pg
        self.careful = careful
        self.failed = False

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
        text, order, guarded = translate(sql)
        args = list(params) if order is None else [params[i] for i in order]
        cursor = self.pg.cursor()
        if not self.careful:
            try:
                cursor.execute(text, args)
            except psycopg.Error as exc:
                self.failed = True  # the transaction is spoiled, whatever the job does next
                if guarded:
                    _translate_violation(exc)
                raise
            return cursor
        if not guarded:
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
        text, order, _guarded = translate(sql)
        args = [list(r) if order is None else [r[i] for i in order] for r in rows]
        if not self.careful:
            try:
                with self.pg.cursor() as cursor:
                    cursor.executemany(text, args)
            except psycopg.Error as exc:
                self.failed = True
                _translate_violation(exc)
                raise
            return
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


def _translate_violation(exc: psycopg.Error) -> None:
    """Raise the Conflict or NotFound a unique or foreign-key violation means; return for
    any other error."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        raise conflict_of(exc) from None
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        raise NotFound("device not found") from None


def pg_of(db: object) -> PgSql:
    """The :class:`PgSql` a repository was bound to (its ``_db``, typed as SQLite's)."""
    assert isinstance(db, PgSql)
    return db
