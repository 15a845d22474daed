"""The shared simulated WhatsApp: the simulator as its own process, for several wasup nodes.

``wasup simulator serve --port N`` runs :func:`run_service`; nodes started with
``--simulator-url http://127.0.0.1:N`` reach it through
:mod:`supervisor.engines.simulator_remote`. The process holds one in-process
:class:`~supervisor.engines.simulator.SimulatorEngine` (its memory is WhatsApp's side: the
linked devices' credentials, offline queues, groups, contacts, media files) and serves::

    WS   /devices/{id}/connection?session=S&client=C   a device's connection (below)
    POST /devices/{id}/logout | /devices/{id}/delete   the device leaves WhatsApp
    POST /controls/{name}       {"args": {...}}        a simulator control (SimulatorControls)
    GET  /simulator/stats       {"streamReplaced", "connections", "live", "sessions"}
    GET  /health                {"ok": true}

A connection carries JSON messages (:mod:`supervisor.engines.simulator_wire` encodes every
value). The node sends ``{"t": "call", "n", "method", "args"}`` for a session call of
``SESSION_METHODS`` (``connect`` also carries the device's stored ``credentials``, base64) and
``{"t": "ack" | "nack", "n"}`` for a delivery, ``{"t": "bye", "n"}`` when it stops the
device (the process lets the device go before it answers); the process answers ``{"t": "result" | "error",
"n", ...}`` and reports what the device learns as ``{"t": "event", "event"}``, or ``{"t":
"deliver", "n", "event"}`` for a message or a pairing the node must commit first (a pairing
carries the new credentials, which the node stores as the device's side). A delivery counts
as done only when its ``ack`` comes back: the offline queue keeps a message until then.

One live connection per device, as WhatsApp allows: a connection from another client (node)
replaces the device's live one, which is told ``Disconnected("stream_replaced",
retry=HOLD)`` (what ``SimulatorEngine.fail(..., STREAM_REPLACED)`` reports) and closed. Each
replacement is counted (``streamReplaced``) and logged; a client replacing its own earlier
connection (an actor restart on the same node) is not a replacement.

Resource handling: SIGINT or SIGTERM stop the process cleanly (connections closed, requests in
flight finished). A closed connection stops its session; a delivery waiting for it fails (the
message stays queued).
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from supervisor.engine import Disconnected, EngineEvent, LoggedOut, Paired, Retry
from supervisor.errors import DeliveryFailed, DeviceNotFound, EngineError

from . import simulator_wire as wire
from .simulator import SimulatorEngine
from .simulator_controls import LocalControls
from .simulator_server import MemoryCredentialStore
from .simulator_session import SimulatorSession

log = logging.getLogger("wasup.simulator")

#: Messages waiting to go out on one connection before it is cut (the device resynchronises).
LINK_BUFFER = 4096


@attrs.define(eq=False)
class Link:
    """One device connection, as the simulated WhatsApp holds it."""

    device_id: int
    client: str
    session: SimulatorSession | None = None
    outbox: tuple[trio.MemorySendChannel[dict[str, Any]],
                  trio.MemoryReceiveChannel[dict[str, Any]]] = attrs.field(
        factory=lambda: trio.open_memory_channel[dict[str, Any]](LINK_BUFFER))
    deliveries: dict[int, tuple[trio.Event, list[str | None]]] = attrs.field(factory=dict)
    counter: int = 0
    closed: bool = False

    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message``; a full buffer cuts the link."""
        if self.closed:
            return
        try:
            self.outbox[0].send_nowait(message)
        except trio.WouldBlock:
            log.warning("device %d: connection cut (%d messages waiting)", self.device_id,
                        LINK_BUFFER)
            self.close()

    def close(self) -> None:
        """Close after what is queued; every delivery waiting for an ``ack`` fails."""
        if not self.closed:
            self.closed = True
            self.outbox[0].close()  # what is queued still goes out
        for done, outcome in self.deliveries.values():
            outcome.append("disconnected")
            done.set()
        self.deliveries.clear()


