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

import contextlib
import gc
import logging
import os
import socket
import sqlite3
import stat
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from neonize.proto import Neonize_pb2 as nz

from supervisor import proxy as proxy_checks
from supervisor.config import Config
from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    MessageReceived,
    Paired,
    PairingFailed,
    QrCode,
    Retry,
    Sent,
    TemporaryBan,
)
from supervisor.engines import whatsmeow_client as wc
from supervisor.engines import whatsmeow_preflight
from supervisor.engines import whatsmeow_store as ws
from supervisor.engines.whatsmeow import WhatsmeowEngine, WhatsmeowSession
from supervisor.engines.whatsmeow_translate import translate_pairing_status
from supervisor.errors import DeliveryFailed, EngineError
from supervisor.jid import Jid
from supervisor.message_content import Text
from supervisor.outgoing import Outgoing
from supervisor.supervisor import open_supervisor

from .lifecycle_support import wait_status
from .test_whatsmeow_translate import complete

REPO = str(Path(__file__).resolve().parent.parent)
#: Descriptors the rest of a full test run may open meanwhile; a leak here would be one per
#: cycle (200), so a few either way prove there is none.
FD_NOISE = 4


class Sink:
    """Records engine events and the thread each one was reported on.

    ``deliver`` (messages, pairings) records them too, and in ``delivered``; it waits while
    ``hold`` is set (a slow commit) and raises DeliveryFailed(``refuse``) when that is set.
    """

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.delivered: list[MessageReceived | Paired] = []
        self.threads: set[int] = set()
        self.hold: trio.Event | None = None
        self.refuse: str | None = None
        self.entered = 0  # deliver calls begun

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())

    async def deliver(self, event: MessageReceived | Paired) -> None:
        self.threads.add(threading.get_ident())
        self.entered += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse is not None:
            raise DeliveryFailed(self.refuse)
        self.events.append(event)
        self.delivered.append(event)


