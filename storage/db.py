"""The database: one SQLite connection, owned by one thread, reached from Trio with group commit.

Synopsis::

    async with open_database(data_dir / "wasup.db") as db:
        row = await db.run(lambda repos: repos.devices.get(42))

``Database`` is the SQLite :class:`storage.interface.Store`: a job receives the repositories
(:mod:`storage.repositories`), bound to the transaction it runs in.

Why one thread: SQLite connections are not to be shared between threads (``check_same_thread``
stays on), and a single writer never meets ``SQLITE_BUSY`` from itself. It also keeps wasup
clear of the WAL-reset race of SQLite before 3.51.3.

Group commit: the thread takes everything queued (up to ``max_batch`` jobs), opens one
transaction, runs each job inside its own ``SAVEPOINT``, commits once (one fsync with
``synchronous=FULL``) and then wakes every caller of the batch. A job that raises is rolled back
to its savepoint alone; its neighbours in the batch still commit. A caller resumes only after
the COMMIT that holds its work has returned, so an acknowledged write survives the process being
killed.

Outages (:mod:`storage.outage`): a failure that is not the job's fault (a full disk) is raised
as :class:`StorageUnavailable`, never as a bare ``sqlite3`` error, and tracked in
``Database.outage``. Nothing is retried here: the caller answers 503 or tries again later.

Nothing here touches SQLite on the Trio thread: callers only append to a
``queue.SimpleQueue`` and wait on a ``trio.Event``; the thread wakes them with one
``TrioToken.run_sync_soon`` call per batch.

Tests on an autojumping ``MockClock``: a waiting caller keeps the run loop busy (checkpoints in
a loop) until its job is done, so virtual time does not leap ahead while the thread works.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from common.virtual_time import holds_virtual_time
from storage.errors import DatabaseClosed, StorageError, StorageUnavailable, TransactionFailed
from storage.interface import Repositories
from storage.jobs import Job, set_all, wait_done
from storage.migrations import MIGRATIONS, Migration, migrate
from storage.models import DatabaseStatistics, Outage
from storage.outage import RETRY_AFTER, OutageWatch, as_unavailable, disk_full
from storage.repositories import SqliteRepositories, wrap

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default upper bound on jobs per transaction: large enough to amortize the fsync, small
#: enough that the first caller of a batch is not kept waiting for long.
DEFAULT_MAX_BATCH = 2000

_SAVEPOINT = "wasup_job"


class _Close:
    """Queue sentinel: finish what is queued before me, then close."""


_CLOSE = _Close()


@attrs.define(eq=False)
class Database:
    """A SQLite database reached through its own thread. Create with :func:`open_database`.

    The connection is in autocommit mode (``isolation_level=None``; the thread manages the
    transactions), has ``row_factory = sqlite3.Row``, and runs with ``journal_mode=WAL``,
    ``synchronous=FULL``, ``busy_timeout=5000`` and ``foreign_keys=ON``. Jobs reach it only
    through the repositories.
    """

    path: Path
    max_batch: int
    _token: trio.lowlevel.TrioToken
    _migrations: list[Migration]
    _queue: queue.SimpleQueue[Job[Any] | _Close] = attrs.field(factory=queue.SimpleQueue)
    _thread: threading.Thread | None = None
    _ready: Job[None] | None = None
    _closing: bool = False
    _dead: bool = False
    _watch: OutageWatch = attrs.field(init=False)  # Trio thread only
    # The connection and whether the current batch's probe wrote (database thread only).
    _conn: sqlite3.Connection | None = None
    _probed: bool = False
    # Counters, written only by the database thread.
    _jobs: int = 0
    _failed_jobs: int = 0
    _commits: int = 0
    _batches: int = 0
    _largest_batch: int = 0

    @_watch.default
    def _new_watch(self) -> OutageWatch:
        return OutageWatch(str(self.path))

    async def run(self, fn: Callable[[Repositories], T]) -> T:
        """Run ``fn(repos)`` in the database thread inside a transaction; return its result.

        ``repos`` holds every repository, bound to this transaction: the calls ``fn`` makes are
        stored together or not at all. ``fn`` should return plain values (rows, attrs records)
        and must not keep ``repos``. It runs in a foreign thread: it must not touch Trio.

        Resumes only after the COMMIT that includes ``fn``'s work (group commit: many callers
        share it).

        Error handling: if ``fn`` raises, only its own work is rolled back and the exception is
        re-raised here, except that a storage outage (SQLite's full disk, I/O, read-only, busy
        errors) is raised as ``StorageUnavailable``, the same for every job it hit. If the
        transaction cannot begin or commit, ``TransactionFailed`` (or ``StorageUnavailable``) is
        raised and nothing ``fn`` wrote is stored. ``DatabaseClosed`` if the database is closing
        or its thread died; in that case ``fn`` was never run.

        Cancellation: once submitted, ``fn`` runs and commits regardless. A caller cancelled
        while waiting gets ``trio.Cancelled`` and loses only the answer: its work may well be
        committed (and an exception from it is dropped). Shield the call
        (``with trio.CancelScope(shield=True)``) where the caller must know.
        """
        if self._closing or self._dead:
            raise DatabaseClosed("database is closed")
        job: Job[T] = Job(fn)
        self._queue.put(job)
        await wait_done(job)
        if job.error is not None:
            error, job.error = job.error, None  # drop the reference: no cycle via traceback
            raise error
        return job.value  # type: ignore[return-value]  # None only for a job returning None

    @property
    def outage(self) -> Outage | None:
        """The storage outage in progress, or None (see the module doc)."""
        return self._watch.outage

    def raise_if_unavailable(self) -> None:
        """Raise ``StorageUnavailable`` if a write failed for an outage moments ago: for a
        caller about to do what cannot be undone (send a message) before its write. Later calls
        get through, so that the write itself finds out whether the storage is back."""
        self._watch.raise_if_unavailable()

    async def probe(self) -> Outage | None:
        """The outage in progress, after checking whether it is over; None if there is none.

        During an outage, and at most every ``RETRY_AFTER`` s, this commits a transaction that
        writes (the database header: nothing changes), which fails while the disk is full or
        the file read-only and ends the outage once it commits. Cheap otherwise.

        Error handling: raises nothing.
        """
        if self._watch.outage is not None and not self._watch.recent():
            try:
                await self.run(self._touch)
            except (StorageUnavailable, DatabaseClosed):
                pass  # still out (or shutting down): the outage stands
        return self._watch.outage

    def _touch(self, repos: Repositories) -> None:
        """The probe's job (database thread): rewrite the schema version, as it is."""
        assert self._conn is not None
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        self._conn.execute(f"PRAGMA user_version = {version}")
        self._probed = True

    def statistics(self) -> DatabaseStatistics:
        """Counters of the database thread; cheap, and safe to call from Trio at any time."""
        return DatabaseStatistics(
            jobs=self._jobs,
            failed_jobs=self._failed_jobs,
            commits=self._commits,
            batches=self._batches,
            largest_batch=self._largest_batch,
            queued=self._queue.qsize(),
        )

    # -- lifecycle (Trio side) ---------------------------------------------------------------

    def _start(self) -> Job[None]:
        self._ready = ready = Job[None](lambda repos: None)
        self._thread = threading.Thread(
            target=self._thread_main, name=f"wasup-sqlite:{self.path.name}", daemon=True
        )
        self._thread.start()
        return ready

    async def _aclose(self) -> None:
        """Finish queued work, commit, close the connection, join the thread. Idempotent."""
        if not self._closing:
            self._closing = True
            self._queue.put(_CLOSE)
        if self._thread is not None:
            if holds_virtual_time():
                while self._thread.is_alive():  # see wait_done
                    await trio.lowlevel.checkpoint()
            # join() blocks, so do it off the Trio thread; the thread is finishing anyway.
            await trio.to_thread.run_sync(self._thread.join)

    # -- the database thread -----------------------------------------------------------------

    def _thread_main(self) -> None:
        assert self._ready is not None
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn, repos = self._connect()
            except BaseException as exc:
                self._ready.error = exc
                return
            finally:
                self._wake([self._ready])
            self._conn = conn
            self._serve(conn, repos)
        except BaseException:
            log.exception("database thread crashed: %s", self.path)
        finally:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    log.exception("closing database failed: %s", self.path)
            self._call_soon(self._on_thread_exit)

    def _connect(self) -> tuple[sqlite3.Connection, SqliteRepositories]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The database holds webhook secrets and provider keys: a new one is readable by its
        # owner only (SQLite gives its -wal and -shm files the same permissions).
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError:
            pass  # sqlite3.connect below reports why the path cannot be opened
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA foreign_keys = ON")
            db = wrap(conn)
            before, after = migrate(db, self._migrations)
            if before != after:
                log.info("database %s migrated from version %d to %d", self.path, before, after)
        except BaseException:
            conn.close()
            raise
        return conn, SqliteRepositories.bind(db)

    def _serve(self, conn: sqlite3.Connection, repos: SqliteRepositories) -> None:
        while True:
            item = self._queue.get()
            batch: list[Job[Any]] = []
            closing = False
            while True:
                if isinstance(item, _Close):
                    closing = True
                    break
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._run_batch(conn, repos, batch)
            if closing:
                return

    def _run_batch(
        self, conn: sqlite3.Connection, repos: SqliteRepositories, batch: list[Job[Any]]
    ) -> None:
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(batch))
        done = 0
        commits, changes, self._probed = self._commits, conn.total_changes, False
        try:
            done = self._run_optimistic(conn, repos, batch)
            if done < len(batch):
                self._run_careful(conn, repos, batch, done)
        finally:
            self._jobs += len(batch)
            refused = [job.error for job in batch if isinstance(job.error, StorageUnavailable)]
            stored = self._commits > commits and (conn.total_changes > changes or self._probed)
            if refused or stored:
                reason = refused[0].reason if refused else None
                self._call_soon(self._watch.observe, reason, len(refused))
            self._wake(batch)

    def _run_optimistic(
        self, conn: sqlite3.Connection, repos: SqliteRepositories, batch: list[Job[Any]]
    ) -> int:
        """Run the whole batch in one transaction without savepoints; how many jobs are done.

        Jobs rarely fail, and every statement costs this thread a trip for the GIL, so the
        batch first runs without a savepoint per job. If a job raises, the transaction is rolled
        back whole and 0 is returned: :meth:`_run_careful` then runs every job again, each in
        its own savepoint, so the failure stays the failing job's alone.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception:
            return 0
        for i, job in enumerate(batch):
            try:
                job.value = job.fn(repos)
            except BaseException:
                _rollback(conn)
                return 0
            if not conn.in_transaction:
                # The job ended the transaction itself: what came before it is not promised.
                job.value = None
                job.error = sqlite3.ProgrammingError("a database job must not end the transaction")
                self._failed_jobs += 1
                self._fail(batch[:i], "transaction ended by another job")
                return i + 1
        try:
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            return 0
        self._commits += 1
        return len(batch)

    def _run_careful(
        self,
        conn: sqlite3.Connection,
        repos: SqliteRepositories,
        batch: list[Job[Any]],
        start: int,
    ) -> None:
        """Run ``batch[start:]`` with a savepoint per job, so one failing job fails alone."""
        first = start  # index of the first job of the open transaction
        try:
            conn.execute("BEGIN IMMEDIATE")
            for i, job in enumerate(batch[start:], start):
                if not self._run_job(conn, repos, job):
                    # The transaction vanished during the job: SQLite rolled it back (disk
                    # full, I/O error) or the job ended it. Either way the earlier jobs of this
                    # transaction cannot be promised as stored.
                    self._fail(batch[first:i], "transaction ended by another job", job.error)
                    first = i + 1
                    conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
            self._commits += 1
        except Exception as exc:
            # BEGIN, COMMIT or a savepoint statement failed: nothing of the open transaction
            # is stored, and the jobs that had succeeded learn so. An outage is logged once,
            # by the OutageWatch.
            if as_unavailable(exc) is None:
                log.error("database transaction failed (%d jobs): %s", len(batch) - first, exc)
            _rollback(conn)
            self._fail(batch[first:], f"transaction failed: {exc}", exc)

    def _fail(
        self, jobs: list[Job[Any]], message: str, cause: BaseException | None = None
    ) -> None:
        for job in jobs:
            if job.error is None and not job.wrote:
                continue  # a read that ran: nothing of it to lose, its answer stands
            if job.error is None:
                failure: StorageError | None = as_unavailable(cause)
                if failure is None:
                    failure = TransactionFailed(message)
                    failure.__cause__ = cause
                job.error = failure
                job.value = None
                self._failed_jobs += 1

    def _run_job(
        self, conn: sqlite3.Connection, repos: SqliteRepositories, job: Job[Any]
    ) -> bool:
        """Run one job in a savepoint; False if the transaction did not survive it."""
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        changes = conn.total_changes
        try:
            value = job.fn(repos)
        except BaseException as exc:
            # Delivered to the caller, as trio.to_thread does; the thread carries on.
            job.error = as_unavailable(exc) or exc
            self._failed_jobs += 1
            if not conn.in_transaction:
                return False
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
            return True
        if not conn.in_transaction:
            job.error = sqlite3.ProgrammingError("a database job must not end the transaction")
            self._failed_jobs += 1
            return False
        conn.execute(f"RELEASE {_SAVEPOINT}")
        job.value = value
        job.wrote = conn.total_changes != changes
        return True

    def _wake(self, jobs: list[Job[Any]]) -> None:
        self._call_soon(set_all, jobs)

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass  # nobody left to wake

    def _on_thread_exit(self) -> None:
        # Runs on the Trio thread, so no `run` can slip a job in between these lines.
        self._dead = True
        stranded: list[Job[Any]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Job):
                item.error = DatabaseClosed("database thread stopped")
                stranded.append(item)
        set_all(stranded)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any; a failure to do so (an I/O error) is logged,
    and SQLite rolls back at the next statement anyway."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed: %s", exc)


@asynccontextmanager
async def open_database(
    path: Path | str,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    migrations: list[Migration] | None = None,
) -> AsyncIterator[Database]:
    """Open (creating if needed) the SQLite database at ``path`` and apply pending migrations.

    Resource handling: starts the database thread, which opens the connection and migrates
    before this yields. On exit (normal, error or cancellation) the database stops accepting
    new work, finishes and commits every job already queued, closes the connection and joins
    the thread; this shutdown is shielded from cancellation.

    Error handling: a connection, PRAGMA or migration failure is raised from here (``sqlite3``
    errors or ``MigrationError``); the thread is gone by then. Except on a full disk: then
    this logs it once and tries again every ``RETRY_AFTER`` seconds until space is freed.
    """
    waited = False
    while True:
        db = Database(
            path=Path(path),
            max_batch=max_batch,
            token=trio.lowlevel.current_trio_token(),
            migrations=list(MIGRATIONS if migrations is None else migrations),
        )
        ready = db._start()
        try:
            await wait_done(ready)
        finally:
            if ready.error is not None or not ready.done:  # failed, or cancelled meanwhile
                with trio.CancelScope(shield=True):
                    await db._aclose()
        if ready.error is None:
            break
        error, ready.error = ready.error, None
        if not disk_full(db.path, error):
            raise error
        if not waited:
            log.error("cannot open the database, its disk is full (%s): waiting for space "
                      "(trying every %g s)", error, RETRY_AFTER)
            waited = True
        await trio.sleep(RETRY_AFTER)
    if waited:
        log.warning("database opened: space was freed")
    try:
        yield db
    finally:
        with trio.CancelScope(shield=True):
            await db._aclose()
