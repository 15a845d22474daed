"""A cluster node's lease work against what could starve or confuse it, on one real PostgreSQL
with in-process nodes (tests/test_cluster_node.py builds them the same way): a main store
whose every connection is busy, an ask left by a node that died, and a second process started
with the same node id (also with real ``wasup serve`` processes: the first exits with status 1).

The database's clock is real and the nodes' clocks are virtual; where a test needs the
database to work while the node's time goes on, the clock runs at a fixed rate instead of
jumping (an autojumping clock stands still while a database job runs)."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import psycopg
import pytest
import trio
import trio.testing

from api.errors import status_and_code
from storage.errors import DatabaseClosed
from storage.pg.store import DEFAULT_POOL_SIZE, PgStore
from supervisor.cluster.leases import NodeIdTaken
from supervisor.config import ClusterConfig
from supervisor.devices import Devices
from supervisor.engines.simulator import SimulatorEngine
from tests.lifecycle_support import connected_device, sim_config, simulated
from tests.pg_support import TestPostgres
from tests.test_cluster_node import SECRET, connected_node, eventually, node_config
from tests.test_cluster_processes import cluster_node, paired

#: Virtual seconds per real second while the main store is held busy.
RATE = 4.0
#: Devices created at once, and virtual seconds per real second meanwhile: the creations take
#: longer than a lease, and a renewal is due every virtual second.
BURST = 100
BURST_RATE = 10.0


async def test_renewals_go_on_while_every_connection_of_the_main_store_is_busy(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    async with connected_node(tmp_path, postgres_server.create_database()) as (
        sup, node, engine, device
    ):
        lease_db = node.manager.lease_db
        assert isinstance(lease_db, PgStore) and lease_db is not sup.db
        session = engine.get_session(device)
        renewals = node.stats.renewals
        autojump_clock.autojump_threshold = math.inf
        autojump_clock.rate = RATE
        release = threading.Event()
        async with trio.open_nursery() as nursery:
            try:
                # Every connection of the main store in a transaction that does not end, the
                # device's actor's writes (each holding its lease row against claims), and
                # jobs queued behind them, as under a heavy load of the actors' writes.
                fenced = sup.supervisor.children[device].db
                for n in range(DEFAULT_POOL_SIZE + 50):
                    store = fenced if n < DEFAULT_POOL_SIZE else sup.db
                    nursery.start_soon(store.run, lambda r: release.wait())
                await trio.sleep(1)
                assert sup.db.statistics().queued >= 50
                # Longer than the lease, twice what the node's belief lasts unrenewed.
                await trio.sleep(30)
                assert node.stats.renewals >= renewals + 4
                assert node.stats.failed_renewals == 0 and node.stats.self_stops == 0
                assert node.owns(device) and session.state.value == "connected"
            finally:
                release.set()
        autojump_clock.rate = 0
        autojump_clock.autojump_threshold = 0
    with pytest.raises(DatabaseClosed):  # closed with the node
        await lease_db.run(lambda r: None)


def ask(url: str, device_id: int, node: str, *, heartbeat_age: float, draining: bool) -> None:
    """``node`` (its heartbeat ``heartbeat_age`` s old) asked for the device (rebalancing)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO nodes (node_id, advertise_url, heartbeat_at, draining) VALUES"
            " (%s, 'http://x.test', now() - make_interval(secs => %s), %s)",
            (node, heartbeat_age, draining),
        )
        conn.execute("UPDATE device_leases SET wanted_by = %s WHERE device_id = %s",
                     (node, device_id))


