"""The durable event log: ids that only grow, pages by id and filters, retention that keeps
what a pending webhook delivery needs, and every published event logged with its cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from common.clock import iso, now_epoch
from storage import EventQuery, LoggedEvent, Repositories
from storage.models import ALL_EVENTS
from supervisor import event_log
from supervisor.event_retention import EventRetention
from supervisor.events import Event
from supervisor.payloads import MessageStatusChanged
from supervisor.retention import RetentionStatistics
from supervisor.supervisor import open_store
from supervisor.webhooks import settings as webhook_settings
from tests.lifecycle_support import connected_device, sim_config, simulated
from tests.webhook_support import add_device, configure

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DAY = 86_400.0


def logged(device: int, type_: str = "message_status", at: str = "2025-06-19T12:00:00.000Z",
           session: str | None = None) -> LoggedEvent:
    return LoggedEvent(device, session or f"user_u1_device_{device}", type_, '{"n":1}', at)


async def test_ids_grow_and_are_never_reused(tmp_path: Path) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        first = await db.run(lambda r: r.events.append([logged(1), logged(2), logged(1)]))
        assert first == sorted(first) and len(set(first)) == 3
        assert await db.run(lambda r: r.events.bounds()) == (first[0], first[-1])
        # Retention empties the log: the next id still follows the last one handed out.
        pruned = await db.run(lambda r: r.events.prune("9999", after=0, limit=10))
        assert pruned.deleted == 3
        assert await db.run(lambda r: r.events.bounds()) == (0, 0)
        (after,) = await db.run(lambda r: r.events.append([logged(1)]))
        assert after > first[-1]
    async with open_store(sim_config(tmp_path)) as db:  # and after a restart
        (again,) = await db.run(lambda r: r.events.append([logged(1)]))
        assert again == after + 1


async def test_pages_by_id_with_filters(tmp_path: Path) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        ids = await db.run(lambda r: r.events.append([
            logged(1), logged(2, "qr_code"), logged(1, "device_status"), logged(3, session="s3"),
        ]))

        async def page(since: int, until: int = 10**9, limit: int = 10,
                       query: EventQuery = ALL_EVENTS) -> list[int]:
            rows = await db.run(
                lambda r: r.events.after(since, until=until, limit=limit, query=query)
            )
            return [row.id for row in rows]

        assert await page(0) == ids
        assert await page(ids[0]) == ids[1:]
        assert await page(0, limit=2) == ids[:2]
        assert await page(0, until=ids[2]) == ids[:3]
        assert await page(0, query=EventQuery(device_ids=frozenset({1}))) == [ids[0], ids[2]]
        assert await page(0, query=EventQuery(types=frozenset({"qr_code"}))) == [ids[1]]
        # A selection matches by numeric id or by session id.
        chosen = EventQuery(selected_ids=frozenset({2}), selected_sessions=frozenset({"s3"}))
        assert await page(0, query=chosen) == [ids[1], ids[3]]
        # The credential's limit holds whatever the selection asks for.
        mine = EventQuery(device_ids=frozenset({1}), selected_ids=frozenset({2}))
        assert await page(0, query=mine) == []
        row = (await db.run(lambda r: r.events.after(0, until=ids[0], limit=1)))[0]
        assert json.loads(row.envelope_text) == {
            "id": ids[0], "type": "message_status", "sessionId": "user_u1_device_1",
            "data": {"n": 1}, "timestamp": "2025-06-19T12:00:00.000Z",
        }


async def test_prune_keeps_pending_deliveries_and_the_bodies_of_finished_ones(
    tmp_path: Path,
) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        device, session = await add_device(db)
        await configure(db, device, "https://hooks.example/x", events=["*"])
        old = iso(now_epoch() - 10 * DAY)
        events = [
            Event(session, device, MessageStatusChanged(f"m{i}", "read"), old) for i in range(3)
        ]

        def log_and_enqueue(r: Repositories) -> list[str]:
            event_log.append(r, events)
            r.outbox.enqueue_events(device, events, wanted={"message_status"})
            rows, _ = r.outbox.list_deliveries(device)
            return [d["id"] for d in sorted(rows, key=lambda d: d["payload"]["id"])]

        deliveries = await db.run(log_and_enqueue)
        before = await db.run(lambda r: r.outbox.list_deliveries(device))
        assert [d["payload"] for d in before[0]] == [
            json.loads(e.json_text) for e in reversed(events)
        ]
        # The first is delivered, the second failed for good, the third still pending.
        for outbox_id, status in zip(deliveries[:2], ["delivered", "failed"], strict=True):
            await db.run(lambda r, i=outbox_id, s=status: r.outbox.record_attempt(
                i, at=old, status_code=200, error=None, duration_ms=1.0, status=s))
        cutoff = iso(now_epoch() - 7 * DAY)
        pruned = await db.run(lambda r: r.events.prune(cutoff, after=0, limit=100))
        assert pruned.deleted == 2 and pruned.after is None
        kept = await db.run(lambda r: r.events.after(0, until=10**9, limit=10))
        assert [row.id for row in kept] == [events[2].id]
        after = await db.run(lambda r: r.outbox.list_deliveries(device))
        assert [d["payload"] for d in after[0]] == [d["payload"] for d in before[0]]
        due = await db.run(lambda r: r.outbox.claim_due(
            now=now_epoch(), limit=10, target=lambda _: None))
        assert due == []  # (no target: the pending row is disabled, its body still logged)


async def test_prune_walks_in_batches(tmp_path: Path) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        old, new = iso(now_epoch() - 10 * DAY), iso(now_epoch())
        await db.run(lambda r: r.events.append([logged(1, at=old) for _ in range(5)]
                                               + [logged(1, at=new)]))
        cutoff = iso(now_epoch() - 7 * DAY)
        first = await db.run(lambda r: r.events.prune(cutoff, after=0, limit=2))
        assert first.deleted == 2 and first.after is not None
        second = await db.run(lambda r: r.events.prune(cutoff, after=first.after or 0, limit=4))
        assert second.deleted == 3 and second.after is None
        assert [r.timestamp for r in await db.run(
            lambda r: r.events.after(0, until=10**9, limit=10))] == [new]


async def test_every_published_event_is_logged_in_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A device paired and connected on the simulator: each event the bus saw carries its log
    id, and the log holds exactly those events, in that order, byte for byte."""
    async with simulated(sim_config(tmp_path)) as (sup, engine, recorder):
        device = await connected_device(sup, engine)
        await sup.logout(device)
        published = [e for _, e in recorder.of(device)]
        assert published and all(e.id is not None for e in published)
        rows = await sup.db.run(lambda r: r.events.after(
            0, until=10**9, limit=1000, query=EventQuery(device_ids=frozenset({device}))))
        assert [row.id for row in rows] == [e.id for e in published]
        assert {"qr_code", "device_connected", "device_logged_out"} <= {r.type for r in rows}
        for row, event in zip(rows, published, strict=True):
            if row.type != "qr_code":
                assert row.envelope_text == event.json_text
                continue
            # The log keeps a QR code without its image (qrString is the code).
            live = json.loads(event.json_text)
            assert live["data"]["qrCode"].startswith("data:image/png;base64,")
            assert json.loads(row.envelope_text) == {
                **live, "data": {**live["data"], "qrCode": None}}


