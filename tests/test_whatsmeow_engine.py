"""The whatsmeow engine against the real neonize library, offline.

Nothing here reaches WhatsApp: this machine has no route to it, which is exactly the offline
case the engine must handle. What can be proved offline is proved: failures are readable and
recoverable, credentials live in the data directory with tight modes and are wiped on logout
and delete, a paired device takes the reconnect path (no QR), Go's callbacks reach the sink on
the Trio thread only, and create/delete cycles leave no thread and no Go client behind.

Tests that drive the session logic without a WhatsApp server replace ``GoClient.start`` (the
one call that starts Go) with a stub and call the client's callbacks from a foreign thread,
exactly as Go does.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from neonize.proto import Neonize_pb2 as nz

from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    MessageReceived,
    Paired,
    QrCode,
)
from supervisor.engines import whatsmeow_client as wc
from supervisor.engines.whatsmeow import WhatsmeowEngine, WhatsmeowSession
from supervisor.errors import EngineError
from supervisor.jid import Jid

from .test_whatsmeow_translate import complete


class Sink:
    """Records engine events and the thread each one was delivered on."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.threads: set[int] = set()

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())


def python_threads() -> list[str]:
    # Trio's thread cache keeps idle workers for a while; they are not ours to count.
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("Trio thread"))


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def make_schema(data_dir: Path, device_id: int) -> Path:
    """Let whatsmeow create its store (a pairing attempt through Go, failing offline)."""
    engine = WhatsmeowEngine(data_dir, preflight_host=None)
    session = engine.session(device_id, f"s{device_id}", Sink())
    with pytest.raises(EngineError):
        await session.start_pairing()
    await session.stop()
    path = wc.store_path(data_dir, device_id)
    assert path.exists()
    return path


def fake_credentials(path: Path, user: str = "15551234567") -> None:
    """A whatsmeow_device row with well-formed (random) keys: what pairing leaves behind."""
    r = os.urandom
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
            " adv_account_sig, adv_account_sig_key, adv_device_sig, platform, push_name)"
            " VALUES (?, 1234, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, 'android', 'Ana')",
            (f"{user}:7@s.whatsapp.net", r(32), r(32), r(32), r(64), r(32), r(16), r(64), r(32),
             r(64)),
        )
    conn.close()


# -- offline, real library ---------------------------------------------------------------------


async def test_offline_pairing_fails_readably_without_touching_go(tmp_path: Path) -> None:
    engine = WhatsmeowEngine(tmp_path)
    sink = Sink()
    session = engine.session(1, "s1", sink)
    fds = open_fds()
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    assert info.value.recoverable
    assert info.value.reason.startswith("unreachable: lookup web.whatsapp.com: ")
    assert sink.events == []
    assert engine.statistics().live_clients == 0
    await session.stop()
    assert open_fds() == fds


async def test_offline_pairing_through_neonize_reports_the_dns_failure(tmp_path: Path) -> None:
    engine = WhatsmeowEngine(tmp_path, preflight_host=None)
    sink = Sink()
    session = engine.session(1, "s1", sink)
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    assert info.value.recoverable
    assert info.value.reason == "unreachable: lookup web.whatsapp.com: no such host"
    assert sink.events == []  # the failure is raised, not reported twice
    await session.stop()
    await session.stop()  # idempotent
    assert engine.statistics().live_clients == 0
    # whatsmeow's store: in the data directory, readable by the owner only.
    store = tmp_path / "whatsmeow" / "1.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700


async def test_connect_without_credentials_is_final(tmp_path: Path) -> None:
    session = WhatsmeowEngine(tmp_path, preflight_host=None).session(1, "s1", Sink())
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert (info.value.reason, info.value.recoverable) == ("credentials_missing", False)


async def test_paired_device_takes_the_reconnect_path_without_qr(tmp_path: Path) -> None:
    store = await make_schema(tmp_path, 3)
    fake_credentials(store)
    assert wc.has_credentials(store)
    # A new engine, as after a restart.
    engine = WhatsmeowEngine(tmp_path, preflight_host=None)
    sink = Sink()
    session = engine.session(3, "s3", sink)
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert info.value.reason == "unreachable: lookup web.whatsapp.com: no such host"
    assert info.value.recoverable
    assert not any(isinstance(e, QrCode) for e in sink.events)
    await session.stop()
    assert wc.has_credentials(store)  # a failed connect keeps them
    # The preflight fails the same way, before Go.
    session2 = WhatsmeowEngine(tmp_path).session(3, "s3", sink)
    with pytest.raises(EngineError) as info:
        await session2.connect()
    assert info.value.reason.startswith("unreachable: lookup web.whatsapp.com")


