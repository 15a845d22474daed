"""The whole supervisor on the real whatsmeow engine, offline (this machine has no route to
WhatsApp): devices fail into ``disconnected`` with a readable reason, retry on the backoff
schedule and never faster, the supervisor stays responsive, and create/cancel/delete cycles
leave no thread and no Go client behind.

The engine's preflight is off here, so every attempt goes through neonize and whatsmeow.
Threads do real work, so the MockClock jumps only after 0.5 s of real idleness (not at once).
"""

from __future__ import annotations

import threading
from pathlib import Path

import trio
import trio.testing

from supervisor.config import Config
from supervisor.engines.whatsmeow import WhatsmeowEngine
from supervisor.supervisor import open_supervisor

from .lifecycle_support import Recorder, wait_status

REASON = "unreachable: lookup web.whatsapp.com: no such host"


def offline_config(data_dir: Path) -> Config:
    return Config(
        data_dir=data_dir,
        engine="whatsmeow",
        backoff_base=1.0,
        backoff_factor=2.0,
        backoff_cap=4.0,
        backoff_jitter=0.0,
        connect_timeout=600.0,
        seed=1,
    )


def test_offline_device_backs_off_on_schedule_and_stays_responsive(tmp_path: Path) -> None:
    async def main() -> None:
        config = offline_config(tmp_path / "data")
        engine = WhatsmeowEngine(config.data_dir, preflight_host=None)
        recorder = Recorder()
        async with open_supervisor(config, engine=engine) as sup:
            sup.bus.tap(recorder)
            t0 = trio.current_time()
            row, _key = await sup.create_device("u1", "Offline")
            await trio.sleep(20.5)
            # Responsive all along: answers at once (no virtual time passes).
            before = trio.current_time()
            assert sup.get(row.session_id).status in ("pending", "disconnected")
            _other, _ = await sup.create_device("u1", "Second")
            assert trio.current_time() - before < 0.5
            statuses = recorder.statuses(row.id)
        downs = [t - t0 for t, status, _ in statuses if status == "disconnected"]
        ups = [t - t0 for t, status, _ in statuses if status == "pending"]
        reasons = {reason for _, status, reason in statuses if status == "disconnected"}
        assert reasons == {REASON}, statuses
        # Attempts at 0, then 1, 2, 4, 4, 4... seconds after each failure: never sooner.
        expected = [1.0, 2.0, 4.0, 4.0, 4.0]
        gaps = [up - down for down, up in zip(downs, ups, strict=False)]
        assert len(gaps) >= 4, statuses
        for gap, want in zip(gaps, expected, strict=False):
            assert gap >= want - 1e-6, (gaps, statuses)
            assert gap < want + 0.5, (gaps, statuses)
        # In 20.5 s: 0, 1, 3, 7, 11, 15, 19 at most.
        assert len(downs) <= 7
        stored = await sup_history_reason(config)
        assert stored == REASON

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.5))


async def sup_history_reason(config: Config) -> str | None:
    """The reason as persisted (a fresh supervisor reads the database)."""
    engine = WhatsmeowEngine(config.data_dir, preflight_host=None)
    async with open_supervisor(config, engine=engine) as sup:
        row = sup.get("user_u1_device_offline")
        return row.status_reason


async def test_create_cancel_delete_cycles_leave_no_thread_or_go_client(tmp_path: Path) -> None:
    config = offline_config(tmp_path / "data")
    engine = WhatsmeowEngine(config.data_dir, preflight_host=None)

    def ours() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if not t.name.startswith("Trio thread"))

    async with open_supervisor(config, engine=engine) as sup:
        warm, _ = await sup.create_device("u1", "warm")
        await wait_status(sup, warm.id, "disconnected", within=10)
        await sup.delete_device(warm.session_id)
        before = ours()
        for i in range(50):
            row, _ = await sup.create_device("u1", f"d{i}")
            await wait_status(sup, row.id, "disconnected", within=10)
            if i % 2:
                await sup.cancel(row.session_id)
            await sup.delete_device(row.session_id)
        assert ours() == before
        stats = engine.statistics()
        assert (stats.sessions, stats.live_clients, stats.parked_threads) == (0, 0, 0)
        assert not any((config.data_dir / "whatsmeow").glob("*.db"))


async def test_http_server_on_whatsmeow_offline(tmp_path: Path) -> None:
    """``wasup serve``'s default engine, over HTTP: readable reason, server responsive."""
    from .conftest import api_client, running_server

    engine = WhatsmeowEngine(tmp_path / "data")  # the default engine, preflight on
    async with running_server(tmp_path / "data", engine=engine) as server, \
            api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Real"})
        assert r.status_code == 201, r.text
        sid = r.json()["data"]["sessionId"]
        with trio.fail_after(10):
            while True:
                r = await api.get(f"/devices/{sid}")
                data = r.json()["data"]
                if data["status"] == "disconnected":
                    break
                await trio.sleep(0.02)
        assert data["statusReason"].startswith("unreachable: lookup web.whatsapp.com")
        r = await api.post(f"/devices/{sid}/messages", json={"to": "15557654321", "text": "x"})
        assert r.status_code == 409
        r = await api.post(f"/devices/{sid}/pair-code", json={"phoneNumber": "+15551234567"})
        assert r.status_code == 409
        r = await api.get("/sessions")
        assert r.status_code == 200
        r = await api.delete(f"/devices/{sid}")
        assert r.status_code == 200
