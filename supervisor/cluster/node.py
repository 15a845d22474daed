"""This wasup node in a cluster, as the rest of wasup sees it: ``Devices.cluster``.

Usage::

    node = devices.cluster                # None on a single node
    if node is not None and not node.owns(device_id):
        owner = await node.owner(device_id)   # NodeRow of the owner, or None (being moved)
        ...forward the command to owner.advertise_url, signed with node.secret...
    for info in await node.nodes(): ...

:meth:`ClusterNode.owns` answers from this node's own lease book and clock (no I/O): True
while this node holds the device's lease and runs its actor. :meth:`ClusterNode.owner` and
:meth:`ClusterNode.nodes` read the database. The lease work itself is the
:class:`~supervisor.cluster.leases.LeaseManager`'s; :func:`open_node` runs it, on a store of
its own (``lease_db``), so that the actors' jobs, however many, never delay a renewal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio

import storage
from storage.models import DeviceRow
from storage.pg.leases import NodeRow

from ..children import DeviceSupervisor
from ..config import ClusterConfig
from ..directory import DeviceDirectory
from .fence import leases_of
from .leases import LeaseManager, LeaseStats

#: Seconds the drain at shutdown may take before the node leaves its leases to expire.
DRAIN_DEADLINE = 10.0


class MirrorCounts(Protocol):
    """The counters of :class:`~supervisor.cluster.mirror.Mirror`."""

    refreshed: int
    reloads: int


class QrWrites(Protocol):
    """The counter of :class:`~supervisor.cluster.qr_store.QrStore`."""

    writes: int


@attrs.define(eq=False)
class ClusterNode:
    """See the module docstring."""

    config: ClusterConfig
    db: storage.Store
    manager: LeaseManager
    #: The mirror of the rows of other nodes' devices and the store of this node's QR codes,
    #: once started (their counters are in ``/metrics``).
    mirror: MirrorCounts | None = None
    qr_store: QrWrites | None = None

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def secret(self) -> bytes:
        """The cluster secret (forwarded requests are signed with it)."""
        return self.config.secret.encode()

    @property
    def advertise_url(self) -> str:
        return self.config.advertise_url

    @property
    def stats(self) -> LeaseStats:
        return self.manager.stats

    def owns(self, device_id: int) -> bool:
        """Whether this node holds the device's live lease by its own clock (and runs its
        actor)."""
        return self.manager.owns(device_id)

    def held(self) -> int:
        """Devices this node holds now."""
        now = trio.current_time()
        return sum(1 for d in self.manager.book.held if self.manager.book.owns(d, now))

    def alive(self, info: NodeRow) -> bool:
        """Whether ``info``'s node is live (its heartbeat younger than the lease)."""
        return info.heartbeat_age < self.config.lease_seconds

    async def owner(self, device_id: int) -> NodeRow | None:
        """The node holding the device's live lease (the database's view), or None while it is
        free or expired (being moved), or for no such device."""
        owner: NodeRow | None = await self.db.run(lambda r: leases_of(r).owner(device_id))
        return owner

    async def owner_id(self, device_id: int) -> str | None:
        """The id of the node holding the device's live lease (this one's without a query),
        or None while it moves."""
        if self.owns(device_id):
            return self.node_id
        owner = await self.owner(device_id)
        return None if owner is None else owner.node_id

    async def nodes(self) -> list[NodeRow]:
        """Every node of the cluster, by id."""
        nodes: list[NodeRow] = await self.db.run(lambda r: leases_of(r).nodes())
        return nodes

    async def drain(self) -> None:
        """Hand every device over and leave the cluster (shutdown; once: later calls return at
        once). The node keeps answering meanwhile; its devices run elsewhere after."""
        with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_DEADLINE):
            await self.manager.drain()

    async def create(
        self, insert: Callable[[storage.Repositories], DeviceRow]
    ) -> tuple[DeviceRow, bool]:
        """Store a device created on this node and claim it in the same transaction if there is
        room; the row and whether it runs here (:meth:`LeaseManager.create`)."""
        return await self.manager.create(insert)


@asynccontextmanager
async def open_node(
    config: ClusterConfig,
    db: storage.Store,
    lease_db: storage.Store,
    supervisor: DeviceSupervisor,
    directory: DeviceDirectory,
    nursery: trio.Nursery,
) -> AsyncIterator[ClusterNode]:
    """Join the cluster and run the lease manager in ``nursery``; yield the node. ``db`` is
    the store the actors write through (and API reads use); ``lease_db`` the lease work's own
    (its connection is never taken by an actor's job).

    Error handling: when another process started with the same node id takes it over, the
    manager stops every engine and raises :class:`~supervisor.cluster.leases.NodeIdTaken` in
    ``nursery`` (the node must end).

    Resource handling: on exit (normal or not) the node drains (:meth:`ClusterNode.drain`, if
    it did not before): every device is handed over and the node's row removed, within
    ``DRAIN_DEADLINE`` seconds (shielded from cancellation); what is left expires by itself.
    """
    manager = LeaseManager(config, db, lease_db, supervisor, directory)
    await nursery.start(manager.run)
    node = ClusterNode(config, db, manager)
    try:
        yield node
    finally:
        await node.drain()
