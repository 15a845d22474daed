"""Backpressure: a full command inbox answers Busy (503) at once, a slow actor Unresponsive
(504) after the deadline, engine events have room of their own, and events beyond that room are
not lost silently: the device is disconnected and reconnects to resynchronise."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor import engine as eng
from supervisor.errors import Busy, Unresponsive

from .lifecycle_support import settle, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py


async def test_full_command_inbox_is_refused_and_engine_events_still_arrive(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path, mailbox_size=2, call_timeout=30, simulator_latency=5.0)
    async with simulated(config) as (sup, _engine, rec):
        row, _ = await sup.create_device("u1", "Busy")
        assert await sup.wait_qr(row.id, 30) is not None
        answers: list[object] = []

        async def call(fn, *args) -> None:
            try:
                answers.append(await fn(*args))
            except Exception as exc:
                answers.append(exc)

        async with trio.open_nursery() as nursery:
            # The actor asks the engine for a pair code: 5 s of handshake, its inbox waits.
            nursery.start_soon(call, sup.request_pair_code, row.id, "+15551234567")
            await settle()
            nursery.start_soon(call, sup.login, row.id)
            nursery.start_soon(call, sup.login, row.id)
            await settle()
            with pytest.raises(Busy) as full:
                await sup.login(row.id)
            assert full.value.retry_after > 0
            # Engine events have room of their own: none is refused, they arrive in order.
            for i in range(20):
                sup.supervisor.deliver(row.id, eng.MessageStatus(f"m{i}", "delivered"))
        assert len(answers) == 3 and not any(isinstance(a, Exception) for a in answers)
        await settle()
        statuses = [e.data.message_id for _, e in rec.of(row.id, "message_status")]
        assert statuses == [f"m{i}" for i in range(20)]


async def test_engine_events_beyond_the_room_resynchronise_the_device(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path, mailbox_size=1, call_timeout=30, simulator_latency=5.0)
    async with simulated(config) as (sup, _engine, rec):
        row, _ = await sup.create_device("u1", "Flood")
        assert await sup.wait_qr(row.id, 30) is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.request_pair_code, row.id, "+15551234567")
            await settle()  # the actor waits 5 s for the engine: its inbox fills up
            for i in range(40):
                sup.supervisor.deliver(row.id, eng.MessageStatus(f"m{i}", "delivered"))
        await settle()
        assert rec.statuses(row.id)[0][1:] == ("disconnected", "event_backlog")
        delivered = [e.data.message_id for _, e in rec.of(row.id, "message_status")]
        assert delivered == [f"m{i}" for i in range(16)]  # the room there was, in order
        await wait_status(sup, row.id, "pending")  # and it starts over by itself


async def test_actor_that_does_not_answer_in_time_is_unresponsive(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path, call_timeout=2, simulator_latency=5.0)
    async with simulated(config) as (sup, _engine, _rec):
        row, _ = await sup.create_device("u1", "Slow")
        await sup.wait_qr(row.id, 30)
        start = trio.current_time()
        with pytest.raises(Unresponsive):
            await sup.request_pair_code(row.id, "+15551234567")
        assert trio.current_time() - start == pytest.approx(2)
        # The actor itself is fine: it answers the next call.
        await trio.sleep(10)
        assert (await sup.login(row.id))[0].status == "pending"
