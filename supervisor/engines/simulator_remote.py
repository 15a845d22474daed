"""The remote simulator engine: a node's :class:`~supervisor.engine.Engine` on the shared
simulated WhatsApp (``wasup simulator serve``, :mod:`supervisor.engines.simulator_service`).

``wasup serve --engine simulator --simulator-url http://127.0.0.1:N`` makes one::

    engine = RemoteSimulatorEngine("http://127.0.0.1:4000", DbCredentialStore(db))
    session = engine.session(1, "user_u_device_a", sink)
    await session.start_pairing()      # a connection opens; QrCode events follow
    await engine.controls.scan(1, None, None, None)   # the phone scans: sink.deliver(Paired)

A session opens a WebSocket connection to the process when it starts pairing or connects and
has none open (as whatsmeow opens one to WhatsApp) and closes it on stop, logout, delete, or when the connection
ends (a drop, a logout, a ban, ``stream_replaced``). Every other session call goes over the
open connection as a typed call (:mod:`supervisor.engines.simulator_wire`); without one it
fails as the in-process simulator does when not connected. What the simulated WhatsApp reports
reaches the sink in the order it was sent; a message or a pairing is acknowledged back only
after ``sink.deliver`` returned, so the process's offline queue keeps what the node did not
commit. The device's side of the credentials is the node's credential store (the shared
database in a cluster): a pairing's credentials are stored before ``Paired`` is delivered, a
connect presents them, a logout, an unlink or a ban wipes them; so a device paired through one
node connects from another.

The simulator controls (:class:`~supervisor.engines.simulator_controls.SimulatorControls`)
are HTTP requests to the process (:attr:`RemoteSimulatorEngine.controls`,
:mod:`supervisor.engines.simulator_remote_controls`).

Resource handling: a connection runs in a Trio system task (the engine has no nursery of its
own); :meth:`RemoteSimulatorEngine.aclose` ends them all and waits until they returned.

Error handling: an unreachable process is an unreachable WhatsApp: opening a connection fails
with ``EngineError("network_unreachable: simulator ...", recoverable=True)``, a connection that
ends without the process saying why reports ``Disconnected("connection_lost")``, a call cut
short by it fails with a recoverable ``EngineError``. Errors the process raises come out as the
same exceptions the in-process simulator raises (``SimulatedCrash`` for an injected fault).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote

import attrs
import httpx
import trio
import trio_websocket

from supervisor.engine import (
    Disconnected,
    EngineEvent,
    LoggedOut,
    PairingFailed,
    Sent,
    Sink,
    TemporaryBan,
)
from supervisor.engine_account import AccountApi
from supervisor.engine_contacts import ContactsApi
from supervisor.engine_groups import GroupsApi
from supervisor.errors import DeliveryFailed, EngineError
from supervisor.outgoing import Outgoing

from . import simulator_wire as wire
from .simulator_controls import SimulatorControls
from .simulator_remote_controls import RemoteControls
from .simulator_server import CredentialStore

log = logging.getLogger("wasup.simulator_remote")

#: Seconds a control or a device request may take (a scan waits for the node's commit).
HTTP_TIMEOUT = 60.0
#: Seconds to open a connection before the simulated WhatsApp counts as unreachable.
CONNECT_TIMEOUT = 10.0
#: Seconds a stop waits for the process to let the device go.
BYE_TIMEOUT = 2.0
#: Events that end the connection they arrive on.
_ENDINGS = (Disconnected, LoggedOut, TemporaryBan)


@attrs.define(eq=False)
class _Link:
    """One open connection of a session: calls waiting for their answer, events in order."""

    calls: dict[int, tuple[trio.Event, list[Mapping[str, Any]]]] = attrs.field(factory=dict)
    counter: int = 0
    ws: trio_websocket.WebSocketConnection | None = None
    ready: trio.Event = attrs.field(factory=trio.Event)
    error: str | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    stopped: bool = False  # ended by the node (stop, a new connection): nothing to report
    ended: bool = False  # the process said why it ended (an ending event)
    events: tuple[trio.MemorySendChannel[Mapping[str, Any]],
                  trio.MemoryReceiveChannel[Mapping[str, Any]]] = attrs.field(
        factory=lambda: trio.open_memory_channel[Mapping[str, Any]](math.inf))
    busy: int = 0  # events queued or being handled
    closing: bool = False  # the process closed the connection
    finished: trio.Event = attrs.field(factory=trio.Event)  # its task returned

    def close(self, stopped: bool) -> None:
        self.stopped = self.stopped or stopped
        self.scope.cancel()

    def fail_calls(self) -> None:
        reason = "stopped" if self.stopped else "connection_lost"
        for done, answer in self.calls.values():
            answer.append({"t": "error", "error": "EngineError", "reason": reason,
                           "recoverable": True, "message": f"{reason}: simulator connection"})
            done.set()
        self.calls.clear()


@attrs.define(eq=False)
class _Namespace:
    """A session's ``contacts``, ``groups`` or ``account``: each method a call over the wire."""

    session: RemoteSession
    prefix: str

    def __getattr__(self, name: str) -> Any:
        method = self.prefix + name
        if method not in wire.SESSION_METHODS:
            raise AttributeError(name)

        async def call(*args: object, **kwargs: object) -> object:
            named = wire.named_args(wire.SESSION_METHODS, method, args, kwargs)
            return await self.session.call(method, named)

        return call


