"""The PostgreSQL store: a psycopg connection pool reached from Trio through worker threads.

Synopsis::

    async with open_postgres("postgresql://wasup@db/wasup", pool_size=10) as db:
        row = await db.run(lambda repos: repos.devices.get(42))

``PgStore`` is the PostgreSQL :class:`storage.interface.Store`. Each ``run`` job is run in a
worker thread on a connection of the pool (at most ``pool_size`` threads at a time), and
commits before its caller resumes: the job's work is stored whole or not at all, and a job that
raises rolls back its own work only. A job that finds a thread free runs at once; the jobs that
queued meanwhile run together, in order, as one batch in one transaction when a thread is next
free (group commit, up to ``max_batch`` jobs: :mod:`storage.pg.batch`).

Outages (:mod:`storage.outage`): a server that is down, restarting, refusing connections or out
of disk space is not the job's fault: the job fails with :class:`StorageUnavailable` (answered
503 with Retry-After), the first such failure logs one line, and the next job that commits ends
the outage. The pool checks a connection that idled for :data:`CHECK_IDLE` s or more before it
lends it (a connection used moments ago goes unchecked, saving a round trip per batch; should
it be broken all the same, its batch moves to another connection) and connects again by itself,
so the store recovers when the server returns; :meth:`PgStore.probe` tries a transaction now and
then during an outage to find out.

Nothing here touches the database on the Trio thread.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import attrs
import outcome
import psycopg
import psycopg_pool
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from common.virtual_time import holds_virtual_time
from storage.errors import DatabaseClosed, StorageUnavailable
from storage.interface import Repositories
from storage.jobs import Job, set_all, wait_done
from storage.models import DatabaseStatistics, Outage
from storage.outage import RETRY_AFTER, OutageWatch
from storage.pg.batch import Stale, run_batch
from storage.pg.errors import as_unavailable
from storage.pg.listen import Listener, connector
from storage.pg.migrations import MIGRATIONS, Migration, migrate
from storage.pg.sql import configure

log = logging.getLogger(__name__)

# The pool logs every failed connection attempt as a warning; the outage's own line
# (storage.outage) says it once.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

T = TypeVar("T")

#: Default number of connections (and of jobs running at once).
DEFAULT_POOL_SIZE = 10

#: Seconds a job waits for a connection of the pool before it fails as an outage.
CONNECT_TIMEOUT = 5.0

#: Most jobs of one batch (one transaction).
DEFAULT_MAX_BATCH = 500

#: Seconds a connection may idle in the pool and still be lent without a check.
CHECK_IDLE = 1.0

Connection = psycopg.Connection[tuple[Any, ...]]


class RecentCheck:
    """The pool's check before it lends a connection: a round trip, unless the connection
    was returned less than :data:`CHECK_IDLE` s ago (see the module doc)."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[Connection, float] = (
            weakref.WeakKeyDictionary())

    def used(self, conn: Connection) -> None:
        self._returned[conn] = time.monotonic()

    def __call__(self, conn: Connection) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned >= CHECK_IDLE:
            psycopg_pool.ConnectionPool.check_connection(conn)