async def test_an_owner_does_not_hand_a_device_over_to_a_dead_or_draining_asker(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with connected_node(tmp_path, url) as (sup, node, engine, device):
        other = await connected_device(sup, engine, alias="Other")
        ask(url, device, "dead", heartbeat_age=60, draining=False)
        ask(url, other, "leaving", heartbeat_age=0, draining=True)
        await node.manager.renew_once()
        await trio.sleep(30)  # more renewals
        assert node.owns(device) and node.owns(other) and node.stats.handed_over == 0
        for d in (device, other):
            assert engine.get_session(d).state.value == "connected"
        with psycopg.connect(url, autocommit=True) as conn:
            asks = conn.execute("SELECT count(*) FROM device_leases WHERE wanted_by IS NOT NULL")
            assert asks.fetchone() == (0,)  # cleared


async def test_a_second_process_with_the_same_node_id_takes_it_over_and_the_first_stops(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    postgres_server: TestPostgres,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = postgres_server.create_database()
    first_ready = trio.Event()
    first_ended = trio.Event()
    found: dict[str, object] = {}
    both: list[float] = []  # virtual times at which both believed they owned the device

    async def first(*, task_status: trio.TaskStatus[tuple[Devices, SimulatorEngine, int]]) -> None:
        try:
            async with simulated(node_config(tmp_path / "first", url, "a")) as (sup, engine, _):
                found["device"] = await connected_device(sup, engine)
                task_status.started((sup, engine, found["device"]))
                first_ready.set()
                await trio.sleep_forever()
        except* NodeIdTaken as group:
            found["error"] = group.exceptions[0]
        finally:
            first_ended.set()

    caplog.set_level(logging.INFO, logger="wasup.cluster")
    async with trio.open_nursery() as nursery:
        old, old_engine, device = await nursery.start(first)
        assert old.cluster is not None and old.cluster.owns(device)
        session = old_engine.get_session(device)
        async with simulated(node_config(tmp_path / "second", url, "a")) as (new, _, _):
            assert new.cluster is not None
            while not first_ended.is_set():
                if old.cluster.owns(device) and new.cluster.owns(device):
                    both.append(trio.current_time())
                await trio.sleep(0.05)
            # The first stopped at its next renewal, having stopped its engine, and said why.
            assert isinstance(found.get("error"), NodeIdTaken)
            assert session.state.value == "idle"
            assert not old.supervisor.children and not old.cluster.owns(device)
            assert any(
                r.levelno == logging.ERROR and "node id a was taken over" in r.getMessage()
                for r in caplog.records
            )
            assert any("node id a was in use by another process" in r.getMessage()
                       for r in caplog.records)
            # Its drain left the node to the second: the row is the second's, and the device
            # is free once its lease ends (made to end now), then runs on the second.
            nodes = await new.cluster.nodes()
            assert [n.node_id for n in nodes] == ["a"] and not nodes[0].draining
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("UPDATE device_leases SET expires_at = now()")
            await eventually(lambda: new.cluster.owns(device))  # type: ignore[union-attr]
            assert new.cluster.stats.self_stops == 0
    assert both == []


async def test_wasup_serve_exits_with_status_1_when_another_process_takes_its_node_id(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
    with trio.fail_after(120):
        async with cluster_node(tmp_path / "first", url, "a") as (first, on_first, _):
            sid = await paired(on_first, "Shop")
            async with cluster_node(tmp_path / "second", url, "a") as (_, on_second, _):
                assert await first.wait() == 1  # at its next renewal (5 s)
                said = (tmp_path / "first" / "a.log").read_text()
                assert "node id a was taken over by another process" in said
                assert "wasup: node id 'a' was taken over" in said  # the exit's reason
                assert "Traceback" not in said
                # The second runs the node and, once the lease ended, the device.
                while True:
                    r = await on_second.get("/cluster")
                    assert r.status_code == 200, r.text
                    [node] = r.json()["data"]["nodes"]
                    if node["devices"] == 1:
                        break
                    await trio.sleep(0.2)
                r = await on_second.get(f"/devices/{sid}")
                assert r.json()["data"]["node"] == "a"


async def test_renewals_go_on_through_a_burst_of_device_creations(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    cluster = ClusterConfig(node_id="a", advertise_url="http://a.test", secret=SECRET,
                            renew_seconds=1)
    async with simulated(sim_config(tmp_path, database_url=url, cluster=cluster)) as (
        sup, engine, _
    ):
        node = sup.cluster
        assert node is not None
        device = await connected_device(sup, engine)
        autojump_clock.autojump_threshold = math.inf
        autojump_clock.rate = BURST_RATE
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for n in range(BURST):
                nursery.start_soon(sup.create_device, "u1", f"Burst {n}")
        took = trio.current_time() - started
        autojump_clock.rate = 0
        autojump_clock.autojump_threshold = 0
        print(f"\n{BURST} devices created in {took:.1f} virtual s; renewals "
              f"{node.stats.renewals}, self-stops {node.stats.self_stops}")
        assert node.stats.self_stops == 0 and node.owns(device)
        assert len(sup.supervisor.children) == BURST + 1


def test_a_call_that_meets_the_takeover_answers_503_not_500() -> None:
    """A device created on the old process in its last moments: another node serves it."""
    assert status_and_code(NodeIdTaken("a")) == (503, "SERVICE_UNAVAILABLE")
