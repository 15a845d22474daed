"""Opening the device core: the database, the engine, the directory, the supervised actors.

Usage::

    async with open_supervisor(Config(engine="simulator")) as devices:
        row, api_key = await devices.create_device("user123", "Business Account 1")
        ...

:func:`open_supervisor` builds the parts in dependency order (database, engine, directory,
timers, the media store under ``<data_dir>/media``, supervisor, the
:class:`~supervisor.devices.Devices` facade), starts an actor for every stored device (boot
restore) and yields the facade. In a cluster (``config.cluster``, PostgreSQL only) every stored
device is in the directory, but actors run only for the devices this node holds leases on: the
node (:mod:`supervisor.cluster`) joins, claims and starts them, and drains on exit
(``Devices.cluster``). Login handshakes share one
``trio.CapacityLimiter(max_concurrent_logins)``.

Resource handling: on exit every actor is stopped (newest first), then the engine and the
database are closed; every acknowledged write is committed by then.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import trio

import storage
from storage.interface import Store
from storage.pg import open_postgres

from . import engine as eng
from . import proxy
from . import state as sm
from .children import DeviceSupervisor
from .cluster.mirror import start_mirror
from .cluster.node import ClusterNode, open_node
from .cluster.qr_store import start_qr_store
from .config import Config
from .context import ActorContext, OutboxSignal
from .devices import Devices
from .directory import DeviceDirectory
from .engines.simulator import SimulatorEngine
from .engines.simulator_controls import LocalControls, SimulatorControls
from .engines.simulator_queue import QueuedMessage
from .events import EventBus
from .media import MediaStore
from .timers import Timers

log = logging.getLogger("wasup.supervisor")

#: Connections of a cluster node's lease store (its lease jobs run one at a time).
LEASE_POOL_SIZE = 1

#: The settings kind the simulator's offline queue is stored under (:class:`DbQueueStore`).
QUEUE_KIND = "simulator_queue"


@attrs.define(eq=False)
class DbCredentialStore:
    """Engine credentials in the ``credentials`` table (used by the simulator engine).

    Credentials just written, or preloaded at boot, are kept in memory until they are read
    once: the connect that follows a scan or a restore then needs no query of its own, and
    nothing stays in memory after it.
    """

    db: storage.Store
    _fresh: dict[int, bytes] = attrs.field(factory=dict)

    async def preload(self) -> None:
        self._fresh.update(await self.db.run(lambda r: r.credentials.all()))

    async def get(self, device_id: int) -> bytes | None:
        data = self._fresh.pop(device_id, None)
        if data is not None:
            return data
        return await self.db.run(lambda r: r.credentials.get(device_id))

    async def has(self, device_id: int) -> bool:
        if device_id in self._fresh:
            return True
        return await self.db.run(lambda r: r.credentials.get(device_id)) is not None

    async def put(self, device_id: int, data: bytes) -> None:
        await self.db.run(lambda r: r.credentials.put(device_id, data))
        self._fresh[device_id] = data

    async def delete(self, device_id: int) -> None:
        self._fresh.pop(device_id, None)
        await self.db.run(lambda r: r.credentials.delete(device_id))


@attrs.define(eq=False)
class DbQueueStore:
    """The simulator's offline queue in the ``settings`` table (kind ``simulator_queue``, one
    document ``{"messages": [...]}`` per device with queued messages), so the queue survives a
    kill -9 of wasup; a device's queue goes with the device (the table's ``ON DELETE CASCADE``).

    Every queue is also kept in memory (loaded by :meth:`preload` at boot), so reading a queue,
    which every connect does, costs no query. A change is made in memory first and then
    written: concurrent changes reach the database in the order they were made. A queue is a
    small JSON list rewritten at each change, which suits the simulator's queues (tens of
    messages).

    Error handling: :meth:`push` re-raises a failed write (``storage.NotFound`` for a deleted
    device) with the message taken out of memory again.
    """

    db: storage.Store
    _queues: dict[int, list[QueuedMessage]] = attrs.field(factory=dict)

    async def preload(self) -> None:
        def job(r: storage.Repositories) -> dict[int, list[QueuedMessage]]:
            queues: dict[int, list[QueuedMessage]] = {}
            for device_id in r.settings.devices_with(QUEUE_KIND):
                doc = r.settings.get(device_id, QUEUE_KIND) or {}
                messages = doc.get("messages", [])
                queues[device_id] = [QueuedMessage.from_json(m) for m in messages]
            return queues

        self._queues.update(await self.db.run(job))

    def pending(self, device_id: int) -> list[QueuedMessage]:
        return list(self._queues.get(device_id, ()))

    async def push(self, device_id: int, message: QueuedMessage) -> None:
        self._queues.setdefault(device_id, []).append(message)
        data = message.to_json()

        def job(r: storage.Repositories) -> None:
            doc = r.settings.get(device_id, QUEUE_KIND) or {"messages": []}
            r.settings.put(device_id, QUEUE_KIND, {"messages": [*doc["messages"], data]})

        try:
            await self.db.run(job)
        except BaseException:
            self._forget(device_id, message.message_id)
            raise

    async def remove(self, device_id: int, message_id: str) -> None:
        self._forget(device_id, message_id)

        def job(r: storage.Repositories) -> None:
            doc = r.settings.get(device_id, QUEUE_KIND)
            if doc is None:
                return
            kept = [m for m in doc["messages"] if m.get("messageId") != message_id]
            if kept:
                r.settings.put(device_id, QUEUE_KIND, {"messages": kept})
            else:
                r.settings.delete(device_id, QUEUE_KIND)

        await self.db.run(job)

    async def clear(self, device_id: int) -> None:
        if self._queues.pop(device_id, None) is not None:
            await self.db.run(lambda r: r.settings.delete(device_id, QUEUE_KIND))

    def _forget(self, device_id: int, message_id: str) -> None:
        kept = [m for m in self._queues.get(device_id, ()) if m.message_id != message_id]
        if kept:
            self._queues[device_id] = kept
        else:
            self._queues.pop(device_id, None)


def make_engine(config: Config, db: storage.Store) -> eng.Engine:
    if config.engine == "simulator" and config.simulator_url:
        from .engines.simulator_remote import RemoteSimulatorEngine

        return RemoteSimulatorEngine(config.simulator_url, DbCredentialStore(db))
    if config.engine == "simulator":
        return SimulatorEngine(
            DbCredentialStore(db), queue=DbQueueStore(db), seed=config.simulator_seed,
            handshake_latency=config.simulator_latency, instance=secrets.token_hex(4),
        )
    if config.engine == "whatsmeow":
        from .engines.whatsmeow import WhatsmeowEngine

        return WhatsmeowEngine(config.data_dir, proxies=proxy.stored_proxies(db),
                               database_url=config.database_url)
    raise ValueError(f"unknown engine {config.engine!r} (use whatsmeow or simulator)")


def simulator_controls(engine: eng.Engine) -> SimulatorControls | None:
    """The simulator controls of ``engine`` (:func:`make_engine`'s): the in-process simulator's,
    or the shared simulator's through the remote engine; None for another engine."""
    if isinstance(engine, SimulatorEngine):
        return LocalControls(engine)
    from .engines.simulator_remote import RemoteSimulatorEngine

    if isinstance(engine, RemoteSimulatorEngine):
        return engine.controls
    return None


def open_store(config: Config) -> AbstractAsyncContextManager[Store]:
    """The database of ``config``: PostgreSQL at ``database_url`` when it is set, else SQLite
    in the data directory (``database_path``)."""
    if config.database_url:
        return open_postgres(config.database_url)
    return storage.open_database(config.database_path)


@asynccontextmanager
async def open_supervisor(
    config: Config, *, engine: eng.Engine | None = None, bus: EventBus | None = None
) -> AsyncIterator[Devices]:
    """Open the database and the engine, restore every stored device, and yield the facade.

    Resource handling: on exit every actor is stopped (newest first), then the engine and the
    database are closed; every acknowledged write is committed by then.
    """
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    async with open_store(config) as db:
        the_engine = engine if engine is not None else make_engine(config, db)
        try:
            async with trio.open_nursery() as ops_nursery, trio.open_nursery() as nursery:
                directory = DeviceDirectory()
                timers = Timers()
                login_limiter = trio.CapacityLimiter(config.max_concurrent_logins)
                outbox = OutboxSignal()
                the_bus = bus if bus is not None else EventBus(config.event_queue_size)
                media = MediaStore(config.media_dir, config.media.cache_bytes)
                ctx = ActorContext(
                    config=config, db=db, bus=the_bus, directory=directory, timers=timers,
                    login_limiter=login_limiter, ops_nursery=ops_nursery,
                    rng=random.Random(config.seed), backoff=config.backoff, outbox=outbox,
                    media=media,
                )
                supervisor = DeviceSupervisor(ctx, the_engine, nursery)
                devices = Devices(
                    config=config, db=db, engine=the_engine, bus=the_bus, directory=directory,
                    supervisor=supervisor, login_limiter=login_limiter, outbox=outbox,
                    media=media,
                )
                if isinstance(the_engine, SimulatorEngine):
                    for store in (the_engine.credentials, the_engine.queue):
                        if isinstance(store, DbCredentialStore | DbQueueStore):
                            await store.preload()
                await ops_nursery.start(timers.run)
                await _restore(db, directory, supervisor, start=config.cluster is None)
                try:
                    async with _cluster(config, db, supervisor, directory, ops_nursery) as node:
                        devices.cluster = node
                        if node is not None:  # any node answers for any device
                            node.mirror = await start_mirror(devices, ops_nursery)
                            node.qr_store = await start_qr_store(devices, ctx, ops_nursery)
                        yield devices
                finally:
                    supervisor.aclose()
                    ops_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await the_engine.aclose()


@asynccontextmanager
async def _cluster(
    config: Config,
    db: storage.Store,
    supervisor: DeviceSupervisor,
    directory: DeviceDirectory,
    nursery: trio.Nursery,
) -> AsyncIterator[ClusterNode | None]:
    """The cluster node of ``config`` (None: a single node), joined; it drains on exit.

    Resource handling: the node's lease work gets a store of its own with one connection
    (:data:`LEASE_POOL_SIZE`), which no actor's job ever occupies, so renewals are not
    delayed however busy the main store is; it is closed on exit, after the drain."""
    if config.cluster is None:
        yield None
        return
    if config.database_url is None:
        raise ValueError("a cluster needs PostgreSQL (a database URL)")
    async with (
        open_postgres(config.database_url, pool_size=LEASE_POOL_SIZE) as lease_db,
        open_node(config.cluster, db, lease_db, supervisor, directory, nursery) as node,
    ):
        yield node


async def _restore(
    db: storage.Store, directory: DeviceDirectory, supervisor: DeviceSupervisor, *, start: bool
) -> None:
    """Put every stored device in the directory and (``start``: a single node) start its
    actor (boot restore). In a cluster the lease manager starts the actors of the devices
    this node claims."""
    rows = await db.run(lambda r: r.devices.all())
    hooks = await db.run(lambda r: r.settings.devices_with("webhook"))
    for row in rows:
        directory.put(row)
    for device_id in hooks:
        if device_id in directory:
            directory.set_webhook(device_id)
    if start:
        supervisor.restore_children([(row.id, sm.Status(row.status)) for row in rows])
    log.info("restored %d devices", len(rows))