def describe(url: str) -> str:
    """``url`` for a log line: host and database, no password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql"
    return f"postgresql {params.get('host', 'localhost')}/{params.get('dbname', '')}"


@attrs.define(eq=False)
class PgStore:
    """A PostgreSQL database reached through a connection pool. Create with
    :func:`open_postgres`."""

    label: str
    _pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]]
    _size: int
    _connect_timeout: float
    _token: trio.lowlevel.TrioToken
    _watch: OutageWatch
    _url: str = ""
    _listener: Listener | None = None
    _closing: bool = False
    _running: int = 0  # worker threads busy with a job
    _waiting: deque[Job[Any]] = attrs.field(factory=deque)  # jobs submitted, no thread yet
    _check: RecentCheck = attrs.field(factory=RecentCheck)
    _max_batch: int = DEFAULT_MAX_BATCH
    _batches: int = 0
    _largest_batch: int = 0
    _idle: trio.Event = attrs.field(factory=trio.Event)
    _jobs: int = 0
    _failed_jobs: int = 0
    _commits: int = 0

    async def run(self, fn: Callable[[Repositories], T]) -> T:
        """Run ``fn(repos)`` in a worker thread inside a transaction (its own, or its batch's:
        see the module doc); return its result once committed.

        Error handling: what ``fn`` raised (its work rolled back), except that a server that
        cannot serve now (down, restarting, no connection within ``CONNECT_TIMEOUT`` s, out of
        disk) raises ``StorageUnavailable``; then nothing ``fn`` wrote is stored, unless the
        connection broke during the COMMIT itself (PostgreSQL may have stored it: the outcome
        is unknown, as with any database client). ``DatabaseClosed`` if the store is closing
        (``fn`` never ran).

        Cancellation: once submitted, ``fn`` runs and commits regardless. A caller cancelled
        while waiting gets ``trio.Cancelled`` and loses only the answer (as with SQLite's
        ``Database.run``).
        """
        if self._closing:
            raise DatabaseClosed("database is closed")
        job: Job[T] = Job(fn)
        if self._running < self._size:
            self._running += 1
            self._start([job])
        else:
            self._waiting.append(job)
        await wait_done(job)
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.value  # type: ignore[return-value]  # None only for a job returning None

    def listen(
        self, channel: str
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[str]]:
        """The payloads of the notifications on ``channel`` (``"*"``: some may have been
        lost, reload), from transactions that commit once this is entered; see
        :mod:`storage.pg.listen` (one listening connection for the store, opened on first use).

        Raises: ValueError for a bad channel name, RuntimeError once the store is closing.
        """
        if self._listener is None:
            self._listener = Listener(self.label, connector(self._url), self._token)
        return self._listener.subscribe(channel)

    @property
    def notify_reconnects(self) -> int:
        """How many times the listening connection (:meth:`listen`) was opened again after
        it broke."""
        return 0 if self._listener is None else self._listener.reconnects

    @property
    def outage(self) -> Outage | None:
        """The storage outage in progress, or None."""
        return self._watch.outage

    def raise_if_unavailable(self) -> None:
        """Raise ``StorageUnavailable`` if a job failed for an outage moments ago."""
        self._watch.raise_if_unavailable()

    async def probe(self) -> Outage | None:
        """The outage in progress, after checking (an empty transaction, at most every
        ``RETRY_AFTER`` s) whether it is over; None if there is none. Raises nothing."""
        if self._watch.outage is not None and not self._watch.recent():
            try:
                await self.run(lambda repos: None)
            except (StorageUnavailable, DatabaseClosed):
                pass
        return self._watch.outage

    def statistics(self) -> DatabaseStatistics:
        """Counters of the store's work so far (``batches``: the batches run, each first tried
        as one transaction; ``commits``: the transactions committed)."""
        return DatabaseStatistics(
            jobs=self._jobs,
            failed_jobs=self._failed_jobs,
            commits=self._commits,
            batches=self._batches,
            largest_batch=self._largest_batch,
            queued=len(self._waiting),
        )

    # -- worker threads ------------------------------------------------------------------------

    def _start(self, batch: list[Job[Any]]) -> None:
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(batch))
        trio.lowlevel.start_thread_soon(partial(self._work, batch), partial(self._deliver, batch))

    def _work(self, batch: list[Job[Any]]) -> int:
        """Run ``batch`` (a worker thread; see :mod:`storage.pg.batch`); the transactions
        committed. A connection found broken before anything ran is swapped for another, once."""
        for attempt in (1, 2):
            try:
                with self._pool.connection(timeout=self._connect_timeout) as conn:
                    try:
                        return run_batch(conn, batch)
                    finally:
                        self._check.used(conn)
            except Stale as exc:
                if attempt == 2:
                    self._fail(batch, exc.__cause__ or exc)
            except BaseException as exc:
                self._fail(batch, exc)
                break
        return 0

    @staticmethod
    def _fail(batch: list[Job[Any]], exc: BaseException) -> None:
        error = as_unavailable(exc) or exc
        for job in batch:
            job.value, job.error = None, error

    def _deliver(self, batch: list[Job[Any]], done: outcome.Outcome[int]) -> None:
        """Hand the finished ``batch`` back to Trio (any thread)."""
        commits = done.value if isinstance(done, outcome.Value) else 0
        self._token.run_sync_soon(self._finish, batch, commits)

    def _finish(self, batch: list[Job[Any]], commits: int) -> None:
        """The Trio side of a finished batch: counters, outage, wake the callers."""
        if self._waiting:  # the thread's slot passes on to what queued meanwhile
            n = min(len(self._waiting), self._max_batch)
            self._start([self._waiting.popleft() for _ in range(n)])
        else:
            self._running -= 1
        self._jobs += len(batch)
        refused = [job for job in batch if isinstance(job.error, StorageUnavailable)]
        failed = sum(1 for job in batch if job.error is not None)
        self._failed_jobs += failed
        self._commits += commits
        if refused:
            error = refused[0].error
            assert isinstance(error, StorageUnavailable)
            self._watch.observe(error.reason, len(refused))
        elif len(batch) > failed and self._watch.outage is not None:
            self._watch.observe(None, 0)
        set_all(batch)
        if self._closing and self._running == 0:
            self._idle.set()

    async def _aclose(self) -> None:
        """Refuse new jobs, let the running ones finish, close the pool. Idempotent."""
        self._closing = True
        if self._listener is not None:
            await self._listener.aclose()
        if self._running:
            if holds_virtual_time():
                while self._running:  # see storage.jobs.wait_done
                    await trio.lowlevel.checkpoint()
            else:
                await self._idle.wait()
        await trio.to_thread.run_sync(self._pool.close)


def _connect_and_migrate(url: str, migrations: list[Migration], timeout: float) -> None:
    """Connect once and apply the pending migrations (a worker thread)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout))) as conn:
        before, after = migrate(conn, migrations)
    if before != after:
        log.info("database %s migrated from version %d to %d", describe(url), before, after)


