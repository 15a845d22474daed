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
data and hand it to Trio (:mod:`supervisor.engines.whatsmeow_events`), nothing more. Every
other blocking call (start, stop, send, read receipts, pair code, logout, file work) runs through
``trio.to_thread.run_sync`` under the engine's own ``CapacityLimiter``; starting, stopping and
logging out are serialized through one gate (see :mod:`supervisor.engines.whatsmeow_client`).

Credentials: whatsmeow's store, one per device (:mod:`supervisor.engines.whatsmeow_store`):
a SQLite file ``<data_dir>/whatsmeow/<device_id>.db`` (absolute, mode 0600, directory 0700), or
with a PostgreSQL ``database_url`` the schema ``whatsmeow_<device_id>`` in that database. A
paired device reconnects from it after a restart (on any machine, with PostgreSQL); pairing
anew, logout and delete wipe it. Delete of a
connected device logs out at WhatsApp first (best effort, at most :data:`LOGOUT_TIMEOUT`
seconds), so the phone does not keep a stale linked device.

Reconnects: after whatsmeow reports a connected client ``Disconnected`` it reconnects by
itself; the engine gives it :data:`RECONNECT_GRACE` seconds before reporting the connection
lost (the actor then stops the client and reconnects on its own schedule).

Proxies: a device's own proxy (:mod:`supervisor.proxy`, the settings kind ``"proxy"``) is
handed to whatsmeow at each connection's start; without one, ``HTTPS_PROXY`` of the environment
the process was started with (Go reads it itself), else ``ALL_PROXY`` (wasup passes it).

Offline: before every connection attempt the engine checks the way to WhatsApp (the
preflight, :mod:`supervisor.engines.whatsmeow_preflight`): when that fails the attempt fails at
once with a readable reason (``unreachable: ...``) without starting a Go client.

Error handling: session methods raise :class:`EngineError` for what the state machine
understands: ``unreachable: ...`` and ``connect_failed: ...`` (recoverable),
``credentials_missing`` (not recoverable), ``not_connected``, ``pairing_not_ready``,
``invalid_recipient``, ``send_failed: ...``, ``mark_read_failed: ...``, ``pair_code_failed: ...``,
``logout_failed: ...``, ``media_expired``, ``invalid_media_ref``, ``download_failed: ...``.
The translation of whatsmeow's events is in :mod:`supervisor.engines.whatsmeow_translate`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from storage.errors import StorageUnavailable
from supervisor.engine import Sent, Sink
from supervisor.engine_account import AccountApi
from supervisor.errors import EngineError
from supervisor.jid import InvalidJid, Jid
from supervisor.outgoing import Outgoing
from supervisor.proxy import ProxyLookup, redact

from . import whatsmeow_client as wc
from . import whatsmeow_messages as wm
from .whatsmeow_account import WhatsmeowAccount
from .whatsmeow_contacts import WhatsmeowContacts
from .whatsmeow_events import GoReports
from .whatsmeow_groups import WhatsmeowGroups
from .whatsmeow_link import GoEvent, GoExit, GoQr, GoStatus, Link, LinkState
from .whatsmeow_outgoing import Unsendable
from .whatsmeow_preflight import checked_proxy
from .whatsmeow_requests import neonize_arg
from .whatsmeow_store import CredentialStores, credential_stores
from .whatsmeow_translate import download_reason, exit_event, short_error

log = logging.getLogger("wasup.engine.whatsmeow")

T = TypeVar("T")

#: How long a start may hold the gate while Go sets its client up (offline: milliseconds).
START_HOLD = 15.0
#: How long :meth:`WhatsmeowSession.stop` waits for a connected client's thread to end.
JOIN_TIMEOUT = 5.0
#: How long a connected client that whatsmeow reported ``Disconnected`` may take to reconnect
#: by itself (whatsmeow retries at once, then after 2, 4, 6... s) before the engine reports
#: the connection lost and tears the client down.
RECONNECT_GRACE = 30.0
#: How long :meth:`WhatsmeowSession.delete` waits for WhatsApp to confirm the logout.
LOGOUT_TIMEOUT = 10.0


@attrs.frozen
class EngineStatistics:
    sessions: int
    live_clients: int
    parked_threads: int


