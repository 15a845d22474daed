"""The lease storage of a cluster (storage/pg/leases.py) on a real PostgreSQL: heartbeats,
claims with SKIP LOCKED, renewals in one statement, releases, rebalancing requests and the
fence a device's actor writes behind (supervisor/cluster/fence.py).

A lease's expiry is the database's clock; to make one expire without waiting, a test moves
``expires_at`` into the past with SQL of its own."""

from __future__ import annotations

import threading

import psycopg
import pytest
import trio

import storage
from storage.pg import open_postgres
from storage.pg.leases import Lease, PgLeases
from supervisor.cluster.fence import FencedStore, LeaseLost, leases_of
from tests.pg_support import TestPostgres
from tests.test_storage import new_device

LEASE = 15.0


def L(r: storage.Repositories) -> PgLeases:
    return leases_of(r)


async def devices(db: storage.Store, count: int) -> list[int]:
    """``count`` new devices, one at a time (in id order); their ids."""
    return [(await db.run(lambda r, n=n: new_device(r, n))).id for n in range(count)]


async def join(db: storage.Store, *nodes: str) -> None:
    """Heartbeats of ``nodes`` (live, not draining, unbounded, at ``http://<node>``)."""
    for node in nodes:
        await db.run(lambda r, node=node: L(r).heartbeat(node, f"http://{node}", None, False))


async def claimed_by_a(db: storage.Store) -> tuple[storage.DeviceRow, Lease]:
    """A new device, nodes ``a`` and ``b`` joined, and the device's lease claimed by ``a``."""
    device = await db.run(new_device)
    await join(db, "a", "b")
    [lease] = await db.run(lambda r: L(r).claim("a", LEASE, 1))
    return device, lease


async def held_by_a(db: storage.Store, count: int, *others: str) -> list[int]:
    """``count`` new disconnected devices (movable), nodes ``a`` and ``others`` joined, every
    device claimed by ``a``; their ids."""
    ids = [(await db.run(lambda r, n=n: new_device(r, n, status="disconnected"))).id
           for n in range(count)]
    await join(db, "a", *others)
    await db.run(lambda r: L(r).claim("a", LEASE, count))
    return ids