def python_threads() -> frozenset[threading.Thread]:
    """Live Python threads but Trio's idle workers (they come and go on their own). A test
    asserts that the set after is within the set before: threads other tests of a full run
    left behind may end meanwhile, a thread the engine left behind is new."""
    return frozenset(t for t in threading.enumerate() if not t.name.startswith("Trio thread"))


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds_under(path: Path) -> int:
    """Descriptors open on files below ``path`` (a test's own data directory: what the engine
    opens there, and nothing the rest of a test run opens meanwhile)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
                count += 1
    return count


async def make_schema(data_dir: Path, device_id: int) -> Path:
    """Let whatsmeow create its store (a pairing attempt through Go, failing offline)."""
    engine = WhatsmeowEngine(data_dir, preflight_host=None)
    session = engine.session(device_id, f"s{device_id}", Sink())
    with pytest.raises(EngineError):
        await session.start_pairing()
    await session.stop()
    path = ws.store_path(data_dir, device_id)
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
    assert ws.has_credentials(store)
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
    assert ws.has_credentials(store)  # a failed connect keeps them
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
        assert not ws.has_credentials(store)


async def test_start_pairing_wipes_old_credentials(tmp_path: Path) -> None:
    store = await make_schema(tmp_path, 6)
    fake_credentials(store)
    session = WhatsmeowEngine(tmp_path).session(6, "s", Sink())
    with pytest.raises(EngineError):
        await session.start_pairing()
    assert not ws.has_credentials(store)


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
        assert not ws.store_path(tmp_path, i).exists()
    assert python_threads() <= py_before
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
    assert python_threads() <= threads


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
    monkeypatch.setattr(whatsmeow_preflight, "preflight", lambda host, port=443, timeout=10.0: None)
    monkeypatch.setattr(proxy_checks, "preflight_through",
                        lambda url, host, port=443, timeout=10.0: None)
    return started


async def until(cond: Callable[[], bool]) -> None:
    """Wait for worker threads to make ``cond`` true (no clock involved: MockClock-safe)."""
    for _ in range(20000):
        if cond():
            return
        await trio.to_thread.run_sync(threading.Event().wait, 0.0005)
        await trio.testing.wait_all_tasks_blocked()
    raise AssertionError("condition not reached")


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
        await from_go(fake_go[-1].on_qr, "https://wa.me/settings/linked_devices#first,n0,i0,a0,1")
    return session, sink, fake_go[-1]


async def test_qr_codes_reach_the_sink_on_the_trio_thread(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    trio_thread = threading.get_ident()
    assert sink.events == [QrCode("https://wa.me/settings/linked_devices#first,n0,i0,a0,1")]
    # whatsmeow rotates on its own clock: the next code waits until wasup asks for it.
    await from_go(client.on_qr, "https://wa.me/settings/linked_devices#second,n0,i0,a0,1")
    assert len(sink.events) == 1
    await session.next_qr()
    assert sink.events[-1] == QrCode("https://wa.me/settings/linked_devices#second,n0,i0,a0,1")
    # Asked before whatsmeow has it: forwarded as soon as it comes.
    await session.next_qr()
    assert len(sink.events) == 2
    await from_go(client.on_qr, "https://wa.me/settings/linked_devices#third,n0,i0,a0,1")
    assert sink.events[-1] == QrCode("https://wa.me/settings/linked_devices#third,n0,i0,a0,1")
    assert sink.threads == {trio_thread}
    await session.stop()
    # After stop, whatever Go still says is dropped.
    await from_go(client.on_qr, "https://wa.me/settings/linked_devices#late,n0,i0,a0,1")
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
    store = ws.store_path(tmp_path, 1)
    ws.prepare_store(store)
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('1555:1@s.whatsapp.net')")
    conn.close()
    engine = WhatsmeowEngine(tmp_path, reconnect_grace=0)  # no wait for whatsmeow's reconnect
    sink = Sink()
    session = engine.session(1, "s1", sink)
    with pytest.raises(EngineError) as info:
        await session.send("15557654321", Outgoing(Text("hi")), None)
    assert info.value.reason == "not_connected"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[0].on_event, 3, event_bytes(nz.Connected(status=True)))
    sent: list[tuple[str, str]] = []

    def send(self: wc.GoClient, jid: nz.JID, message: Outgoing, media: bytes | None,
             gate: Any = None) -> Sent:
        sent.append((f"{jid.User}@{jid.Server}", message.content.text))
        return Sent("3EB0SENT")

    monkeypatch.setattr(wc.GoClient, "send", send)
    assert await session.send("+1 555 765 4321", Outgoing(Text("hi")), None) == Sent("3EB0SENT")
    assert sent == [("15557654321@s.whatsapp.net", "hi")]
    with pytest.raises(EngineError) as info:
        await session.send("not a number", Outgoing(Text("hi")), None)
    assert info.value.reason == "invalid_recipient"
    msg = nz.Message(Info=nz.MessageInfo(ID="IN1", Timestamp=1_750_000_000, MessageSource=nz.MessageSource(
        Chat=nz.JID(User="15557654321", Server="s.whatsapp.net"),
        Sender=nz.JID(User="15557654321", Server="s.whatsapp.net"))))
    msg.Message.conversation = "hello back"
    await from_go(fake_go[0].on_event, 17, event_bytes(msg))
    assert isinstance(sink.events[-1], MessageReceived)
    assert sink.events[-1].text == "hello back"
    # The connection drops and whatsmeow does not reconnect: reported once, and the next
    # send is refused.
    await from_go(fake_go[0].on_event, 12, event_bytes(nz.Disconnected(status=True)))
    assert sink.events[-1] == Disconnected("connection_lost", recoverable=True)
    with pytest.raises(EngineError):
        await session.send("15557654321", Outgoing(Text("hi")), None)
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

    client = wc.GoClient(1, "/nonexistent", True, on_qr=boom, on_status=boom,
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
    client = wc.GoClient(1, "/nonexistent", True, on_qr=lambda _c: None,
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
    client = wc.GoClient(1, "/nonexistent", True, on_qr=lambda _c: None,
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


# -- proxies and the store path ------------------------------------------------------------------


class ProxyListener:
    """A loopback "proxy" that records each request's head and answers ``answer`` (by default
    "tunnel open"), then closes the connection (the TLS handshake through it fails)."""

    def __init__(self) -> None:
        self.answer = b"HTTP/1.1 200 Connection established\r\n\r\n"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.decode(errors="replace"))
                conn.sendall(self.answer)

    def from_go(self) -> list[str]:
        """The requests whatsmeow (Go's HTTP client) made."""
        return [r for r in self.requests if "User-Agent: Go-http-client" in r]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); the port is closed
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[ProxyListener]:
    proxy = ProxyListener()
    yield proxy
    proxy.close()


