"""The simulator engine: deterministic values, exact virtual-time latency, and each control.

Every test that sleeps runs on the autojump clock; latencies are asserted exactly.
"""

from __future__ import annotations

import base64
import re
import sys

import pytest
import trio

from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    MessageReceived,
    MessageStatus,
    Paired,
    QrCode,
    TemporaryBan,
)
from supervisor.engines.simulator import (
    PAIR_CODE_ALPHABET,
    Credentials,
    MemoryCredentialStore,
    SimulatedCrash,
    SimulatorEngine,
    SimulatorSession,
)
from supervisor.errors import DeviceConflict, DeviceNotFound, EngineError, InvalidRequest

LATENCY = 0.5


class Recorder:
    def __init__(self) -> None:
        self.events: list[EngineEvent] = []

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def last(self) -> EngineEvent:
        return self.events[-1]


def make(seed: int = 0, latency: float = LATENCY) -> tuple[SimulatorEngine, MemoryCredentialStore]:
    store = MemoryCredentialStore()
    return SimulatorEngine(store, seed=seed, handshake_latency=latency), store


def open_session(engine: SimulatorEngine, device_id: int = 1) -> tuple[SimulatorSession, Recorder]:
    rec = Recorder()
    return engine.session(device_id, f"user_u_device_{device_id}", rec), rec


async def paired(
    engine: SimulatorEngine, device_id: int = 1, **scan
) -> tuple[SimulatorSession, Recorder]:
    session, rec = open_session(engine, device_id)
    await session.start_pairing()
    await engine.scan(device_id, **scan)
    return session, rec


async def connected(
    engine: SimulatorEngine, device_id: int = 1, **scan
) -> tuple[SimulatorSession, Recorder]:
    session, rec = await paired(engine, device_id, **scan)
    await session.connect()
    return session, rec


async def qr_strings(seed: int, device_id: int, order: list[int]) -> list[str]:
    """QR strings device ``device_id`` shows, with devices created in ``order``."""
    engine, _ = make(seed)
    sessions = {d: open_session(engine, d) for d in order}
    for d in order:
        await sessions[d][0].start_pairing()
        await sessions[d][0].next_qr()
    return [e.code for e in sessions[device_id][1].of(QrCode)]


# -- determinism and formats -----------------------------------------------------------


async def test_same_seed_same_values(autojump_clock):
    a = await qr_strings(7, 1, [1])
    assert a == await qr_strings(7, 1, [1])
    assert a != await qr_strings(8, 1, [1])
    # independent of other devices and of creation order
    assert a == await qr_strings(7, 1, [3, 2, 1])
    assert a != await qr_strings(7, 2, [1, 2])

    codes = []
    for _ in range(2):
        engine, _ = make(7)
        session, _ = open_session(engine)
        await session.start_pairing()
        codes.append(await session.request_pair_code("+15550001111"))
        await engine.scan(1, code=codes[-1])
        await session.connect()
        codes.append(await session.send_message("15550002222@s.whatsapp.net", "hi"))
        codes.append(await engine.incoming_message(1, "15550002222", "yo"))
    assert codes[:3] == codes[3:]


async def test_qr_string_has_whatsapp_multidevice_format(autojump_clock):
    engine, _ = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    await session.next_qr()
    first, second = (e.code for e in rec.of(QrCode))
    prefix = "https://wa.me/settings/linked_devices#"
    for code in (first, second):
        # neonize 0.5.2's form: the phone's link, then ref, three keys and the platform type
        assert code.startswith(prefix)
        parts = code.removeprefix(prefix).split(",")
        assert len(parts) == 5
        ref, noise, identity, adv, platform = parts
        assert ref.startswith("2@") and len(ref) > 20
        base64.b64decode(ref[2:], validate=True)
        for key in (noise, identity, adv):
            assert len(base64.b64decode(key, validate=True)) == 32
        assert platform == "1"
    # a new ref, the same keys (as WhatsApp rotates its QR codes)
    assert first.split(",")[0] != second.split(",")[0]
    assert first.split(",")[1:] == second.split(",")[1:]
    assert engine.current_qr(1) == second