@attrs.define(eq=False)
class WhatsmeowSession:
    """One device's connection to WhatsApp through whatsmeow (see the module docstring)."""

    engine: WhatsmeowEngine
    device_id: int
    session_id: str
    sink: Sink
    _link: Link | None = None
    reports: GoReports = attrs.field(init=False)
    contacts: WhatsmeowContacts = attrs.field(init=False, default=attrs.Factory(WhatsmeowContacts, True))
    groups: WhatsmeowGroups = attrs.field(init=False, default=attrs.Factory(WhatsmeowGroups, True))
    account: AccountApi = attrs.field(
        init=False, default=attrs.Factory(WhatsmeowAccount, takes_self=True))

    def __attrs_post_init__(self) -> None:
        self.reports = GoReports(self.session_id, self.sink, lambda: self._link, self._hold,
                                 self.engine.reconnect_grace, limiter=self.engine.limiter)

    # -- EngineSession -----------------------------------------------------------------------

    async def start_pairing(self) -> None:
        """Pair anew (credentials wiped); returns once the first QR code was reported.

        Raises EngineError (recoverable) when WhatsApp cannot be reached.
        """
        await self.stop()
        stores, device_id = self.engine.stores, self.device_id
        await self._store(lambda: stores.reset(device_id))
        proxy = await self._proxy()
        link = await self._start(pairing=True, proxy=proxy)
        await self._wait(link, lambda lk: lk.state is not LinkState.STARTING, starter=True)

    async def next_qr(self) -> None:
        """Report the next of whatsmeow's QR codes: at once if it arrived, else when it does."""
        link = self._link
        if link is None or not link.pairing or link.paired:
            return
        if len(link.codes) > link.shown:
            self.reports.show_latest(link)
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
            not link.live
        ):
            raise EngineError("pairing_not_ready", message="the device is not ready to pair yet")
        try:
            code = await self._thread(lambda: link.client.pair_phone(digits), abandon=True)
        except Exception as exc:
            raise EngineError(f"pair_code_failed: {short_error(exc)}") from exc
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
        if not await self._store(self._stored_credentials):
            raise EngineError("credentials_missing", recoverable=False,
                              message="no stored whatsapp credentials for this device")
        proxy = await self._proxy()
        link = await self._start(pairing=False, proxy=proxy)
        await self._wait(link, lambda lk: lk.state is LinkState.CONNECTED, starter=True)

    async def send(self, to_jid: str, message: Outgoing, media: bytes | None) -> Sent:
        """Send ``message`` (any kind; ``media`` the file of a media kind) to a phone number or
        JID; returns WhatsApp's message id and, for a media kind, the upload's ``media_ref``
        (see :mod:`.whatsmeow_outgoing` for the protos).

        Raises EngineError ``not_connected`` (recoverable); final: ``invalid_recipient``,
        ``unsupported_kind``, ``target_missing``, ``media_missing``, ``send_failed: ...``
        (WhatsApp refused the upload or the message). Cancelling the caller does not unsend:
        the worker thread finishes the send.
        """
        link = self._connected_link()
        jid = neonize_arg(to_jid)
        try:
            return await self._thread(lambda: link.client.send(jid, message, media),
                                      abandon=True)
        except Unsendable as exc:
            raise EngineError(exc.reason, recoverable=False, message=str(exc)) from None
        except Exception as exc:
            if not link.live or link.state is not LinkState.CONNECTED:
                raise EngineError("not_connected", message=short_error(exc)) from exc
            raise EngineError(f"send_failed: {short_error(exc)}", recoverable=False) from exc

    async def download(self, ref: str) -> bytes:
        """The decrypted file of an incoming media message (``ref``: its ``media_ref``, see
        :mod:`supervisor.engines.whatsmeow_messages`), through neonize's ``download_any``.

        Raises EngineError ``not_connected`` (recoverable); ``media_expired`` when WhatsApp's
        media servers answer 403, 404 or 410 (the file is gone from there); ``invalid_media_ref``
        or ``download_failed: ...`` otherwise (none recoverable). A stop waits for a download
        in flight (it shares the gate, as a send does).
        """
        link = self._connected_link()
        try:
            message = wm.message_of_ref(ref)
        except ValueError as exc:
            raise EngineError("invalid_media_ref", recoverable=False, message=str(exc)) from None
        try:
            return await self._thread(lambda: link.client.download(message), abandon=True)
        except Exception as exc:
            reason = download_reason(str(exc))
            raise EngineError(reason, recoverable=False, message=short_error(exc)) from exc

    async def mark_read(self, chat: str, messages: Sequence[tuple[str, str | None]]) -> None:
        """Send read receipts (receipt type ``read``) for ``(message id, sender)`` of ``chat``:
        one receipt per sender, as whatsmeow's ``MarkRead`` takes one sender at a time.

        Raises EngineError ``not_connected`` (recoverable), ``invalid_recipient`` for a chat that
        is no JID, ``mark_read_failed: ...`` (not recoverable) when WhatsApp refuses.
        """
        link = self._connected_link()
        chat_jid = neonize_arg(chat)
        by_sender: dict[str | None, list[str]] = {}
        for message_id, sender in messages:
            by_sender.setdefault(sender, []).append(message_id)
        for sender, ids in by_sender.items():
            sender_jid = wc.NO_JID
            if sender is not None:
                try:
                    sender_jid = wc.neonize_jid(Jid.parse(sender))
                except InvalidJid:
                    pass  # stored senders are JIDs; should one not be, it goes without one
            receipt = functools.partial(link.client.mark_read, ids, chat_jid, sender_jid)
            try:
                await self._thread(receipt, abandon=True)
            except Exception as exc:
                raise EngineError(f"mark_read_failed: {short_error(exc)}", recoverable=False) from exc

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
                error = short_error(exc)
        if link is not None:
            await self._release(link)
        await self._wipe()
        if error is not None:
            raise EngineError(f"logout_failed: {error}")

    async def stop(self) -> None:
        """Drop the connection and forget the Go client; idempotent, safe to call any time."""
        link, self._link = self._link, None
        if link is not None:
            link.poke()
            await self._release(link)

    async def delete(self) -> None:
        """Log out at WhatsApp when connected (best effort, at most :data:`LOGOUT_TIMEOUT`
        seconds, so the phone does not keep a stale linked device), then stop and wipe this
        device's credentials."""
        link = self._link
        if link is not None and link.state is LinkState.CONNECTED and link.live:
            with trio.move_on_after(LOGOUT_TIMEOUT) as waited:
                try:
                    await self._thread(link.client.logout, abandon=True)
                except Exception as exc:
                    log.warning("device %s: logout at whatsapp before delete failed: %s",
                                self.session_id, redact(short_error(exc), link.proxy))
            if waited.cancelled_caught:
                log.warning("device %s: whatsapp did not confirm the logout before delete",
                            self.session_id)
        await self.stop()
        await self._wipe()
        self.engine._forget(self)

    async def has_credentials(self) -> bool:
        """Whether whatsmeow's store holds a paired account for this device (read-only).
        Raises StorageUnavailable when the PostgreSQL store cannot be reached."""
        return await self._thread(self._stored_credentials)

    def _stored_credentials(self) -> bool:
        return self.engine.stores.has_credentials(self.device_id)

    async def _wipe(self) -> None:
        stores, device_id = self.engine.stores, self.device_id
        await self._thread(lambda: stores.wipe(device_id))

    async def _store(self, fn: Callable[[], T]) -> T:
        """``fn`` of the store before a connection; a database that cannot serve now fails the
        attempt as EngineError ``connect_failed: whatsmeow store: ...`` (recoverable)."""
        try:
            return await self._thread(fn)
        except StorageUnavailable as exc:
            raise EngineError(f"connect_failed: whatsmeow store: {exc.reason}") from exc

    # -- starting and stopping Go clients ----------------------------------------------------

    async def _start(self, *, pairing: bool, proxy: str | None) -> Link:
        if self.reports.token is None:
            self.reports.token = trio.lowlevel.current_trio_token()
        holder: list[Link] = []
        post = self.reports.post

        client = wc.GoClient(
            self.device_id,
            "",  # the store's address, below
            pairing,
            on_qr=lambda code: post(holder, GoQr(code)),
            on_status=lambda status: post(holder, GoStatus(status)),
            on_event=lambda code, data: post(holder, GoEvent(code, data)),
            on_exit=lambda error: post(holder, GoExit(error)),
            proxy=proxy,
        )
        stores, device_id, name = self.engine.stores, self.device_id, client.uuid.decode()
        client.db = await self._store(lambda: stores.address(device_id, name))
        # waiting=1: the caller waits on this link (see _wait(starter=True)), so a failure that
        # arrives before it does is raised to it rather than reported as an event too.
        link = Link(client=client, pairing=pairing, proxy=proxy, waiting=1)
        holder.append(link)
        self._link = link
        self.engine._clients.add(client)
        await self._thread(lambda: client.start(self.engine.start_hold))
        return link

    def _hold(self, link: Link) -> None:
        """Stop ``link``'s client now (on the Trio thread, from a Go report): the connection
        ended with its credentials kept, and whatsmeow must not reconnect it by itself. The
        store is not touched."""
        if self._link is link:
            self._link = None
            trio.lowlevel.spawn_system_task(self._release_quietly, link)

    async def _release_quietly(self, link: Link) -> None:
        try:
            await self._release(link)
        except Exception:
            log.exception("device %s: stopping the client failed", self.session_id)

    async def _release(self, link: Link) -> None:
        link.end_grace()
        link.stop_waiting()
        client = link.client
        wait = not link.pairing or link.paired
        stores = self.engine.stores

        def stop_and_join() -> None:
            client.stop()
            # A connected client returns from Go promptly after Stop; a pairing stopped
            # before the scan never does (neonize 0.5.2), so do not wait for that one.
            if wait or client.exited.is_set():
                client.join(JOIN_TIMEOUT)
            if client.exited.is_set():
                stores.release(client.uuid.decode())  # the store neonize left open

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
        self, link: Link, done: Callable[[Link], bool], *, starter: bool = False
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
                    ended = exit_event(link.exit_error or "connection closed")
                    raise EngineError(ended.reason, ended.recoverable)
                if self._link is not link:
                    raise EngineError("stopped", message="the engine session was stopped")
                await link.changed.wait()
        finally:
            link.waiting -= 1

    async def _proxy(self) -> str | None:
        """The proxy for the next connection, after the preflight (see
        :func:`.whatsmeow_preflight.checked_proxy`)."""
        engine = self.engine
        own = None if engine.proxies is None else await engine.proxies(self.device_id)
        return await checked_proxy(own, engine.environ, engine.preflight_host,
                                   engine.preflight_timeout, self.session_id, self._thread)

    def _connected_link(self) -> Link:
        """The live, connected link; EngineError ``not_connected`` (recoverable) otherwise."""
        link = self._link
        if link is None or link.state is not LinkState.CONNECTED or not link.live:
            raise EngineError("not_connected", message="the device is not connected")
        return link

    async def _thread(self, fn: Callable[[], T], *, abandon: bool = False) -> T:
        return await trio.to_thread.run_sync(
            fn, limiter=self.engine.limiter, abandon_on_cancel=abandon
        )


