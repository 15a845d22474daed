"""A model of the lease protocol in virtual time (hypothesis): several nodes, each deciding
with the real :class:`supervisor.cluster.book.LeaseBook`, against a model of the database's
lease statements (storage/pg/leases.py: claim, renew, release, the fence), with any
interleaving of claims, renewals, hand-overs and fenced writes, statements that take any time
to reach the database and to answer, nodes paused for longer than the lease, and node clocks
that drift from the database's within :data:`~supervisor.cluster.book.MAX_DRIFT`.

What must hold at every moment: no two nodes believe they own one device; what a node
believes it owns, the database shows as its live lease with the same epoch; and the writes
the fence lets through for a device carry epochs that never go down.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.cluster.book import MAX_DRIFT, LeaseBook, LeaseTiming

TIMING = LeaseTiming(lease=15.0, renew=5.0, scan=2.0)
DEVICES = 3
NODES = 3


@attrs.define
class DbLease:
    owner: int | None = None
    expires: float = 0.0
    epoch: int = 0


@attrs.define
class ModelDb:
    """The lease statements of storage/pg/leases.py, by the database's (the real) clock."""

    leases: dict[int, DbLease] = attrs.field(
        factory=lambda: {d: DbLease() for d in range(DEVICES)})
    #: Per device, the epochs of the fenced writes let through, in the order they ran.
    written: dict[int, list[int]] = attrs.field(factory=dict)

    def live(self, lease: DbLease, now: float) -> bool:
        return lease.owner is not None and lease.expires > now

    def claim(self, node: int, now: float, *, limit: int) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        for d, lease in sorted(self.leases.items()):
            if len(got) < limit and not self.live(lease, now):
                lease.owner, lease.expires, lease.epoch = node, now + TIMING.lease, lease.epoch + 1
                got.append((d, lease.epoch))
        return got

    def renew(self, node: int, now: float) -> dict[int, int]:
        held = {}
        for d, lease in self.leases.items():
            if lease.owner == node and lease.expires > now:
                lease.expires = now + TIMING.lease
                held[d] = lease.epoch
        return held

    def release(self, node: int, device: int, now: float) -> None:
        lease = self.leases[device]
        if lease.owner == node:
            lease.owner, lease.expires, lease.epoch = None, 0.0, lease.epoch + 1

    def write(self, node: int, device: int, epoch: int, now: float) -> bool:
        lease = self.leases[device]
        if lease.owner == node and lease.epoch == epoch and lease.expires > now:
            self.written.setdefault(device, []).append(epoch)
            return True
        return False


@attrs.define
class Node:
    book: LeaseBook
    rate: float  # its clock's speed against the database's
    offset: float
    paused_until: float = 0.0
    busy: bool = False  # a lease statement in flight (the real node's lock)

    def clock(self, t: float) -> float:
        return self.offset + self.rate * t


#: One step: advance real time, then node ``node`` does ``op`` (if it is not paused), its
#: statement reaching the database after ``there`` seconds and answering ``back`` later.
Step = tuple[float, int, str, float, float, int]

steps = st.lists(
    st.tuples(
        st.floats(0, 2 * TIMING.lease),
        st.integers(0, NODES - 1),
        st.sampled_from(["claim", "renew", "renew", "renew", "pause", "release", "write"]),
        st.floats(0, TIMING.lease),
        st.floats(0, TIMING.lease),
        st.integers(0, DEVICES - 1),
    ),
    max_size=60,
)
clocks = st.lists(
    st.tuples(st.floats(1 - MAX_DRIFT, 1 + MAX_DRIFT), st.floats(-1000, 1000)),
    min_size=NODES, max_size=NODES,
)


def check(db: ModelDb, nodes: list[Node], t: float) -> None:
    for d in range(DEVICES):
        believers = [i for i, n in enumerate(nodes) if n.book.owns(d, n.clock(t))]
        assert len(believers) <= 1, f"device {d} owned by nodes {believers} at {t}"
        for i in believers:
            lease = db.leases[d]
            assert lease.owner == i and lease.expires > t, f"node {i} believes past its lease"
            assert lease.epoch == nodes[i].book.epoch(d)
    for epochs in db.written.values():
        assert epochs == sorted(epochs), "a fenced write with an older epoch got through"


