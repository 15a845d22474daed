"""Resuming the WebSocket stream from the event log (``?since=<id>``), end to end over real
sockets: exactly the missed events, in order, then the live ones; a device key sees its own
device only; no gap and no duplicate at the seam while events keep coming.

Same rules as tests/test_ws.py (whose server and client helpers these use): servers on
127.0.0.1 port 0, an absolute Trio-clock deadline on every test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected

from common.clock import now_iso
from storage import EventQuery
from storage.models import ALL_EVENTS
from supervisor import event_log
from supervisor.devices import Devices
from supervisor.events import Event
from supervisor.payloads import MessageStatusChanged
from tests.test_ws import (
    TIMEOUT,
    TOKEN,
    connect,
    create_device,
    next_event,
    scan,
    serve,
    wait_for,
)

pytestmark = pytest.mark.both_backends  # tests/store_support.py


async def logged_ids(sup: Devices, query: EventQuery = ALL_EVENTS, since: int = 0) -> list[int]:
    rows = await sup.db.run(lambda r: r.events.after(since, until=10**12, limit=10_000,
                                                     query=query))
    return [row.id for row in rows]


async def test_reconnect_with_since_gets_exactly_the_missed_events_then_live_ones(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            async with connect(f"{server.ws_url}/?token={TOKEN}") as conn:
                device = await create_device(client, "Shop")
                qr, seen = await wait_for(conn, "qr_code", device["sessionId"])
                last = qr["id"]
                assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
            # Away: the device is paired and connects, and a message comes in.
            await scan(client, device["id"])
            async with connect(f"{server.ws_url}/?token={TOKEN}") as watcher:
                await wait_for(watcher, "device_connected", device["sessionId"])
                response = await client.post(
                    f"/simulator/devices/{device['id']}/messages",
                    json={"from": "+15550001111", "text": "while you were away"},
                )
                assert response.status_code == 200, response.text
                await wait_for(watcher, "message_received", device["sessionId"])
            missed = await server.sup.db.run(
                lambda r: r.events.after(last, until=10**12, limit=1000)
            )
            assert {"device_connected", "message_received"} <= {row.type for row in missed}
            async with connect(f"{server.ws_url}/?token={TOKEN}&since={last}") as conn:
                replayed = [await next_event(conn) for _ in missed]
                assert replayed == [json.loads(row.envelope_text) for row in missed]
                # Then the live stream, right after the last logged one.
                await client.post(f"/simulator/devices/{device['id']}/disconnect", json={})
                _, seen = await wait_for(conn, "device_disconnected", device["sessionId"])
                assert [e["id"] for e in seen] == await logged_ids(
                    server.sup, since=missed[-1].id)
                assert [e["type"] for e in seen] == ["device_status", "device_disconnected"]


async def test_a_device_key_replays_its_own_device_only(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            mine = await create_device(client, "Mine")
            other = await create_device(client, "Other")
            async with connect(f"{server.ws_url}/?token={TOKEN}") as operator:
                await scan(client, other["id"])
                await wait_for(operator, "device_connected", other["sessionId"])
                await scan(client, mine["id"])
                await wait_for(operator, "device_connected", mine["sessionId"])
            own = await logged_ids(server.sup, EventQuery(device_ids=frozenset({mine["id"]})))
            assert len(own) < len(await logged_ids(server.sup))
            # Asking for the other device by filter does not widen what the key may see.
            url = (f"{server.ws_url}/?token={mine['apiKey']}&since=0"
                   f"&sessionId={mine['sessionId']},{other['sessionId']}")
            async with connect(url) as conn:
                replayed = [await next_event(conn) for _ in own]
                assert [e["id"] for e in replayed] == own
                assert {e["sessionId"] for e in replayed} == {mine["sessionId"]}
                await client.post(f"/simulator/devices/{other['id']}/disconnect", json={})
                await client.post(f"/simulator/devices/{mine['id']}/disconnect", json={})
                live, _ = await wait_for(conn, "device_disconnected")
                assert live["sessionId"] == mine["sessionId"]
            # The filters apply to the replay too.
            url = f"{server.ws_url}/?token={TOKEN}&since=0&events=device_connected"
            async with connect(url) as conn:
                first, second = await next_event(conn), await next_event(conn)
                assert [first["sessionId"], second["sessionId"]] == [
                    other["sessionId"], mine["sessionId"]]
                assert {first["type"], second["type"]} == {"device_connected"}


async def test_no_gap_and_no_duplicate_at_the_seam(tmp_path: Path) -> None:
    """Events are logged and published back to back (as actors do) while clients resume from
    the start, in small replay pages: each client sees every event once, in id order."""
    total = 400
    with trio.fail_after(TIMEOUT * 2):
        async with serve(tmp_path, queue_size=1024) as server, server.client() as client:
            device = await create_device(client, "Busy")
            sup = server.sup
            start = max(await logged_ids(sup))
            published: list[int] = []

            async def publish() -> None:
                for i in range(total):
                    events = [Event(device["sessionId"], device["id"],
                                    MessageStatusChanged(f"m{i}", "read"), now_iso())]
                    await sup.db.run(lambda r, e=events: event_log.append(r, e))
                    sup.bus.publish(events[0])
                    published.append(events[0].id or 0)
                    if i % 7 == 0:
                        await trio.lowlevel.checkpoint()

            async def resume(after: int, results: list[list[int]]) -> None:
                await trio.sleep(after)
                url = f"{server.ws_url}/?token={TOKEN}&since={start}&events=message_status"
                seen: list[int] = []
                async with connect(url) as conn:
                    while len(seen) < total:
                        seen.append((await next_event(conn))["id"])
                results.append(seen)

            results: list[list[int]] = []
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(event_log, "REPLAY_PAGE", 7)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish)
                    for delay in (0.0, 0.01, 0.05, 0.1):
                        nursery.start_soon(resume, delay, results)
            assert len(results) == 4
            for seen in results:
                assert seen == published


async def test_since_older_than_the_log_starts_at_the_oldest_kept(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            async with connect(f"{server.ws_url}/?token={TOKEN}") as conn:
                device = await create_device(client, "Shop")
                await wait_for(conn, "qr_code", device["sessionId"])
            ids = await logged_ids(server.sup)
            # Retention took the first event.
            await server.sup.db.run(lambda r: r.events.prune("9999", after=0, limit=1))
            async with connect(f"{server.ws_url}/?token={TOKEN}&since=0") as conn:
                assert [(await next_event(conn))["id"] for _ in ids[1:]] == ids[1:]
            # A since beyond the newest replays nothing: the live stream only.
            async with connect(f"{server.ws_url}/?token={TOKEN}&since={ids[-1] + 100}") as conn:
                await client.post(f"/sessions/{device['sessionId']}/cancel", json={})
                event = await next_event(conn)
                assert event["id"] > ids[-1] and event["type"] == "device_status"


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "01", "9" * 19, ""])
async def test_a_bad_since_is_refused(tmp_path: Path, since: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            with pytest.raises(ConnectionRejected) as refused:
                async with connect(f"{server.ws_url}/?token={TOKEN}&since={since}"):
                    pass
            assert refused.value.status_code == 400
            body = json.loads(refused.value.body or b"{}")
            assert body["code"] == "INVALID_REQUEST" and "since" in body["error"]