@attrs.define(eq=False)
class WhatsmeowEngine:
    """Makes one :class:`WhatsmeowSession` per device; see the module docstring.

    ``max_threads`` bounds the worker threads of blocking calls (the threads that carry live
    connections are apart from it: one per connected or pairing device). ``preflight_host``
    None turns the preflight off. ``proxies`` reads a device's own proxy (the settings kind
    ``"proxy"``, :func:`supervisor.proxy.stored_proxies`); ``environ`` is the environment the
    process was started with (Go reads ``HTTPS_PROXY`` from it). ``database_url`` (wasup's
    PostgreSQL database) puts the credentials there instead of in ``data_dir``.

    Error handling: raises :class:`~.whatsmeow_store.DataDirUnusable` when the stores are
    SQLite files and ``data_dir`` contains ``?``, ``#`` or ``%``. The stores' paths are
    absolute (``data_dir`` resolved), so a relative directory such as ``postgres_data`` never
    reaches neonize as something it would take for a Postgres address.
    """

    data_dir: Path = attrs.field(converter=lambda p: Path(p).resolve())
    max_threads: int = attrs.field(default=16, kw_only=True)
    preflight_host: str | None = attrs.field(default="web.whatsapp.com", kw_only=True)
    preflight_timeout: float = attrs.field(default=10.0, kw_only=True)
    start_hold: float = attrs.field(default=START_HOLD, kw_only=True)
    reconnect_grace: float = attrs.field(default=RECONNECT_GRACE, kw_only=True)
    proxies: ProxyLookup | None = attrs.field(default=None, kw_only=True)
    environ: Mapping[str, str] = attrs.field(factory=lambda: os.environ, kw_only=True)
    database_url: str | None = attrs.field(default=None, kw_only=True, repr=False)
    stores: CredentialStores = attrs.field(init=False)
    name: str = attrs.field(default="whatsmeow", init=False)
    limiter: trio.CapacityLimiter = attrs.field(init=False)
    _sessions: dict[int, WhatsmeowSession] = attrs.field(init=False, factory=dict)
    _clients: set[wc.GoClient] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self.stores = credential_stores(self.data_dir, self.database_url)
        self.limiter = trio.CapacityLimiter(self.max_threads)

    def session(self, device_id: int, session_id: str, sink: Sink) -> WhatsmeowSession:
        session = WhatsmeowSession(self, device_id, session_id, sink)
        try:
            session.reports.token = trio.lowlevel.current_trio_token()
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
        """Stop every session's client (credentials stay for the next start), then close the
        stores' own connections."""
        for session in list(self._sessions.values()):
            try:
                await session.stop()
            except Exception:
                log.exception("device %s: stop failed", session.session_id)
        self._sessions.clear()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.stores.close)