async def test_logout_and_delete_wipe_credentials(tmp_path: Path) -> None:
    for device_id, action in ((4, "logout"), (5, "delete")):
        store = await make_schema(tmp_path, device_id)
        fake_credentials(store)
        session = WhatsmeowEngine(tmp_path, preflight_host=None).session(device_id, "s", Sink())
        await getattr(session, action)()
        assert not store.exists()
        assert not wc.has_credentials(store)


async def test_start_pairing_wipes_old_credentials(tmp_path: Path) -> None:
    store = await make_schema(tmp_path, 6)
    fake_credentials(store)
    session = WhatsmeowEngine(tmp_path).session(6, "s", Sink())
    with pytest.raises(EngineError):
        await session.start_pairing()
    assert not wc.has_credentials(store)


async def test_fifty_create_delete_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    engine = WhatsmeowEngine(tmp_path, preflight_host=None)
    # Warm up: Go's runtime starts its own threads once, on first use.
    for i in range(3):
        s = engine.session(1000 + i, "warm", Sink())
        with pytest.raises(EngineError):
            await s.start_pairing()
        await s.delete()
    py_before, os_before = python_threads(), os_threads()
    for i in range(50):
        session = engine.session(i, f"s{i}", Sink())
        with pytest.raises(EngineError):
            if i % 2:
                await session.start_pairing()
            else:
                fake_credentials(await make_schema(tmp_path, i))
                await session.connect()
        await session.delete()
        assert not wc.store_path(tmp_path, i).exists()
    assert python_threads() == py_before
    # Go keeps a few OS threads around for reuse; it must not grow with the cycles.
    assert os_threads() <= os_before + 8
    stats = engine.statistics()
    assert (stats.sessions, stats.live_clients, stats.parked_threads) == (0, 0, 0)


async def test_offline_cycles_with_preflight_hold_no_file_descriptors(tmp_path: Path) -> None:
    engine = WhatsmeowEngine(tmp_path)
    fds, threads = open_fds(), python_threads()
    for i in range(20):
        session = engine.session(i, f"s{i}", Sink())
        with pytest.raises(EngineError):
            await session.start_pairing()
        await session.delete()
    assert open_fds() == fds
    assert python_threads() == threads


# -- session logic with Go's callbacks played from a foreign thread ----------------------------


@pytest.fixture
def fake_go(monkeypatch: pytest.MonkeyPatch) -> list[wc.GoClient]:
    """Replace the start of Go with a stub; the test plays Go through the client's callbacks."""
    started: list[wc.GoClient] = []

    def start(self: wc.GoClient, hold: float, gate: wc.GoGate = wc.GATE) -> None:
        self.launched = True
        started.append(self)

    def stop(self: wc.GoClient, gate: wc.GoGate = wc.GATE) -> None:
        self.stopped = True
        self.exited.set()

    monkeypatch.setattr(wc.GoClient, "start", start)
    monkeypatch.setattr(wc.GoClient, "stop", stop)
    monkeypatch.setattr(wc, "preflight", lambda host, port=443, timeout=10.0: None)
    return started


async def until(cond: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        for _ in range(5000):
            if cond():
                return
            await trio.sleep(0.001)


async def from_go(fn: Callable[..., None], *args: Any) -> None:
    """Call ``fn`` on a foreign thread, like Go does, and let Trio run what it handed over."""
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    await trio.to_thread.run_sync(thread.join)
    await trio.testing.wait_all_tasks_blocked()


def event_bytes(event: Any) -> bytes:
    return bytes(complete(event).SerializeToString())


async def pairing_session(tmp_path: Path, fake_go: list[wc.GoClient]) -> tuple[
    WhatsmeowSession, Sink, wc.GoClient
]:
    engine = WhatsmeowEngine(tmp_path)
    sink = Sink()
    session = engine.session(1, "s1", sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.start_pairing)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[-1].on_qr, "2@first,k1,k2,k3")
    return session, sink, fake_go[-1]