@attrs.define(eq=False)
class RemoteSession:
    """One device's session on the shared simulated WhatsApp (see the module)."""

    engine: RemoteSimulatorEngine
    device_id: int
    session_id: str
    sink: Sink
    _link: _Link | None = None

    @property
    def contacts(self) -> ContactsApi:
        return cast(ContactsApi, _Namespace(self, "contacts."))

    @property
    def groups(self) -> GroupsApi:
        return cast(GroupsApi, _Namespace(self, "groups."))

    @property
    def account(self) -> AccountApi:
        return cast(AccountApi, _Namespace(self, "account."))

    async def start_pairing(self) -> None:
        await self._open()
        await self.call("start_pairing", {})

    async def next_qr(self) -> None:
        await self.call("next_qr", {}, idle="not_pairing")

    async def request_pair_code(self, phone_number: str) -> str:
        code: str = await self.call("request_pair_code", {"phone_number": phone_number},
                                    idle="not_pairing")
        return code

    async def connect(self) -> None:
        creds = await self.engine.credentials.get(self.device_id)
        if creds is None:
            raise EngineError("credentials_missing", recoverable=False)
        await self._open()
        await self.call("connect", {}, credentials=creds)

    async def send(self, to_jid: str, message: Outgoing, media: bytes | None) -> Sent:
        sent: Sent = await self.call(
            "send", {"to_jid": to_jid, "message": message, "media": media})
        return sent

    async def download(self, ref: str) -> bytes:
        data: bytes = await self.call("download", {"ref": ref})
        return data

    async def mark_read(self, chat: str, messages: Sequence[tuple[str, str | None]]) -> None:
        await self.call("mark_read", {"chat": chat, "messages": messages})

    async def logout(self) -> None:
        """Log out at the simulated WhatsApp; this device's credentials are wiped either way."""
        self.close_link()
        try:
            await self.engine.device_request(self.device_id, "logout")
        finally:
            await self.engine.credentials.delete(self.device_id)

    async def stop(self) -> None:
        """End the connection: the process lets the device go (``bye``) before this returns,
        so a node taking the device over next never finds it still connected here."""
        link, self._link = self._link, None
        if link is None:
            return
        if link.ws is not None and not link.scope.cancel_called:
            with trio.move_on_after(BYE_TIMEOUT):
                try:
                    await _exchange(link, {"t": "bye"})
                except EngineError:
                    pass  # the connection is gone already
        link.close(stopped=True)

    async def delete(self) -> None:
        """Stop and wipe credentials; the simulated WhatsApp forgets the device (when it is
        reachable: a deleted device stays deleted either way)."""
        self.close_link()
        if self.engine.sessions.get(self.device_id) is self:
            del self.engine.sessions[self.device_id]
        try:
            await self.engine.device_request(self.device_id, "delete")
        except EngineError as exc:
            log.warning("device %d: the simulated WhatsApp did not forget it (%s)",
                        self.device_id, exc.reason)
        finally:
            await self.engine.credentials.delete(self.device_id)

    async def has_credentials(self) -> bool:
        return await self.engine.credentials.has(self.device_id)

    # -- the connection ------------------------------------------------------------------

    def close_link(self) -> None:
        """End the open connection, if any (the node's own doing: nothing is reported)."""
        if self._link is not None:
            self._link.close(stopped=True)
            self._link = None

    async def call(self, method: str, named: Mapping[str, object], *,
                   idle: str = "not_connected", credentials: bytes | None = None) -> Any:
        """Call ``method`` of the session with arguments ``named`` over the open connection;
        its decoded result.

        Error handling: ``EngineError(idle)`` (recoverable) without a connection; the
        process's error as its exception; a recoverable ``EngineError`` when the connection
        ends first.
        """
        link = self._link
        if link is None or link.ws is None or link.scope.cancel_called:
            raise EngineError(idle, recoverable=True)
        message: dict[str, Any] = {"t": "call", "method": method,
                                   "args": wire.encode_args(wire.SESSION_METHODS, method, named)}
        if credentials is not None:
            message["credentials"] = wire.converter.unstructure(credentials)
        reply = await _exchange(link, message)
        if reply.get("t") == "error":
            raise wire.decode_error(reply)
        return wire.decode_result(wire.SESSION_METHODS, method, reply.get("value"))

    async def _open(self) -> None:
        """The open connection, else a new one (the connect after a pairing goes over the
        pairing's connection, which still has the pairing's acknowledgement to send).

        Error handling: ``EngineError("network_unreachable: simulator ...")`` when the process
        cannot be reached.
        """
        link = self._link
        if link is not None and link.ws is not None and not (link.closing or link.ended
                                                             or link.scope.cancel_called):
            return
        self.close_link()
        link = self._link = _Link()
        self.engine.links.add(link)
        trio.lowlevel.spawn_system_task(self._run, link, name=f"simulator link {self.device_id}")
        await link.ready.wait()
        if link.error is not None:
            if self._link is link:
                self._link = None
            raise EngineError(f"network_unreachable: simulator ({link.error})", recoverable=True)

    async def _run(self, link: _Link) -> None:
        """The connection's task: open it, read it, hand its events over in order."""
        url = self.engine.ws_url(self.device_id, self.session_id)
        try:
            with link.scope:
                try:
                    async with trio_websocket.open_websocket_url(
                        url, max_message_size=wire.MAX_MESSAGE, connect_timeout=CONNECT_TIMEOUT,
                        disconnect_timeout=1.0,
                    ) as ws:
                        link.ws = ws
                        link.ready.set()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._dispatch, link)
                            await self._read(link, ws)
                except (OSError, trio_websocket.HandshakeError, ExceptionGroup) as exc:
                    if link.ws is None:
                        link.error = str(exc) or type(exc).__name__
                    else:
                        log.info("device %d: simulator connection ended (%s)", self.device_id,
                                 exc)
        except Exception:
            log.exception("device %d: simulator connection failed", self.device_id)
        finally:
            link.ready.set()
            link.fail_calls()
            if not link.stopped and not link.ended and link.ws is not None:
                if self._link is link:
                    self._link = None
                self.sink(Disconnected("connection_lost: simulator", recoverable=True))
            self.engine.links.discard(link)
            link.finished.set()

    async def _read(self, link: _Link, ws: trio_websocket.WebSocketConnection) -> None:
        """Read until the process closes the connection; what it said before is still handed
        over (an ending event), what needed an answer is not (it stays with the process)."""
        try:
            while True:
                try:
                    raw = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return
                message = json.loads(raw)
                kind = message.get("t")
                if kind in ("result", "error"):
                    waiting = link.calls.get(message.get("n"))
                    if waiting is not None:
                        waiting[1].append(message)
                        waiting[0].set()
                elif kind == "event" and link.busy == 0 and not _needs_store(message):
                    self._event(link, wire.decode_event(message["event"]))  # none queued
                elif kind in ("event", "deliver"):
                    link.busy += 1
                    link.events[0].send_nowait(message)
        finally:
            link.closing = True
            link.events[0].close()

    async def _dispatch(self, link: _Link) -> None:
        async for message in link.events[1]:
            try:
                event = wire.decode_event(message["event"])
                if message.get("t") == "deliver":
                    if link.closing:
                        continue  # the process failed it already: it comes again
                    await self._deliver(link, message, event)
                else:
                    if isinstance(event, LoggedOut):  # the device's side is wiped too
                        await self.engine.credentials.delete(self.device_id)
                    self._event(link, event)
            finally:
                link.busy -= 1

    async def _deliver(self, link: _Link, message: Mapping[str, Any], event: EngineEvent) -> None:
        blob = message.get("credentials")
        if blob is not None:  # a pairing: the device stores its credentials first
            await self.engine.credentials.put(self.device_id,
                                              wire.converter.structure(blob, bytes))
        reply: dict[str, Any] = {"t": "ack", "n": message.get("n")}
        try:
            await self.sink.deliver(event)  # type: ignore[arg-type]
        except DeliveryFailed as exc:
            reply = {"t": "nack", "n": message.get("n"), "reason": exc.reason}
        assert link.ws is not None
        try:
            await link.ws.send_message(json.dumps(reply))
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            link.close(stopped=False)

    def _event(self, link: _Link, event: EngineEvent) -> None:
        if self._link is not link:
            return  # a replaced connection's late news
        if isinstance(event, _ENDINGS) or (isinstance(event, PairingFailed) and event.restart):
            link.ended = True
            link.close(stopped=False)
            self._link = None
        self.sink(event)


