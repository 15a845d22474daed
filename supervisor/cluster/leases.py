"""The lease manager: one node's heartbeat, renewals, claims, hand-overs and self-stop.

Usage (by :class:`~supervisor.cluster.node.ClusterNode`)::

    manager = LeaseManager(cluster_config, db, lease_db, supervisor, directory)
    await nursery.start(manager.run)      # joined: heartbeat written, old leases released
    ...
    await manager.drain()                 # every device handed over, the node's row removed

``db`` is the store the devices' actors write through (each behind its lease's fence);
``lease_db`` is the store of the lease work alone (a connection of its own, so the renewals
never queue behind the actors' jobs however many there are).

Three tasks run while the node runs:

- renewal, every ``renew_seconds``: the heartbeat and the renewal of every lease of the node
  in one statement (:meth:`storage.pg.leases.PgLeases.renew`); a device the renewal no longer
  returns is lost (its actor stopped) unless it was deleted (its actor, which deleted it,
  ends by itself), and a device a live node asked for (``wanted_by``) is handed over: its
  actor stopped, then its lease released (the asks of dead or draining nodes are cleared);
- the scan, every ``scan_seconds``: this node's part of the free and expired devices claimed
  (the survivors of a dead node share its devices) up to the capacity, an actor started for
  each; then rebalancing: a node that lacks enough of its fair share asks the most loaded
  nodes for devices not in a login, at most ``rebalance_per_minute`` (both decisions:
  :mod:`.placement`);
- the watchdog: when the node's belief in its leases ends by its own clock (no successful
  renewal for ``lease - margin`` seconds, :mod:`.book`), every engine is stopped at once.

One process runs a node id at a time: :meth:`LeaseManager.run` joins with a random run token
(:meth:`storage.pg.leases.PgLeases.join`), and every later lease job checks first that the
node's row still carries it. When another process started with the same node id took the id
over, the job finds another token: this node stops every engine at once, logs why, and
:meth:`LeaseManager.run` raises :class:`NodeIdTaken` (``wasup serve`` exits with an error);
its drain then leaves the database alone (the leases are the other process's now).

Lease operations of the node run one at a time (a lock, held until the database answered:
their jobs are shielded from cancellation, since a cancelled job still runs to its end), so
answers are applied in the order the statements ran, and the node's own transactions never
wait for each other. Creations queue among themselves before they queue for that lock, so a
renewal waits for one creation at most, not for a burst of them. Error handling: a failed renewal or scan is logged (once per outage) and
tried again at the next period; the watchdog alone decides when the node stops its engines.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import attrs
import trio

import storage
from storage.models import DeviceRow
from storage.pg.leases import Joined, Lease

from .. import state as sm
from ..children import DeviceSupervisor
from ..config import ClusterConfig
from ..directory import DeviceDirectory
from ..errors import Restarting
from .book import LeaseBook, LeaseTiming
from .fence import FencedStore, leases_of
from .placement import Placement

log = logging.getLogger("wasup.cluster")

T = TypeVar("T")

#: Devices claimed at most per scan when the capacity is unbounded.
UNBOUNDED_CLAIM = 10_000


@attrs.define
class LeaseStats:
    """Counters of one node's lease work since start (``/metrics``)."""

    claimed: int = 0
    lost: int = 0
    handed_over: int = 0
    self_stops: int = 0
    fenced_writes: int = 0
    renewals: int = 0
    failed_renewals: int = 0
    wanted: int = 0


class NodeIdTaken(Restarting):
    """Another process started with this node's id took it over: this one stopped its engines
    and must end (its lease work would fight the other's). A call that meets it meanwhile (a
    device created here) answers 503: another node serves it."""

    def __init__(self, node_id: str) -> None:
        super().__init__(
            f"node id {node_id!r} was taken over by another process started with the same "
            "node id: this one stopped its engines (give each node its own --node-id)"
        )
        self.node_id = node_id


def timing_of(config: ClusterConfig) -> LeaseTiming:
    return LeaseTiming(config.lease_seconds, config.renew_seconds, config.scan_seconds)