@attrs.define(eq=False)
class WhatsAppCredentials(MemoryCredentialStore):
    """WhatsApp's side of the links: the credentials of linked devices, and those it ended
    (an unlink, a ban, a logout), which a device may not log in with again."""

    revoked: dict[int, bytes] = attrs.field(factory=dict)

    async def put(self, device_id: int, data: bytes) -> None:
        self.revoked.pop(device_id, None)
        await super().put(device_id, data)

    async def delete(self, device_id: int) -> None:
        old = self.data.get(device_id)
        if old is not None:
            self.revoked[device_id] = old
        await super().delete(device_id)


@attrs.define(eq=False)
class LinkSink:
    """The :class:`~supervisor.engine.Sink` of a session served over a :class:`Link`."""

    link: Link
    credentials: MemoryCredentialStore

    def __call__(self, event: EngineEvent) -> None:
        self.link.send({"t": "event", "event": wire.encode_event(event)})

    async def deliver(self, event: Paired | Any) -> None:
        link = self.link
        if link.closed:
            raise DeliveryFailed("disconnected")
        link.counter += 1
        n, done, outcome = link.counter, trio.Event(), list[str | None]()
        link.deliveries[n] = (done, outcome)
        message: dict[str, Any] = {"t": "deliver", "n": n, "event": wire.encode_event(event)}
        if isinstance(event, Paired):
            blob = await self.credentials.get(link.device_id)
            message["credentials"] = None if blob is None else wire.converter.unstructure(blob)
        link.send(message)
        try:
            await done.wait()
        finally:
            link.deliveries.pop(n, None)
        if outcome[0] is not None:
            raise DeliveryFailed(outcome[0])


@attrs.define(eq=False)
class SimulatorService:
    """The shared simulated WhatsApp: its engine, the live connections and their counts."""

    engine: SimulatorEngine
    live: dict[int, Link] = attrs.field(factory=dict)
    stream_replaced: int = 0
    connections: int = 0

    @property
    def controls(self) -> LocalControls:
        return LocalControls(self.engine)

    @property
    def credentials(self) -> WhatsAppCredentials:
        store = self.engine.credentials
        assert isinstance(store, WhatsAppCredentials)
        return store

    def attach(self, device_id: int, session_id: str, client: str) -> Link:
        """A new connection for the device; the live one it replaces is told so and closed."""
        self.connections += 1
        link = Link(device_id, client)
        old = self.live.get(device_id)
        if old is not None:
            if old.client != client:
                self.stream_replaced += 1
                log.warning("stream_replaced: device %d: client %s replaced client %s",
                            device_id, client, old.client,
                            extra={"device": device_id, "event": "stream_replaced"})
                old.send({"t": "event", "event": wire.encode_event(
                    Disconnected("stream_replaced", retry=Retry.HOLD))})
            old.close()
        link.session = self.engine.session(device_id, session_id, LinkSink(link, self.credentials))
        self.live[device_id] = link
        return link

    def detach(self, link: Link) -> None:
        """The connection ended: its session stops (unless a newer one replaced it)."""
        link.close()
        if self.live.get(link.device_id) is link:
            del self.live[link.device_id]
            if link.session is not None:
                link.session.reset()

    def stats(self) -> dict[str, int]:
        return {"streamReplaced": self.stream_replaced, "connections": self.connections,
                "live": len(self.live), "sessions": len(self.engine)}

    def session_for(self, device_id: int) -> SimulatorSession:
        """The device's session, or a fresh one with no connection (for logout/delete)."""
        try:
            return self.engine.get_session(device_id)
        except DeviceNotFound:
            return self.engine.session(device_id, "", LinkSink(Link(device_id, "-", closed=True),
                                                               self.credentials))


