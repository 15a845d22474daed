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
    PairingFailed,
    QrCode,
    Retry,
    TemporaryBan,
)
from supervisor.engines.simulator import (
    PAIR_CODE_ALPHABET,
    Credentials,
    FailReason,
    MemoryCredentialStore,
    SimulatedCrash,
    SimulatorEngine,
    SimulatorSession,
)
from supervisor.errors import (
    DeliveryFailed,
    DeviceConflict,
    DeviceNotFound,
    EngineError,
    InvalidRequest,
)
from supervisor.message_content import Text
from supervisor.outgoing import Outgoing

LATENCY = 0.5


class Recorder:
    """A sink: records events; ``deliver`` fails while ``refuse`` is set (the actor is gone)
    and waits while ``gate`` is set (the commit is under way)."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.refuse: str | None = None
        self.gate: trio.Event | None = None

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)

    async def deliver(self, event: MessageReceived | Paired) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse is not None:
            raise DeliveryFailed(self.refuse)
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
        sent = await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hi")), None)
        codes.append(sent.message_id)
        codes.append((await engine.incoming_message(1, "15550002222", "yo")).message_id)
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
    assert info.value.reason == "credentials_missing" and info.value.recoverable is False
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
        await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hi")), None)
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
    assert rec.last == LoggedOut("unlinked")
    assert 1 not in store.data
    with pytest.raises(DeviceConflict, match="not linked"):
        await engine.unlink(1)
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "credentials_missing"


async def test_logout_wipes_credentials_silently(autojump_clock):
    engine, store = make()
    session, rec = await connected(engine)
    n = len(rec.events)
    await session.logout()
    assert 1 not in store.data
    assert len(rec.events) == n
    with pytest.raises(EngineError):
        await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hi")), None)


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
        await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hi")), None)
    assert info.value.reason == "not_connected" and info.value.recoverable
    assert engine.sent_messages(1) == []
    await session.connect()
    sent_hello = await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hello")), None)
    message_id = sent_hello.message_id
    assert sent_hello.media_ref is None  # no file: nothing to download
    assert re.fullmatch(r"3EB0[0-9A-F]{16}", message_id)
    [sent] = engine.sent_messages(1)
    assert (sent.message_id, sent.to_jid, sent.text) == (
        message_id,
        "15550002222@s.whatsapp.net",
        "hello",
    )
    again = await session.send("15550003333@s.whatsapp.net", Outgoing(Text("again")), None)
    assert again.message_id != message_id


async def test_ack_reports_message_status(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    sent = await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hello")), None)
    message_id = sent.message_id
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
    incoming = await engine.incoming_message(1, "+62 812 000 111", "halo")
    assert incoming.delivered
    event = rec.last
    assert isinstance(event, MessageReceived)
    assert event.message_id == incoming.message_id
    assert re.fullmatch(r"3A[0-9A-F]{18}", incoming.message_id)
    assert event.sender == event.chat == "62812000111@s.whatsapp.net"
    assert (event.text, event.is_group, event.from_me) == ("halo", False, False)
    assert event.timestamp > 1_600_000_000
    assert engine.queued(1) == []

    group = "120363025555555555@g.us"
    await engine.incoming_message(
        1, "62812000111@s.whatsapp.net", "hi all", chat=group, is_group=True
    )
    assert (rec.last.chat, rec.last.is_group) == (group, True)  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest):
        await engine.incoming_message(1, "62812000111", "x", is_group=True)
    with pytest.raises(InvalidRequest):
        await engine.incoming_message(1, "not a number", "x")
    with pytest.raises(DeviceNotFound):
        await engine.incoming_message(2, "62812000111", "x")


async def test_offline_queue_delivers_in_order_at_the_next_connect(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    await engine.drop(1)
    n = len(rec.events)
    sent = []
    for i in range(3):
        await trio.sleep(1)
        incoming = await engine.incoming_message(1, "+15550001111", f"offline {i}")
        assert not incoming.delivered
        sent.append(incoming.message_id)
    assert len(rec.events) == n  # nothing reaches wasup while the device is offline
    assert [m.message_id for m in engine.queued(1)] == sent

    await session.connect()
    assert isinstance(rec.events[n], Connected)
    delivered = rec.of(MessageReceived)[-3:]
    assert [e.message_id for e in delivered] == sent
    assert [e.text for e in delivered] == ["offline 0", "offline 1", "offline 2"]
    # each keeps the time it was sent, not the time it arrived
    assert delivered[0].timestamp < delivered[1].timestamp < delivered[2].timestamp
    assert engine.queued(1) == []


async def test_a_message_stays_queued_until_its_delivery_returned(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    rec.refuse = "actor_stopped"  # wasup could not commit it
    incoming = await engine.incoming_message(1, "+15550001111", "first")
    assert not incoming.delivered
    later = await engine.incoming_message(1, "+15550001111", "second")
    assert not later.delivered
    assert [m.text for m in engine.queued(1)] == ["first", "second"]
    assert rec.of(MessageReceived) == []

    # At the next connect the queue is handed over; a message leaves it only once its
    # delivery returned (here: held until the gate opens).
    await engine.drop(1)
    rec.refuse, rec.gate = None, trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await trio.sleep(LATENCY + 1)
        assert isinstance(rec.last, Connected)
        assert [m.text for m in engine.queued(1)] == ["first", "second"]
        rec.gate.set()
    assert [e.text for e in rec.of(MessageReceived)] == ["first", "second"]
    assert engine.queued(1) == []


async def test_a_disconnect_stops_the_hand_over(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    await engine.drop(1)
    for i in range(2):
        await engine.incoming_message(1, "+15550001111", f"m{i}")
    rec.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await trio.sleep(LATENCY + 1)
        await engine.drop(1)  # the first delivery is under way
        rec.gate.set()
    # the delivery under way completes; the next waits for the next connection
    assert [e.text for e in rec.of(MessageReceived)] == ["m0"]
    assert [m.text for m in engine.queued(1)] == ["m1"]
    await session.connect()
    assert [e.text for e in rec.of(MessageReceived)] == ["m0", "m1"]


async def test_only_a_linked_device_gets_messages_and_unlinking_drops_the_queue(autojump_clock):
    engine, store = make()
    session, _ = open_session(engine)
    with pytest.raises(DeviceConflict, match="not linked"):
        await engine.incoming_message(1, "+15550001111", "x")
    await session.start_pairing()
    with pytest.raises(DeviceConflict, match="not linked"):
        await engine.incoming_message(1, "+15550001111", "x")
    await engine.scan(1)
    assert not (await engine.incoming_message(1, "+15550001111", "waits")).delivered
    await session.connect()
    await engine.drop(1)
    await engine.incoming_message(1, "+15550001111", "dropped with the link")
    await session.connect()
    await engine.drop(1)
    await engine.incoming_message(1, "+15550001111", "gone")
    await session.connect()
    await engine.unlink(1)
    assert engine.queued(1) == []
    with pytest.raises(DeviceConflict, match="not linked"):
        await engine.incoming_message(1, "+15550001111", "x")

    # logout and delete drop the queue too
    session, _ = await connected(engine)
    await engine.drop(1)
    await engine.incoming_message(1, "+15550001111", "x")
    await session.logout()
    assert engine.queued(1) == []
    session, _ = await connected(engine)
    await engine.drop(1)
    await engine.incoming_message(1, "+15550001111", "x")
    await session.delete()
    assert engine.queued(1) == [] and 1 not in store.data


# -- failures WhatsApp reports ---------------------------------------------------------------


async def test_fail_client_outdated_keeps_credentials_and_retries_slowly(autojump_clock):
    engine, store = make()
    session, rec = await connected(engine)
    await engine.fail(1, FailReason.CLIENT_OUTDATED)
    assert rec.last == Disconnected("client_outdated", retry=Retry.SLOW)
    assert 1 in store.data and await session.has_credentials()
    with pytest.raises(EngineError):
        await session.send("15550002222@s.whatsapp.net", Outgoing(Text("hi")), None)
    await session.connect()  # no new scan: the stored credentials log in again
    assert isinstance(rec.last, Connected)

    # during pairing too (err-client-outdated): the pairing connection ends
    other, other_rec = open_session(engine, 2)
    await other.start_pairing()
    await engine.fail(2, FailReason.CLIENT_OUTDATED)
    assert other_rec.last == Disconnected("client_outdated", retry=Retry.SLOW)
    assert engine.current_qr(2) is None


async def test_fail_stream_replaced_holds_with_credentials_kept(autojump_clock):
    engine, store = make()
    session, rec = await connected(engine)
    await engine.fail(1, FailReason.STREAM_REPLACED)
    assert rec.last == Disconnected("stream_replaced", retry=Retry.HOLD)
    assert 1 in store.data
    with pytest.raises(DeviceConflict, match="stream_replaced"):
        await engine.fail(1, FailReason.STREAM_REPLACED)  # no connection to replace
    await session.connect()
    assert isinstance(rec.last, Connected)


async def test_fail_pair_error_ends_the_pairing_connection(autojump_clock):
    engine, store = make()
    session, rec = open_session(engine)
    with pytest.raises(DeviceConflict, match="pair_error"):
        await engine.fail(1, FailReason.PAIR_ERROR)  # not pairing
    await session.start_pairing()
    await engine.fail(1, FailReason.PAIR_ERROR)
    assert rec.last == PairingFailed("pair_error", restart=True)
    assert engine.current_qr(1) is None and 1 not in store.data
    with pytest.raises(DeviceConflict):
        await engine.scan(1)  # the failed scan linked nothing
    await session.start_pairing()  # the device asks for a new pairing connection
    assert isinstance(rec.last, QrCode)
    await engine.scan(1)
    await session.connect()
    with pytest.raises(DeviceConflict):
        await engine.fail(1, FailReason.PAIR_ERROR)  # connected, not pairing


@pytest.mark.parametrize("reason", [FailReason.ACCOUNT_LOCKED, FailReason.BANNED])
async def test_fail_account_locked_or_banned_logs_out_and_wipes(autojump_clock, reason):
    engine, store = make()
    session, rec = await connected(engine)
    await engine.drop(1)
    await engine.incoming_message(1, "+15550001111", "queued")
    rec.gate = trio.Event()  # keep the queued message from being handed over
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await trio.sleep(LATENCY + 1)
        await engine.fail(1, reason)
        rec.gate.set()
    assert LoggedOut(reason.value) in rec.events  # (the delivery under way completes)
    assert 1 not in store.data and not await session.has_credentials()
    assert engine.queued(1) == []
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert not info.value.recoverable


async def test_fail_temporary_ban_lasts_the_seconds_given(autojump_clock):
    engine, _ = make()
    session, rec = await connected(engine)
    t0 = trio.current_time()
    await engine.fail(1, FailReason.TEMPORARY_BAN, seconds=120)
    assert isinstance(rec.last, TemporaryBan) and rec.last.reason == "temporary_ban"
    with pytest.raises(EngineError, match="temporary_ban"):
        await session.connect()
    await trio.sleep(120 - (trio.current_time() - t0))
    await session.connect()
    assert isinstance(rec.last, Connected)


async def test_fail_errors(autojump_clock):
    engine, _ = make()
    with pytest.raises(DeviceNotFound):
        await engine.fail(1, FailReason.BANNED)
    session, rec = open_session(engine)
    for reason in FailReason:
        if reason is not FailReason.PAIR_ERROR:
            with pytest.raises(DeviceConflict):
                await engine.fail(1, reason)  # idle: no connection to fail
    await session.start_pairing()
    for reason in (FailReason.STREAM_REPLACED, FailReason.BANNED, FailReason.TEMPORARY_BAN):
        with pytest.raises(DeviceConflict):
            await engine.fail(1, reason)  # not while pairing
    with pytest.raises(InvalidRequest) as info:
        await engine.fail(1, FailReason.PAIR_ERROR, seconds=5)
    assert info.value.field == "seconds"
    assert isinstance(rec.last, QrCode)  # nothing reported


async def test_scan_returns_only_once_the_pairing_is_committed(autojump_clock):
    engine, store = make()
    session, rec = open_session(engine)
    await session.start_pairing()
    rec.gate = trio.Event()
    done: list[Paired] = []

    async def scan() -> None:
        done.append(await engine.scan(1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scan)
        await trio.sleep(5)
        assert done == [] and 1 in store.data  # credentials first, then the commit
        rec.gate.set()
    assert done == rec.of(Paired)

    # wasup could not commit it: the scan is refused, the credentials stay for the restore
    other, other_rec = open_session(engine, 2)
    await other.start_pairing()
    other_rec.refuse = "actor_stopped"
    with pytest.raises(DeviceConflict, match="did not store the pairing"):
        await engine.scan(2)
    assert 2 in store.data and await other.has_credentials()


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


# -- the stores wasup keeps the simulator's memory in ------------------------------------------


async def test_db_queue_store_survives_a_reopen_and_goes_with_the_device(tmp_path):
    import storage
    from supervisor.engines.simulator import QueuedMessage
    from supervisor.supervisor import DbCredentialStore, DbQueueStore

    def insert(r: storage.Repositories, alias: str) -> int:
        return r.devices.insert(
            user_id="u", alias=alias, session_id=f"user_u_device_{alias}", business_type=None,
            phone_number=None, description=None, api_key_hash=f"hash-{alias}",
            status="connected", now="2026-01-01T00:00:00Z",
        ).id

    messages = [
        QueuedMessage(f"3A{i:018X}", "15550001111@s.whatsapp.net", "15550001111@s.whatsapp.net",
                      f"text {i}", False, 1_700_000_000.5 + i)
        for i in range(3)
    ]
    path = tmp_path / "wasup.db"
    async with storage.open_database(path) as db:
        a = await db.run(lambda r: insert(r, "a"))
        b = await db.run(lambda r: insert(r, "b"))
        queue = DbQueueStore(db)
        for m in messages:
            await queue.push(a, m)
        await queue.push(b, messages[0])
        await queue.remove(a, messages[0].message_id)
        assert queue.pending(a) == messages[1:]
        with pytest.raises(storage.NotFound):
            await queue.push(a + 100, messages[0])  # no such device: nothing kept
        assert queue.pending(a + 100) == []
        creds = DbCredentialStore(db)
        await creds.put(a, b"{}")
    async with storage.open_database(path) as db:  # a restart (or a kill -9: each was committed)
        queue = DbQueueStore(db)
        await queue.preload()
        assert queue.pending(a) == messages[1:] and queue.pending(b) == messages[:1]
        creds = DbCredentialStore(db)
        await creds.preload()
        assert await creds.has(a) and await creds.has(a) and not await creds.has(b)
        assert await creds.get(a) == b"{}"
        await queue.clear(b)
        await db.run(lambda r: r.devices.delete(a))
    async with storage.open_database(path) as db:
        queue = DbQueueStore(db)
        await queue.preload()
        assert queue.pending(a) == [] and queue.pending(b) == []
