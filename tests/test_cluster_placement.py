"""Placement: a burst of device creations on several nodes moves no device, while a node that
joins with no devices still takes its fair share, within the rate.

The rule (supervisor/cluster/book.py, storage/pg/leases.py ``want``): a node asks for devices
only when it lacks at least two of its fair share and at least 5 % of it, and while devices
are being created (the cluster had fewer within the last lease) at least half of it; never
for a device in a login (``pending``, ``connecting``: its pairing would restart); and it
counts the devices already asked for as moved, so two nodes asking at once never take a node
below its share.

Three (then four) supervisors in one process on one real PostgreSQL, in virtual time, each with
its own in-process simulator: devices created on a node stay pairing there until their QR codes
run out (``qr_timeout``: a device without a connection, free to move).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from supervisor.cluster.book import (
    balanced,
    claim_limit,
    fair_share,
    plan_wants,
    shortfall_tolerance,
)
from supervisor.cluster.node import ClusterNode
from supervisor.config import ClusterConfig, Config
from supervisor.devices import Devices
from supervisor.supervisor import open_supervisor
from tests.lifecycle_support import sim_config
from tests.pg_support import TestPostgres

SECRET = "s3cret-s3cret-s3cret"
SCAN = 2.0  # the default scan interval
RATE = 30  # devices a node may take per minute (below the joining node's share of 32)


def _config(tmp_path: Path, url: str, name: str) -> Config:
    cluster = ClusterConfig(node_id=name, advertise_url=f"http://{name}.test", secret=SECRET,
                            rebalance_per_minute=RATE)
    return sim_config(tmp_path / name, database_url=url, cluster=cluster)


@asynccontextmanager
async def _node(tmp_path: Path, url: str, name: str) -> AsyncIterator[Devices]:
    async with open_supervisor(_config(tmp_path, url, name)) as sup:
        yield sup


def _cluster(sup: Devices) -> ClusterNode:
    assert sup.cluster is not None
    return sup.cluster


def _moves(nodes: list[Devices]) -> tuple[int, int]:
    """Devices asked for and handed over, on all ``nodes``."""
    stats = [_cluster(sup).stats for sup in nodes]
    return sum(s.wanted for s in stats), sum(s.handed_over for s in stats)


async def _burst(
    nodes: list[Devices], created: dict[int, list[int]], *, turns: int, settle: bool
) -> None:
    """Devices created in blocks of three, the nodes taking turns in a rotating order, a scan
    and a half between blocks (``settle``: each one's pairing cancelled at once); then a minute
    without creations. Nothing moved: each node runs exactly the devices it created."""
    for turn in range(turns):
        for i in (turn % 3, (turn + 1) % 3, (turn + 2) % 3):
            for _ in range(3):
                row, _key = await nodes[i].create_device("u1", f"{i}-{len(created[i])}")
                if settle:
                    await nodes[i].cancel(row.id)
                created[i].append(row.id)
            await trio.sleep(SCAN * 1.5)
    await trio.sleep(60)
    assert _moves(nodes) == (0, 0)
    for i, sup in enumerate(nodes):
        assert set(sup.supervisor.children) == set(created[i])


def test_the_survivors_of_a_dead_node_share_its_devices() -> None:
    # 3 nodes of 100, one dies: the first survivor to scan takes half, the second the rest
    first = claim_limit(100, 100, 300, 2, 2, None)
    assert first == 50
    assert claim_limit(100, 100 - first, 300, 2, 2, None) == 50
    # four nodes of 15, one drains: each of the three takes 5, whichever order they scan in
    takes = []
    free = 15
    for _ in range(3):
        takes.append(claim_limit(15, free, 60, 3, 3, None))
        free -= takes[-1]
    assert takes == [5, 5, 5] and free == 0
    # a lone node takes them all; a node with no free device claims nothing
    assert claim_limit(0, 40, 40, 1, 1, None) == 40
    assert claim_limit(20, 0, 20, 2, 2, None) == 0
    # an odd count: the part rounded up, none left over
    assert claim_limit(10, 7, 27, 2, 2, None) == 4 and claim_limit(10, 3, 27, 2, 2, None) >= 3
    # a node far below its fair share (just back) takes what it lacks, not only its part
    assert claim_limit(0, 10, 100, 2, 2, None) >= 10
    # the others are full (no room): this one takes every free device it has room for
    assert claim_limit(10, 30, 60, 3, 1, None) == 30


async def _eventually(check: Callable[[], bool], within: float) -> None:
    with trio.fail_after(within):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.5)


def test_the_rule_tolerates_a_few_devices_and_not_a_join() -> None:
    assert [shortfall_tolerance(s) for s in (1, 20, 40, 41, 100, 1000)] == [2, 2, 2, 3, 5, 50]
    # created in turns, one node a little ahead: nobody asks
    assert plan_wants("c", {"a": 12, "b": 11, "c": 10}, 33, None, 30) == {}
    assert plan_wants("c", {"a": 21, "b": 20, "c": 19}, 60, None, 30) == {}
    # a node that joins asks the most loaded first, for what they hold over the share
    counts = {"a": 30, "b": 25, "c": 25, "d": 0}
    assert plan_wants("d", counts, 80, None, 30) == {"a": 10, "b": 5, "c": 5}
    assert plan_wants("d", counts, 80, None, 6) == {"a": 6}  # the rate
    assert plan_wants("d", counts, 80, 4, 30) == {"a": 4}  # its capacity
    # an odd number of devices: the donors keep the share rounded up, the last node is
    # left one short of it (126 on 4 nodes: 32, 32, 32, 30), and stops asking
    assert plan_wants("d", {"a": 32, "b": 32, "c": 32, "d": 30}, 126, None, 30) == {}
    assert balanced([32, 32, 32, 30], 32) and balanced([16, 16, 14, 14], 15)
    assert not balanced([42, 42, 42, 0], 32)
    # the counts are those after the devices already asked for moved: a at 22 asked for 2
    # by b counts 20, and c, short of 2, finds nothing to take
    assert plan_wants("c", {"a": 20, "b": 20, "c": 18}, 60, None, 30) == {}
    # while devices are being created, only a node short of half its share asks
    counts = {"a": 23, "b": 23, "c": 20}
    assert plan_wants("c", counts, 66, None, 30) == {"a": 1, "b": 1}
    assert plan_wants("c", counts, 66, None, 30, growing=True) == {}
    assert plan_wants("c", {"a": 33, "b": 33, "c": 0}, 66, None, 30, growing=True) == {
        "a": 11, "b": 11}


async def test_a_creation_burst_on_three_nodes_moves_no_device_and_a_join_still_balances(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(_node(tmp_path, url, name))
                 for name in ("a", "b", "c")]
        created: dict[int, list[int]] = {i: [] for i in range(3)}
        # The burst: each node in turn creates a few devices, and the scans (every 2 s) see
        # the counts while one node or two are ahead: every device is still pairing.
        await _burst(nodes, created, turns=8, settle=False)

        # The pairings end (their QR codes run out: qr_timeout, nothing to restart); the
        # counts are even: nothing moves.
        await trio.sleep(120)
        for i, sup in enumerate(nodes):
            assert {sup.get(d).status for d in created[i]} == {"qr_timeout"}
        assert _moves(nodes) == (0, 0)

        # A second burst of devices that settle at once (pairing cancelled: disconnected,
        # free to move): one node two blocks ahead of another moves nothing either, while
        # the devices grow; once they stop, the counts are even again.
        await _burst(nodes, created, turns=6, settle=True)

        # A fourth node joins with no device: it asks for its share, RATE a minute at most.
        d = await stack.enter_async_context(_node(tmp_path, url, "d"))
        nodes.append(d)
        total = sum(len(ids) for ids in created.values())
        share = fair_share(total, 4, None)
        await trio.sleep(59)
        assert 0 < len(d.supervisor.children) <= RATE
        await _eventually(
            lambda: balanced([len(sup.supervisor.children) for sup in nodes], share), 900)
        held = [len(sup.supervisor.children) for sup in nodes]
        assert sum(held) == total and held[:3] == [share] * 3  # 126: 32, 32, 32 and 30
        wanted, handed = _moves(nodes)
        assert wanted == handed == held[3]  # every device it asked for came, none went back
        await trio.sleep(120)
        assert _moves(nodes) == (wanted, handed)  # balanced: nothing moves any more
