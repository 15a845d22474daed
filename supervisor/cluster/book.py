"""What a node believes it owns: the lease book, and the pure decisions of the lease protocol.

Synopsis::

    book = LeaseBook(LeaseTiming(lease=15, renew=5, scan=2))
    sent = trio.current_time()
    granted = await db.run(... claim ...)           # the database's answer
    started = book.claimed(sent, granted, now=trio.current_time())
    book.owns(device_id, trio.current_time())       # by this node's own clock

The database keeps a lease until ``now() + lease`` by ITS clock, counted from the moment it
ran the claim or renewal, which is after this node sent it. So the node believes it holds a
device until ``sent + lease - margin`` by its own clock (:meth:`LeaseTiming.held_until`): the
belief ends before the database's lease can expire, even if the answer came late, the node
was paused (a paused node's monotonic clock goes on), or its clock runs slower than the
database's by up to :data:`MAX_DRIFT`. When a belief ends the node stops the device's engine
(the self-stop); a renewal that did not answer in time cannot prolong it.

The margin is ``lease / 5`` (3 s of the default 15 s): it covers the clock drift and the time
an engine takes to stop. Renewals come every ``renew`` seconds, and ``renew + margin < lease``
is required (:meth:`LeaseTiming.check`), so a node that renews on time never self-stops, and
one renewal may fail without losing anything.

The model test (tests/test_cluster_model.py) drives several LeaseBooks against a model of the
database's SQL in virtual time, with pauses, delays and drift, and checks that no two nodes
ever believe they own one device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

#: The margin, as a share of the lease.
MARGIN_SHARE = 0.2
#: How much slower than the database's a node's clock may run (a share: 1 %).
MAX_DRIFT = 0.01


@attrs.frozen
class LeaseTiming:
    """The lease timings of a cluster (seconds; see the module docstring)."""

    lease: float = 15.0
    renew: float = 5.0
    scan: float = 2.0

    @property
    def margin(self) -> float:
        return self.lease * MARGIN_SHARE

    def held_until(self, sent_at: float) -> float:
        """When a lease granted or renewed by a statement sent at ``sent_at`` (this node's
        clock) stops being this node's by its own clock."""
        return sent_at + self.lease - self.margin

    def check(self) -> str | None:
        """Why these timings are unsafe or unusable, or None."""
        if not all(math.isfinite(v) and v > 0 for v in (self.lease, self.renew, self.scan)):
            return "the lease timings must be positive numbers of seconds"
        if self.renew + self.margin >= self.lease:
            return (
                f"lease-renew-seconds ({self.renew:g}) plus the safety margin ({self.margin:g}, "
                f"a fifth of the lease) must be less than lease-seconds ({self.lease:g})"
            )
        return None


@attrs.frozen
class Held:
    """A lease this node holds: its fencing epoch, and until when by this node's clock."""

    epoch: int
    until: float


@attrs.define
class LeaseBook:
    """The leases one node believes it holds (see the module docstring). Pure: no I/O, no
    clock of its own; every method is given the node's time."""

    timing: LeaseTiming
    held: dict[int, Held] = attrs.field(factory=dict)

    def owns(self, device_id: int, now: float) -> bool:
        held = self.held.get(device_id)
        return held is not None and now < held.until

    def epoch(self, device_id: int) -> int | None:
        held = self.held.get(device_id)
        return None if held is None else held.epoch

    def claimed(self, sent_at: float, granted: Iterable[tuple[int, int]], now: float) -> list[int]:
        """A claim sent at ``sent_at`` was granted ``(device, epoch)`` pairs; returns the devices
        to start (none if the answer came too late to be believed)."""
        until = self.timing.held_until(sent_at)
        started = []
        for device_id, epoch in granted:
            if now < until:
                self.held[device_id] = Held(epoch, until)
                started.append(device_id)
        return started

    def renewed(
        self, sent_at: float, still: Mapping[int, int], now: float
    ) -> tuple[list[int], list[int]]:
        """A renewal sent at ``sent_at`` answered the leases still held (device → epoch);
        returns ``(lost, gained)``: the devices to stop (held here, not there, or with another
        epoch) and those to start (held there, not here: a lease believed ended by the clock
        that the renewal found still live)."""
        until = self.timing.held_until(sent_at)
        lost = [d for d, h in self.held.items() if still.get(d) != h.epoch]
        for device_id in lost:
            del self.held[device_id]
        gained = []
        if now < until:
            for device_id, epoch in still.items():
                if device_id not in self.held:
                    gained.append(device_id)
                self.held[device_id] = Held(epoch, until)
        return sorted(lost), sorted(gained)

    def expired(self, now: float) -> list[int]:
        """The devices whose belief ended by ``now`` (the self-stop), taken out of the book."""
        gone = sorted(d for d, h in self.held.items() if now >= h.until)
        for device_id in gone:
            del self.held[device_id]
        return gone

    def drop(self, device_id: int) -> bool:
        """Forget the device (released, deleted or fenced); whether it was held."""
        return self.held.pop(device_id, None) is not None

    def deadline(self) -> float:
        """When the next belief ends (inf: none held)."""
        return min((h.until for h in self.held.values()), default=math.inf)