async def test_qr_codes_reach_the_sink_on_the_trio_thread(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    trio_thread = threading.get_ident()
    assert sink.events == [QrCode("2@first,k1,k2,k3")]
    # whatsmeow rotates on its own clock: the next code waits until wasup asks for it.
    await from_go(client.on_qr, "2@second,k1,k2,k3")
    assert len(sink.events) == 1
    await session.next_qr()
    assert sink.events[-1] == QrCode("2@second,k1,k2,k3")
    # Asked before whatsmeow has it: forwarded as soon as it comes.
    await session.next_qr()
    assert len(sink.events) == 2
    await from_go(client.on_qr, "2@third,k1,k2,k3")
    assert sink.events[-1] == QrCode("2@third,k1,k2,k3")
    assert sink.threads == {trio_thread}
    await session.stop()
    # After stop, whatever Go still says is dropped.
    await from_go(client.on_qr, "2@late,k1,k2,k3")
    assert len(sink.events) == 3


async def test_scan_then_connect_uses_the_pairing_connection(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    me = nz.Device(JID=nz.JID(User="15551234567", Server="s.whatsapp.net"), PushName="Ana",
                   Platform="android")
    await from_go(client.on_status, "success")
    success = nz.PairStatus(ID=nz.JID(User="15551234567", Server="s.whatsapp.net"),
                            Platform="android", Status=nz.PairStatus.SUCCESS)
    await from_go(client.on_event, 2, event_bytes(success))
    assert sink.events[-1] == Paired("15551234567@s.whatsapp.net", "15551234567", None, "android")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await trio.testing.wait_all_tasks_blocked()
        await from_go(client.on_event, 0, event_bytes(me))
        await from_go(client.on_event, 3, event_bytes(nz.Connected(status=True)))
    assert sink.events[-1] == Connected(push_name="Ana", platform="android")
    assert len(fake_go) == 1  # no second client: the pairing connection carried on


async def test_connected_session_sends_and_receives(tmp_path: Path, fake_go: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = wc.store_path(tmp_path, 1)
    wc.prepare_store(store)
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('1555:1@s.whatsapp.net')")
    conn.close()
    engine = WhatsmeowEngine(tmp_path)
    sink = Sink()
    session = engine.session(1, "s1", sink)
    with pytest.raises(EngineError) as info:
        await session.send_message("15557654321", "hi")
    assert info.value.reason == "not_connected"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[0].on_event, 3, event_bytes(nz.Connected(status=True)))
    sent: list[tuple[str, str]] = []

    def send_text(self: wc.GoClient, jid: nz.JID, text: str, gate: Any = None) -> str:
        sent.append((f"{jid.User}@{jid.Server}", text))
        return "3EB0SENT"

    monkeypatch.setattr(wc.GoClient, "send_text", send_text)
    assert await session.send_message("+1 555 765 4321", "hi") == "3EB0SENT"
    assert sent == [("15557654321@s.whatsapp.net", "hi")]
    with pytest.raises(EngineError) as info:
        await session.send_message("not a number", "hi")
    assert info.value.reason == "invalid_recipient"
    msg = nz.Message(Info=nz.MessageInfo(ID="IN1", Timestamp=1_750_000_000, MessageSource=nz.MessageSource(
        Chat=nz.JID(User="15557654321", Server="s.whatsapp.net"),
        Sender=nz.JID(User="15557654321", Server="s.whatsapp.net"))))
    msg.Message.conversation = "hello back"
    await from_go(fake_go[0].on_event, 17, event_bytes(msg))
    assert isinstance(sink.events[-1], MessageReceived)
    assert sink.events[-1].text == "hello back"
    # The connection drops: reported once, and the next send is refused.
    await from_go(fake_go[0].on_event, 12, event_bytes(nz.Disconnected(status=True)))
    assert sink.events[-1] == Disconnected("connection_lost", recoverable=True)
    with pytest.raises(EngineError):
        await session.send_message("15557654321", "hi")
    await session.stop()


async def test_pair_code_needs_a_pairing_connection(tmp_path: Path, fake_go: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    engine = WhatsmeowEngine(tmp_path)
    idle = engine.session(2, "s2", Sink())
    with pytest.raises(EngineError) as info:
        await idle.request_pair_code("15551234567")
    assert info.value.reason == "pairing_not_ready"
    session, _sink, _client = await pairing_session(tmp_path, fake_go)
    asked: list[str] = []

    def pair_phone(self: wc.GoClient, phone: str, gate: Any = None) -> str:
        asked.append(phone)
        return "ABCD-EFGH"

    monkeypatch.setattr(wc.GoClient, "pair_phone", pair_phone)
    assert await session.request_pair_code("+1 (555) 123-4567") == "ABCD-EFGH"
    assert asked == ["15551234567"]
    with pytest.raises(EngineError) as info:
        await session.request_pair_code("12")
    assert info.value.reason == "invalid_phone_number"
    await session.stop()


async def test_unexpected_exit_of_go_is_reported_once(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    await from_go(client.on_exit, "websocket closed unexpectedly")
    assert sink.events[-1] == Disconnected("connect_failed: websocket closed unexpectedly")
    await session.stop()


def test_go_callbacks_never_raise() -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    client = wc.GoClient(1, Path("/nonexistent"), True, on_qr=boom, on_status=boom,
                         on_event=boom, on_exit=boom)
    client._call(boom, "x")  # logged, not raised


# -- the gate ----------------------------------------------------------------------------------


def test_gate_exclusive_excludes_shared_and_writers_go_first() -> None:
    gate = wc.GoGate()
    order: list[str] = []
    with gate.shared():
        assert not gate.acquire_exclusive(timeout=0.01)  # a reader holds it
    assert gate.acquire_exclusive(timeout=0.01)
    reader_done = threading.Event()

    def reader() -> None:
        with gate.shared():
            order.append("reader")
        reader_done.set()

    t = threading.Thread(target=reader)
    t.start()
    assert not reader_done.wait(0.05)  # blocked by the writer
    order.append("writer")
    gate.release_exclusive()
    t.join(5)
    assert order == ["writer", "reader"]


# -- recipients --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "jid"),
    [
        ("15551234567", "15551234567@s.whatsapp.net"),
        ("+1 555-123-4567", "15551234567@s.whatsapp.net"),
        ("15551234567@s.whatsapp.net", "15551234567@s.whatsapp.net"),
        ("120363000000000000@g.us", "120363000000000000@g.us"),
        ("15551234567:3@s.whatsapp.net", "15551234567@s.whatsapp.net"),
    ],
)
def test_neonize_jid(to: str, jid: str) -> None:
    parsed = wc.neonize_jid(Jid.parse(to))
    assert f"{parsed.User}@{parsed.Server}" == jid
    assert parsed.Device == 0 and not parsed.IsEmpty


def test_end_of_qr_channel_fences_go_map_read_until_next_event() -> None:
    statuses: list[str] = []
    client = wc.GoClient(1, Path("/nonexistent"), True, on_qr=lambda _c: None,
                         on_status=statuses.append, on_event=lambda _c, _d: None,
                         on_exit=lambda _e: None)
    client.launched = True
    client._go_status(0, ctypes_string(b"success"))
    assert statuses == ["success"]
    assert not wc.GATE.acquire_exclusive(timeout=0.05)  # fenced: Go is about to read its maps
    client._go_event(b"x", 0, 0, 0)  # the next event: Go is past the read
    assert wc.GATE.acquire_exclusive(timeout=1)
    wc.GATE.release_exclusive()


def test_end_of_qr_channel_after_stop_parks_go_instead_of_crashing() -> None:
    statuses: list[str] = []
    client = wc.GoClient(1, Path("/nonexistent"), True, on_qr=lambda _c: None,
                         on_status=statuses.append, on_event=lambda _c, _d: None,
                         on_exit=lambda _e: None)
    client.launched = client.stopped = True
    data = ctypes_string(b"timeout")
    go = threading.Thread(target=client._go_status, args=(0, data), daemon=True)
    go.start()
    go.join(0.2)
    assert go.is_alive()  # parked: Go never gets to dereference the deleted client
    assert statuses == ["timeout"]
    assert wc.GATE.acquire_exclusive(timeout=1)  # and the gate is free
    wc.GATE.release_exclusive()


_keep: list[object] = []


def ctypes_string(value: bytes) -> int:
    import ctypes

    buf = ctypes.create_string_buffer(value)
    _keep.append(buf)
    return ctypes.addressof(buf)