async def test_qr_string_decodes_from_the_rendered_png(autojump_clock):
    zxingcpp = pytest.importorskip("zxingcpp")
    pil_image = pytest.importorskip("PIL.Image")
    import io

    from supervisor.qr import QrAttempt

    engine, _ = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    code = rec.of(QrCode)[0].code
    qr = QrAttempt.expiring(code, attempt=1, max_attempts=3, expires_at_epoch=0.0)
    png = base64.b64decode(qr.data_url.split(",", 1)[1])
    assert [r.text for r in zxingcpp.read_barcodes(pil_image.open(io.BytesIO(png)))] == [code]


async def test_new_pairing_has_new_keys(autojump_clock):
    engine, _ = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    await session.stop()
    await session.start_pairing()
    a, b = (e.code for e in rec.of(QrCode))
    assert a.split(",")[1:] != b.split(",")[1:]


# -- latency ------------------------------------------------------------------------------


async def test_handshake_latency_is_exact(autojump_clock):
    engine, _ = make(latency=0.75)
    session, rec = open_session(engine)
    t0 = trio.current_time()
    await session.start_pairing()
    assert trio.current_time() - t0 == 0.75
    assert isinstance(rec.last, QrCode)

    t0 = trio.current_time()
    await session.next_qr()  # the refs are already there: no round trip
    assert trio.current_time() - t0 == 0

    await engine.scan(1)
    t0 = trio.current_time()
    await session.connect()
    assert trio.current_time() - t0 == 0.75
    assert isinstance(rec.last, Connected)


async def test_zero_latency_never_sleeps(autojump_clock):
    engine, _ = make(latency=0)
    t0 = trio.current_time()
    await connected(engine)
    assert trio.current_time() == t0


async def test_no_event_before_the_handshake_finishes(autojump_clock):
    engine, _ = make()
    session, rec = open_session(engine)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.start_pairing)
        await trio.sleep(LATENCY / 2)
        assert rec.events == []
        with pytest.raises(DeviceConflict):  # nothing on screen to scan yet
            await engine.scan(1)
    assert isinstance(rec.last, QrCode)


async def test_stop_interrupts_a_handshake(autojump_clock):
    engine, _ = make()
    session, rec = await paired(engine)
    rec.events.clear()
    errors = []

    async def connect() -> None:
        try:
            await session.connect()
        except EngineError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connect)
        await trio.sleep(LATENCY / 2)
        await session.stop()
    assert [e.reason for e in errors] == ["stopped"]
    assert rec.events == []


# -- scan and pairing ---------------------------------------------------------------------


async def test_scan_stores_credentials_and_reports_paired(autojump_clock):
    engine, store = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    event = await engine.scan(1, phone_number="+62 812-3456-7890", push_name="Toko Budi")
    assert event == Paired(
        jid="6281234567890@s.whatsapp.net",
        phone_number="+6281234567890",
        push_name="Toko Budi",
        platform="android",
    )
    assert rec.last == event
    creds = Credentials.from_bytes(store.data[1])
    assert creds.jid == event.jid and creds.push_name == "Toko Budi"
    # the pairing keys are the ones the QR showed
    qr = rec.of(QrCode)[0].code
    assert qr.split(",")[1:4] == [creds.noise_key, creds.identity_key, creds.adv_secret]
    # pairing is over: no QR on display, a second scan is a conflict
    assert engine.current_qr(1) is None
    with pytest.raises(DeviceConflict, match="not pairing"):
        await engine.scan(1)
    await session.connect()
    assert rec.last == Connected(push_name="Toko Budi", platform="android")