async def _exchange(link: _Link, message: dict[str, Any]) -> Mapping[str, Any]:
    """Send ``message`` (numbered here) over ``link``; the process's answer to it.

    Error handling: a recoverable ``EngineError`` when the connection ends first.
    """
    assert link.ws is not None
    link.counter += 1
    n, done, answer = link.counter, trio.Event(), list[Mapping[str, Any]]()
    message["n"] = n
    link.calls[n] = (done, answer)
    try:
        await link.ws.send_message(json.dumps(message))
        await done.wait()
    except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
            trio.ClosedResourceError):
        raise EngineError("connection_lost", recoverable=True) from None
    finally:
        link.calls.pop(n, None)
    return answer[0]


def _needs_store(message: Mapping[str, Any]) -> bool:
    event = message.get("event")
    return isinstance(event, dict) and event.get(wire.TAG) == LoggedOut.__name__


@attrs.define(eq=False)
class RemoteSimulatorEngine:
    """The :class:`~supervisor.engine.Engine` of a node on the shared simulated WhatsApp.

    ``url`` is the process's (``http://127.0.0.1:N``); ``credentials`` the device's side of
    every link (the node's database).
    """

    url: str
    credentials: CredentialStore
    name: str = attrs.field(default="simulator", init=False)
    #: This node's name at the simulated WhatsApp: its own connections replace each other
    #: quietly, another client's replace with ``stream_replaced``.
    client: str = attrs.field(factory=lambda: secrets.token_hex(6))
    sessions: dict[int, RemoteSession] = attrs.field(factory=dict, init=False)
    #: The connections whose task is running (a replaced session's too).
    links: set[_Link] = attrs.field(factory=set, init=False)
    _http: httpx.AsyncClient | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.url = self.url.rstrip("/")

    @property
    def controls(self) -> SimulatorControls:
        return cast(SimulatorControls, RemoteControls(self.post))

    def session(self, device_id: int, session_id: str, sink: Sink) -> RemoteSession:
        """A new session for the device; an earlier one of the same device is stopped."""
        old = self.sessions.get(device_id)
        if old is not None:
            old.close_link()
        session = RemoteSession(self, device_id, session_id, sink)
        self.sessions[device_id] = session
        return session

    async def aclose(self) -> None:
        """End every connection and wait for their tasks: none is left handing an event over
        (a commit to the database) once this returns."""
        for session in self.sessions.values():
            session.close_link()
        self.sessions.clear()
        for link in list(self.links):
            link.close(stopped=True)
            await link.finished.wait()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def ws_url(self, device_id: int, session_id: str) -> str:
        base = "ws" + self.url.removeprefix("http")
        return (f"{base}/devices/{device_id}/connection"
                f"?session={quote(session_id)}&client={quote(self.client)}")

    async def post(self, path: str, body: object) -> Mapping[str, Any]:
        """POST ``body`` to the process; its JSON answer.

        Error handling: ``EngineError("network_unreachable: simulator ...")`` when it cannot be
        reached or answers something else than JSON.
        """
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT)
        try:
            response = await self._http.post(self.url + path, json=body)
            reply = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EngineError(f"network_unreachable: simulator ({exc})", recoverable=True) from None
        if not isinstance(reply, dict):
            raise EngineError("network_unreachable: simulator (not JSON)", recoverable=True)
        return reply

    async def device_request(self, device_id: int, name: str) -> None:
        """``logout`` or ``delete`` at the process.

        Error handling: the process's error as its exception; ``EngineError`` when unreachable.
        """
        reply = await self.post(f"/devices/{device_id}/{name}", {})
        if "error" in reply:
            raise wire.decode_error(reply)

