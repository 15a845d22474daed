"""Cluster nodes in one process (two supervisors on one real PostgreSQL, each with its own
in-process simulator), in virtual time: a device runs on the node that created it, the others
know its owner, a fenced write stops the engine at once, a node that cannot renew stops its
engines by its own clock, and a node that leaves hands its devices over.

The database's clock is real and the nodes' clocks are virtual (they run ahead of it), which
is the safe direction: a node's belief in a lease ends earlier, never later, than the lease."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import attrs
import psycopg
import pytest
import trio
import trio.testing

import storage
from supervisor.cluster.fence import FencedStore
from supervisor.cluster.node import ClusterNode
from supervisor.config import ClusterConfig, Config
from supervisor.devices import Devices
from supervisor.engines.simulator import SimulatorEngine
from supervisor.errors import Restarting
from supervisor.supervisor import open_supervisor
from tests.lifecycle_support import connected_device, sim_config, simulated, wait_status
from tests.pg_support import TestPostgres

SECRET = "s3cret-s3cret-s3cret"
T = TypeVar("T")


def node_config(tmp_path: Path, url: str, name: str, capacity: int | None = None) -> Config:
    cluster = ClusterConfig(node_id=name, advertise_url=f"http://{name}.test", secret=SECRET,
                            capacity=capacity)
    return sim_config(tmp_path / name, database_url=url, cluster=cluster)


@attrs.define
class Partitioned:
    """The database as a partitioned node's lease work sees it: every job fails."""

    store: storage.Store
    failing: bool = True

    async def run(self, job: Callable[[storage.Repositories], T]) -> T:
        if self.failing:
            raise storage.StorageUnavailable("simulated partition", 1.0)
        return await self.store.run(job)


