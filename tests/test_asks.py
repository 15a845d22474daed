"""Asks and notices on real actors (simulator engine, MockClock): a request runs on the
connected session and answers its caller; WhatsApp's refusals reach the caller as they are, a
dropped connection as a conflict, an engine failure as a refusal that leaves the device
connected; a device that is not connected refuses at once; a slow request does not hold up the
device. A notice the engine reports is published, and queued for the device's webhook."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor import engine as eng
from supervisor.errors import (
    DeviceConflict,
    EngineError,
    EngineRefused,
    WhatsAppForbidden,
    WhatsAppRefused,
)
from supervisor.payloads import GroupUpdated

from .lifecycle_support import connected_device, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

GROUP = "120363000000000001@g.us"


async def test_a_request_runs_on_the_connected_session(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        session = engine.get_session(device)

        async def credentials(s: eng.EngineSession) -> bool:
            assert s is session
            return await s.has_credentials()

        assert await sup.ask(device, credentials, "credentials") is True


@pytest.mark.parametrize(
    ("raised", "answered"),
    [
        (WhatsAppForbidden("not_admin", "not an admin of this group"), WhatsAppForbidden),
        (WhatsAppRefused("group_full"), WhatsAppRefused),
        (EngineError("connection_lost", recoverable=True), DeviceConflict),
        (EngineError("upload_failed", recoverable=False), EngineRefused),
        (RuntimeError("boom"), EngineRefused),
    ],
)
async def test_failures_answer_the_caller_and_the_device_stays_connected(
    autojump_clock, tmp_path: Path, raised: Exception, answered: type[Exception]
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)

        async def failing(s: eng.EngineSession) -> None:
            raise raised

        with pytest.raises(answered) as caught:
            await sup.ask(device, failing, "failing")
        if isinstance(raised, WhatsAppRefused):
            assert caught.value is raised  # WhatsApp's reason and words, unchanged
        assert sup.get(device).status == "connected"  # no restart, no state change
        assert sup.crashes == 0


async def test_a_device_that_is_not_connected_refuses(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        await sup.cancel(device)
        await wait_status(sup, device, "disconnected")
        ran = False

        async def op(s: eng.EngineSession) -> None:
            nonlocal ran
            ran = True

        with pytest.raises(DeviceConflict, match="not connected"):
            await sup.ask(device, op, "op")
        assert not ran


async def test_a_slow_request_does_not_hold_up_the_device(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        release = trio.Event()

        async def slow(s: eng.EngineSession) -> str:
            await release.wait()
            return "done"

        async with trio.open_nursery() as nursery:
            answers: list[str] = []

            async def ask() -> None:
                answers.append(await sup.ask(device, slow, "slow", within=600))

            nursery.start_soon(ask)
            await trio.sleep(1)
            # Meanwhile the device handles its other commands.
            answer = await sup.send_message(device, "15557654321@s.whatsapp.net", "hi")
            assert answer["status"] == "sent"
            release.set()
        assert answers == ["done"]


async def test_a_notice_is_published_and_queued_for_the_webhook(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        await sup.put_settings(device, "webhook", {
            "url": "https://hooks.example.com/wa", "events": ["group_updated"],
            "secrets": [{"secret": "whsec_test", "expiresAt": None}], "enabled": True,
        })
        notice = GroupUpdated(GROUP, "15557654321@s.whatsapp.net", subject="Orders")
        engine.get_session(device).sink(eng.Notice(notice))
        await trio.sleep(1)
        published = rec.of(device, "group_updated")
        assert [e.data for _, e in published] == [notice]
        deliveries, total = await sup.db.run(lambda r: r.outbox.list_deliveries(device))
        assert total == 1
        assert deliveries[0]["eventType"] == "group_updated"
        assert deliveries[0]["payload"]["data"]["subject"] == "Orders"