async def test_a_devices_own_proxy_carries_the_connection(
    tmp_path: Path, listener: ProxyListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://ana:s%40cret@127.0.0.1:{listener.port}"
    asked: list[int] = []

    async def proxies(device_id: int) -> str | None:
        asked.append(device_id)
        return url

    engine = WhatsmeowEngine(tmp_path, proxies=proxies, environ={})
    session = engine.session(7, "s7", Sink())
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    await session.stop()
    assert asked == [7]
    # First the preflight's tunnel (this machine cannot resolve web.whatsapp.com: only the
    # proxy could), then whatsmeow's own.
    assert len(listener.requests) == 2
    assert listener.requests[0].startswith("CONNECT web.whatsapp.com:443 HTTP/1.1\r\n")
    assert listener.from_go(), "whatsmeow did not reach the proxy"
    head = listener.from_go()[0]
    assert head.startswith("CONNECT web.whatsapp.com:443 HTTP/1.1\r\n")
    assert "Proxy-Authorization: Basic YW5hOnNAY3JldA==" in head  # ana:s@cret
    assert info.value.recoverable  # the tunnel closed at once: "connection reset" or the like
    assert "s%40cret" not in caplog.text and "s@cret" not in caplog.text
    assert "http://ana:****@127.0.0.1" in caplog.text


async def test_all_proxy_is_passed_to_whatsmeow(tmp_path: Path, listener: ProxyListener) -> None:
    engine = WhatsmeowEngine(tmp_path,
                             environ={"ALL_PROXY": f"http://127.0.0.1:{listener.port}"})
    session = engine.session(8, "s8", Sink())
    with pytest.raises(EngineError):
        await session.start_pairing()
    await session.stop()
    assert listener.from_go()[0].startswith("CONNECT web.whatsapp.com:443 ")


async def test_https_proxy_of_the_environment_is_honoured_end_to_end(
    tmp_path: Path, listener: ProxyListener
) -> None:
    # Go reads the environment the process was started with: a process of its own, the
    # preflight on (it would fail: this machine cannot resolve web.whatsapp.com).
    script = (
        "import sys, trio\n"
        "from supervisor.engines.whatsmeow import WhatsmeowEngine\n"
        "from supervisor.errors import EngineError\n"
        "async def main():\n"
        "    session = WhatsmeowEngine(sys.argv[1]).session(1, 's1', print)\n"
        "    try:\n"
        "        await session.start_pairing()\n"
        "    except EngineError as exc:\n"
        "        print('reason', exc.reason)\n"
        "    await session.stop()\n"
        "trio.run(main)\n"
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HTTPS_PROXY"] = f"http://127.0.0.1:{listener.port}"
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, "-c", script, str(tmp_path)], env=env, capture_stdout=True,
            capture_stderr=True, check=False, cwd=REPO,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert listener.from_go() and listener.from_go()[0].startswith(
        "CONNECT web.whatsapp.com:443 HTTP/1.1"), out
    # The preflight went through the proxy too (directly it fails: no DNS here).
    assert "lookup web.whatsapp.com" not in out


async def test_the_preflight_goes_through_the_proxy(tmp_path: Path, fake_go: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[str] = []

    def preflight(host: str, port: int = 443, timeout: float = 10.0) -> str | None:
        dialled.append(host)
        return None

    def through(url: str, host: str, port: int = 443, timeout: float = 10.0) -> str | None:
        dialled.append(f"{host} through {url}")
        return None

    monkeypatch.setattr(whatsmeow_preflight, "preflight", preflight)
    monkeypatch.setattr(proxy_checks, "preflight_through", through)
    corp = "web.whatsapp.com through "
    for environ, expected in (({}, ["web.whatsapp.com"]),
                              ({"HTTPS_PROXY": "http://corp:3128"}, [corp + "http://corp:3128"]),
                              ({"https_proxy": "http://corp:3128"}, [corp + "http://corp:3128"]),
                              ({"ALL_PROXY": "socks5://corp:1080"}, [corp + "socks5://corp:1080"])):
        dialled.clear()
        engine = WhatsmeowEngine(tmp_path, environ=environ)
        session = engine.session(1, "s1", Sink())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.start_pairing)
            await until(lambda: len(fake_go) > 0 and not fake_go[-1].stopped)
            await from_go(fake_go[-1].on_qr, "https://wa.me/settings/linked_devices#r,n,i,a,1")
        assert dialled == expected, environ
        proxy = "socks5://corp:1080" if "ALL_PROXY" in environ else None
        assert fake_go[-1].proxy == proxy
        await session.stop()


def test_a_data_dir_sqlite_would_misread_is_refused(tmp_path: Path) -> None:
    for bad in ("data?mode=memory", "da#ta", "50%"):
        with pytest.raises(OSError) as info:
            WhatsmeowEngine(tmp_path / bad)
        assert "cannot use the data directory" in str(info.value)
        assert "choose a directory without" in str(info.value)


async def test_a_relative_data_dir_reaches_neonize_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # neonize opens Postgres for a store path that starts with "postgres".
    monkeypatch.chdir(tmp_path)
    engine = WhatsmeowEngine(Path("postgres_data"), preflight_host=None)
    assert engine.data_dir == tmp_path / "postgres_data"
    session = engine.session(1, "s1", Sink())
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    await session.stop()
    assert info.value.reason == "unreachable: lookup web.whatsapp.com: no such host"
    assert (tmp_path / "postgres_data" / "whatsmeow" / "1.db").exists()


# -- months of uptime: whatsmeow's own reconnect, delete, resources ----------------------------


async def connected_session(
    tmp_path: Path, fake_go: list[wc.GoClient], sink: Sink, **engine: Any
) -> tuple[WhatsmeowSession, wc.GoClient]:
    """A session connected with stored credentials (the fake Go said Connected)."""
    store = ws.store_path(tmp_path, 1)
    ws.prepare_store(store)
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('1555:1@s.whatsapp.net')")
    conn.close()
    session = WhatsmeowEngine(tmp_path, **engine).session(1, "s1", sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[-1].on_event, 3, event_bytes(nz.Connected(status=True)))
    assert sink.events == [Connected()]
    return session, fake_go[-1]


async def test_whatsmeows_own_reconnect_within_the_grace_keeps_the_client(
    tmp_path: Path, fake_go: Any, mock_clock: trio.testing.MockClock
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    await from_go(client.on_event, 12, event_bytes(nz.Disconnected(status=True)))
    mock_clock.jump(29)
    await trio.testing.wait_all_tasks_blocked()
    assert sink.events == [Connected()]  # nothing reported yet
    await from_go(client.on_event, 3, event_bytes(nz.Connected(status=True)))
    mock_clock.jump(3600)
    await trio.testing.wait_all_tasks_blocked()
    assert sink.events == [Connected()]  # the connection carried on
    assert len(fake_go) == 1 and not client.stopped  # no new Neonize(), nothing torn down
    # Without a reconnect: reported once, after the grace.
    await from_go(client.on_event, 12, event_bytes(nz.Disconnected(status=True)))
    mock_clock.jump(29.9)
    await trio.testing.wait_all_tasks_blocked()
    assert sink.events == [Connected()]
    mock_clock.jump(0.2)
    await trio.testing.wait_all_tasks_blocked()
    assert sink.events == [Connected(), Disconnected("connection_lost")]
    await session.stop()
    assert client.stopped


async def test_stop_during_the_grace_reports_nothing(
    tmp_path: Path, fake_go: Any, mock_clock: trio.testing.MockClock
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    await from_go(client.on_event, 12, event_bytes(nz.Disconnected(status=True)))
    await session.stop()
    mock_clock.jump(60)
    await trio.testing.wait_all_tasks_blocked()
    assert sink.events == [Connected()]


async def test_go_exit_during_the_grace_is_reported_at_once(
    tmp_path: Path, fake_go: Any, mock_clock: trio.testing.MockClock
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    await from_go(client.on_event, 12, event_bytes(nz.Disconnected(status=True)))
    await from_go(client.on_exit, "websocket closed unexpectedly")
    assert sink.events == [Connected(), Disconnected("connect_failed: websocket closed unexpectedly")]
    mock_clock.jump(60)
    await trio.testing.wait_all_tasks_blocked()
    assert len(sink.events) == 2
    await session.stop()


async def test_delete_of_a_connected_device_logs_out_at_whatsapp_first(
    tmp_path: Path, fake_go: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(wc.GoClient, "logout", lambda self, gate=None: calls.append("logout"))
    stop = wc.GoClient.stop

    def stop_recorded(self: wc.GoClient, gate: wc.GoGate = wc.GATE) -> None:
        calls.append("stop")
        stop(self, gate)

    monkeypatch.setattr(wc.GoClient, "stop", stop_recorded)
    session, _client = await connected_session(tmp_path, fake_go, Sink())
    await session.delete()
    assert calls == ["logout", "stop"]
    assert not ws.store_path(tmp_path, 1).exists()


async def test_delete_is_not_held_up_by_a_failing_or_slow_logout(
    tmp_path: Path, fake_go: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: wc.GoClient, gate: Any = None) -> None:
        raise RuntimeError("logout refused")

    monkeypatch.setattr(wc.GoClient, "logout", refused)
    session, _client = await connected_session(tmp_path, fake_go, Sink())
    await session.delete()
    assert not ws.store_path(tmp_path, 1).exists()
    # Not connected: no logout at all (nothing to tell WhatsApp).
    monkeypatch.setattr(wc.GoClient, "logout", lambda self, gate=None: pytest.fail("logout"))
    idle = WhatsmeowEngine(tmp_path).session(2, "s2", Sink())
    await idle.delete()


async def test_delete_waits_a_bounded_time_for_the_logout(
    tmp_path: Path, fake_go: Any, monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = threading.Event()
    monkeypatch.setattr(wc.GoClient, "logout", lambda self, gate=None: release.wait(30))
    session, _client = await connected_session(tmp_path, fake_go, Sink())
    start = trio.current_time()
    await session.delete()
    assert trio.current_time() - start == pytest.approx(10.0, abs=0.5)
    assert not ws.store_path(tmp_path, 1).exists()
    release.set()


async def test_200_disconnect_reconnect_cycles_grow_no_threads_and_no_fds(
    tmp_path: Path, fake_go: Any, mock_clock: trio.testing.MockClock
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    disconnected = event_bytes(nz.Disconnected(status=True))
    connected = event_bytes(nz.Connected(status=True))
    for _ in range(5):  # warm-up: Trio's thread cache, first-use allocations
        await from_go(client.on_event, 12, disconnected)
        await from_go(client.on_event, 3, connected)
    gc.collect()
    threads, tasks, fds = python_threads(), os_threads(), open_fds()
    store_fds = fds_under(tmp_path)
    for _ in range(200):
        await from_go(client.on_event, 12, disconnected)
        mock_clock.jump(5)
        await from_go(client.on_event, 3, connected)
    assert sink.events == [Connected()]
    assert len(fake_go) == 1 and not client.stopped
    assert python_threads() <= threads
    assert os_threads() <= tasks + 2  # Trio's idle worker threads come and go
    gc.collect()
    assert fds_under(tmp_path) == store_fds
    assert open_fds() - fds <= FD_NOISE, f"fds {fds} -> {open_fds()}"
    print(f"whatsmeow reconnects: threads {tasks} -> {os_threads()}, fds {fds} -> {open_fds()}")
    # And 200 where whatsmeow does not come back in time: torn down, connected anew.
    for i in range(200):
        clients = i + 2
        await from_go(fake_go[-1].on_event, 12, disconnected)
        mock_clock.jump(31)
        await trio.testing.wait_all_tasks_blocked()
        assert sink.events[-1] == Disconnected("connection_lost")
        await session.stop()  # what the actor does on Disconnected
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.connect)
            await until(lambda: len(fake_go) == clients)  # noqa: B023
            await from_go(fake_go[-1].on_event, 3, connected)
    assert len(sink.events) == 1 + 2 * 200
    assert python_threads() <= threads
    assert os_threads() <= tasks + 2
    gc.collect()
    assert fds_under(tmp_path) == store_fds
    assert open_fds() - fds <= FD_NOISE, f"fds {fds} -> {open_fds()}"
    print(f"engine reconnects: threads {tasks} -> {os_threads()}, fds {fds} -> {open_fds()}")
    await session.stop()


# -- incoming messages and pairings: Go's callback returns after the commit --------------------


def incoming(message_id: str = "IN1", text: str = "hello") -> bytes:
    msg = nz.Message(Info=nz.MessageInfo(ID=message_id, Timestamp=1_750_000_000, MessageSource=nz.MessageSource(
        Chat=nz.JID(User="15557654321", Server="s.whatsapp.net"),
        Sender=nz.JID(User="15557654321", Server="s.whatsapp.net"))))
    msg.Message.conversation = text
    return event_bytes(msg)


async def test_the_message_callback_returns_to_go_only_after_the_commit(
    tmp_path: Path, fake_go: Any
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    sink.hold = trio.Event()
    go = threading.Thread(target=client.on_event, args=(17, incoming()))
    go.start()
    await until(lambda: sink.threads and len(sink.threads) == 1 and not sink.delivered
                and go.is_alive())
    await trio.testing.wait_all_tasks_blocked()
    go.join(0.2)
    assert go.is_alive()  # whatsmeow is still waiting: nothing acknowledged yet
    assert sink.delivered == []
    sink.hold.set()
    await trio.to_thread.run_sync(go.join, 5)
    assert not go.is_alive()
    assert [m.message_id for m in sink.delivered if isinstance(m, MessageReceived)] == ["IN1"]
    assert sink.threads == {threading.get_ident()}  # on the Trio thread only
    await session.stop()


async def test_stop_frees_a_go_thread_waiting_for_a_commit(tmp_path: Path, fake_go: Any) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    sink.hold = trio.Event()  # the device is busy: the commit does not come
    go = threading.Thread(target=client.on_event, args=(17, incoming()), daemon=True)
    go.start()
    try:
        await until(lambda: sink.entered == 1)
        await session.stop()  # e.g. the device's actor stops the engine, a message in flight
        await trio.to_thread.run_sync(go.join, 5)
        assert not go.is_alive()  # Go's thread is free to return from Neonize()
    finally:
        sink.hold.set()


async def test_a_message_the_device_cannot_store_is_logged_and_go_carries_on(
    tmp_path: Path, fake_go: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    sink.refuse = "not_stored"
    await from_go(client.on_event, 17, incoming("IN2"))  # returns: nothing raised into Go
    assert sink.delivered == []
    assert session.reports.not_stored == 1
    assert "was not stored (not_stored)" in caplog.text
    sink.refuse = None
    await from_go(client.on_event, 17, incoming("IN3"))
    assert [m.message_id for m in sink.delivered if isinstance(m, MessageReceived)] == ["IN3"]
    await session.stop()
    await from_go(client.on_event, 17, incoming("IN4"))  # a stopped client: dropped at once
    assert len(sink.delivered) == 1


async def test_the_pairing_is_delivered_through_the_commit(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    await from_go(client.on_status, "success")
    success = nz.PairStatus(ID=nz.JID(User="15551234567", Server="s.whatsapp.net"),
                            Platform="android", Status=nz.PairStatus.SUCCESS)
    await from_go(client.on_event, 0, event_bytes(nz.Device()))
    await from_go(client.on_event, 2, event_bytes(success))
    assert sink.delivered == [Paired("15551234567@s.whatsapp.net", "15551234567", None, "android")]
    await session.stop()


# -- the exact callback sequences of neonize 0.5.2, replayed at the Go boundary ------------------
# (../shared/research/engine-review.md, "The exact 0.5.2 callback sequences")

QR = "https://wa.me/settings/linked_devices#ref{},bm9pc2U=,aWRlbnRpdHk=,YWR2,1"
ME = nz.Device(JID=nz.JID(User="15551234567", Server="s.whatsapp.net"), PushName="Ana",
               Platform="android")
SUCCESS = nz.PairStatus(ID=nz.JID(User="15551234567", Device=7, Server="s.whatsapp.net"),
                        Platform="android", Status=nz.PairStatus.SUCCESS)
PAIRED = Paired("15551234567@s.whatsapp.net", "15551234567", None, "android")


async def failing(call: Callable[[], Awaitable[None]], errors: list[EngineError]) -> None:
    try:
        await call()
    except EngineError as exc:
        errors.append(exc)


async def scan_and_connect(session: WhatsmeowSession, client: wc.GoClient) -> None:
    """status success -> event(0, Device) -> event(2, PairStatus) -> (515) event(3)."""
    await from_go(client.on_status, "success")
    await from_go(client.on_event, 0, event_bytes(ME))
    await from_go(client.on_event, 2, event_bytes(SUCCESS))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.connect)  # the actor's next step after Paired
        await trio.testing.wait_all_tasks_blocked()
        await from_go(client.on_event, 3, event_bytes(nz.Connected(status=True)))


async def test_sequence_qr_success(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    sink.events.clear()
    for n in (2, 3):  # whatsmeow rotates on its own clock
        await from_go(client.on_qr, QR.format(n))
    assert sink.events == []
    await session.next_qr()  # wasup's first code expired: the newest one is shown
    assert sink.events == [QrCode(QR.format(3))]
    await scan_and_connect(session, client)
    await from_go(client.on_event, 17, incoming("M1", "first message"))
    assert sink.events[1:3] == [PAIRED, Connected(push_name="Ana", platform="android")]
    assert [type(e) for e in sink.delivered] == [Paired, MessageReceived]
    assert len(fake_go) == 1 and not client.stopped  # the pairing connection carried on
    await session.stop()


async def test_sequence_pair_code(tmp_path: Path, fake_go: Any,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wc.GoClient, "pair_phone", lambda self, phone, gate=None: "ABCDEFGH")
    session, sink, client = await pairing_session(tmp_path, fake_go)
    assert await session.request_pair_code("+15551234567") == "ABCD-EFGH"
    await scan_and_connect(session, client)
    assert sink.events[1:] == [PAIRED, Connected(push_name="Ana", platform="android")]
    await session.stop()


async def test_sequence_failed_scan_is_visible_within_a_tick(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    await from_go(client.on_status, "error")  # then nothing more; the Go thread never exits
    assert sink.events[1:] == [PairingFailed("pair_error", restart=True)]
    with pytest.raises(EngineError) as info:
        await session.request_pair_code("15551234567")  # that pairing connection is gone
    assert info.value.reason == "pairing_not_ready"
    # The actor starts pairing again: a new Go client, a fresh store.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.start_pairing)
        await until(lambda: len(fake_go) == 2)
        await from_go(fake_go[-1].on_qr, QR.format(9))
    assert client.stopped and sink.events[-1] == QrCode(QR.format(9))
    await session.stop()


@pytest.mark.parametrize(
    ("status", "reason"),
    [("err-scanned-without-multidevice", "scanned_without_multidevice"),
     ("passkey-request", "passkey_required"), ("passkey-confirmation", "passkey_required")],
)
async def test_sequence_pairing_statuses_the_phone_can_retry(
    tmp_path: Path, fake_go: Any, monkeypatch: pytest.MonkeyPatch, status: str, reason: str
) -> None:
    monkeypatch.setattr(wc.GoClient, "pair_phone", lambda self, phone, gate=None: "ABCDEFGH")
    session, sink, client = await pairing_session(tmp_path, fake_go)
    await from_go(client.on_status, status)
    assert sink.events[1:] == [PairingFailed(reason, restart=False)]
    # The pairing connection is still there: codes keep coming, a pair code can be asked for.
    assert await session.request_pair_code("15551234567") == "ABCD-EFGH"
    await from_go(client.on_qr, QR.format(2))
    await session.next_qr()
    assert sink.events[-1] == QrCode(QR.format(2))
    assert not client.stopped
    await session.stop()


async def test_sequence_pairing_socket_dropped_or_codes_ran_out(
    tmp_path: Path, fake_go: Any
) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    await from_go(client.on_status, "timeout")
    assert sink.events[1:] == translate_pairing_status("timeout")
    assert all(isinstance(e, Disconnected) and e.recoverable for e in sink.events[1:])
    with pytest.raises(EngineError):
        await session.request_pair_code("15551234567")
    await session.stop()


async def test_sequence_outdated_during_pairing_before_any_qr(
    tmp_path: Path, fake_go: Any
) -> None:
    engine = WhatsmeowEngine(tmp_path)
    sink = Sink()
    session = engine.session(1, "s1", sink)
    errors: list[EngineError] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(failing, session.start_pairing, errors)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[-1].on_status, "err-client-outdated")
    assert [(e.reason, e.recoverable) for e in errors] == [("client_outdated", True)]
    assert sink.events == [Disconnected("client_outdated", retry=Retry.SLOW)]
    await until(lambda: fake_go[-1].stopped)  # stopped by the engine: no retry by whatsmeow
    await session.stop()


async def test_sequence_stopped_while_pairing(tmp_path: Path, fake_go: Any) -> None:
    session, sink, client = await pairing_session(tmp_path, fake_go)
    await session.stop()
    # No further callbacks come in 0.5.2; if any did, they would be dropped.
    await from_go(client.on_qr, QR.format(2))
    await from_go(client.on_status, "timeout")
    await from_go(client.on_event, 2, event_bytes(SUCCESS))
    assert sink.events == [QrCode("https://wa.me/settings/linked_devices#first,n0,i0,a0,1")]
    assert sink.delivered == []


async def reconnect(tmp_path: Path, fake_go: list[wc.GoClient], sink: Sink,
                    *events: tuple[int, bytes]) -> tuple[WhatsmeowSession, EngineError | None]:
    """connect() with stored credentials; Go plays event(0) and then ``events``."""
    store = ws.store_path(tmp_path, 1)
    if not ws.has_credentials(store):
        ws.prepare_store(store)
        with sqlite3.connect(store) as conn:
            conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
            conn.execute("INSERT INTO whatsmeow_device VALUES ('15551234567:7@s.whatsapp.net')")
        conn.close()
    session = WhatsmeowEngine(tmp_path).session(1, "s1", sink)
    failure: EngineError | None = None

    async def connect() -> None:
        nonlocal failure
        try:
            await session.connect()
        except EngineError as exc:
            failure = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connect)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[-1].on_event, 0, event_bytes(ME))
        for code, data in events:
            await from_go(fake_go[-1].on_event, code, data)
    return session, failure


async def test_sequence_paired_reconnect(tmp_path: Path, fake_go: Any) -> None:
    sink = Sink()
    session, failure = await reconnect(tmp_path, fake_go, sink,
                                       (3, event_bytes(nz.Connected(status=True))))
    assert failure is None
    assert sink.events == [Connected(push_name="Ana", platform="android")]
    await session.stop()


@pytest.mark.parametrize(
    ("code", "event", "expected"),
    [
        (6, nz.LoggedOut(OnConnect=True, Reason=nz.LOGGED_OUT), LoggedOut("unlinked")),
        (8, nz.TemporaryBan(Code=nz.TemporaryBan.BLOCKED_BY_USERS, Expire=3600),
         TemporaryBan("temporary_ban: blocked_by_users", until_epoch=0.0)),
        (10, nz.ClientOutdated(), Disconnected("client_outdated", retry=Retry.SLOW)),
        (7, nz.StreamReplaced(), Disconnected("stream_replaced", retry=Retry.HOLD)),
        (9, nz.ConnectFailure(Reason=nz.BAD_USER_AGENT),
         Disconnected("bad_user_agent", retry=Retry.SLOW)),
    ],
)
async def test_sequence_paired_reconnect_failures(
    tmp_path: Path, fake_go: Any, code: int, event: Any, expected: EngineEvent
) -> None:
    sink = Sink()
    session, failure = await reconnect(tmp_path, fake_go, sink, (code, event_bytes(event)))
    assert failure is not None and failure.reason == getattr(expected, "reason", None)
    assert len(sink.events) == 1
    got = sink.events[0]
    if isinstance(got, TemporaryBan):
        got = attrs.evolve(got, until_epoch=0.0)
    assert got == expected
    held = isinstance(expected, Disconnected) and expected.retry is not Retry.BACKOFF
    if held:
        await until(lambda: fake_go[-1].stopped)  # no reconnect by whatsmeow itself
    # The engine never wipes the store on its own: only the actor's logout or delete does.
    assert ws.has_credentials(ws.store_path(tmp_path, 1))
    await session.stop()


async def test_sequence_event_loop_death(tmp_path: Path, fake_go: Any) -> None:
    sink = Sink()
    session, _ = await reconnect(tmp_path, fake_go, sink,
                                 (3, event_bytes(nz.Connected(status=True))))
    await from_go(fake_go[-1].on_exit, "proto: required field neonize.Receipt.Type not set")
    assert sink.events[1:] == [Disconnected("unsupported_event", retry=Retry.SLOW)]
    await session.stop()


async def test_sequence_dial_failure(tmp_path: Path, fake_go: Any) -> None:
    sink = Sink()
    session = WhatsmeowEngine(tmp_path).session(1, "s1", sink)
    errors: list[EngineError] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(failing, session.start_pairing, errors)
        await until(lambda: bool(fake_go))
        await from_go(fake_go[-1].on_exit, (
            "failed to dial whatsapp web websocket: failed to WebSocket dial: Get "
            '"https://web.whatsapp.com/ws/chat": dial tcp: lookup web.whatsapp.com on '
            "127.0.0.53:53: no such host"))
    assert [(e.reason, e.recoverable) for e in errors] == [
        ("unreachable: lookup web.whatsapp.com: no such host", True)]
    assert sink.events == []  # raised to the caller, not reported twice
    await session.stop()


# -- with the device actor: a held disconnect keeps the session ---------------------------------


def fake_credentials_row(store: Path) -> None:
    """What whatsmeow leaves in the store once the phone scanned (the account row)."""
    ws.prepare_store(store)
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('15551234567:7@s.whatsapp.net')")
    conn.close()


@pytest.mark.parametrize(
    ("code", "event", "reason"),
    [
        (10, nz.ClientOutdated(), "client_outdated"),
        (7, nz.StreamReplaced(), "stream_replaced"),
        (9, nz.ConnectFailure(Reason=nz.BAD_USER_AGENT), "bad_user_agent"),
    ],
)
async def test_a_held_disconnect_keeps_the_session_in_the_store(
    tmp_path: Path, fake_go: Any, code: int, event: Any, reason: str
) -> None:
    config = Config(data_dir=tmp_path / "data", engine="whatsmeow", seed=1)
    engine = WhatsmeowEngine(config.data_dir)
    async with open_supervisor(config, engine=engine) as sup:
        row, _key = await sup.create_device("u1", "Phone")
        await until(lambda: bool(fake_go))
        pairing = fake_go[-1]
        await from_go(pairing.on_qr, QR.format(1))
        await wait_status(sup, row.id, "pending", within=5)
        # The phone scans: whatsmeow stores the account, then reports it.
        fake_credentials_row(ws.store_path(config.data_dir, row.id))
        await from_go(pairing.on_status, "success")
        await from_go(pairing.on_event, 0, event_bytes(ME))
        await from_go(pairing.on_event, 2, event_bytes(SUCCESS))
        await from_go(pairing.on_event, 3, event_bytes(nz.Connected(status=True)))
        await wait_status(sup, row.id, "connected", within=5)
        await from_go(pairing.on_event, code, event_bytes(event))
        await wait_status(sup, row.id, "disconnected", within=5)
        assert sup.get(row.id).status_reason == reason
        await until(lambda: pairing.stopped)
        assert ws.has_credentials(ws.store_path(config.data_dir, row.id))  # not wiped
        # A login reconnects with the stored credentials: no QR, no new pairing.
        await sup.login(row.session_id)
        await until(lambda: len(fake_go) == 2)
        assert not fake_go[-1].pairing
        await from_go(fake_go[-1].on_event, 3, event_bytes(nz.Connected(status=True)))
        await wait_status(sup, row.id, "connected", within=5)
        assert ws.has_credentials(ws.store_path(config.data_dir, row.id))


def test_a_logout_waiting_for_whatsapp_does_not_hold_the_gate() -> None:
    answered, called = threading.Event(), threading.Event()

    class SlowApi:
        def logout(self) -> None:
            called.set()
            answered.wait(10)

    gate = wc.GoGate()
    client = wc.GoClient(1, "/nonexistent", False, on_qr=lambda _c: None,
                         on_status=lambda _s: None, on_event=lambda _c, _d: None,
                         on_exit=lambda _e: None)
    client._api = SlowApi()  # type: ignore[assignment]
    go = threading.Thread(target=client.logout, kwargs={"gate": gate, "hold": 0.5})
    go.start()
    assert called.wait(5)
    assert not gate.acquire_exclusive(timeout=0.01)  # Go is looking the client up
    assert gate.acquire_exclusive(timeout=5)  # free again while WhatsApp has not answered
    gate.release_exclusive()
    assert go.is_alive()
    answered.set()
    go.join(5)
    assert gate.acquire_exclusive(timeout=1)


async def test_each_real_connection_attempt_keeps_at_most_one_fd(
    tmp_path: Path, listener: ProxyListener
) -> None:
    """neonize 0.5.2 opens a SQLite container per Neonize() call and never closes it (a known
    limit, see whatsmeow_client): one file descriptor per attempt that reached Go, nothing
    more, and no thread. (The reconnect grace and the preflight keep attempts rare.)"""

    async def proxies(device_id: int) -> str | None:
        return f"http://127.0.0.1:{listener.port}"  # accepts, refuses: Go gets that far

    engine = WhatsmeowEngine(tmp_path, proxies=proxies, environ={})

    async def attempt(device_id: int) -> None:
        session = engine.session(device_id, "s", Sink())
        with pytest.raises(EngineError):
            await session.start_pairing()
        await session.delete()

    for i in range(3):
        await attempt(100 + i)  # warm-up: Go's runtime starts its threads once
    fds, threads, tasks = open_fds(), python_threads(), os_threads()
    for i in range(10):
        await attempt(i)
    assert open_fds() - fds <= 10
    assert python_threads() <= threads
    assert os_threads() <= tasks + 8  # Go keeps a few OS threads for reuse; no growth per attempt
    stats = engine.statistics()
    assert (stats.sessions, stats.live_clients, stats.parked_threads) == (0, 0, 0)


async def test_a_proxy_that_refuses_fails_before_go_is_started(
    tmp_path: Path, listener: ProxyListener
) -> None:
    listener.answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    url = f"http://ana:Wr0ng-Pa55@127.0.0.1:{listener.port}"

    async def proxies(device_id: int) -> str | None:
        return url

    engine = WhatsmeowEngine(tmp_path, proxies=proxies, environ={})
    fds = open_fds()
    session = engine.session(1, "s1", Sink())
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    assert (info.value.reason, info.value.recoverable) == (
        f"unreachable: proxy 127.0.0.1:{listener.port} answered "
        "HTTP/1.1 407 Proxy Authentication Required", True)
    assert listener.from_go() == []  # Go never started: no file descriptor kept for it
    assert engine.statistics().live_clients == 0
    await session.stop()
    assert open_fds() == fds
    # A proxy that is not there at all.
    listener.close()
    session = engine.session(2, "s2", Sink())
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    assert info.value.reason == f"unreachable: proxy 127.0.0.1:{listener.port}: connection refused"
    assert "Wr0ng-Pa55" not in info.value.reason


async def test_a_stored_proxy_is_used_at_the_next_login(
    tmp_path: Path, listener: ProxyListener
) -> None:
    """The whole way: the settings kind "proxy" (as PUT stores it), the supervisor's engine
    (made from the configuration), whatsmeow dialling the proxy at the next login."""
    config = Config(data_dir=tmp_path / "data", engine="whatsmeow", seed=1,
                    backoff_base=600.0, backoff_cap=600.0)
    async with open_supervisor(config) as sup:
        assert isinstance(sup.engine, WhatsmeowEngine)
        sup.engine.environ = {}
        row, _key = await sup.create_device("u1", "Proxied")
        with trio.fail_after(20):
            await wait_status(sup, row.id, "disconnected")  # direct: no DNS here
        assert listener.requests == []
        await sup.put_settings(row.session_id, "proxy",
                               {"url": f"http://127.0.0.1:{listener.port}"})
        await sup.login(row.session_id)
        with trio.fail_after(20):
            await until(lambda: bool(listener.from_go()))
        assert listener.from_go()[0].startswith("CONNECT web.whatsapp.com:443 ")
        await sup.delete_device(row.session_id)
