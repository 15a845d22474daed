"""The whole cluster with real processes: three ``wasup serve`` nodes on one PostgreSQL and one
shared simulator (``wasup simulator serve``), the default lease timings (15 s lease, renewal
every 5 s, a scan every 2 s).

- 300 devices paired through the nodes in turn: each owned by exactly one node; every node
  answers for every device (reads, forwarded sends and settings); a WebSocket on node A sees
  the events of node C's devices; kill -9 of a node: its devices connected on the others
  within 30 s; every inbound message reaches the webhook receiver; no double connection ever
  (the simulator counts zero ``stream_replaced``).
- A node paused (SIGSTOP) longer than the lease: its devices move; resumed (SIGCONT), it
  stops its engines with no write getting through, and rejoins; a fourth node joins and the
  devices rebalance within the configured rate; SIGTERM drains a node in seconds; no double
  connection outside the pause (there the moved devices replace the paused node's sockets,
  which it does not read).

The measured figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from supervisor.cluster.book import balanced, fair_share
from tests.cluster_support import NodeProcess, ProcessCluster, replaced_devices, until, write_to
from tests.pg_support import TestPostgres
from tests.test_simulator_shared import PEER, shared_simulator
from tests.webhook_support import start_receiver

DEVICES = 300
#: The issue's promise: a dead node's devices are connected elsewhere within this.
FAILOVER_SECONDS = 30.0
#: Seconds node A stays paused: longer than the lease (15 s).
PAUSE = 18.0


async def test_three_nodes_run_300_devices_one_owner_each_and_survive_a_kill(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    with trio.fail_after(900):
        async with trio.open_nursery() as nursery, shared_simulator(tmp_path) as sim:
            receiver = await start_receiver(nursery)
            cluster = ProcessCluster(tmp_path, url, sim)
            try:
                a, b, c = [await cluster.add(name) for name in "abc"]
                started = time.monotonic()
                sids = await cluster.pair(DEVICES)
                paired = time.monotonic() - started
                assert len(set(sids)) == DEVICES

                # Exactly one owner each, the same on every node and in GET /cluster.
                owners = await cluster.owner_of(sids)
                counts = Counter(owners.values())
                assert set(counts) == {"a", "b", "c"}, counts
                assert await cluster.owners() == dict(counts)
                for node in (b, c):
                    assert await cluster.owner_of(sids, node) == owners, node.name
                assert (await sim.stats())["live"] == DEVICES

                # Any call on any node: details agree everywhere; the webhook setting and a
                # send go to a node that is not the owner (forwarded).
                names = ["a", "b", "c"]
                sent: dict[str, str] = {}
                ids: dict[str, int] = {}
                for sid in sids:
                    details = [await node.device(sid) for node in (a, b, c)]
                    assert all(d == details[0] for d in details), details
                    assert details[0]["status"] == "connected"
                    ids[sid] = int(details[0]["id"])
                    caller = cluster.nodes[names[(names.index(str(owners[sid])) + 1) % 3]]
                    await caller.data("PUT", f"/devices/{sid}/settings/webhook", json={
                        "url": receiver.url, "events": ["message_received"]})
                    sent[sid] = (await caller.data("POST", f"/devices/{sid}/messages", json={
                        "to": PEER, "text": f"hello from {sid}"}))["messageId"]
                for sid in sids[:30]:  # the sent message is in the history on a third node
                    other = cluster.nodes[names[(names.index(str(owners[sid])) + 2) % 3]]
                    message = await other.data("GET", f"/devices/{sid}/messages/{sent[sid]}")
                    assert message["text"] == f"hello from {sid}", message

                # A WebSocket on A sees node C's devices' events.
                on_c = [sid for sid in sids if owners[sid] == "c"]
                texts: dict[str, str] = {}  # inbound text -> device
                async with open_websocket_url(a.ws_url) as ws:
                    seen: set[str] = set()
                    for sid in on_c:
                        texts[f"to {sid} on c"] = sid
                        await b.data("POST", f"/simulator/devices/{sid}/messages",
                                     json={"from": PEER, "text": f"to {sid} on c"})
                    with trio.fail_after(60):
                        while len(seen) < len(on_c):
                            event = json.loads(await ws.get_message())
                            if event["type"] == "message_received":
                                if event["data"].get("text") == f"to {event['sessionId']} on c":
                                    seen.add(event["sessionId"])
                    assert seen == set(on_c)

                # kill -9 of B with deliveries of its own in flight.
                on_b = [sid for sid in sids if owners[sid] == "b"]
                for sid in on_b:
                    texts[f"before the kill {sid}"] = sid
                    await a.data("POST", f"/simulator/devices/{sid}/messages",
                                 json={"from": PEER, "text": f"before the kill {sid}"})
                b.process.kill()
                await b.process.wait()
                killed = time.monotonic()
                for sid in on_b:  # queued by WhatsApp while the device has no connection
                    texts[f"after the kill {sid}"] = sid
                    await write_to(sim, ids[sid], PEER, f"after the kill {sid}")
                await until(lambda: cluster.all_connected(on_b, not_on="b"),
                            FAILOVER_SECONDS + 30, "B's devices connected on A and C", 0.25)
                failover = time.monotonic() - killed
                after = await cluster.owners()
                assert set(after) == {"a", "c"} and sum(after.values()) == DEVICES, after
                # the survivors shared B's devices (no node took them all, to move them later)
                assert balanced(after.values(), fair_share(DEVICES, 2, None)), after

                # Every inbound message reached the receiver (a delivery B had claimed is
                # taken over once its claim expires).
                async def all_delivered() -> bool:
                    got = {json.loads(q.body)["data"].get("text") for q in receiver.requests}
                    return set(texts) <= got
                delivered = await until(all_delivered, 150, "every webhook delivered", 0.5)
                stats = await sim.stats()
            finally:
                await cluster.close()
            nursery.cancel_scope.cancel()
    assert stats["streamReplaced"] == 0, replaced_devices(sim.log)
    assert failover <= FAILOVER_SECONDS, failover
    print(f"\n{DEVICES} devices paired on 3 nodes in {paired:.1f} s ({dict(counts)}); "
          f"kill -9 of b: its {len(on_b)} devices connected on a and c {failover:.1f} s after "
          f"({after}); {len(texts)} webhooks all delivered ({delivered:.1f} s after the "
          f"failover); streamReplaced {stats['streamReplaced']} over "
          f"{stats['connections']} connections")


async def status_events(node: NodeProcess) -> list[dict[str, Any]]:
    """Every ``device_status`` event of the cluster's log, read through ``node``."""
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        r = await node.api.get("/events", params={"type": "device_status", "since": since,
                                                  "limit": 500})
        assert r.status_code == 200, r.text
        out.extend(r.json()["data"])
        if not r.json()["pagination"]["hasMore"]:
            return out
        since = r.json()["pagination"]["nextSince"]