def _json(value: object, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _error(exc: BaseException) -> dict[str, Any]:
    encoded = wire.encode_error(exc) if isinstance(exc, Exception) else None
    if encoded is None:
        log.exception("simulator: unexpected error", exc_info=exc)
        encoded = {"error": "SimulatedCrash", "message": f"{type(exc).__name__}: {exc}"}
    return encoded


def create_service_app(service: SimulatorService) -> QuartTrio:
    """The process's HTTP and WebSocket app over ``service``."""
    app = QuartTrio(__name__)

    @app.get("/health")
    async def health() -> Response:
        return _json({"ok": True})

    @app.get("/simulator/stats")
    async def stats() -> Response:
        return _json(service.stats())

    @app.post("/controls/<name>")
    async def control(name: str) -> Response:
        try:
            body = await request.get_json(force=True)
            args = wire.decode_args(wire.CONTROL_METHODS, name, (body or {}).get("args"))
        except (wire.WireError, ValueError, AttributeError) as exc:
            return _json({"error": "InvalidRequest", "message": str(exc)}, 400)
        try:
            value = await getattr(service.controls, name)(**args)
        except Exception as exc:
            return _json(_error(exc), 422)
        return _json({"value": wire.encode_result(wire.CONTROL_METHODS, name, value)})

    @app.post("/devices/<int:device_id>/<any(logout, delete):name>")
    async def leave(device_id: int, name: str) -> Response:
        link = service.live.get(device_id)
        if link is not None:
            service.detach(link)
        try:
            await getattr(service.session_for(device_id), name)()
        except Exception as exc:
            return _json(_error(exc), 422)
        return _json({"value": None})

    @app.websocket("/devices/<int:device_id>/connection")
    async def connection(device_id: int) -> None:
        session_id = websocket.args.get("session", "")
        client = websocket.args.get("client", "") or secrets.token_hex(4)
        await websocket.accept()
        link = service.attach(device_id, session_id, client)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_loop, link, nursery.cancel_scope)
                while True:
                    message = json.loads(await websocket.receive())
                    kind = message.get("t")
                    if kind == "call":
                        nursery.start_soon(_call, service, link, message)
                    elif kind == "bye":  # the node stops the device: it is let go at once
                        link.send({"t": "result", "n": message.get("n"), "value": None})
                        service.detach(link)
                    elif kind in ("ack", "nack"):
                        waiting = link.deliveries.get(message.get("n"))
                        if waiting is not None:
                            waiting[1].append(None if kind == "ack" else str(message.get("reason")))
                            waiting[0].set()
        finally:
            service.detach(link)

    return app


async def _send_loop(link: Link, scope: trio.CancelScope) -> None:
    async for message in link.outbox[1]:
        await websocket.send(json.dumps(message))
    scope.cancel()


async def _call(service: SimulatorService, link: Link, message: dict[str, Any]) -> None:
    n, method = message.get("n"), str(message.get("method"))
    try:
        args = wire.decode_args(wire.SESSION_METHODS, method, message.get("args"))
        session = link.session
        assert session is not None
        if method == "connect" and message.get("credentials") is not None:
            # The device presents its stored credentials: WhatsApp knows (again) the link,
            # unless it ended it while the device was away (the phone unlinked it).
            blob = wire.converter.structure(message["credentials"], bytes)
            if service.credentials.revoked.get(link.device_id) == blob:
                session.sink(LoggedOut("unlinked"))
                raise EngineError("unlinked", recoverable=False)
            await service.credentials.put(link.device_id, blob)
        target: Any = session
        for part in method.split("."):
            target = getattr(target, part)
        value = await target(**args)
        reply = {"t": "result", "n": n,
                 "value": wire.encode_result(wire.SESSION_METHODS, method, value)}
    except Exception as exc:
        reply = {"t": "error", "n": n, **_error(exc)}
    link.send(reply)


async def run_service(host: str, port: int, seed: int = 0, latency: float = 0.5) -> None:
    """Serve the shared simulator until SIGINT or SIGTERM; then stop cleanly."""
    service = SimulatorService(SimulatorEngine(
        WhatsAppCredentials(), seed=seed, handshake_latency=latency,
        instance=secrets.token_hex(4)))
    app = create_service_app(service)
    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_max_message_size = wire.MAX_MESSAGE
    config.graceful_timeout = 2.0
    config.accesslog = None
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    log.info("%s received: the simulator stops", signal.Signals(signum).name)
                    stop.set()
                    nursery.cancel_scope.deadline = trio.current_time() + 5.0

            nursery.start_soon(watch)
            async with trio.open_nursery() as http:
                binds = await http.start(_serve, app, config, stop)
                log.info("simulated WhatsApp listening on %s (seed %d, latency %g s)",
                         binds[0], seed, latency)
                print(f"wasup simulator: listening on {binds[0]}", flush=True)
                await stop.wait()
                for link in list(service.live.values()):
                    service.detach(link)
            nursery.cancel_scope.cancel()
    log.info("simulator stopped: %s", service.stats())


async def _serve(app: QuartTrio, config: hypercorn.config.Config, stop: trio.Event,
                 *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    await hypercorn.trio.serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)