def simulate(plan: list[Step], node_clocks: list[tuple[float, float]]) -> ModelDb:
    db = ModelDb()
    nodes = [Node(LeaseBook(TIMING), rate, offset) for rate, offset in node_clocks]
    events: list[tuple[float, int, Callable[[float], None]]] = []
    order = itertools.count()

    def at(t: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(events, (t, next(order), fn))

    def run_until(t: float) -> None:
        while events and events[0][0] <= t:
            when, _, fn = heapq.heappop(events)
            check(db, nodes, when)  # just before: beliefs only end with time
            fn(when)
            check(db, nodes, when)

    def answer(i: int, t: float, apply: Callable[[float], object]) -> None:
        """Deliver an answer to node ``i`` at ``t``, or when it resumes."""
        node = nodes[i]
        if t < node.paused_until:
            at(node.paused_until, lambda u: answer(i, u, apply))
            return
        apply(t)
        node.busy = False

    def statement(i: int, t: float, there: float, back: float,
                  run: Callable[[float], Any], then: Callable[[float, Any, float], object]) -> None:
        node = nodes[i]
        node.busy = True
        sent = node.clock(t)

        def at_db(u: float) -> None:
            result = run(u)
            at(u + back, lambda w: answer(i, w, lambda x: then(sent, result, node.clock(x))))

        at(t + there, at_db)

    t = 0.0
    for dt, i, op, there, back, device in plan:
        t += dt
        run_until(t)
        node = nodes[i]
        if t < node.paused_until:
            continue
        if op == "pause":
            node.paused_until = t + there + back + TIMING.lease  # longer than a lease at times
            continue
        if op == "write":
            epoch = node.book.epoch(device)
            if node.book.owns(device, node.clock(t)) and epoch is not None:
                at(t + there, partial(_fenced_write, db, nodes, i, device, epoch))
            continue
        if node.busy:
            continue
        if op == "claim":
            statement(i, t, there, back, partial(db.claim, i, limit=2), node.book.claimed)
        elif op == "renew":
            statement(i, t, there, back, partial(db.renew, i), node.book.renewed)
        elif op == "release" and node.book.owns(device, node.clock(t)):
            node.book.drop(device)  # the actor stops before the release is sent
            statement(i, t, there, back, partial(db.release, i, device),
                      lambda sent, _r, now: None)
    run_until(t + 10 * TIMING.lease)
    return db


def _fenced_write(db: ModelDb, nodes: list[Node], i: int, device: int, epoch: int, t: float) -> None:
    if not db.write(i, device, epoch, t):
        nodes[i].book.drop(device)  # LeaseLost: the actor's engine stops at once


@settings(max_examples=400, deadline=None)
@given(steps, clocks)
def test_no_two_nodes_ever_believe_they_own_one_device(
    plan: list[Step], node_clocks: list[tuple[float, float]]
) -> None:
    simulate(plan, node_clocks)


def test_the_model_does_hand_devices_around() -> None:
    """The model is not vacuous: leases are claimed, renewed, lost and claimed again."""
    plan: list[Step] = [
        (0, 0, "claim", 0.1, 0.1, 0),           # node 0 takes two devices
        (1, 1, "claim", 0.1, 0.1, 0),           # node 1 the third
        (4, 0, "renew", 0.1, 0.1, 0),
        (1, 0, "write", 0.1, 0, 0),             # let through
        (1, 0, "pause", 10, 10, 0),             # paused for 35 s: its leases expire
        (20, 1, "claim", 0.1, 0.1, 0),          # node 1 takes them over
        (1, 1, "write", 0.1, 0, 0),
        (20, 0, "renew", 0.1, 0.1, 0),          # node 0 is back: nothing to renew
    ]
    db = simulate(plan, [(1.0, 0.0)] * NODES)
    assert db.written[0] == [1, 2]
    assert {lease.owner for lease in db.leases.values()} <= {1, None}