def behind(url: str, statement: str, *params: object) -> None:
    """Run ``statement`` on the database at ``url``, behind the nodes' backs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def expire(url: str, device_id: int | None = None) -> None:
    """Move leases (one device's, or all) into the past, as if their time had run out."""
    statement = "UPDATE device_leases SET expires_at = now() - interval '1 second'"
    if device_id is None:
        behind(url, statement)
    else:
        behind(url, statement + " WHERE device_id = %s", device_id)


async def test_claims_take_free_devices_up_to_the_limit_with_new_epochs(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        ids = await devices(db, 5)
        await join(db, "a", "b")
        got_a = await db.run(lambda r: L(r).claim("a", LEASE, 3))
        got_b = await db.run(lambda r: L(r).claim("b", LEASE, 10))
        assert [x.device_id for x in got_a] == ids[:3]
        assert [x.device_id for x in got_b] == ids[3:]  # what a holds is not free
        assert all(x.epoch == 1 for x in got_a + got_b)
        assert await db.run(lambda r: L(r).claim("b", LEASE, 10)) == []
        nodes = await db.run(lambda r: L(r).nodes())
        assert [(n.node_id, n.devices, n.draining) for n in nodes] == [
            ("a", 3, False), ("b", 2, False)]
        assert all(0 <= n.heartbeat_age < 5 for n in nodes)
        owner = await db.run(lambda r: L(r).owner(ids[0]))
        assert owner is not None and owner.node_id == "a" and owner.advertise_url == "http://a"
        assert await db.run(lambda r: L(r).unleased()) == 0
        # A specific device (one just created on a node).
        extra = await db.run(lambda r: new_device(r, 9))
        got = await db.run(lambda r: L(r).claim("b", LEASE, 1, [extra.id]))
        assert [(x.device_id, x.epoch) for x in got] == [(extra.id, 1)]


async def test_an_expired_lease_is_claimed_by_another_node_with_a_higher_epoch(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        device, first = await claimed_by_a(db)
        assert await db.run(lambda r: L(r).renew("a", LEASE)) == [first]
        expire(url, device.id)
        # An expired lease is not renewed: it may be another node's by now.
        assert await db.run(lambda r: L(r).renew("a", LEASE)) == []
        [second] = await db.run(lambda r: L(r).claim("b", LEASE, 1))
        assert second.device_id == device.id and second.epoch == first.epoch + 1
        assert await db.run(lambda r: L(r).renew("a", LEASE)) == []
        assert await db.run(lambda r: L(r).holds(device.id, "a", first.epoch)) is False
        assert await db.run(lambda r: L(r).holds(device.id, "b", second.epoch)) is True
        owner = await db.run(lambda r: L(r).owner(device.id))
        assert owner is not None and owner.node_id == "b"


async def test_release_frees_at_once_and_bumps_the_epoch(postgres_server: TestPostgres) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        d1 = await db.run(lambda r: new_device(r, 1))
        d2 = await db.run(lambda r: new_device(r, 2))
        claimed = await db.run(lambda r: L(r).claim("a", LEASE, 5))
        assert await db.run(lambda r: L(r).release("a", [d1.id])) == [d1.id]
        assert await db.run(lambda r: L(r).owner(d1.id)) is None
        [again] = await db.run(lambda r: L(r).claim("b", LEASE, 5))
        assert again.device_id == d1.id and again.epoch == claimed[0].epoch + 2
        assert await db.run(lambda r: L(r).release("a")) == [d2.id]  # all of a's
        assert await db.run(lambda r: L(r).renew("a", LEASE)) == []


async def test_a_device_asked_for_goes_to_the_node_that_asked(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        ids = await held_by_a(db, 4, "b", "c")
        marked = await db.run(lambda r: L(r).want("b", "a", 2, 0))
        assert marked == ids[2:]
        assert await db.run(lambda r: L(r).want("c", "a", 5, 0)) == ids[:2]  # not asked twice
        held = await db.run(lambda r: L(r).renew("a", LEASE))
        assert {x.device_id: x.wanted_by for x in held} == {
            ids[0]: "c", ids[1]: "c", ids[2]: "b", ids[3]: "b"}
        nodes = {n.node_id: n for n in await db.run(lambda r: L(r).nodes())}
        assert [(nodes[n].devices, nodes[n].settled) for n in "abc"] == [(4, 0), (0, 2), (0, 2)]
        await db.run(lambda r: L(r).release("a", marked))
        nodes = {n.node_id: n for n in await db.run(lambda r: L(r).nodes())}
        assert [(nodes[n].devices, nodes[n].settled) for n in "abc"] == [(2, 0), (0, 2), (0, 2)]
        # c is live and did not ask for these: it leaves them to b.
        assert await db.run(lambda r: L(r).claim("c", LEASE, 10)) == []
        got = await db.run(lambda r: L(r).claim("b", LEASE, 10))
        assert [x.device_id for x in got] == marked and all(x.wanted_by is None for x in got)


async def test_a_node_asks_for_settled_devices_only_and_leaves_the_donor_its_share(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    statuses = ["pending", "connecting", "connected", "disconnected", "qr_timeout", "connected"]
    async with open_postgres(url) as db:
        ids = [(await db.run(lambda r, n=n, s=s: new_device(r, n, status=s))).id
               for n, s in enumerate(statuses)]
        await join(db, "a", "b", "c")
        await db.run(lambda r: L(r).claim("a", LEASE, 10))
        # a keeps 3 of its 6: b gets the two without a connection, then a connected one;
        # c, asking next, gets nothing (a would go below 3), and a login is never asked for
        assert await db.run(lambda r: L(r).want("b", "a", 3, 3)) == [ids[3], ids[4], ids[5]]
        assert await db.run(lambda r: L(r).want("c", "a", 3, 2)) == [ids[2]]
        assert await db.run(lambda r: L(r).want("c", "a", 3, 0)) == []  # pending, connecting


async def test_concurrent_claims_skip_locked_rows_and_never_share_a_device(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url, pool_size=8) as db:
        await devices(db, 40)
        results: dict[str, list[int]] = {}

        async def claim(node: str) -> None:
            got = []
            for _ in range(10):
                got += [x.device_id for x in await db.run(lambda r: L(r).claim(node, LEASE, 2))]
            results[node] = got

        async with trio.open_nursery() as nursery:
            for node in "abcdef":
                nursery.start_soon(claim, node)
        everything = [d for got in results.values() for d in got]
        assert len(everything) == len(set(everything)) == 40


async def test_a_fenced_write_changes_nothing_once_the_lease_moved(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        device = await db.run(new_device)
        [lease] = await db.run(lambda r: L(r).claim("a", LEASE, 1))
        lost: list[int] = []
        fenced = FencedStore(db, device.id, "a", lease.epoch, lost.append)

        def write(r: storage.Repositories) -> storage.DeviceRow:
            r.settings.put(device.id, "note", {"by": "a"})
            return r.devices.update(device.id, description="written by a", updated_at="x")

        row = await fenced.run(write)
        assert row.description == "written by a" and lost == []
        expire(url, device.id)
        await db.run(lambda r: L(r).claim("b", LEASE, 1))

        def late(r: storage.Repositories) -> None:
            r.settings.put(device.id, "note", {"by": "a, late"})
            r.devices.update(device.id, description="late", updated_at="y")

        with pytest.raises(LeaseLost):
            await fenced.run(late)
        assert lost == [device.id]
        stored = await db.run(lambda r: r.devices.get(device.id))
        assert stored is not None and stored.description == "written by a"
        assert await db.run(lambda r: r.settings.get(device.id, "note")) == {"by": "a"}


async def test_deleting_a_device_removes_its_lease_and_leave_removes_the_node(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        device = await db.run(new_device)
        await db.run(lambda r: L(r).heartbeat("a", "http://a", 5, False))
        [lease] = await db.run(lambda r: L(r).claim("a", LEASE, 1))
        fenced = FencedStore(db, device.id, "a", lease.epoch, lambda d: None)
        await fenced.run(lambda r: r.devices.delete(device.id))
        assert await db.run(lambda r: L(r).renew("a", LEASE)) == []
        await db.run(lambda r: L(r).heartbeat("a", "http://a", 5, True))
        [node] = await db.run(lambda r: L(r).nodes())
        assert node.draining and node.capacity == 5 and node.devices == 0
        await db.run(lambda r: L(r).leave("a"))
        assert await db.run(lambda r: L(r).nodes()) == []


def age(url: str, node: str, seconds: float) -> None:
    """Make the node's heartbeat ``seconds`` old (a node that stopped beating)."""
    behind(url, "UPDATE nodes SET heartbeat_at = now() - make_interval(secs => %s)"
                " WHERE node_id = %s", seconds, node)


async def test_a_renewal_keeps_asks_of_live_nodes_only_and_clears_the_others(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        ids = await held_by_a(db, 3, "live", "dead", "leaving")
        for asker in ("live", "dead", "leaving"):
            await db.run(lambda r, asker=asker: L(r).want(asker, "a", 1, 0))
        # want() takes the highest ids first: live asked for ids[2], dead ids[1], leaving ids[0].
        age(url, "dead", LEASE + 1)
        await db.run(lambda r: L(r).heartbeat("leaving", "http://leaving", None, True))
        held = await db.run(lambda r: L(r).renew("a", LEASE))
        assert {x.device_id: x.wanted_by for x in held} == {
            ids[0]: None, ids[1]: None, ids[2]: "live"}
        # The stale asks are gone from the rows, not only from the answer: a node that has
        # room claims such a device at once should its owner release it.
        await db.run(lambda r: L(r).release("a", ids[:2]))
        got = await db.run(lambda r: L(r).claim("live", LEASE, 10))
        assert sorted(x.device_id for x in got) == ids[:2]


async def test_a_join_takes_the_node_id_over_and_frees_its_devices_when_their_leases_end(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        ids = await devices(db, 2)
        first = await db.run(lambda r: L(r).join("a", "run-1", "http://a", None))
        assert first.released == [] and first.previous_age is None
        claimed = await db.run(lambda r: L(r).claim("a", LEASE, 10))
        assert await db.run(lambda r: L(r).runs("a", "run-1"))
        # A second process with the same node id.
        second = await db.run(lambda r: L(r).join("a", "run-2", "http://a2", 3))
        assert second.released == ids
        assert second.previous_age is not None and second.previous_age < 5
        assert not await db.run(lambda r: L(r).runs("a", "run-1"))
        assert await db.run(lambda r: L(r).runs("a", "run-2"))
        [node] = await db.run(lambda r: L(r).nodes())
        assert (node.advertise_url, node.capacity, node.devices) == ("http://a2", 3, 0)
        # The first process's writes are refused (new epochs) ...
        for lease in claimed:
            assert not await db.run(
                lambda r, x=lease: L(r).holds(x.device_id, "a", x.epoch))
        assert await db.run(lambda r: L(r).renew("a", LEASE)) == []
        # ... but it may run the devices until it notices: nobody claims them before their
        # leases end, then anybody may.
        assert await db.run(lambda r: L(r).claim("b", LEASE, 10)) == []
        assert await db.run(lambda r: L(r).owner(ids[0])) is None
        expire(url)
        got = await db.run(lambda r: L(r).claim("b", LEASE, 10))
        assert [(x.device_id, x.epoch) for x in got] == [(x.device_id, x.epoch + 2) for x in claimed]
        # The same run joining again (a retried join) is no other process.
        again = await db.run(lambda r: L(r).join("a", "run-2", "http://a2", 3))
        assert again.previous_age is None and again.released == []


async def test_a_fenced_write_in_flight_holds_off_claims_but_not_the_owners_renewals(
    postgres_server: TestPostgres,
) -> None:
    url = postgres_server.create_database()
    async with open_postgres(url) as db:
        device, lease = await claimed_by_a(db)
        fenced = FencedStore(db, device.id, "a", lease.epoch, lambda d: None)
        inside, finish = threading.Event(), threading.Event()

        def write(r: storage.Repositories) -> None:  # a slow transaction of the actor
            r.settings.put(device.id, "note", {"by": "a"})
            inside.set()
            finish.wait(30)

        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(fenced.run, write)
                await trio.to_thread.run_sync(inside.wait, 30)
                with trio.fail_after(5):  # at once, not once the write committed
                    held = await db.run(lambda r: L(r).renew("a", LEASE))
                assert [x.device_id for x in held] == [device.id]
                expire(url, device.id)  # a plain update of the row does not wait either
                # No other node takes the device while the write is in flight.
                assert await db.run(lambda r: L(r).claim("b", LEASE, 1)) == []
            finally:
                finish.set()
        [moved] = await db.run(lambda r: L(r).claim("b", LEASE, 1))
        assert moved.device_id == device.id
        assert await db.run(lambda r: r.settings.get(device.id, "note")) == {"by": "a"}
