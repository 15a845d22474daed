"""Placement: which devices a node takes, at each scan of its lease manager.

Usage (by :class:`~supervisor.cluster.leases.LeaseManager`, inside its lease lock)::

    placement = Placement(config, stats)
    granted = await db_run(partial(placement.claim_part, room))  # one transaction
    await placement.rebalance(db_run)                           # asks, within the rate

Two decisions, both from the cluster as the database shows it now (:class:`ClusterView`):

- the claim: this node's part of the free and expired devices (:func:`.book.claim_limit`), so
  the survivors of a dead node share its devices at once;
- rebalancing: a node that lacks enough of its fair share asks the most loaded nodes for
  devices not in a login (:func:`.book.plan_wants`, ``wanted_by``), at most
  ``rebalance_per_minute``; while devices are being created (the cluster's count grew within
  the last lease) only a node short of half its share asks.

The pure arithmetic is in :mod:`.book`; this module reads the view and keeps the rate's and
the growth's memory. Error handling: the caller's (a failed scan is logged and tried again).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar

import attrs
import trio

import storage
from storage.pg.leases import Lease, NodeRow

from ..config import ClusterConfig
from .book import claim_limit, fair_share, plan_wants
from .fence import leases_of

log = logging.getLogger("wasup.cluster")

T = TypeVar("T")


class DbRun(Protocol):
    """How the lease manager runs a job (its own store, to the end)."""

    def __call__(self, job: Callable[[storage.Repositories], T]) -> Awaitable[T]: ...


class WantCounter(Protocol):
    wanted: int


@attrs.frozen
class ClusterView:
    """The nodes and the devices without a live lease, read in one transaction."""

    nodes: list[NodeRow]
    free: int
    lease_seconds: float

    @property
    def live(self) -> list[NodeRow]:
        """Nodes with a heartbeat younger than the lease, not draining."""
        return [n for n in self.nodes if n.heartbeat_age < self.lease_seconds and not n.draining]

    @property
    def total(self) -> int:
        """Every device of the cluster."""
        return sum(n.devices for n in self.nodes) + self.free


def read_view(lease_seconds: float, r: storage.Repositories) -> ClusterView:
    leases = leases_of(r)
    return ClusterView(leases.nodes(), leases.unleased(), lease_seconds)


def _want(node_id: str, donor: str, count: int, keep: int, r: storage.Repositories) -> list[int]:
    return leases_of(r).want(node_id, donor, count, keep)


@attrs.define(eq=False)
class Placement:
    """See the module docstring."""

    config: ClusterConfig
    stats: WantCounter
    #: When this node asked for devices (trio time), for the rate of rebalancing.
    _asked_at: deque[float] = attrs.field(factory=deque)
    #: The cluster's device count at each rebalancing of the last lease (trio time, count).
    _totals: deque[tuple[float, int]] = attrs.field(factory=deque)

    def claim_part(self, room: int, r: storage.Repositories) -> list[Lease]:
        """Claim this node's part of the free devices (:func:`.book.claim_limit`), at most
        ``room`` (a job: the view and the claim in one transaction)."""
        cfg = self.config
        view = read_view(cfg.lease_seconds, r)
        live = view.live
        takers = [n for n in live if n.capacity is None or n.devices < n.capacity]
        mine = next((n.devices for n in view.nodes if n.node_id == cfg.node_id), 0)
        limit = claim_limit(mine, view.free, view.total, max(1, len(live)), len(takers),
                            cfg.capacity)
        return leases_of(r).claim(cfg.node_id, cfg.lease_seconds, min(room, limit))

    async def rebalance(self, db_run: DbRun) -> None:
        """Ask the most loaded nodes for devices when this node lacks enough of its fair share
        (:func:`.book.plan_wants`), within the rate (``rebalance_per_minute``)."""
        cfg = self.config
        now = trio.current_time()
        while self._asked_at and self._asked_at[0] <= now - 60:
            self._asked_at.popleft()
        budget = cfg.rebalance_per_minute - len(self._asked_at)
        if budget <= 0:
            return
        view = await db_run(partial(read_view, cfg.lease_seconds))
        live = view.live
        if len(live) < 2 or cfg.node_id not in {n.node_id for n in live}:
            return
        total = view.total
        keep = fair_share(total, len(live), None)  # what a donor keeps at least
        counts = {n.node_id: n.settled for n in live}
        growing = self._growing(now, total)
        plan = plan_wants(cfg.node_id, counts, total, cfg.capacity, budget, growing)
        for donor, count in plan.items():
            marked = await db_run(partial(_want, cfg.node_id, donor, count, keep))
            self._asked_at.extend(now for _ in marked)
            self.stats.wanted += len(marked)
            if marked:
                log.info("cluster: asked node %s for %d devices (%d devices on %d nodes)",
                         donor, len(marked), total, len(live))

    def _growing(self, now: float, total: int) -> bool:
        """Whether the cluster had fewer than ``total`` devices at some rebalancing of the
        last lease (devices are being created); notes ``total``."""
        while self._totals and self._totals[0][0] < now - self.config.lease_seconds:
            self._totals.popleft()
        grew = any(before < total for _, before in self._totals)
        self._totals.append((now, total))
        return grew