@attrs.define(eq=False)
class LeaseManager:
    """See the module docstring."""

    config: ClusterConfig
    #: The store the actors write through (fenced).
    db: storage.Store
    #: The store of the lease work (its own connection; see the module docstring).
    lease_db: storage.Store
    supervisor: DeviceSupervisor
    directory: DeviceDirectory
    book: LeaseBook = attrs.field(init=False)
    #: This process's token in the node's row (see the module docstring).
    run_token: str = attrs.field(factory=lambda: secrets.token_hex(16))
    #: Whether another process took this node id over (the node stopped its engines).
    taken_over: bool = False
    stats: LeaseStats = attrs.field(factory=LeaseStats)
    draining: bool = False
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    #: Taken by a creation before ``_lock`` (see the module docstring).
    _creating: trio.Lock = attrs.field(factory=trio.Lock)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _scan_now: trio.Event = attrs.field(factory=trio.Event)
    placement: Placement = attrs.field(init=False)
    _failing: bool = False
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def __attrs_post_init__(self) -> None:
        self.book = LeaseBook(timing_of(self.config))
        self.placement = Placement(self.config, self.stats)

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def owns(self, device_id: int) -> bool:
        """Whether this node holds the device's lease by its clock and its actor runs."""
        return (self.book.owns(device_id, trio.current_time())
                and device_id in self.supervisor.children)

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the cluster, then renew, scan and watch until cancelled or drained. Raises
        :class:`NodeIdTaken` once another process took the node id over (engines stopped)."""
        with self._scope:
            await self._join()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renewals)
                nursery.start_soon(self._scans)
                nursery.start_soon(self._watchdog)
        if self.taken_over and not self.draining:
            raise NodeIdTaken(self.node_id)

    async def _join(self) -> None:
        """Take the node id (this process's run token in its row, the heartbeat written) and
        free what an earlier process of the id still holds (new epochs: nothing it still
        writes is accepted); waits out an outage."""
        cfg = self.config

        def job(r: storage.Repositories) -> Joined:
            return leases_of(r).join(cfg.node_id, self.run_token, cfg.advertise_url, cfg.capacity)

        while True:
            try:
                with trio.CancelScope(shield=True):
                    joined = await self.lease_db.run(job)
                break
            except storage.StorageUnavailable as exc:
                log.warning("cluster: cannot join yet (%s); trying again", exc)
                await trio.sleep(self.config.renew_seconds)
        age = joined.previous_age
        if age is not None and age < cfg.lease_seconds:
            log.warning(
                "cluster: node id %s was in use by another process until %.1f s ago (an "
                "earlier run that was killed, or a second process with this id, which now "
                "stops its engines): its %d devices are claimed again once their leases end",
                cfg.node_id, age, len(joined.released),
            )
        log.info("cluster: node %s joined (%d leases of an earlier run released)",
                 cfg.node_id, len(joined.released))

    async def _renewals(self) -> None:
        while True:
            await trio.sleep(self.config.renew_seconds)
            await self.renew_once()

    async def _scans(self) -> None:
        while True:
            await self.scan_once()
            with trio.move_on_after(self.config.scan_seconds):
                await self._scan_now.wait()
            self._scan_now = trio.Event()

    async def _watchdog(self) -> None:
        """Stop every engine whose lease this node can no longer be sure of (the self-stop)."""
        while True:
            changed = self._changed = trio.Event()
            with trio.move_on_at(self.book.deadline()):
                await changed.wait()
            now = trio.current_time()
            gone = self.book.expired(now)
            if gone:
                self.stats.self_stops += 1
                log.error(
                    "cluster: no lease renewal for %.1f s: stopping the engines of %d devices",
                    self.book.timing.lease - self.book.timing.margin, len(gone),
                )
                for device_id in gone:
                    self.supervisor.stop_child(device_id)

    async def _db_run(self, job: Callable[[storage.Repositories], T]) -> T:
        """Run a lease job on the lease store, to its end even when the caller is cancelled
        meanwhile (the job would run on regardless: see the module docstring), after checking
        in its transaction that this process still runs the node id.

        Raises :class:`NodeIdTaken` (having stopped every engine) when it does not."""
        node_id, token = self.node_id, self.run_token

        def checked(r: storage.Repositories) -> T:
            if not leases_of(r).runs(node_id, token):
                raise NodeIdTaken(node_id)
            return job(r)

        with trio.CancelScope(shield=True):
            try:
                result = await self.lease_db.run(checked)
            except NodeIdTaken:
                self._taken()
                raise
        return result

    def _taken(self) -> None:
        """Another process runs this node id now: stop every engine at once and end."""
        if self.taken_over:
            return
        self.taken_over = True
        self.book.held.clear()
        self._book_changed()
        running = list(self.supervisor.children)
        log.error(
            "cluster: node id %s was taken over by another process started with the same node "
            "id: stopping the engines of %d devices and leaving the node to it",
            self.node_id, len(running),
        )
        for device_id in running:
            self.supervisor.stop_child(device_id)
        self._scope.cancel()

    def _book_changed(self) -> None:
        self._changed.set()

    # -- one round of each -------------------------------------------------------------------

    async def renew_once(self) -> None:
        """Heartbeat and renew; stop lost devices, hand over wanted ones, start found ones."""
        cfg = self.config

        def job(r: storage.Repositories) -> list[Lease]:
            leases = leases_of(r)
            leases.heartbeat(cfg.node_id, cfg.advertise_url, cfg.capacity, self.draining)
            return leases.renew(cfg.node_id, cfg.lease_seconds)

        async with self._lock:
            sent = trio.current_time()
            try:
                held = await self._db_run(job)
            except NodeIdTaken:
                return  # every engine stopped; the manager ends
            except Exception as exc:
                self.stats.failed_renewals += 1
                if not self._failing:
                    log.error("cluster: lease renewal failed (%s); the engines stop in %.1f s "
                              "without one", exc, max(0.0, self.book.deadline() - sent))
                self._failing = True
                return
            if self._failing:
                log.warning("cluster: lease renewal works again")
            self._failing = False
            self.stats.renewals += 1
            lost, gained = self.book.renewed(
                sent, {lease.device_id: lease.epoch for lease in held}, trio.current_time()
            )
            self._book_changed()
            if lost:
                lost = await self._not_deleted(lost)
            for device_id in lost:
                self.stats.lost += 1
                log.warning("cluster: device %d: lease lost, engine stopped", device_id)
                self.supervisor.stop_child(device_id)
            await self._start(gained)
            wanted = [
                lease.device_id for lease in held
                if lease.wanted_by not in (None, cfg.node_id) and self.book.owns(lease.device_id, sent)
            ]
            if wanted:
                await self._hand_over(wanted)

    async def scan_once(self) -> None:
        """Claim this node's part of the free and expired devices up to the capacity, then ask
        for a fair share."""
        if self.draining:
            return
        async with self._lock:
            room = self._room()
            try:
                if room > 0:
                    sent = trio.current_time()
                    granted = await self._db_run(partial(self.placement.claim_part, room))
                    await self._granted(sent, granted)
                await self.placement.rebalance(self._db_run)
            except Exception as exc:
                if not self._failing:
                    log.error("cluster: scan for free devices failed: %s", exc)

    async def create(
        self, insert: Callable[[storage.Repositories], DeviceRow]
    ) -> tuple[DeviceRow, bool]:
        """Store a device created on this node (``insert``) and, in the same transaction,
        claim it if there is room (no other node's scan can take it first); start its actor.
        Returns the row and whether the device runs here (else another node claims it at its
        next scan)."""
        cfg = self.config
        async with self._creating, self._lock:
            room = 0 if self.draining else self._room()

            def job(r: storage.Repositories) -> tuple[DeviceRow, list[Lease]]:
                row = insert(r)
                if room <= 0:
                    return row, []
                return row, leases_of(r).claim(cfg.node_id, cfg.lease_seconds, 1, [row.id])

            sent = trio.current_time()
            row, granted = await self._db_run(job)
            await self._granted(sent, granted)  # its actor starts from the row as stored
        return row, self.owns(row.id)

    def fenced(self, device_id: int) -> None:
        """An actor's write was refused (the fence): the device is no longer this node's."""
        self.stats.fenced_writes += 1
        if self.book.drop(device_id):
            self._book_changed()
        log.error("cluster: device %d: a write was fenced (lease moved); engine stopped", device_id)

    async def drain(self) -> None:
        """Hand every device over and leave: mark the node draining, stop every actor, release
        every lease and remove the node's row. The other nodes claim the devices at their next
        scan. Error handling: a database that cannot be reached leaves the leases to expire."""
        if self.draining:
            return
        self.draining = True
        self._scope.cancel()
        async with self._lock:  # a lease job in flight ends first
            if self.taken_over:  # the leases and the row are the other process's
                await self._stop_all(list(self.supervisor.children))
                return
            await self._leave()

    async def _leave(self) -> None:
        cfg = self.config
        ids = list(self.book.held)
        self.book.held.clear()
        self._book_changed()
        try:
            await self._db_run(lambda r: leases_of(r).heartbeat(
                cfg.node_id, cfg.advertise_url, cfg.capacity, True))
        except Exception as exc:
            log.error("cluster: cannot mark node %s draining: %s", cfg.node_id, exc)
        await self._stop_all(ids)
        if self.taken_over:  # found meanwhile: the leases are the other process's
            return

        def job(r: storage.Repositories) -> list[int]:
            leases = leases_of(r)
            leases.leave(cfg.node_id)  # the nodes row first, as every job of the node locks
            return leases.release(cfg.node_id)

        try:
            released = await self._db_run(job)
        except Exception as exc:
            log.error("cluster: could not release the leases (%s); they expire by themselves",
                      exc)
            return
        self.stats.handed_over += len(released)
        log.info("cluster: node %s drained: %d devices handed over", cfg.node_id, len(released))

    # -- helpers -----------------------------------------------------------------------------

    def _room(self) -> int:
        capacity = self.config.capacity
        if capacity is None:
            return UNBOUNDED_CLAIM
        return capacity - len(self.book.held)

    async def _granted(self, sent: float, granted: Sequence[Lease]) -> None:
        started = self.book.claimed(
            sent, [(lease.device_id, lease.epoch) for lease in granted], trio.current_time()
        )
        self._book_changed()
        self.stats.claimed += len(started)
        if started:
            log.info("cluster: claimed %d devices", len(started))
        await self._start(started)

    async def _start(self, device_ids: Sequence[int]) -> None:
        """Start the actors of devices just claimed, from their rows as stored now."""
        if not device_ids:
            return

        def job(r: storage.Repositories) -> list[tuple[int, DeviceRow | None, bool]]:
            return [
                (d, r.devices.get(d), r.settings.get(d, "webhook") is not None)
                for d in device_ids
            ]

        for device_id, row, hooked in await self._db_run(job):
            epoch = self.book.epoch(device_id)
            if row is None or epoch is None:  # deleted meanwhile
                self.book.drop(device_id)
                continue
            self.directory.put(row)
            if hooked:
                self.directory.set_webhook(device_id)
            old = self.supervisor.stop_child(device_id)
            if old is not None:
                await old.done.wait()
            store = FencedStore(self.db, device_id, self.node_id, epoch, self.fenced)
            await self.supervisor.start_child(device_id, sm.Status(row.status), db=store)

    async def _not_deleted(self, device_ids: list[int]) -> list[int]:
        """Those of ``device_ids`` (leases the renewal did not find) whose devices still exist.
        A deleted device's lease row went with it: its actor deleted it and ends by itself,
        and stopping it could cancel the delete's answer to its caller."""

        def job(r: storage.Repositories) -> list[int]:
            return [d for d in device_ids if r.devices.get(d) is not None]

        try:
            return await self._db_run(job)
        except Exception:  # cannot tell: stop them all, the safe side
            return device_ids

    async def _stop_all(self, device_ids: Sequence[int]) -> None:
        """Stop these actors together and wait until their engines stopped."""
        children = [self.supervisor.stop_child(d) for d in device_ids]
        for child in children:
            if child is not None:
                await child.done.wait()

    async def _hand_over(self, device_ids: list[int]) -> None:
        """Give devices other nodes asked for: stop their actors, then release the leases."""
        for device_id in device_ids:
            self.book.drop(device_id)
        self._book_changed()
        await self._stop_all(device_ids)
        cfg = self.config
        released = await self._db_run(lambda r: leases_of(r).release(cfg.node_id, device_ids))
        self.stats.handed_over += len(released)
        log.info("cluster: handed %d devices over to the nodes that asked", len(released))
