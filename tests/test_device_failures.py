"""How a device reacts to the failures the engine reports, on real actors (simulator engine,
MockClock): a failed scan shows at once while the QR cycle goes on; an outdated client keeps
its credentials and retries on the slow schedule; a replaced session keeps them and waits for
a login, which reconnects without a scan; a pair code keeps the device pending for its window."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from common.clock import now_epoch, parse_iso
from supervisor import engine as eng

from .lifecycle_support import connected_device, sim_config, simulated, stored_row, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py


def _report(sup, device: int, event: eng.EngineEvent) -> None:  # type: ignore[no-untyped-def]
    """The engine reports ``event`` for the device (as a session's sink does)."""
    sup.supervisor.child(device).inbox.put_event(event)


async def test_failed_scan_is_visible_at_once_and_the_qr_cycle_goes_on(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path, qr_first_timeout=60, qr_next_timeout=20, qr_max_attempts=3)
    async with simulated(config) as (sup, _engine, rec):
        t0 = trio.current_time()
        row, _ = await sup.create_device("u1", "Shop")
        await sup.wait_qr(row.id, 5)
        await trio.sleep(10)
        t_fail = trio.current_time()
        _report(sup, row.id, eng.PairingFailed("pair_error", restart=True))
        await trio.sleep(0.01)
        # At once: the reason, stored, and a device_status event (pending -> pending).
        assert rec.statuses(row.id)[-1] == (t_fail, "pending", "pair_error")
        assert sup.get(row.id).status_reason == "pair_error"
        stored = await stored_row(sup, row.id)
        assert stored is not None and (stored.status, stored.status_reason) == ("pending", "pair_error")
        # No history row for a reason-only change.
        history = await sup.db.run(lambda r: r.history.of(row.id))
        assert [(h.from_status, h.to_status) for h in history if h.from_status == h.to_status] == []
        # The engine pairs again: a new code (still attempt 1) clears the reason.
        await trio.sleep(1)
        qrs = rec.of(row.id, "qr_code")
        assert [e.data.qr.attempt for _, e in qrs] == [1, 1]
        assert qrs[1][1].data.qr.qr_string != qrs[0][1].data.qr.qr_string
        assert sup.get(row.id).status_reason is None
        assert rec.statuses(row.id)[-1][1:] == ("pending", None)
        # The QR cycle's deadline did not move: the same timeout as without the failure.
        await wait_status(sup, row.id, "qr_timeout")
        assert round(rec.statuses(row.id)[-1][0] - t0, 6) == 100.5


async def test_failure_without_restart_keeps_the_qr_on_show(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, _engine, rec):
        row, _ = await sup.create_device("u1", "Shop")
        first = await sup.wait_qr(row.id, 5)
        _report(sup, row.id, eng.PairingFailed("passkey_required"))
        await trio.sleep(0.01)
        assert sup.get(row.id).status_reason == "passkey_required"
        assert sup.current_qr(row.id) == first
        assert len(rec.of(row.id, "qr_code")) == 1


async def test_outdated_client_keeps_credentials_and_retries_slowly(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path, slow_retry=900)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        t = trio.current_time()
        _report(sup, device, eng.Disconnected("client_outdated", retry=eng.Retry.SLOW))
        await trio.sleep(899)
        assert rec.statuses(device)[-1][1:] == ("disconnected", "client_outdated")
        row = sup.get(device)
        assert row.paired and row.jid is not None
        assert await engine.credentials.get(device) is not None  # kept
        await wait_status(sup, device, "connected")
        after = [(round(ts - t, 6), s) for ts, s, _ in rec.statuses(device)][-3:]
        assert after == [(0.0, "disconnected"), (900.0, "connecting"), (900.5, "connected")]
        assert len(rec.of(device, "qr_code")) == 1  # no new pairing


async def test_outdated_while_pairing_disconnects_and_pairs_again_slowly(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path, slow_retry=900)) as (sup, _engine, rec):
        row, _ = await sup.create_device("u1", "Shop")
        await sup.wait_qr(row.id, 5)
        _report(sup, row.id, eng.Disconnected("client_outdated", retry=eng.Retry.SLOW))
        await trio.sleep(1)
        assert rec.statuses(row.id)[-1][1:] == ("disconnected", "client_outdated")
        await trio.sleep(898)
        assert sup.get(row.id).status == "disconnected"
        await trio.sleep(2)
        assert sup.get(row.id).status == "pending"


async def test_replaced_session_waits_for_login_which_reconnects_without_a_scan(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        _report(sup, device, eng.Disconnected("stream_replaced", retry=eng.Retry.HOLD))
        await trio.sleep(24 * 3600)
        assert rec.statuses(device)[-1][1:] == ("disconnected", "stream_replaced")
        assert await engine.credentials.get(device) is not None
        row, qr = await sup.login(device)
        assert row.status == "connecting" and qr is None
        await wait_status(sup, device, "connected")
        assert len(rec.of(device, "qr_code")) == 1


async def test_a_pair_code_keeps_the_device_pending_for_its_window(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path, qr_first_timeout=60, qr_next_timeout=20, qr_max_attempts=3)
    async with simulated(config) as (sup, _engine, rec):
        row, _ = await sup.create_device("u1", "Shop")
        first = await sup.wait_qr(row.id, 5)
        assert first is not None
        t_first = trio.current_time()
        await trio.sleep(30)
        code, expires = await sup.request_pair_code(row.id, "+15550001111")
        # Valid until 160 s after the first QR code, as whatsmeow accepts it.
        assert abs(parse_iso(expires) - (now_epoch() + (t_first + 160 - trio.current_time()))) < 0.01
        await trio.sleep(t_first + 100 - trio.current_time())  # every QR code expired
        assert sup.get(row.id).status == "pending"
        assert rec.of(row.id, "qr_timeout") == []
        await wait_status(sup, row.id, "qr_timeout")
        assert round(rec.statuses(row.id)[-1][0] - t_first, 6) == 160.0
        assert sup.get(row.id).status_reason == "qr_expired"
        assert code


async def test_a_pair_code_entered_late_in_its_window_pairs(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path, qr_first_timeout=60, qr_next_timeout=20, qr_max_attempts=3)
    async with simulated(config) as (sup, engine, _rec):
        row, _ = await sup.create_device("u1", "Shop")
        await sup.wait_qr(row.id, 5)
        code, _ = await sup.request_pair_code(row.id, "+15550001111")
        await trio.sleep(140)  # past the last QR code's expiry
        assert sup.get(row.id).status == "pending"
        await engine.scan(row.id, code=code)
        await wait_status(sup, row.id, "connected")
