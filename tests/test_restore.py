"""Boot restore: a supervisor with many devices in mixed states is cancelled abruptly
mid-stream; a new one on the same database brings every device back as it was persisted, and
the connected ones reconnect by themselves."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

import storage
from supervisor import engine as eng
from supervisor.inbox import Inbox, InboxSink
from supervisor.state import LEGAL, Status
from supervisor.supervisor import open_supervisor

from .lifecycle_support import sim_config, simulated, wait_status, wait_until


async def test_restart_restores_every_device(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, max_concurrent_logins=3, backoff_base=5)
    groups: dict[str, list[int]] = {
        k: [] for k in ("connected", "pending", "qr_timeout", "logged_out", "cancelled", "flapping", "inflight")
    }
    with trio.CancelScope() as abrupt:
        async with simulated(config) as (sup, engine, _rec):
            for group, n in (("connected", 8), ("logged_out", 5), ("cancelled", 5), ("flapping", 5)):
                for i in range(n):
                    row, _ = await sup.create_device("u1", f"{group} {i}")
                    groups[group].append(row.id)
            for ids in groups.values():
                for device in ids:
                    await sup.wait_qr(device, 30)
                    await engine.scan(device)
            for ids in groups.values():
                for device in ids:
                    await wait_status(sup, device, "connected")
            for device in groups["logged_out"]:
                await sup.logout(device)
            for device in groups["cancelled"]:
                await sup.cancel(device)
            for i in range(5):
                row, _ = await sup.create_device("u2", f"timeout {i}")
                groups["qr_timeout"].append(row.id)
            await trio.sleep(120)  # their QR codes run out
            for i in range(6):
                row, _ = await sup.create_device("u2", f"pending {i}")
                groups["pending"].append(row.id)
            for device in groups["pending"]:
                await sup.wait_qr(device, 30)
            await engine.set_reachable(False)
            for device in groups["flapping"]:
                await engine.drop(device)
            await trio.sleep(3)
            # Mid-stream: fresh devices still in their handshakes, a scan's connect in flight.
            for i in range(6):
                row, _ = await sup.create_device("u3", f"inflight {i}")
                groups["inflight"].append(row.id)
            await engine.set_reachable(True)
            await sup.wait_qr(groups["pending"][0], 5)
            await engine.scan(groups["pending"][0])
            groups["inflight"].append(groups["pending"].pop(0))
            await trio.sleep(0.2)
            abrupt.cancel()
    assert abrupt.cancelled_caught

    async with storage.open_database(config.database_path) as db:
        before = {r.id: r for r in await db.run(lambda r: r.devices.all())}
    assert len(before) == sum(len(v) for v in groups.values())
    for device in groups["qr_timeout"]:
        assert before[device].status == "qr_timeout"
    for device in groups["flapping"]:
        assert before[device].status in ("disconnected", "connecting")

    async with simulated(config) as (sup, engine, rec):
        # Every stored device has an actor again; the ones an operator or WhatsApp ended stay so.
        assert set(sup.rows) == set(before)
        await trio.sleep(1)
        for device in groups["qr_timeout"]:
            assert sup.get(device).status == "qr_timeout"
        for device in groups["logged_out"]:
            row = sup.get(device)
            assert (row.status, row.status_reason, row.paired) == ("logged_out", "logout", False)
        for device in groups["cancelled"]:
            assert (sup.get(device).status, sup.get(device).status_reason) == ("disconnected", "cancelled")
        # Pending ones pair again, from a new first QR code.
        for device in groups["pending"]:
            qr = await sup.wait_qr(device, 30)
            assert qr is not None and qr.attempt == 1
        # Connected, connecting and network-disconnected devices reconnect by themselves,
        # through the login limiter.
        for device in groups["connected"] + groups["flapping"]:
            await wait_status(sup, device, "connected", within=120)
        for device in groups["inflight"]:
            await wait_until(sup, device, lambda r: r.status in ("connected", "pending"), 120)
        await trio.sleep(600)
        for device in groups["qr_timeout"] + groups["logged_out"]:
            assert rec.of(device, "device_status") == []
        for device in groups["cancelled"]:
            assert sup.get(device).status_reason == "cancelled"
        # Only legal transitions, across both runs.
        for device in before:
            history = await sup.history(device)
            for h in history:
                if h.from_status is not None:
                    assert (Status(h.from_status), Status(h.to_status)) in LEGAL


async def test_open_and_close_keeps_connected_devices_connected(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    async with simulated(config) as (sup, engine, _rec):
        row, _ = await sup.create_device("u1", "Shop")
        await sup.wait_qr(row.id, 5)
        await engine.scan(row.id, "+15550009999", "Shop")
        await wait_status(sup, row.id, "connected")
    for _ in range(3):
        async with open_supervisor(config) as sup:
            await wait_status(sup, row.id, "connected")
            restored = sup.get(row.id)
            assert restored.jid == "15550009999@s.whatsapp.net" and restored.paired


async def test_a_temporary_ban_outlives_a_restart(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, backoff_base=2)
    async with simulated(config) as (sup, engine, rec):
        row, _ = await sup.create_device("u1", "Banned")
        await sup.wait_qr(row.id, 5)
        await engine.scan(row.id)
        await wait_status(sup, row.id, "connected")
        ban_ends = trio.current_time() + 600
        until = await engine.temporary_ban(row.id, 600)
        await wait_status(sup, row.id, "disconnected")
        assert sup.get(row.id).status_reason == "temporary_ban"
        assert sup.get(row.id).ban_until == until
        await trio.sleep(10)
    # A new process: wasup still knows when the ban ends and does not try before.
    async with simulated(config) as (sup, _engine, rec):
        await wait_status(sup, row.id, "connected", within=1000)
        first_try = rec.statuses(row.id)[0]
        assert first_try[1] == "connecting"
        assert first_try[0] >= ban_ends - 1e-6
        assert sup.get(row.id).ban_until is None  # cleared once connected


async def _paired_and_closed(config) -> int:  # type: ignore[no-untyped-def]
    """A connected device in a supervisor that is then closed; its id."""
    async with simulated(config) as (sup, engine, _rec):
        row, _ = await sup.create_device("u1", "Shop")
        await sup.wait_qr(row.id, 5)
        await engine.scan(row.id, "+15550009999", "Shop")
        await wait_status(sup, row.id, "connected")
    return row.id


async def test_a_scan_whose_commit_was_lost_is_paired_at_restore(autojump_clock, tmp_path: Path) -> None:
    """Killed right after the phone scanned: the engine stored the credentials, the device is
    still `pending` and unpaired. The restore pairs it and connects, with no new scan."""
    config = sim_config(tmp_path)
    device = await _paired_and_closed(config)
    async with storage.open_database(config.database_path) as db:
        await db.run(lambda r: r.devices.update(device, status="pending", paired=False, jid=None))
    async with simulated(config) as (sup, _engine, rec):
        await wait_status(sup, device, "connected", within=30)
        assert rec.of(device, "qr_code") == []
        assert [s for _, s, _ in rec.statuses(device)] == ["connecting", "connected"]
        assert sup.get(device).paired
        history = await sup.history(device)
        assert (history[-2].from_status, history[-2].to_status) == ("pending", "connecting")


async def test_paired_without_credentials_is_logged_out_at_restore(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    device = await _paired_and_closed(config)
    async with storage.open_database(config.database_path) as db:
        await db.run(lambda r: r.credentials.delete(device))
    async with simulated(config) as (sup, _engine, rec):
        await wait_status(sup, device, "logged_out", within=30)
        row = sup.get(device)
        assert (row.status_reason, row.paired) == ("credentials_missing", False)
        assert [e.data.reason for _, e in rec.of(device, "device_logged_out")] == ["credentials_missing"]
        history = await sup.history(device)
        assert (history[-1].to_status, history[-1].reason) == ("logged_out", "credentials_missing")
        # A login pairs it again.
        _row, _qr = await sup.login(device)
        assert await sup.wait_qr(device, 5) is not None


async def test_an_outdated_device_reconnects_at_once_at_restart(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, slow_retry=900)
    device = await _paired_and_closed(config)
    async with simulated(config) as (sup, _engine, _rec):
        await wait_status(sup, device, "connected")
        sup.supervisor.child(device).inbox.put_event(
            eng.Disconnected("client_outdated", retry=eng.Retry.SLOW)
        )
        await wait_status(sup, device, "disconnected")
    # wasup was upgraded and restarted: no need to wait 15 minutes.
    async with simulated(config) as (sup, _engine, _rec):
        t0 = trio.current_time()
        await wait_status(sup, device, "connected", within=5)
        assert trio.current_time() - t0 <= 1.0


async def test_a_replaced_device_waits_for_login_across_a_restart(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    device = await _paired_and_closed(config)
    async with simulated(config) as (sup, _engine, _rec):
        await wait_status(sup, device, "connected")
        sup.supervisor.child(device).inbox.put_event(
            eng.Disconnected("stream_replaced", retry=eng.Retry.HOLD)
        )
        await wait_status(sup, device, "disconnected")
    async with simulated(config) as (sup, _engine, rec):
        await trio.sleep(3600)
        assert rec.statuses(device) == []
        assert (sup.get(device).status, sup.get(device).paired) == ("disconnected", True)
        await sup.login(device)
        await wait_status(sup, device, "connected")
        assert rec.of(device, "qr_code") == []


async def test_whatsmeow_session_tells_whether_credentials_are_stored(tmp_path: Path) -> None:
    from supervisor.engines import whatsmeow_store as ws
    from supervisor.engines.whatsmeow import WhatsmeowEngine

    engine = WhatsmeowEngine(tmp_path, preflight_host=None)
    session = engine.session(7, "s7", InboxSink(Inbox(1, 1)))
    assert await session.has_credentials() is False  # no store at all
    path = ws.store_path(tmp_path, 7)
    ws.prepare_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE whatsmeow_device (jid TEXT PRIMARY KEY)")
    assert await session.has_credentials() is False  # whatsmeow's schema, no account
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO whatsmeow_device VALUES ('15550009999.0:1@s.whatsapp.net')")
    assert await session.has_credentials() is True
    await session.delete()
    assert await session.has_credentials() is False
    await engine.aclose()
