"""Calls and presence below the API, in virtual time: the auto-reject of supervisor/calls.py
(the rejection runs as a task, so a slow or failing rejection holds up nothing; the reply is a
tracked send), and what a reconnect does to presence subscriptions."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from supervisor import account
from supervisor.calls import SETTINGS_KIND, CallSettings
from supervisor.engines.simulator_account import SimulatorAccount

from .lifecycle_support import connected_device, settle, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

PEER = "15557654321@s.whatsapp.net"


async def test_auto_reject_runs_as_a_task_and_the_reply_is_tracked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, recorder):
        d = await connected_device(sup, engine)
        session = engine.get_session(d)
        world = engine.server.account
        await sup.put_settings(d, SETTINGS_KIND, CallSettings(True, "Write to us").to_json())

        # A rejection that takes 30 s does not hold up the device: the event and the reply
        # go out at once, the rejection lands when WhatsApp answers.
        release = trio.Event()
        original = SimulatorAccount.reject_call

        async def slow_reject(self: SimulatorAccount, call_id: str, caller: str) -> None:
            await release.wait()
            await original(self, call_id, caller)

        SimulatorAccount.reject_call = slow_reject  # type: ignore[method-assign]
        try:
            started = trio.current_time()
            call_id = world.incoming_call(session, PEER, video=True)
            await settle()
            calls = recorder.of(d, "call_received")
            assert len(calls) == 1 and calls[0][0] == started
            assert calls[0][1].data.rejected is True and calls[0][1].data.call_id == call_id
            sent = recorder.of(d, "message_sent")
            assert [e.data.to for _, e in sent] == [PEER]
            assert world.of(d).rejections == []  # still with WhatsApp
            # The device answers other requests meanwhile.
            profile = await account.profile(sup, str(d))
            assert profile.jid.endswith("@s.whatsapp.net")
            release.set()
            await settle()
            assert [r.call_id for r in world.of(d).rejections] == [call_id]
        finally:
            SimulatorAccount.reject_call = original  # type: ignore[method-assign]

        # A rejection WhatsApp refuses is logged; the device carries on.
        async def refused(self: SimulatorAccount, call_id: str, caller: str) -> None:
            raise RuntimeError("server said no")

        SimulatorAccount.reject_call = refused  # type: ignore[method-assign]
        try:
            world.incoming_call(session, PEER)
            await settle()
        finally:
            SimulatorAccount.reject_call = original  # type: ignore[method-assign]
        assert len(recorder.of(d, "call_received")) == 2
        assert sup.rows[d].status == "connected"

        # Turned off: the call rings, nothing is sent.
        await sup.put_settings(d, SETTINGS_KIND, CallSettings(False).to_json())
        world.incoming_call(session, PEER)
        await settle()
        assert recorder.of(d, "call_received")[-1][1].data.rejected is False
        assert len(recorder.of(d, "message_sent")) == 2


async def test_a_reconnect_forgets_presence_subscriptions(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, recorder):
        d = await connected_device(sup, engine)
        world = engine.server.account
        await account.set_presence(sup, str(d), "available")
        await account.subscribe_presence(sup, str(d), "+15557654321")
        assert world.contact_presence(engine.get_session(d), PEER, "available")
        await engine.drop(d)
        await wait_status(sup, d, "disconnected")
        await wait_status(sup, d, "connected")
        session = engine.get_session(d)
        assert not world.contact_presence(session, PEER, "available")
        await account.subscribe_presence(sup, str(d), PEER)
        assert not world.contact_presence(session, PEER, "available")  # not available yet
        await account.set_presence(sup, str(d), "available")
        assert world.contact_presence(session, PEER, "typing")
        await settle()
        states = [e.data.state for _, e in recorder.of(d, "presence")]
        assert states == ["available", "typing"]