async def test_scan_defaults_are_deterministic(autojump_clock):
    results = []
    for _ in range(2):
        engine, _ = make(3)
        _, rec = await paired(engine)
        results.append(rec.of(Paired)[0])
    assert results[0] == results[1]
    event = results[0]
    assert re.fullmatch(r"\+1555\d{7}", event.phone_number)
    assert event.jid == event.phone_number[1:] + "@s.whatsapp.net"
    assert event.push_name


async def test_scan_errors(autojump_clock):
    engine, _ = make()
    with pytest.raises(DeviceNotFound):
        await engine.scan(1)
    session, _ = open_session(engine)
    with pytest.raises(DeviceConflict, match="not pairing"):
        await engine.scan(1)
    await session.start_pairing()
    with pytest.raises(InvalidRequest):
        await engine.scan(1, phone_number="12ab")
    with pytest.raises(DeviceConflict, match="no pair code"):
        await engine.scan(1, code="ABCD-EFGH")


async def test_pair_code_format_and_acceptance(autojump_clock):
    engine, store = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    t0 = trio.current_time()
    code = await session.request_pair_code("+44 7700 900123")
    assert trio.current_time() - t0 == LATENCY
    alphabet = re.escape(PAIR_CODE_ALPHABET)
    assert re.fullmatch(f"[{alphabet}]{{4}}-[{alphabet}]{{4}}", code)
    assert not set(code) & set("0OIU")

    wrong = ("2" if code[0] != "2" else "3") + code[1:]
    with pytest.raises(InvalidRequest, match="wrong pair code"):
        await engine.scan(1, code=wrong)
    with pytest.raises(InvalidRequest, match="does not match"):
        await engine.scan(1, code=code, phone_number="+15550000000")
    assert 1 not in store.data and rec.of(Paired) == []

    # the phone's number comes from the pair code; case and hyphen do not matter
    event = await engine.scan(1, code=code.replace("-", "").lower())
    assert event.phone_number == "+447700900123"
    assert event.jid == "447700900123@s.whatsapp.net"
    assert 1 in store.data


async def test_a_new_pair_code_replaces_the_old(autojump_clock):
    engine, _ = make()
    session, _ = open_session(engine)
    await session.start_pairing()
    old = await session.request_pair_code("15550001111")
    new = await session.request_pair_code("15550001111")
    assert old != new
    with pytest.raises(InvalidRequest):
        await engine.scan(1, code=old)
    await engine.scan(1, code=new)


async def test_pair_code_needs_pairing_and_a_valid_number(autojump_clock):
    engine, _ = make()
    session, _ = open_session(engine)
    with pytest.raises(EngineError) as info:
        await session.request_pair_code("15550001111")
    assert info.value.reason == "not_pairing"
    await session.start_pairing()
    with pytest.raises(EngineError) as info:
        await session.request_pair_code("123")
    assert info.value.reason == "invalid_phone_number"


# -- connect, drop, unlink, logout --------------------------------------------------------


async def test_connect_without_credentials_is_final(autojump_clock):
    engine, _ = make()
    session, rec = open_session(engine)
    t0 = trio.current_time()
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "no_credentials" and info.value.recoverable is False
    assert trio.current_time() == t0  # a local check: no round trip
    assert rec.events == []


async def test_foreign_credentials_are_final_not_a_crash(autojump_clock):
    engine, store = make()
    session, _ = open_session(engine)
    store.data[1] = b"not json"
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "invalid_credentials" and not info.value.recoverable


