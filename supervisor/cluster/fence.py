"""Fencing: the database as one device's actor sees it in a cluster, each job checked against
the device's lease.

Synopsis::

    db = FencedStore(store, device_id=7, node_id="node-a", epoch=12, on_lost=node.fenced)
    await db.run(job)     # raises LeaseLost, having changed nothing, if the lease moved

Every job of the actor (its state, history rows, logged events, webhook outbox rows, sends)
runs after :meth:`storage.pg.leases.PgLeases.holds` in the same transaction: if this node no
longer holds the device's live lease with the epoch the actor was started with, the job does
not run, the transaction changes nothing, ``on_lost`` is told (the node stops the actor's
engine at once) and :class:`LeaseLost` is raised. The check locks the lease row (a key share
lock), so a claim by another node cannot take the device while a fenced write is in flight,
and the write that follows the claim is refused; the owner's renewals do not wait for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs

from storage.interface import Repositories, Store
from storage.models import DatabaseStatistics, Outage
from storage.pg.leases import PgLeases
from storage.pg.repositories import PgRepositories

T = TypeVar("T")


class LeaseLost(Exception):
    """This node no longer holds the device's lease: the write changed nothing."""

    def __init__(self, device_id: int, epoch: int) -> None:
        super().__init__(f"device {device_id}: lease (epoch {epoch}) lost, write refused")
        self.device_id = device_id
        self.epoch = epoch


def leases_of(repos: Repositories) -> PgLeases:
    """The lease repository of a job's repositories (a cluster runs on PostgreSQL only)."""
    if not isinstance(repos, PgRepositories):
        raise TypeError("a cluster needs PostgreSQL")
    return repos.leases


@attrs.define(eq=False)
class FencedStore:
    """A :class:`storage.Store` whose every job is fenced by one device's lease."""

    store: Store
    device_id: int
    node_id: str
    epoch: int
    #: Told (device id) when a job found the lease gone, before LeaseLost is raised.
    on_lost: Callable[[int], None]

    async def run(self, job: Callable[[Repositories], T]) -> T:
        def fenced(repos: Repositories) -> tuple[bool, T | None]:
            if not leases_of(repos).holds(self.device_id, self.node_id, self.epoch):
                return False, None
            return True, job(repos)

        held, value = await self.store.run(fenced)
        if not held:
            self.on_lost(self.device_id)
            raise LeaseLost(self.device_id, self.epoch)
        return value  # type: ignore[return-value]  # None only for a job returning None

    def statistics(self) -> DatabaseStatistics:
        return self.store.statistics()

    @property
    def outage(self) -> Outage | None:
        return self.store.outage

    def raise_if_unavailable(self) -> None:
        self.store.raise_if_unavailable()

    async def probe(self) -> Outage | None:
        return await self.store.probe()