async def test_a_paused_node_is_fenced_a_new_node_takes_its_share_and_sigterm_drains(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    count, rate = 60, 10
    samples: list[tuple[float, dict[str, int]]] = []
    with trio.fail_after(900):
        async with shared_simulator(tmp_path) as sim:
            cluster = ProcessCluster(tmp_path, url, sim)
            try:
                for name in "abc":
                    await cluster.add(name, "--rebalance-per-minute", str(rate))
                a, b, c = (cluster.nodes[n] for n in "abc")
                sids = await cluster.pair(count)
                owners = await cluster.owner_of(sids)
                on_a = [sid for sid in sids if owners[sid] == "a"]
                ids_on_a = {int((await b.device(sid))["id"]) for sid in on_a}
                assert on_a

                # SIGSTOP A past its lease: B and C take its devices.
                a.process.send_signal(signal.SIGSTOP)
                paused = time.monotonic()
                moved = await until(lambda: cluster.all_connected(on_a, not_on="a"), 60,
                                    "A's devices connected on B and C", 0.25)
                await trio.sleep(max(0.0, paused + PAUSE - time.monotonic()))
                a.process.send_signal(signal.SIGCONT)
                resumed = time.monotonic()

                # A stops its engines by its own clock; no write of it gets through: every
                # device stays connected, and none is reported replaced.
                async def stopped() -> bool:
                    counters = await a.counters()
                    return counters["self_stops"] + counters["leases_lost"] > 0
                await until(stopped, 30, "A stopping its engines", 0.2)
                fenced = await a.counters()
                replaced = replaced_devices(sim.log)
                assert set(replaced) <= ids_on_a and len(replaced) <= len(on_a), replaced
                replaced_in_pause = (await sim.stats())["streamReplaced"]

                # A rejoined; D joins: both take their share, at most ``rate`` a minute.
                d = await cluster.add("d", "--rebalance-per-minute", str(rate))
                joined = time.monotonic()
                share = fair_share(count, 4, None)

                async def spread() -> bool:
                    now = await cluster.owners()
                    samples.append((time.monotonic(), now))
                    return (set(now) == {"a", "b", "c", "d"} and sum(now.values()) == count
                            and balanced(now.values(), share)
                            and await cluster.all_connected(sids))
                rebalanced = await until(spread, 240, "balance over four nodes", 0.5)
                assert (await sim.stats())["streamReplaced"] == replaced_in_pause

                # SIGTERM of C: it hands its devices over and exits; they run elsewhere.
                owners = await cluster.owner_of(sids)
                on_c = [sid for sid in sids if owners[sid] == "c"]
                c.process.send_signal(signal.SIGTERM)
                drained = await until(lambda: cluster.all_connected(on_c, not_on="c"), 60,
                                      "C's devices connected elsewhere", 0.1)
                with trio.fail_after(30):
                    status = await c.process.wait()
                final = await cluster.owners()
                stats = await sim.stats()
                statuses = await status_events(d)
            finally:
                await cluster.close()
    assert status == 0
    assert set(final) == {"a", "b", "d"} and sum(final.values()) == count, final
    assert stats["streamReplaced"] == replaced_in_pause
    # No device was ever reported replaced: the paused node's writes were all fenced.
    assert statuses and not [e for e in statuses
                             if "replaced" in str(e["data"].get("reason"))], statuses
    # The rate: a node that joined (D) or came back (A) with no devices gained at most
    # ``rate`` of them in its first minute.
    for name, since in (("a", resumed), ("d", joined)):
        first_minute = [s[name] for t, s in samples if t - since < 58 and name in s]
        assert max(first_minute, default=0) <= rate, (name, first_minute)
    assert drained <= 15, drained
    print(f"\npaused a for {resumed - paused:.1f} s: its {len(on_a)} devices connected on b "
          f"and c {moved:.1f} s after the SIGSTOP; resumed a: {fenced} "
          f"({len(replaced)} of its sockets replaced while it was paused); a back and d joined: "
          f"balanced {rebalanced:.1f} s after the join at {rate}/min "
          f"({samples[-1][1] if samples else {}}); SIGTERM of c: its {len(on_c)} devices "
          f"connected elsewhere {drained:.1f} s after, exit {status} ({final}); "
          f"{stats['connections']} connections")