async def test_drop_reports_a_recoverable_disconnect(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    await engine.drop(1)
    assert rec.last == Disconnected("connection_lost", recoverable=True)
    with pytest.raises(DeviceConflict):
        await engine.drop(1)  # nothing left to drop
    with pytest.raises(EngineError):
        await session.send_message("15550002222@s.whatsapp.net", "hi")
    await session.connect()  # credentials survive a drop
    assert isinstance(rec.last, Connected)


async def test_drop_while_pairing(autojump_clock):
    engine, _ = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    await engine.drop(1)
    assert rec.last == Disconnected("connection_lost", recoverable=True)
    assert engine.current_qr(1) is None


async def test_unlink_wipes_credentials_and_logs_out(autojump_clock):
    engine, store = make()
    session, rec = await connected(engine)
    await engine.unlink(1)
    assert rec.last == LoggedOut("unlinked_from_phone")
    assert 1 not in store.data
    with pytest.raises(DeviceConflict, match="not linked"):
        await engine.unlink(1)
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "no_credentials"


async def test_logout_wipes_credentials_silently(autojump_clock):
    engine, store = make()
    session, rec = await connected(engine)
    n = len(rec.events)
    await session.logout()
    assert 1 not in store.data
    assert len(rec.events) == n
    with pytest.raises(EngineError):
        await session.send_message("15550002222@s.whatsapp.net", "hi")


async def test_temporary_ban(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    until = await engine.temporary_ban(1, 60)
    assert isinstance(rec.last, TemporaryBan) and rec.last.until_epoch == until
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "temporary_ban"
    await trio.sleep(60)
    await session.connect()
    assert isinstance(rec.last, Connected)


# -- messages -----------------------------------------------------------------------------


async def test_send_requires_a_connection(autojump_clock):
    engine, _ = make()
    session, _ = await paired(engine)
    with pytest.raises(EngineError) as info:
        await session.send_message("15550002222@s.whatsapp.net", "hi")
    assert info.value.reason == "not_connected" and info.value.recoverable
    assert engine.sent_messages(1) == []
    await session.connect()
    message_id = await session.send_message("15550002222@s.whatsapp.net", "hello")
    assert re.fullmatch(r"3EB0[0-9A-F]{16}", message_id)
    [sent] = engine.sent_messages(1)
    assert (sent.message_id, sent.to_jid, sent.text) == (
        message_id,
        "15550002222@s.whatsapp.net",
        "hello",
    )
    assert await session.send_message("x@s.whatsapp.net", "again") != message_id


async def test_ack_reports_message_status(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    message_id = await session.send_message("15550002222@s.whatsapp.net", "hello")
    for status in ("delivered", "read"):
        await engine.ack(1, message_id, status)
        assert rec.last == MessageStatus(message_id, status)
    with pytest.raises(InvalidRequest):
        await engine.ack(1, message_id, "seen")
    with pytest.raises(InvalidRequest, match="unknown message"):
        await engine.ack(1, "3EB0FFFFFFFFFFFFFFFF", "read")
    await engine.drop(1)
    with pytest.raises(DeviceConflict):
        await engine.ack(1, message_id, "read")


async def test_incoming_message(autojump_clock):
    engine, _ = make()
    _, rec = await connected(engine)
    message_id = await engine.incoming_message(1, "+62 812 000 111", "halo")
    event = rec.last
    assert isinstance(event, MessageReceived)
    assert event.message_id == message_id and re.fullmatch(r"3A[0-9A-F]{18}", message_id)
    assert event.sender == event.chat == "62812000111@s.whatsapp.net"
    assert (event.text, event.is_group, event.from_me) == ("halo", False, False)
    assert event.timestamp > 1_600_000_000

    group = "120363025555555555@g.us"
    await engine.incoming_message(
        1, "62812000111@s.whatsapp.net", "hi all", chat=group, is_group=True
    )
    assert (rec.last.chat, rec.last.is_group) == (group, True)  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest):
        await engine.incoming_message(1, "62812000111", "x", is_group=True)
    with pytest.raises(InvalidRequest):
        await engine.incoming_message(1, "not a number", "x")

    await engine.drop(1)
    with pytest.raises(DeviceConflict, match="not connected"):
        await engine.incoming_message(1, "62812000111", "x")
    with pytest.raises(DeviceNotFound):
        await engine.incoming_message(2, "62812000111", "x")


# -- faults and reachability --------------------------------------------------------------


async def test_fault_injection_crashes_exactly_times(autojump_clock):
    engine, _ = make()
    session, rec = await paired(engine)
    await engine.inject_fault(1, "connect", times=2)
    for _ in range(2):
        with pytest.raises(SimulatedCrash) as info:
            await session.connect()
        assert not isinstance(info.value, EngineError)
        assert isinstance(info.value, RuntimeError)
    assert rec.of(Connected) == []
    await session.connect()
    assert isinstance(rec.last, Connected)
    await session.connect()  # used up


async def test_fault_on_any_op_and_across_session_restarts(autojump_clock):
    engine, _ = make()
    session, rec = open_session(engine)
    await engine.inject_fault(1, "any", times=2)
    with pytest.raises(SimulatedCrash):
        await session.start_pairing()
    # the actor restarts: a new session for the same device still crashes
    session, rec = open_session(engine)
    with pytest.raises(SimulatedCrash):
        await session.request_pair_code("15550001111")
    await session.stop()  # teardown never crashes
    await session.start_pairing()
    assert isinstance(rec.last, QrCode)


async def test_fault_errors_and_delete_clears_faults(autojump_clock):
    engine, _ = make()
    with pytest.raises(DeviceNotFound):
        await engine.inject_fault(1)
    session, _ = open_session(engine)
    with pytest.raises(InvalidRequest):
        await engine.inject_fault(1, "explode")
    with pytest.raises(InvalidRequest):
        await engine.inject_fault(1, "connect", times=0)
    await engine.inject_fault(1, "start_pairing")
    await session.delete()
    session, _ = open_session(engine)
    await session.start_pairing()


async def test_unreachable(autojump_clock):
    engine, _ = make()
    session, rec = await paired(engine)
    await engine.set_reachable(False)
    t0 = trio.current_time()
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "network_unreachable: simulated"
    assert info.value.recoverable
    assert trio.current_time() - t0 == LATENCY
    other, other_rec = open_session(engine, 2)
    with pytest.raises(EngineError, match="network_unreachable"):
        await other.start_pairing()
    assert other_rec.events == [] and rec.of(Connected) == []

    await engine.set_reachable(True)
    await session.connect()
    await other.start_pairing()
    assert isinstance(rec.last, Connected) and isinstance(other_rec.last, QrCode)


# -- lifecycle and size -------------------------------------------------------------------


async def test_stop_is_idempotent_and_delete_forgets(autojump_clock):
    engine, store = make()
    session, _ = await connected(engine)
    await session.stop()
    await session.stop()
    with pytest.raises(DeviceConflict):
        await engine.drop(1)
    assert 1 in store.data  # stop keeps credentials
    await session.delete()
    await session.delete()
    assert 1 not in store.data
    with pytest.raises(DeviceNotFound):
        engine.get_session(1)
    assert len(engine) == 0


async def test_a_new_session_replaces_the_old(autojump_clock):
    engine, _ = make()
    old, old_rec = open_session(engine)
    await old.start_pairing()
    new, new_rec = open_session(engine)
    assert engine.get_session(1) is new and old.current_qr() is None
    await new.start_pairing()
    # fresh values, not a replay of the dead session's
    assert new_rec.of(QrCode)[0] != old_rec.of(QrCode)[0]
    await engine.scan(1)
    assert old_rec.of(Paired) == [] and len(new_rec.of(Paired)) == 1
    # deleting the replaced session does not forget the live one
    await old.delete()
    assert engine.get_session(1) is new


async def test_aclose_stops_everything(autojump_clock):
    engine, store = make()
    await connected(engine)
    await engine.aclose()
    assert len(engine) == 0 and 1 in store.data


def test_sessions_are_small():
    engine, _ = make()
    session, _ = open_session(engine)
    assert not hasattr(session, "__dict__")
    assert sys.getsizeof(session) <= 160