def steal(url: str, device_id: int, node: str) -> None:
    """Another node takes the device's lease behind this one's back (its lease expired)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE device_leases SET owner = %s, epoch = epoch + 1,"
            " expires_at = now() + interval '1 hour' WHERE device_id = %s", (node, device_id),
        )


@asynccontextmanager
async def connected_node(
    tmp_path: Path, url: str
) -> AsyncIterator[tuple[Devices, ClusterNode, SimulatorEngine, int]]:
    """Node ``a``, alone on the database at ``url``, with one connected device (its id)."""
    async with simulated(node_config(tmp_path, url, "a")) as (sup, engine, _rec):
        assert sup.cluster is not None
        yield sup, sup.cluster, engine, await connected_device(sup, engine)


async def eventually(check: Callable[[], bool], within: float = 60) -> None:
    """Wait (in virtual time) until ``check()`` holds: the lease book has no event to wait on."""
    with trio.fail_after(within):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.1)


async def test_devices_run_on_the_node_that_created_them_and_both_know_the_owner(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with open_supervisor(node_config(tmp_path, url, "a")) as a:
        async with open_supervisor(node_config(tmp_path, url, "b")) as b:
            assert a.cluster is not None and b.cluster is not None
            on_a, _ = await a.create_device("u1", "On A")
            on_b, _ = await b.create_device("u1", "On B")
            assert a.cluster.owns(on_a.id) and not a.cluster.owns(on_b.id)
            assert b.cluster.owns(on_b.id) and not b.cluster.owns(on_a.id)
            assert on_a.id in a.supervisor.children and on_a.id not in b.supervisor.children
            for node in (a, b):
                owner_a = await node.cluster.owner(on_a.id)  # type: ignore[union-attr]
                owner_b = await node.cluster.owner(on_b.id)  # type: ignore[union-attr]
                assert owner_a is not None and owner_a.node_id == "a"
                assert owner_b is not None and owner_b.advertise_url == "http://b.test"
            nodes = await a.cluster.nodes()
            assert [(n.node_id, n.devices, n.draining) for n in nodes] == [
                ("a", 1, False), ("b", 1, False)]
            # Renewals keep the leases: still owned long after the lease time.
            await trio.sleep(60)
            assert a.cluster.owns(on_a.id) and b.cluster.owns(on_b.id)
            assert a.cluster.stats.self_stops == 0 and a.cluster.stats.renewals >= 10
        # b left: its device was handed over (released at once), and a claims it.
        await eventually(lambda: a.cluster.owns(on_b.id))  # type: ignore[union-attr]
        assert on_b.id in a.supervisor.children
        assert [n.node_id for n in await a.cluster.nodes()] == ["a"]


async def test_a_fenced_write_changes_nothing_and_stops_the_engine_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with connected_node(tmp_path, url) as (sup, node, engine, device):
        session = engine.get_session(device)
        assert session.state.value == "connected"
        steal(url, device, "z")
        with pytest.raises(Restarting):
            await sup.cancel(device)  # the actor's write is refused by the fence
        await eventually(lambda: device not in sup.supervisor.children)
        assert session.state.value == "idle"  # the engine was stopped
        assert not node.owns(device) and node.stats.fenced_writes == 1
        stored = await sup.db.run(lambda r: r.devices.get(device))
        assert stored is not None and stored.status == "connected"  # the cancel was not stored
        # Later renewals do not bring it back: it is z's.
        await trio.sleep(30)
        assert not node.owns(device) and device not in sup.supervisor.children


async def test_a_node_that_cannot_renew_stops_its_engines_before_the_lease_ends(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    async with connected_node(tmp_path, postgres_server.create_database()) as (
        sup, node, engine, device
    ):
        session = engine.get_session(device)
        partition = Partitioned(node.manager.lease_db)
        node.manager.lease_db = partition  # type: ignore[assignment]  # its lease work only
        started = trio.current_time()
        await eventually(lambda: not node.owns(device), within=30)
        stopped_after = trio.current_time() - started
        assert stopped_after <= 15 - 3 + 0.5  # lease minus margin, from the last renewal
        await eventually(lambda: session.state.value == "idle")
        assert node.stats.self_stops == 1 and node.stats.failed_renewals >= 2
        # The partition heals: the lease had not expired in the database (this node's clock
        # ran ahead of it), so the next renewal finds it held and the device runs again.
        partition.failing = False
        await eventually(lambda: node.owns(device), within=30)
        await wait_status(sup, device, "connected")


async def test_a_device_created_on_a_full_node_is_left_to_another(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with open_supervisor(node_config(tmp_path, url, "a", capacity=1)) as a:
        first, _ = await a.create_device("u1", "First")
        second, _ = await a.create_device("u1", "Second")
        assert a.cluster is not None and a.cluster.owns(first.id)
        assert not a.cluster.owns(second.id) and second.id not in a.supervisor.children
        async with open_supervisor(node_config(tmp_path, url, "b")) as b:
            await eventually(lambda: b.cluster.owns(second.id))  # type: ignore[union-attr]
            owner = await a.cluster.owner(second.id)
            assert owner is not None and owner.node_id == "b"
            assert_devices(b, {second.id})


def assert_devices(node: Devices, ids: set[int]) -> None:
    assert set(node.supervisor.children) == ids


@attrs.define
class Gate:
    """The database as one actor sees it, holding back the answer of the next job once armed
    (the job has committed; the actor has not resumed yet)."""

    store: storage.Store
    armed: bool = False
    held: trio.Event = attrs.field(factory=trio.Event)
    opened: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, job: Callable[[storage.Repositories], T]) -> T:
        value = await self.store.run(job)
        if self.armed:
            self.armed = False
            self.held.set()
            await self.opened.wait()
        return value

    def __getattr__(self, name: str) -> object:  # the rest of storage.Store, as it is
        return getattr(self.store, name)


async def test_a_renewal_right_after_a_delete_leaves_the_deleting_actor_alone(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    async with connected_node(tmp_path, postgres_server.create_database()) as (
        sup, node, engine, device
    ):
        kept = await connected_device(sup, engine, alias="Kept")
        fenced = sup.supervisor.children[device].db
        assert isinstance(fenced, FencedStore)
        gate = fenced.store = Gate(fenced.store)  # type: ignore[assignment]
        gate.armed = True
        async with trio.open_nursery() as nursery:
            deleted = trio.Event()

            async def delete() -> None:
                await sup.delete_device(device)
                deleted.set()

            nursery.start_soon(delete)
            await gate.held.wait()  # the device's row is gone, its actor not resumed yet
            assert await sup.db.run(lambda r: r.devices.get(device)) is None
            await node.manager.renew_once()
            gate.opened.set()
            with trio.fail_after(1):  # answered at once, not after the call timeout
                await deleted.wait()
        assert device not in sup.directory and device not in sup.supervisor.children
        assert not node.owns(device) and node.owns(kept)
        assert node.stats.lost == 0


async def test_a_command_under_way_when_the_lease_goes_is_answered_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    async with connected_node(tmp_path, postgres_server.create_database()) as (
        sup, _node, _engine, device
    ):
        fenced = sup.supervisor.children[device].db
        assert isinstance(fenced, FencedStore)
        gate = fenced.store = Gate(fenced.store)  # type: ignore[assignment]
        gate.armed = True
        async with trio.open_nursery() as nursery:
            answered = trio.Event()

            async def cancel() -> None:
                with pytest.raises(Restarting):  # try again: the next owner answers
                    await sup.cancel(device)
                answered.set()

            nursery.start_soon(cancel)
            await gate.held.wait()  # the command's write is under way
            sup.supervisor.stop_child(device)  # as a lost or handed-over lease does
            with trio.fail_after(1):  # not after the call timeout (504)
                await answered.wait()
            gate.opened.set()