async def test_retention_prunes_at_start_and_every_interval_in_virtual_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        now = now_epoch()
        await db.run(lambda r: r.events.append(
            [logged(1, at=iso(now - 8 * DAY)) for _ in range(5)]
            + [logged(1, at=iso(now - 7 * DAY + 300)), logged(1, at=iso(now - DAY))]))
        retention = EventRetention(db, days=7, interval=600.0, batch=2)
        async with trio.open_nursery() as nursery:
            await nursery.start(retention.run)
            await trio.sleep(1)
            # At start: the five older than 7 days, two per job.
            assert retention.statistics() == RetentionStatistics(runs=1, deleted=5, failures=0)
            left = await db.run(lambda r: r.events.after(0, until=10**9, limit=10))
            assert len(left) == 2
            # Five minutes later the next one is 7 days old; the pass after 10 minutes takes it.
            await trio.sleep(598)
            assert retention.statistics().runs == 1
            await trio.sleep(2)
            assert retention.statistics() == RetentionStatistics(runs=2, deleted=6, failures=0)
            nursery.cancel_scope.cancel()
        assert await EventRetention(db, days=0).prune() == 0


async def test_a_qr_code_delivery_keeps_its_image(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The log keeps no QR image, so a webhook delivery of a qr_code keeps its own body, with
    the image and the event's id."""
    async with simulated(sim_config(tmp_path)) as (sup, _, _):
        row, _ = await sup.create_device("u1", "Shop")
        settings, _ = webhook_settings.normalize(
            {"url": "https://hooks.example/x", "events": ["qr_code"]}, None, now=now_epoch())
        await sup.put_settings(row.id, "webhook", settings.to_stored())
        with trio.fail_after(120):
            async with sup.bus.subscribe(types=frozenset({"qr_code"})) as codes:
                event = await codes.receive()  # the next code, in 60 s
        (delivery,), _ = await sup.db.run(lambda r: r.outbox.list_deliveries(row.id))
        assert delivery["payload"] == json.loads(event.json_text)
        assert delivery["payload"]["id"] == event.id
        assert delivery["payload"]["data"]["qrCode"].startswith("data:image/png;base64,")
