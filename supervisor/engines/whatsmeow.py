"""The whatsmeow engine: real WhatsApp accounts through neonize (whatsmeow's Go library).

::

    engine = WhatsmeowEngine(Path("./data"))
    session = engine.session(7, "user_u_device_a", sink)
    await session.start_pairing()      # returns at the first QR code: sink(QrCode(...))
    code = await session.request_pair_code("15551234567")   # or pair by phone code
    ...                                # the phone scans: sink(Paired(...)), sink(Connected(...))
    await session.connect()            # after a restart: stored credentials, no QR

Threads: each live whatsmeow client runs on a thread of its own (Go's ``Neonize()`` blocks
for the connection's lifetime). Go calls back on its own threads; those callbacks copy their
data and hand it to Trio with ``TrioToken.run_sync_soon`` (see :meth:`WhatsmeowSession._post`),
nothing more. Every other blocking call (start, stop, send, pair code, logout, file work)
runs through ``trio.to_thread.run_sync`` under the engine's own ``CapacityLimiter``;
starting, stopping and logging out are serialized through one gate (see
:mod:`supervisor.engines.whatsmeow_client`).

Credentials: whatsmeow's SQLite store, one file per device at
``<data_dir>/whatsmeow/<device_id>.db`` (mode 0600, directory 0700). A paired device
reconnects from it after a restart; pairing anew, logout and delete wipe it.

Offline: before every connection attempt the engine resolves and opens a TCP connection to
``web.whatsapp.com:443`` (the preflight); when that fails the attempt fails at once with a
readable reason (``unreachable: lookup web.whatsapp.com: ...``) without starting a Go client.
With the preflight off, the same failure comes from whatsmeow itself.

Error handling: session methods raise :class:`EngineError` for what the state machine
understands: ``unreachable: ...`` and ``connect_failed: ...`` (recoverable),
``credentials_missing`` (not recoverable), ``not_connected``, ``pairing_not_ready``,
``invalid_recipient``, ``send_failed: ...``, ``pair_code_failed: ...``, ``logout_failed: ...``.
The translation of whatsmeow's events is in :mod:`supervisor.engines.whatsmeow_translate`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import trio
from neonize.events import INT_TO_EVENT
from neonize.proto.Neonize_pb2 import Device

from common.clock import now_epoch
from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    Paired,
    QrCode,
    Sink,
    TemporaryBan,
)
from supervisor.errors import EngineError
from supervisor.jid import InvalidJid, Jid

from . import whatsmeow_client as wc
from .whatsmeow_translate import connect_error_reason, translate, translate_pairing_status

log = logging.getLogger("wasup.engine.whatsmeow")

T = TypeVar("T")

#: How long a start may hold the gate while Go sets its client up (offline: milliseconds).
START_HOLD = 15.0
#: How long :meth:`WhatsmeowSession.stop` waits for a connected client's thread to end.
JOIN_TIMEOUT = 5.0


@attrs.frozen
class EngineStatistics:
    sessions: int
    live_clients: int
    parked_threads: int


class LinkState(enum.Enum):
    """How far one Go client got. It only moves forward; how it ended is apart from it
    (:attr:`_Link.failure`, :attr:`_Link.exit_error`), so a failed link still says whether it
    had paired."""

    STARTING = "starting"  # Go is starting; a pairing link has shown no QR code yet
    SHOWING_QR = "showing_qr"  # pairing: a QR code was reported, the phone may scan
    PAIRED = "paired"  # the phone scanned; the pairing connection carries on to connected
    CONNECTED = "connected"  # WhatsApp accepted the login


@attrs.frozen
class GoQr:
    code: str


@attrs.frozen
class GoStatus:
    status: str


@attrs.frozen
class GoEvent:
    code: int
    data: bytes


@attrs.frozen
class GoExit:
    error: str


#: What a Go callback hands over to Trio.
GoCallback = GoQr | GoStatus | GoEvent | GoExit


@attrs.define(eq=False)
class _Link:
    """What the Trio side knows about one Go client (one connection attempt)."""

    client: wc.GoClient
    pairing: bool
    state: LinkState = LinkState.STARTING
    codes: list[str] = attrs.field(factory=list)
    shown: int = 0  # codes[:shown] have been reported
    want_qr: bool = False
    me: Device | None = None
    exit_error: str | None = None  # set once Neonize() returned ("" = cleanly)
    failure: EngineError | None = None  # a final or connection-ending event arrived
    waiting: int = 0  # start_pairing/connect calls waiting on this link
    changed: trio.Event = attrs.field(factory=trio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    @property
    def paired(self) -> bool:
        """The phone scanned (or the link logged in with stored credentials)."""
        return self.state in (LinkState.PAIRED, LinkState.CONNECTED)

    @property
    def live(self) -> bool:
        """Neither failed nor returned from Go."""
        return self.exit_error is None and self.failure is None


@attrs.define(eq=False)
class WhatsmeowSession:
    """One device's connection to WhatsApp through whatsmeow (see the module docstring)."""

    engine: WhatsmeowEngine
    device_id: int
    session_id: str
    sink: Sink
    _link: _Link | None = None
    _token: trio.lowlevel.TrioToken | None = None

    @property
    def store(self) -> Path:
        return wc.store_path(self.engine.data_dir, self.device_id)

    # -- EngineSession -----------------------------------------------------------------------

    async def start_pairing(self) -> None:
        """Pair anew (credentials wiped); returns once the first QR code was reported.

        Raises EngineError (recoverable) when WhatsApp cannot be reached.
        """
        await self.stop()
        store = self.store
        await self._thread(lambda: wc.reset_store(store))
        await self._preflight()
        link = await self._start(pairing=True)
        await self._wait(link, lambda lk: lk.state is not LinkState.STARTING, starter=True)

    async def next_qr(self) -> None:
        """Report the next of whatsmeow's QR codes: at once if it arrived, else when it does."""
        link = self._link
        if link is None or not link.pairing or link.paired:
            return
        if len(link.codes) > link.shown:
            self._show_latest(link)
        else:
            link.want_qr = True

    async def request_pair_code(self, phone_number: str) -> str:
        """Ask WhatsApp for a code to type on the phone (``ABCD-EFGH``) instead of scanning.

        Raises EngineError ``pairing_not_ready`` before the first QR code (whatsmeow needs
        the pairing connection), ``pair_code_failed: ...`` when WhatsApp refuses.
        """
        try:
            digits = Jid.phone(phone_number).user
        except InvalidJid:
            raise EngineError("invalid_phone_number", message="phone number must have 7 to 15 digits") from None
        link = self._link
        if link is None or not link.pairing or link.state is not LinkState.SHOWING_QR or (
            link.exit_error is not None
        ):
            raise EngineError("pairing_not_ready", message="the device is not ready to pair yet")
        try:
            code = await self._thread(lambda: link.client.pair_phone(digits), abandon=True)
        except Exception as exc:
            raise EngineError(f"pair_code_failed: {_short(exc)}") from exc
        code = code.replace("-", "").strip().upper()
        return f"{code[:4]}-{code[4:]}" if len(code) == 8 else code

    async def connect(self) -> None:
        """Connect with the stored credentials; returns once WhatsApp accepted the login.

        Right after a pairing, the pairing's own connection carries on and this waits for it.
        Raises EngineError: ``credentials_missing`` (final), ``unreachable: ...`` and
        ``connect_failed: ...`` (recoverable), or the reason of a final event (logged out...).
        """
        link = self._link
        if link is not None and link.live and link.paired:
            await self._wait(link, lambda lk: lk.state is LinkState.CONNECTED)
            return
        await self.stop()
        store = self.store
        if not await self._thread(lambda: wc.has_credentials(store)):
            raise EngineError("credentials_missing", recoverable=False,
                              message="no stored whatsapp credentials for this device")
        await self._preflight()
        link = await self._start(pairing=False)
        await self._wait(link, lambda lk: lk.state is LinkState.CONNECTED, starter=True)

    async def send_message(self, to_jid: str, text: str) -> str:
        """Send a text message to a phone number or JID; returns WhatsApp's message id.

        Raises EngineError ``not_connected``, ``invalid_recipient`` or ``send_failed: ...``.
        Cancelling the caller does not unsend: the worker thread finishes the send.
        """
        link = self._link
        if link is None or link.state is not LinkState.CONNECTED or not link.live:
            raise EngineError("not_connected", message="the device is not connected")
        try:
            jid = wc.neonize_jid(Jid.parse(to_jid))
        except InvalidJid:
            raise EngineError("invalid_recipient", message=f"not a phone number or jid: {to_jid!r}") from None
        try:
            return await self._thread(lambda: link.client.send_text(jid, text), abandon=True)
        except Exception as exc:
            raise EngineError(f"send_failed: {_short(exc)}") from exc

    async def logout(self) -> None:
        """Log out at WhatsApp (when connected) and wipe the credentials in any case.

        Raises EngineError ``logout_failed: ...`` when WhatsApp could not be told; the
        credentials are gone all the same.
        """
        link, self._link = self._link, None
        error: str | None = None
        if link is not None and link.state is LinkState.CONNECTED and link.live:
            try:
                await self._thread(link.client.logout)
            except Exception as exc:
                error = _short(exc)
        if link is not None:
            await self._release(link)
        store = self.store
        await self._thread(lambda: wc.wipe_store(store))
        if error is not None:
            raise EngineError(f"logout_failed: {error}")

    async def stop(self) -> None:
        """Drop the connection and forget the Go client; idempotent, safe to call any time."""
        link, self._link = self._link, None
        if link is not None:
            link.poke()
            await self._release(link)

    async def delete(self) -> None:
        """Stop and wipe this device's credentials."""
        await self.stop()
        store = self.store
        await self._thread(lambda: wc.wipe_store(store))
        self.engine._forget(self)

    async def has_credentials(self) -> bool:
        """Whether whatsmeow's store holds a paired account for this device (read-only)."""
        store = self.store
        return await self._thread(lambda: wc.has_credentials(store))

    # -- starting and stopping Go clients ----------------------------------------------------

    async def _start(self, *, pairing: bool) -> _Link:
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        holder: list[_Link] = []

        client = wc.GoClient(
            self.device_id,
            self.store,
            pairing,
            on_qr=lambda code: self._post(holder, GoQr(code)),
            on_status=lambda status: self._post(holder, GoStatus(status)),
            on_event=lambda code, data: self._post(holder, GoEvent(code, data)),
            on_exit=lambda error: self._post(holder, GoExit(error)),
        )
        # waiting=1: the caller waits on this link (see _wait(starter=True)), so a failure that
        # arrives before it does is raised to it rather than reported as an event too.
        link = _Link(client=client, pairing=pairing, waiting=1)
        holder.append(link)
        self._link = link
        self.engine._clients.add(client)
        await self._thread(lambda: client.start(self.engine.start_hold))
        return link

    async def _release(self, link: _Link) -> None:
        client = link.client
        wait = not link.pairing or link.paired

        def stop_and_join() -> None:
            client.stop()
            # A connected client returns from Go promptly after Stop; a pairing stopped
            # before the scan never does (neonize 0.5.2), so do not wait for that one.
            if wait or client.exited.is_set():
                client.join(JOIN_TIMEOUT)

        with trio.CancelScope(shield=True):
            await self._thread(stop_and_join)  # one worker thread hop, not two
        if client.parked:
            log.warning(
                "device %s: whatsmeow pairing client parked inside neonize (known limit)",
                self.session_id,
            )
        else:
            self.engine._clients.discard(client)

    async def _wait(
        self, link: _Link, done: Callable[[_Link], bool], *, starter: bool = False
    ) -> None:
        if not starter:
            link.waiting += 1
        try:
            while True:
                if done(link):
                    return
                if link.failure is not None:
                    raise link.failure
                if link.exit_error is not None:
                    raise EngineError(connect_error_reason(link.exit_error or "connection closed"))
                if self._link is not link:
                    raise EngineError("stopped", message="the engine session was stopped")
                await link.changed.wait()
        finally:
            link.waiting -= 1

    async def _preflight(self) -> None:
        host = self.engine.preflight_host
        if host is None:
            return
        reason = await self._thread(lambda: wc.preflight(host, timeout=self.engine.preflight_timeout))
        if reason is not None:
            raise EngineError(reason)

    async def _thread(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        return await trio.to_thread.run_sync(
            fn, limiter=self.engine.limiter, abandon_on_cancel=abandon
        )

    # -- from Go threads to Trio -------------------------------------------------------------

    def _post(self, holder: list[_Link], what: GoCallback) -> None:
        """Runs on a Go thread: hand over and return; never raises, never blocks."""
        token = self._token
        if token is None or not holder:
            return
        try:
            token.run_sync_soon(self._deliver, holder[0], what)
        except Exception:  # trio.RunFinishedError: the process is shutting down
            pass

    def _deliver(self, link: _Link, what: GoCallback) -> None:
        """Runs on the Trio thread (a ``run_sync_soon`` callback): must never raise."""
        try:
            self._handle(link, what)
        except Exception:
            log.exception("device %s: whatsmeow callback %r not handled", self.session_id, what)

    def _handle(self, link: _Link, what: GoCallback) -> None:
        current = self._link is link
        match what:
            case GoExit(error=error):
                link.exit_error = error
                link.poke()
                if current and not link.waiting and not link.client.stopped:
                    # The connection ended on its own while nobody waited for it. The link
                    # stays until stop() (which the actor calls on Disconnected) releases it.
                    reason = connect_error_reason(error or "connection closed")
                    self._emit(link, Disconnected(reason))
            case _ if not current:
                pass  # from a client that was stopped since
            case GoQr(code=code):
                link.codes.append(code)
                if link.shown == 0 or link.want_qr:
                    self._show_latest(link)
            case GoStatus(status=status):
                log.debug("device %s: pairing status %s", self.session_id, status)
                self._emit_all(link, translate_pairing_status(status))
            case GoEvent(code=code, data=data):
                cls = INT_TO_EVENT.get(code)
                if cls is None:
                    return
                message = cls.FromString(data)
                if code == 0:
                    link.me = message
                    return
                self._emit_all(link, translate(message, now=now_epoch(), me=link.me))

    def _show_latest(self, link: _Link) -> None:
        link.shown = len(link.codes)
        link.want_qr = False
        if link.state is LinkState.STARTING:
            link.state = LinkState.SHOWING_QR
        link.poke()
        self.sink(QrCode(link.codes[-1]))

    def _emit_all(self, link: _Link, events: list[EngineEvent]) -> None:
        for event in events:
            self._emit(link, event)

    def _emit(self, link: _Link, event: EngineEvent) -> None:
        match event:
            case Paired():
                link.state = LinkState.PAIRED
            case Connected():
                link.state = LinkState.CONNECTED
            case Disconnected(reason=reason, recoverable=recoverable):
                link.failure = EngineError(reason, recoverable)
            case LoggedOut(reason=reason):
                link.failure = EngineError(reason, recoverable=False)
            case TemporaryBan(reason=reason):
                link.failure = EngineError(reason, recoverable=True)
        link.poke()
        self.sink(event)


@attrs.define(eq=False)
class WhatsmeowEngine:
    """Makes one :class:`WhatsmeowSession` per device; see the module docstring.

    ``max_threads`` bounds the worker threads of blocking calls (the threads that carry live
    connections are apart from it: one per connected or pairing device). ``preflight_host``
    None turns the preflight off.
    """

    data_dir: Path = attrs.field(converter=Path)
    max_threads: int = attrs.field(default=16, kw_only=True)
    preflight_host: str | None = attrs.field(default="web.whatsapp.com", kw_only=True)
    preflight_timeout: float = attrs.field(default=10.0, kw_only=True)
    start_hold: float = attrs.field(default=START_HOLD, kw_only=True)
    name: str = attrs.field(default="whatsmeow", init=False)
    limiter: trio.CapacityLimiter = attrs.field(init=False)
    _sessions: dict[int, WhatsmeowSession] = attrs.field(init=False, factory=dict)
    _clients: set[wc.GoClient] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.max_threads)

    def session(self, device_id: int, session_id: str, sink: Sink) -> WhatsmeowSession:
        session = WhatsmeowSession(self, device_id, session_id, sink)
        try:
            session._token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass  # taken at the first start instead
        self._sessions[device_id] = session
        return session

    def _forget(self, session: WhatsmeowSession) -> None:
        if self._sessions.get(session.device_id) is session:
            del self._sessions[session.device_id]

    def statistics(self) -> EngineStatistics:
        parked = sum(1 for c in self._clients if c.parked)
        return EngineStatistics(
            sessions=len(self._sessions),
            live_clients=len(self._clients) - parked,
            parked_threads=parked,
        )

    async def aclose(self) -> None:
        """Stop every session's client (credentials stay for the next start)."""
        for session in list(self._sessions.values()):
            try:
                await session.stop()
            except Exception:
                log.exception("device %s: stop failed", session.session_id)
        self._sessions.clear()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