#: A node asks for devices only when it lacks at least this many of its even share ...
MIN_SHORTFALL = 2
#: ... and at least this part of it (rounded up): see :func:`shortfall_tolerance`.
SHORTFALL_SHARE = 0.05


def fair_share(devices: int, live_nodes: int, capacity: int | None) -> int:
    """The devices one of ``live_nodes`` should hold at most: its share, rounded up, within its
    ``capacity`` (None: unbounded). A node holding more gives the rest to a node that asks."""
    share = -(-devices // max(1, live_nodes))
    return share if capacity is None else min(share, capacity)


def even_share(devices: int, live_nodes: int, capacity: int | None) -> int:
    """The devices one of ``live_nodes`` should hold at least: its share, rounded down, within
    its ``capacity``. A node that lacks enough of it asks (:func:`plan_wants`)."""
    share = devices // max(1, live_nodes)
    return share if capacity is None else min(share, capacity)


def shortfall_tolerance(share: int, growing: bool = False) -> int:
    """How many devices a node must lack of its even ``share`` before it asks for any: at
    least :data:`MIN_SHORTFALL` and :data:`SHORTFALL_SHARE` of the share; while the cluster's
    devices are ``growing`` (devices created within the last lease), at least half the share.

    While devices are being created on every node the counts differ by a few at any moment,
    one node ahead now, another a moment later: such differences move nothing (what is left
    once the creations stopped for a lease is evened out then). A node that joins (it lacks
    its whole share) or comes back after a failover asks at once, creations or not.
    """
    tolerance = max(MIN_SHORTFALL, math.ceil(share * SHORTFALL_SHARE))
    return max(tolerance, math.ceil(share / 2)) if growing else tolerance


def claim_limit(mine: int, free: int, devices: int, live_nodes: int, takers: int,
                capacity: int | None) -> int:
    """How many of the ``free`` devices (no live lease: a dead node's, released ones) this
    node, holding ``mine`` of the cluster's ``devices``, claims at one scan: its part of them
    among the ``takers`` (live nodes with room, itself included), rounded up, or what it lacks
    of its :func:`fair_share` among the ``live_nodes`` if that is more.

    Every live node scans within the scan interval, so a dead node's devices spread over the
    survivors at once (each logs in its part through its own login limiter) instead of going
    to whichever node scanned first and moving again later; the part rounded up, and the
    fair-share term for the nodes that scan after the first, leave none unclaimed. A lone
    node takes them all."""
    if free <= 0:
        return 0
    part = -(-free // max(1, takers))
    return max(part, fair_share(devices, live_nodes, capacity) - mine)


def balanced(counts: Iterable[int], share: int) -> bool:
    """Whether no node of these device ``counts`` (one per live node, every device held,
    unbounded capacities) would ask for devices once creations stopped (:func:`plan_wants`);
    ``share``: their :func:`fair_share`."""
    held = list(counts)
    even = min(share, sum(held) // max(1, len(held)))
    return all(even - count < shortfall_tolerance(even) for count in held)


def plan_wants(
    me: str,
    counts: Mapping[str, int],
    devices: int,
    capacity: int | None,
    budget: int,
    growing: bool = False,
) -> dict[str, int]:
    """How many devices this node (``me``, of ``capacity``) asks each other node for, of
    ``devices`` in the cluster: nothing unless it lacks :func:`shortfall_tolerance` devices of
    its :func:`even_share` or more (``growing``: devices were created within the last lease);
    then up to its :func:`fair_share` and at most ``budget`` in all, from the nodes holding
    more than the fair share (unbounded), the most loaded first.

    ``counts``: the devices of each live node (``me`` included) as they will be once the
    devices already asked for moved (:attr:`storage.pg.leases.NodeRow.settled`), so two nodes
    asking at once never take a node below its share."""
    live = len(counts)
    mine = counts.get(me, 0)
    even = even_share(devices, live, capacity)
    if even - mine < shortfall_tolerance(even, growing):
        return {}
    need = min(budget, fair_share(devices, live, capacity) - mine)
    keep = fair_share(devices, live, None)
    plan: dict[str, int] = {}
    for node, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if need <= 0:
            break
        excess = count - keep
        if node == me or excess <= 0:
            continue
        take = min(excess, need)
        plan[node] = take
        need -= take
    return plan