@asynccontextmanager
async def open_postgres(
    url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    connect_timeout: float = CONNECT_TIMEOUT,
    migrations: list[Migration] | None = None,
) -> AsyncIterator[PgStore]:
    """Connect to the PostgreSQL database at ``url`` (a ``postgresql://`` URL or a libpq
    connection string), apply pending migrations and yield the store.

    Resource handling: a pool of up to ``pool_size`` connections, closed on exit (normal, error
    or cancellation; shielded) once the running jobs are done. A job waits up to
    ``connect_timeout`` s for a connection before it fails as an outage.

    Error handling: a server that cannot be reached now is waited for, logged once and tried
    again every ``RETRY_AFTER`` s; any other failure (a bad URL, authentication, a failed
    migration: ``MigrationError``) is raised from here.
    """
    label = describe(url)
    chosen = list(MIGRATIONS if migrations is None else migrations)
    waited = False
    while True:
        try:
            await trio.to_thread.run_sync(_connect_and_migrate, url, chosen, connect_timeout)
            break
        except psycopg.Error as exc:
            failure = as_unavailable(exc)
            if failure is None:
                raise
            if not waited:
                log.error("cannot reach the database (%s): %s; trying again every %g s",
                          label, failure.reason, RETRY_AFTER)
                waited = True
        await trio.sleep(RETRY_AFTER)
    if waited:
        log.warning("database reached: %s", label)
    recent = RecentCheck()
    pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
        psycopg_pool.ConnectionPool(
            make_conninfo(url),
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},
            configure=configure,
            check=recent,
            # Connect when a job needs a connection, and give up at the first failure: the job
            # fails as an outage, and the next job tries again at once. (The pool's own
            # schedule would back off for minutes, long after the server is back.)
            reconnect_timeout=0,
            open=False,
            name="wasup",
        )
    )
    await trio.to_thread.run_sync(partial(pool.open, wait=False))
    store = PgStore(
        label=label,
        pool=pool,
        size=max(1, pool_size),
        connect_timeout=connect_timeout,
        token=trio.lowlevel.current_trio_token(),
        watch=OutageWatch(label),
        url=url,
        check=recent,
    )
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store._aclose()
