"""The outbound queue on real actors (simulator engine, MockClock): a burst leaves paced and in
order; sends wait through a reconnect and go out in order, or expire; a send waiting too long
raises one ``message_stuck``; a retry with the same idempotency key sends nothing, across a
restart too; a full queue refuses; a device that cannot come back fails what waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from supervisor.config import SendingConfig
from supervisor.errors import DeviceConflict, QueueFull

from .lifecycle_support import connected_device, settle, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

TO = "15557654321@s.whatsapp.net"


async def _disconnected_device(sup: Any, engine: Any) -> int:
    """A device that lost its connection and cannot reach WhatsApp: it keeps reconnecting."""
    device = await connected_device(sup, engine)
    await engine.set_reachable(False)
    await engine.drop(device)
    await wait_status(sup, device, "disconnected")
    return device


def _config(tmp_path: Path, **sending: Any) -> Any:
    return sim_config(tmp_path, sending=SendingConfig(**sending))


async def test_a_burst_of_50_leaves_paced_and_in_order(autojump_clock, tmp_path: Path) -> None:
    config = _config(tmp_path, rate_per_minute=60, burst=5, jitter=0.2)
    async with simulated(config) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        start = trio.current_time()
        answers = [await sup.send_message(device, TO, f"m{i}") for i in range(50)]
        # The burst goes out at once; the others are queued, answered at once all the same.
        assert [a["status"] for a in answers] == ["sent"] * 5 + ["pending"] * 45
        await trio.sleep(120)
        sent = rec.of(device, "message_sent")
        assert [e.data.text for _, e in sent] == [f"m{i}" for i in range(50)]
        assert [e.data.message_id for _, e in sent] == [a["messageId"] for a in answers]
        times = [t - start for t, _ in sent]
        # A burst of 5 back to back...
        assert max(times[:5]) < 0.01
        # ...then one a second: never more than burst + rate x window in any window.
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u < t + 10.0) <= 5 + 10
        assert 44.0 <= times[-1] <= 60.0
        assert [m.text for m in engine.sent_messages(device)] == [f"m{i}" for i in range(50)]
        statuses = [e.data.status for _, e in rec.of(device, "message_status")]
        assert statuses == ["sent"] * 50
        row = await sup.db.run(lambda r: r.devices.get(device))
        assert row.messages_sent == 50


async def test_sends_wait_through_a_reconnect_in_order_or_expire(
    autojump_clock, tmp_path: Path
) -> None:
    config = _config(tmp_path, stuck_after=30, ttl=300)
    async with simulated(config) as (sup, engine, rec):
        device = await _disconnected_device(sup, engine)
        first = await sup.send_message(device, TO, "first")
        short = await sup.send_message(device, TO, "short-lived", ttl=10)
        last = await sup.send_message(device, TO, "last")
        assert {first["status"], short["status"], last["status"]} == {"pending"}
        assert sup.outbound_counts(device) == (3, 0)  # what GET /devices/{id} shows
        await trio.sleep(40)
        failed = [(e.data.message_id, e.data.status, e.data.reason)
                  for _, e in rec.of(device, "message_status")]
        assert failed == [(short["messageId"], "failed", "expired")]
        # Still waiting after stuck_after: one message_stuck each, raised once.
        stuck = [e.data.message_id for _, e in rec.of(device, "message_stuck")]
        assert stuck == [first["messageId"], last["messageId"]]
        assert sup.outbound_counts(device) == (2, 2)
        await engine.set_reachable(True)
        await wait_status(sup, device, "connected")
        await trio.sleep(10)
        assert [m.text for m in engine.sent_messages(device)] == ["first", "last"]
        assert sup.outbound_counts(device) == (0, 0)
        assert [e.data.message_id for _, e in rec.of(device, "message_stuck")] == stuck
        message = await sup.db.run(lambda r: r.messages.get(device, short["messageId"]))
        assert message.status == "failed"


async def test_the_ttl_ends_a_send_that_waits_too_long(autojump_clock, tmp_path: Path) -> None:
    async with simulated(_config(tmp_path, ttl=120)) as (sup, engine, rec):
        device = await _disconnected_device(sup, engine)
        sent = await sup.send_message(device, TO, "too late")
        await trio.sleep(119)
        assert rec.of(device, "message_status") == []
        await trio.sleep(2)
        (_, event), = rec.of(device, "message_status")
        assert (event.data.message_id, event.data.reason) == (sent["messageId"], "expired")
        await engine.set_reachable(True)
        await wait_status(sup, device, "connected")
        await trio.sleep(5)
        assert engine.sent_messages(device) == []


async def test_a_retry_with_the_same_key_sends_nothing_across_a_restart(
    autojump_clock, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    async with simulated(config) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        once = await sup.send_message(device, TO, "hello", idempotency_key="order-42")
        again = await sup.send_message(device, TO, "hello", idempotency_key="order-42")
        assert again == once and once["status"] == "sent"
        other = await sup.send_message(device, TO, "hello", idempotency_key="order-43")
        assert other["messageId"] != once["messageId"]
        assert len(engine.sent_messages(device)) == 2
    async with simulated(config) as (sup, engine, _rec):
        await settle()
        replay = await sup.send_message(device, TO, "hello", idempotency_key="order-42")
        assert replay == once
        assert engine.sent_messages(device) == []


async def test_a_full_queue_refuses_with_a_retry_after(autojump_clock, tmp_path: Path) -> None:
    async with simulated(_config(tmp_path, queue_size=3)) as (sup, engine, _rec):
        device = await _disconnected_device(sup, engine)
        for i in range(3):
            await sup.send_message(device, TO, f"m{i}")
        with pytest.raises(QueueFull) as full:
            await sup.send_message(device, TO, "one too many")
        assert full.value.retry_after >= 1


async def test_a_device_that_cannot_come_back_fails_what_waits(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(_config(tmp_path)) as (sup, engine, rec):
        device = await _disconnected_device(sup, engine)
        waiting = await sup.send_message(device, TO, "waiting")
        await sup.cancel(device)  # held: no reconnect by itself
        await settle()
        (_, event), = rec.of(device, "message_status")
        assert (event.data.message_id, event.data.status, event.data.reason) == (
            waiting["messageId"], "failed", "cancelled"
        )
        with pytest.raises(DeviceConflict):
            await sup.send_message(device, TO, "refused")
        # A device never linked takes no sends either, whatever its status.
        row, _ = await sup.create_device("u1", "Unlinked")
        await sup.wait_qr(row.id, 5)
        with pytest.raises(DeviceConflict):
            await sup.send_message(row.id, TO, "refused")


async def test_pacing_settings_apply_at_once(autojump_clock, tmp_path: Path) -> None:
    async with simulated(_config(tmp_path, jitter=0.0)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        await sup.put_settings(device, "sending", {"ratePerMinute": 6.0, "burst": 1})
        start = trio.current_time()
        for i in range(3):
            await sup.send_message(device, TO, f"m{i}")
        await trio.sleep(60)
        times = [round(t - start) for t, _ in rec.of(device, "message_sent")]
        assert times == [0, 10, 20]
