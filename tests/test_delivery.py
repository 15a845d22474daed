"""Sink.deliver: an incoming message or a pairing is acknowledged to the engine only once the
device's actor committed it; a full event inbox makes the sender wait; a stopped device fails
the delivery so that the engine does not acknowledge it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from storage.messages import SqliteMessages
from supervisor import engine as eng
from supervisor.errors import DeliveryFailed
from supervisor.inbox import Inbox, InboxSink

from .lifecycle_support import connected_device, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py


def message(n: int) -> eng.MessageReceived:
    return eng.MessageReceived(
        message_id=f"M{n}", chat="491700000001@s.whatsapp.net",
        sender="491700000001@s.whatsapp.net", text=f"hello {n}", timestamp=1_700_000_000.0,
        sender_lid="12345678901234@lid", sender_pn="491700000001@s.whatsapp.net",
    )


async def stored_ids(sup, device: int) -> list[str]:  # type: ignore[no-untyped-def]
    def read(r):  # type: ignore[no-untyped-def]
        return [m.message_id for m in r.messages.recent(device, "491700000001@s.whatsapp.net", 100)]

    return await sup.db.run(read)


async def test_deliver_returns_after_the_message_is_stored(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        sink = InboxSink(sup.supervisor.child(device).inbox)
        await sink.deliver(message(1))
        assert await stored_ids(sup, device) == ["M1"]
        assert [e.data.message_id for _, e in rec.of(device, "message_received")] == ["M1"]
        # WhatsApp delivers it again (the acknowledgement was lost): acknowledged, one row.
        await sink.deliver(message(1))
        assert await stored_ids(sup, device) == ["M1"]
        assert len(rec.of(device, "message_received")) == 1


async def test_a_full_inbox_makes_deliver_wait_instead_of_disconnecting(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path, mailbox_size=1)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        child = sup.supervisor.child(device)
        sink = InboxSink(child.inbox)
        n = child.inbox.events * 3

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(sink.deliver, message(i))
        assert len(await stored_ids(sup, device)) == n
        assert child.inbox.lost == 0
        assert sup.get(device).status == "connected"


async def test_deliver_to_a_deleted_device_fails(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        sink = InboxSink(sup.supervisor.child(device).inbox)
        await sup.delete_device(device)
        with pytest.raises(DeliveryFailed):
            await sink.deliver(message(1))


async def test_deliver_fails_when_storing_fails(
    autojump_clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        sink = InboxSink(sup.supervisor.child(device).inbox)
        real = SqliteMessages.insert

        def failing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(SqliteMessages, "insert", failing)
        with pytest.raises(DeliveryFailed):
            await sink.deliver(message(1))
        monkeypatch.setattr(SqliteMessages, "insert", real)
        await wait_status(sup, device, "connected")
        await sink.deliver(message(1))  # WhatsApp delivers it again: stored now
        assert await stored_ids(sup, device) == ["M1"]


async def test_deliver_of_a_pairing_returns_after_paired_is_stored(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, _engine, _rec):
        row, _ = await sup.create_device("u1", "phone")
        await sup.wait_qr(row.id, 30)
        sink = InboxSink(sup.supervisor.child(row.id).inbox)
        await sink.deliver(eng.Paired("15550001111@s.whatsapp.net", "15550001111", "Ann", "android"))
        history = await sup.db.run(lambda r: r.history.of(row.id))
        assert ("pending", "connecting") in [(h.from_status, h.to_status) for h in history]
        stored = await sup.db.run(lambda r: r.devices.get(row.id))
        assert stored is not None and stored.phone_number == "15550001111"
        assert stored.push_name == "Ann"


async def deliver_noting_failure(sink: InboxSink, failed: list[str]) -> None:
    """Deliver message 1 through ``sink``, noting the reason in ``failed`` if it fails."""
    try:
        await sink.deliver(message(1))
    except DeliveryFailed as exc:
        failed.append(exc.reason)


async def test_a_sender_waiting_for_room_fails_when_the_device_is_deleted() -> None:
    inbox = Inbox(commands=1, events=1)
    assert inbox.put_event(eng.QrCode("q"))  # the event inbox is full now
    failed: list[str] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(deliver_noting_failure, InboxSink(inbox), failed)
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting() == 1 and failed == []  # waits for room, nothing refused
        inbox.close()
    assert failed == ["device_deleted"]


async def test_queued_deliveries_fail_when_the_actor_ends() -> None:
    inbox = Inbox(commands=1, events=4)
    failed: list[str] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(deliver_noting_failure, InboxSink(inbox), failed)
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting() == 1
        inbox.put_event(eng.QrCode("q"))
        inbox.fail_deliveries("device_stopped")  # what an ending actor does
    assert failed == ["device_stopped"]
    assert inbox.waiting() == 1  # the lifecycle event stays for the next actor
