"""Backpressure: a full mailbox answers 503 at once, a slow actor 504 after the deadline, and
engine events are never lost to a full mailbox."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor import engine as eng
from supervisor.errors import ActorTimeout, MailboxFull

from .lifecycle_support import settle, sim_config, simulated


async def test_full_mailbox_is_refused_and_engine_events_still_arrive(autojump_clock, tmp_path: Path) -> None:
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
            # The actor asks the engine for a pair code: 5 s of handshake, its mailbox waits.
            nursery.start_soon(call, sup.request_pair_code, row.id, "+15551234567")
            await settle()
            nursery.start_soon(call, sup.login, row.id)
            nursery.start_soon(call, sup.login, row.id)
            await settle()
            with pytest.raises(MailboxFull) as full:
                await sup.login(row.id)
            assert full.value.retry_after > 0
            # Engine events beyond the mailbox's room are kept, in order, not dropped.
            for i in range(20):
                sup.post(row.id, eng.MessageStatus(f"m{i}", "delivered"))
        assert len(answers) == 3 and not any(isinstance(a, Exception) for a in answers)
        await settle()
        statuses = [e.data["messageId"] for _, e in rec.of(row.id, "message_status")]
        assert statuses == [f"m{i}" for i in range(20)]


async def test_actor_that_does_not_answer_in_time_is_a_timeout(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, call_timeout=2, simulator_latency=5.0)
    async with simulated(config) as (sup, _engine, _rec):
        row, _ = await sup.create_device("u1", "Slow")
        await sup.wait_qr(row.id, 30)
        start = trio.current_time()
        with pytest.raises(ActorTimeout):
            await sup.request_pair_code(row.id, "+15551234567")
        assert trio.current_time() - start == pytest.approx(2)
        # The actor itself is fine: it answers the next call.
        await trio.sleep(10)
        assert (await sup.login(row.id))[0].status == "pending"
