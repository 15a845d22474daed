"""How the PostgreSQL store runs a batch of jobs on one connection: group commit.

Synopsis::

    with pool.connection() as conn:
        commits = run_batch(conn, jobs)   # every job answered: job.value or job.error

Jobs that queued while every connection was busy run together, one transaction for the batch
(:mod:`storage.pg.store` hands them over): one ``BEGIN`` and one ``COMMIT`` for all, and the
event log's append lock (:mod:`storage.pg.events`) taken once per batch rather than once per
job. The batch first runs *optimistically*: no savepoint per statement (two round trips each,
see :mod:`storage.pg.sql`). If any job raises, or a statement failed even though its job caught
the error, the transaction is rolled back whole and the batch runs again *carefully*: each job
in a transaction of its own, each ``INSERT``/``UPDATE`` in a savepoint, as when every job ran
alone. So a job may run twice (as on SQLite, whose batches work the same way); what it did the
first time was rolled back.

Atomicity: a job's work is committed whole or not at all, and its caller is answered only once
its transaction committed (an optimistic batch's jobs all at its commit).

Error handling: a server that cannot serve now fails the jobs not yet committed with
:class:`~storage.errors.StorageUnavailable` at once (no careful rerun against a server that is
gone); a job's own error is that job's alone (after the careful rerun).
"""

from __future__ import annotations

from typing import Any

import psycopg

from storage.jobs import Job
from storage.pg.errors import as_unavailable
from storage.pg.repositories import PgRepositories
from storage.pg.sql import PgSql

Connection = psycopg.Connection[tuple[Any, ...]]


class _Spoiled(Exception):
    """A statement failed in the optimistic transaction: it must not commit."""


class Stale(Exception):
    """The connection was broken before the batch began (its ``BEGIN`` failed): nothing ran,
    the batch may run on another connection."""


def run_batch(conn: Connection, batch: list[Job[Any]]) -> int:
    """Run ``batch`` on ``conn`` (see the module doc): every job gets its value or its error.
    Returns the number of transactions committed. Raises :class:`Stale` (no job touched) when
    the connection turns out broken at the first ``BEGIN``."""
    if _optimistic(conn, batch):
        return 1 if any(job.error is None for job in batch) else 0
    return _careful(conn, batch)


def _optimistic(conn: Connection, batch: list[Job[Any]]) -> bool:
    """The whole batch in one transaction without savepoints; False when it must run again
    carefully (nothing of it committed)."""
    sql = PgSql(conn, careful=False)
    repos = PgRepositories.bind(sql)
    values: list[object] = []
    began = False
    try:
        with conn.transaction():
            began = True
            for job in batch:
                values.append(job.fn(repos))
                if sql.failed:
                    raise _Spoiled
    except BaseException as exc:
        failure = as_unavailable(exc)
        if failure is None:
            return False
        if not began and conn.broken:
            raise Stale from exc
        for job in batch:
            job.value, job.error = None, failure
        return True
    for job, value in zip(batch, values, strict=True):
        job.value, job.error = value, None
    return True


def _careful(conn: Connection, batch: list[Job[Any]]) -> int:
    """Each job in a transaction of its own, with savepoints; the commits made."""
    repos = PgRepositories.bind(PgSql(conn, careful=True))
    commits = 0
    for i, job in enumerate(batch):
        try:
            with conn.transaction():
                job.value = job.fn(repos)
            job.error = None
            commits += 1
        except BaseException as exc:
            job.value = None
            failure = as_unavailable(exc)
            job.error = failure or exc
            if failure is not None:  # the server is gone: the rest cannot commit either
                for rest in batch[i + 1:]:
                    rest.value, rest.error = None, failure
                break
    return commits
