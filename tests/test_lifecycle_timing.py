"""Exact virtual-time tests of the device lifecycle: QR rotation and expiry, the reconnect
backoff schedule, and restart intensity within a period (simulator engine, MockClock)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio

from common.clock import now_epoch, parse_iso

from .lifecycle_support import settle, sim_config, simulated, stored_row, wait_status, wait_until

pytestmark = pytest.mark.both_backends  # tests/store_support.py


async def test_qr_codes_rotate_then_time_out_at_exact_times(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, qr_first_timeout=60, qr_next_timeout=20, qr_max_attempts=3)
    async with simulated(config) as (sup, _engine, rec):
        t0 = trio.current_time()
        row, _ = await sup.create_device("u1", "Shop")
        await wait_status(sup, row.id, "qr_timeout")
        qrs = rec.of(row.id, "qr_code")
        # The first code after the 0.5 s handshake; it shows 60 s, each next one 20 s.
        assert [round(t - t0, 6) for t, _ in qrs] == [0.5, 60.5, 80.5]
        assert [e.data.qr.attempt for _, e in qrs] == [1, 2, 3]
        assert all(e.data.qr.max_attempts == 3 for _, e in qrs)
        # expiresAt is when the next code (or the timeout) comes.
        shown_epochs = [parse_iso(e.timestamp) for _, e in qrs]
        expiries = [parse_iso(e.data.qr.expires_at) for _, e in qrs]
        assert [round(x - s, 3) for s, x in zip(shown_epochs, expiries, strict=True)] == [60, 20, 20]
        # Every code is a different multi-device QR string.
        strings = [e.data.qr.qr_string for _, e in qrs]
        assert len(set(strings)) == 3 and all(s.count(",") == 4 for s in strings)
        timeouts = rec.of(row.id, "qr_timeout")
        assert [round(t - t0, 6) for t, _ in timeouts] == [100.5]
        assert sup.get(row.id).status_reason == "qr_expired"
        stored = await stored_row(sup, row.id)
        assert stored is not None and stored.status == "qr_timeout"
        # Nothing more happens to a timed-out device.
        await trio.sleep(3600)
        assert len(rec.of(row.id, "qr_code")) == 3


async def test_current_qr_follows_rotation(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, _engine, _rec):
        row, _ = await sup.create_device("u1", "Shop")
        first = await sup.wait_qr(row.id, 5)
        assert first is not None and first.attempt == 1
        assert first.data_url.startswith("data:image/png;base64,")
        await trio.sleep(61)
        second = sup.current_qr(row.session_id)
        assert second.attempt == 2 and second.qr_string != first.qr_string
        assert abs(second.expires_at_epoch - (now_epoch() + 19)) < 1e-3


async def test_scan_connects_and_stops_the_qr_cycle(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        t0 = trio.current_time()
        row, _ = await sup.create_device("u1", "Shop")
        await sup.wait_qr(row.id, 5)
        await trio.sleep(10)
        await engine.scan(row.id, "+15550001111", "Corner Shop")
        await wait_status(sup, row.id, "connected")
        t_connected = rec.statuses(row.id)[-1][0]
        assert round(t_connected - t0, 6) == 11.0  # scan at 10.5 + 0.5 s handshake
        got = sup.get(row.id)
        assert got.paired and got.push_name == "Corner Shop" and got.last_connection is not None
        assert got.jid == "15550001111@s.whatsapp.net"
        await trio.sleep(600)
        assert len(rec.of(row.id, "qr_code")) == 1  # no QR after pairing
        assert [s for _, s, _ in rec.statuses(row.id)] == ["connecting", "connected"]


async def _connected_device(sup, engine, alias: str = "Shop") -> int:
    row, _ = await sup.create_device("u1", alias)
    await sup.wait_qr(row.id, 5)
    await engine.scan(row.id)
    await wait_status(sup, row.id, "connected")
    return row.id


async def test_reconnect_backoff_schedule_is_exact(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, backoff_base=2, backoff_factor=2, backoff_cap=10)
    async with simulated(config) as (sup, engine, rec):
        device = await _connected_device(sup, engine)
        await engine.set_reachable(False)
        t_drop = trio.current_time()
        await engine.drop(device)
        await trio.sleep(60)
        statuses = [(round(t - t_drop, 6), s) for t, s, _ in rec.statuses(device)][2:]
        # drop -> disconnected; then each attempt waits 2, 4, 8, 10, 10 ... s (cap) and takes
        # the 0.5 s handshake latency to fail.
        expected: list[tuple[float, str]] = [(0.0, "disconnected")]
        t = 0.0
        for delay in [2, 4, 8, 10, 10]:
            t += delay
            expected.append((t, "connecting"))
            t += 0.5
            expected.append((t, "disconnected"))
        assert statuses[: len(expected)] == expected
        reasons = {r for _, s, r in rec.statuses(device)[3:] if s == "disconnected"}
        assert reasons == {"network_unreachable: simulated"}
        # The network comes back: the next attempt connects, and the backoff resets.
        await engine.set_reachable(True)
        await wait_status(sup, device, "connected")
        before = len(rec.statuses(device))
        await engine.drop(device)
        await trio.sleep(2.4)
        assert rec.statuses(device)[before:][-1][1] == "connecting"  # after 2 s again, not 10


async def test_backoff_jitter_stays_within_bounds(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, backoff_base=4, backoff_factor=2, backoff_cap=16, backoff_jitter=0.25)
    async with simulated(config) as (sup, engine, rec):
        device = await _connected_device(sup, engine)
        await engine.set_reachable(False)
        await engine.drop(device)
        await trio.sleep(200)
        sts = rec.statuses(device)[2:]
        waits = [
            b[0] - a[0]
            for a, b in itertools.pairwise(sts)
            if a[1] == "disconnected" and b[1] == "connecting"
        ]
        nominal = [4, 8, 16, 16, 16, 16]
        assert len(waits) >= len(nominal)
        for w, n in zip(waits, nominal, strict=False):
            assert n * 0.75 - 1e-6 <= w <= min(16, n * 1.25) + 1e-6
        assert len({round(w, 6) for w in waits}) > 1  # jitter really varies


async def test_logout_and_unlink_are_final(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        a = await _connected_device(sup, engine, "A")
        b = await _connected_device(sup, engine, "B")
        await sup.logout(a)
        await engine.unlink(b)
        await wait_status(sup, b, "logged_out")
        await trio.sleep(3600)
        for device, reason in ((a, "logout"), (b, "unlinked")):
            row = sup.get(device)
            assert (row.status, row.status_reason, row.paired) == ("logged_out", reason, False)
            assert await sup.db.run(lambda r, d=device: r.credentials.get(d)) is None
            assert [s for _, s, _ in rec.statuses(device)][-1] == "logged_out"
        assert len(rec.of(a, "device_logged_out")) == 1


async def test_crash_restarts_then_parks_on_intensity(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(
        tmp_path,
        restart_intensity=3,
        restart_period=60,
        restart_backoff_base=1,
        backoff_base=2,
    )
    async with simulated(config) as (sup, engine, rec):
        bystander = await _connected_device(sup, engine, "Bystander")
        device = await _connected_device(sup, engine, "Crashy")
        await engine.inject_fault(device, "connect", times=4)
        t_drop = trio.current_time()
        await engine.drop(device)
        await wait_status(sup, device, "disconnected")
        await wait_until(sup, device, lambda r: r.status_reason == "crash_loop", 120)
        t_parked = rec.statuses(device)[-1][0]
        # Backoff 2 s, then connect crashes at once; restarts after 1, 2, 4 s (each restart
        # retries the connect, which crashes again); the 4th crash exceeds 3 in 60 s.
        assert round(t_parked - t_drop, 6) == 2 + 1 + 2 + 4
        assert sup.crashes == 4
        assert sup.get(device).status == "disconnected"
        parked_events = [e for _, e in rec.of(device, "device_status") if e.data.reason == "crash_loop"]
        assert len(parked_events) == 1
        # Parked: nothing more happens on its own ...
        await trio.sleep(600)
        assert sup.get(device).status_reason == "crash_loop" and sup.crashes == 4
        # ... every other device went on untouched ...
        assert sup.get(bystander).status == "connected"
        assert [s for _, s, _ in rec.statuses(bystander)] == ["connecting", "connected"]
        # ... and an operator's login brings it back (the fault is used up).
        await sup.login(device)
        await wait_status(sup, device, "connected")
        assert sup.crashes == 4
        assert sup.get(device).status_reason is None


@pytest.mark.parametrize("spread", [40.0])
async def test_crashes_spread_over_the_period_do_not_park(autojump_clock, tmp_path: Path, spread: float) -> None:
    config = sim_config(tmp_path, restart_intensity=2, restart_period=60, restart_backoff_base=1)
    async with simulated(config) as (sup, engine, rec):
        device = await _connected_device(sup, engine)
        for _ in range(5):
            await engine.inject_fault(device, "connect", times=1)
            await engine.drop(device)
            await wait_status(sup, device, "connected")
            await trio.sleep(spread)
        await settle()
        assert sup.crashes == 5
        assert sup.get(device).status == "connected"
        assert all(e.data.reason != "crash_loop" for _, e in rec.of(device, "device_status"))
