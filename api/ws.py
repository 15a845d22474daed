"""The WebSocket event stream at ``/`` (same port as the HTTP API).

Usage (the seed's form, a header, or a subprotocol for browsers)::

    ws://HOST:PORT/?token=TOKEN
    ws://HOST:PORT/                  with  X-API-TOKEN: TOKEN
    ws://HOST:PORT/                  with  Sec-WebSocket-Protocol: TOKEN   (or "wasup, TOKEN")

Optional query filters: ``sessionId`` (a session id or numeric device id; repeat the
parameter or give a comma list) and ``events`` (a comma list of event types). Every message
is one event, ``{"type", "sessionId", "data", "timestamp"}`` exactly as
:meth:`supervisor.events.Event.to_json` builds it. The operator token sees every device; a
device API key sees its own device only. The server never reads what the client sends: it
is discarded.

Close codes:

- handshake refused with HTTP 401 (no or bad credential), 400 (bad filter) or 429 (the
  credential's rate limit: a handshake costs one request; or more than
  ``WASUP_WS_MAX_PER_CREDENTIAL`` connections, 64 by default, open at once), as the JSON
  error envelope the HTTP API uses;
- 1013 "subscriber too slow": the connection fell more than its queue
  (``Config.event_queue_size`` events, 256 by default) behind and the event bus dropped it;
  reconnect (and catch up over HTTP);
- 1008 "credential no longer valid": the device of the API key was deleted;
- 1001 "server shutting down": a graceful shutdown began (:func:`close_streams`), or the
  event bus closed the subscription; handshakes during a shutdown are answered 503.

Resource handling: each connection holds one bounded subscription on the event bus, which
never blocks a publisher; it is dropped when full. Nothing else is buffered: a send goes
straight to the socket, and a send that makes no progress for ``WASUP_WS_SEND_TIMEOUT``
seconds (30 by default: a peer that stopped reading, so TCP backpressure holds the write)
aborts the TCP connection, because Hypercorn's socket write cannot be cancelled and the
close frame would queue behind it. Keep-alive pings are sent by Hypercorn (:func:`configure_hypercorn`, every
``WASUP_WS_PING_INTERVAL`` seconds, 25 by default); a peer that answers nothing for
``read_timeout`` (two intervals and ten seconds) is closed there.

Subprotocols: a client that offers ``wasup`` gets ``wasup`` back, however it authenticated
(browsers fail a handshake that offered protocols and got none); a token offered as a
subprotocol is echoed only when ``wasup`` was not offered next to it.

Credentials never reach a log line: the token is neither logged nor echoed in errors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import attrs
import trio
from quart import Blueprint, Response, current_app, websocket

from api.auth import authenticate
from api.errors import error_response
from api.state import current_state
from supervisor.errors import DeviceNotFound
from supervisor.events import EVENT_TYPES, Event, Subscription

log = logging.getLogger("wasup.api.ws")

bp = Blueprint("ws", __name__)

#: Settings, read from the app's config (``app.config[KEY]``, set from ``ApiSettings`` by
#: :func:`register`, i.e. by ``wasup serve``'s ``--ws-…`` flags) or else the environment
#: variable of the same name. The queue size defaults to the event bus's
#: (``Config.event_queue_size``, 256 events).
QUEUE_SIZE_KEY = "WASUP_WS_QUEUE_SIZE"
SEND_TIMEOUT_KEY = "WASUP_WS_SEND_TIMEOUT"
PING_INTERVAL_KEY = "WASUP_WS_PING_INTERVAL"
MAX_PER_CREDENTIAL_KEY = "WASUP_WS_MAX_PER_CREDENTIAL"
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_MAX_PER_CREDENTIAL = 64
DEFAULT_PING_INTERVAL = 25.0

#: The subprotocol name a browser may offer next to its token, so that the token itself is
#: not echoed back in the handshake response.
SUBPROTOCOL = "wasup"

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

#: Largest message a client may send (it is read and discarded), in bytes.
MAX_CLIENT_MESSAGE = 64 * 1024

#: How often a device key's stream checks that its device still exists, in seconds.
REVALIDATE_INTERVAL = 30.0

_MAX_FILTER_VALUES = 100
_MAX_FILTER_LENGTH = 200
_MAX_OFFERED_PROTOCOLS = 8


class FilterError(Exception):
    """A query filter is malformed; ``field`` names the parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@attrs.frozen
class StreamFilter:
    """What one connection asked to see, on top of what its credential allows.

    ``refs`` holds session ids and numeric device ids (as strings); ``None`` means all.
    """

    refs: frozenset[str] | None = None
    types: frozenset[str] | None = None

    @classmethod
    def from_query(cls, args: Any) -> StreamFilter:
        """Parse ``sessionId`` and ``events`` from a query multidict.

        Raises :class:`FilterError` for an unknown event type, too many values or an
        over-long one; empty values are ignored.
        """
        refs = _split(_getlist(args, "sessionId"), "sessionId")
        types = _split(_getlist(args, "events"), "events")
        if types is not None:
            unknown = sorted(types - EVENT_TYPES)
            if unknown:
                raise FilterError(f"unknown event type: {unknown[0]}", "events")
        return cls(refs=refs, types=types)

    def matches(self, event: Event) -> bool:
        if self.refs is None:
            return True
        return event.session_id in self.refs or str(event.device_id) in self.refs


def _getlist(args: Any, name: str) -> list[str]:
    if hasattr(args, "getlist"):
        return list(args.getlist(name))
    value = args.get(name)
    return [] if value is None else [value]


def _split(values: Iterable[str], field: str) -> frozenset[str] | None:
    items = [part.strip() for value in values for part in value.split(",")]
    items = [item for item in items if item]
    if not items:
        return None
    if len(items) > _MAX_FILTER_VALUES:
        raise FilterError(f"too many values (at most {_MAX_FILTER_VALUES})", field)
    if any(len(item) > _MAX_FILTER_LENGTH for item in items):
        raise FilterError(f"value too long (at most {_MAX_FILTER_LENGTH} characters)", field)
    return frozenset(items)


@attrs.frozen
class Offer:
    """The credentials a handshake carries: token candidates, in order of precedence.

    Each candidate is ``(token, subprotocol to echo or None)``.
    """

    candidates: tuple[tuple[str, str | None], ...]

    @classmethod
    def from_handshake(
        cls, args: Mapping[str, str], headers: Mapping[str, str], subprotocols: list[str]
    ) -> Offer:
        candidates: list[tuple[str, str | None]] = []
        query = args.get("token")
        if query:
            candidates.append((query, None))
        header = headers.get("X-API-TOKEN")
        if header:
            candidates.append((header.strip(), None))
        if not candidates:
            offered = [p.strip() for p in subprotocols[:_MAX_OFFERED_PROTOCOLS] if p.strip()]
            echo_name = SUBPROTOCOL in offered
            for proto in offered:
                if proto != SUBPROTOCOL:
                    candidates.append((proto, SUBPROTOCOL if echo_name else proto))
        return cls(tuple(candidates))


@bp.websocket("/")
async def events_socket() -> Response | None:
    """Stream events to one client until it leaves, falls behind, or the server stops.

    Error handling: a bad or missing credential answers the handshake with 401, a bad filter
    with 400 (both as the JSON error envelope). After the handshake nothing is raised to
    Quart: the connection ends with a close code (see the module docstring).
    """
    ws = websocket._get_current_object()  # type: ignore[attr-defined]
    offer = Offer.from_handshake(ws.args, ws.headers, ws.requested_subprotocols)
    state = current_state()
    principal = None
    chosen: str | None = None
    for token, echo in offer.candidates:
        principal = await authenticate(state, token)
        if principal is not None:
            chosen = echo
            break
    if chosen is None and SUBPROTOCOL in ws.requested_subprotocols:
        chosen = SUBPROTOCOL  # a browser that offered protocols needs one of them echoed
    if principal is None:
        log.info("websocket refused: no valid credential (from %s)", _peer(ws))
        # Failed attempts share the HTTP layer's per-address budget against token guessing.
        decision = state.auth_limiter.hit(f"addr:{_client_address(ws)}")
        if not decision.allowed:
            return error_response(
                429, "RATE_LIMIT_EXCEEDED", "too many failed authentications, slow down",
                headers=state.auth_limiter.headers(decision),
            )
        message = "invalid api token" if offer.candidates else "missing api token"
        return error_response(401, "AUTHENTICATION_FAILED", message)
    try:
        stream_filter = StreamFilter.from_query(ws.args)
    except FilterError as exc:
        return error_response(400, "INVALID_REQUEST", str(exc), field=exc.field)

    if current_app.extensions.get(_CLOSING_KEY):
        return error_response(
            503, "SERVICE_UNAVAILABLE", "server shutting down", headers={"Retry-After": "5"}
        )
    decision = state.limiter.hit(principal.credential_id)
    if not decision.allowed:
        return error_response(
            429, "RATE_LIMIT_EXCEEDED", "too many requests",
            headers=state.limiter.headers(decision),
        )

    queue_size = _setting(QUEUE_SIZE_KEY, None)  # None: the bus's (Config.event_queue_size)
    send_timeout = float(_setting(SEND_TIMEOUT_KEY, DEFAULT_SEND_TIMEOUT))
    most = int(_setting(MAX_PER_CREDENTIAL_KEY, DEFAULT_MAX_PER_CREDENTIAL))
    mine = sum(1 for s in _streams(current_app) if s.credential_id == principal.credential_id)
    if mine >= most:
        return error_response(
            429, "RATE_LIMIT_EXCEEDED",
            f"too many websocket connections for this credential (at most {most})",
            headers={"Retry-After": "5"},
        )
    device_ids = None if principal.device_id is None else frozenset({principal.device_id})
    bus = state.sup.bus
    # Subscribe before accepting: nothing published after the handshake is missed.
    subscription = bus.subscribe(
        device_ids=device_ids,
        types=stream_filter.types,
        maxsize=None if queue_size is None else int(queue_size),
    )
    stream = _Stream(
        ws=ws,
        subscription=subscription,
        stream_filter=stream_filter,
        credential_id=principal.credential_id,
    )
    streams = _streams(current_app)
    streams.add(stream)  # counted from here on: no checkpoint since the check above
    async with subscription:
        try:
            await ws.accept(subprotocol=chosen)
            log.info(
                "websocket opened for %s from %s (sessions=%s, events=%s)",
                principal.credential_id,
                _peer(ws),
                ",".join(sorted(stream_filter.refs)) if stream_filter.refs else "all",
                ",".join(sorted(stream_filter.types)) if stream_filter.types else "all",
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_discard_incoming, ws)
                if send_timeout > 0 and math.isfinite(send_timeout):
                    nursery.start_soon(stream.watch_sends, send_timeout)
                if principal.device_id is not None:
                    nursery.start_soon(stream.watch_device, state.sup, principal.device_id)
                code, reason = await stream.pump()
                nursery.cancel_scope.cancel()
        finally:
            streams.discard(stream)
            log.info(
                "websocket closed for %s after %d events: %s",
                principal.credential_id,
                stream.sent,
                stream.outcome,
            )
    if not stream.aborted:
        await _close(ws, code, reason)
    return None


_CLOSING_KEY = "wasup.ws.closing"

#: ``app.config`` key of each :class:`api.state.ApiSettings` WebSocket field.
_SETTING_FIELDS = (
    (QUEUE_SIZE_KEY, "ws_queue_size"),
    (SEND_TIMEOUT_KEY, "ws_send_timeout"),
    (PING_INTERVAL_KEY, "ws_ping_interval"),
    (MAX_PER_CREDENTIAL_KEY, "ws_max_per_credential"),
)


def register(app: Any) -> None:
    """Serve the event stream on ``app`` (``create_app`` calls this).

    Copies the WebSocket fields of the app's :class:`api.state.ApiSettings` that are not
    ``None`` into ``app.config``, where they win over the ``WASUP_WS_…`` environment
    variables. (The ping interval reaches Hypercorn through :func:`configure_hypercorn`.)
    """
    app.register_blueprint(bp)
    settings = getattr(app.extensions.get("wasup"), "settings", None)
    for key, name in _SETTING_FIELDS:
        value = getattr(settings, name, None)
        if value is not None:
            app.config[key] = value


def _setting(key: str, default: Any) -> Any:
    """``key`` from the app's config, else from the environment, else ``default``."""
    value = current_app.config.get(key)
    if value is None:
        value = os.environ.get(key) or None
    return default if value is None else value


def _streams(app: Any) -> set[_Stream]:
    streams: set[_Stream] = app.extensions.setdefault("wasup.ws", set())
    return streams


def open_streams(app: Any) -> int:
    """How many WebSocket connections ``app`` is streaming events to."""
    return len(_streams(app))


def close_streams(app: Any) -> None:
    """End every stream of ``app``: each connection is closed with 1001 "server shutting
    down" once its pending send is done. Call it when a graceful shutdown starts, so that
    clients learn why instead of being cut off when the grace period ends. Handshakes after
    this call are answered 503."""
    app.extensions[_CLOSING_KEY] = True
    for stream in list(_streams(app)):
        stream.subscription.close()


@attrs.define(eq=False)
class _Stream:
    """One connection's pump from its subscription to its socket, with a stall watchdog."""

    ws: Any
    subscription: Subscription
    stream_filter: StreamFilter
    credential_id: str
    sent: int = 0
    outcome: str = "client left"
    aborted: bool = False
    revoked: bool = False
    _send_started: float | None = None

    async def pump(self) -> tuple[int, str]:
        """Send events until the subscription ends; returns the close code and reason."""
        async for event in self.subscription:
            if not self.stream_filter.matches(event):
                continue
            text = encode(event)
            self._send_started = trio.current_time()
            try:
                await self.ws.send(text)
            finally:
                self._send_started = None
            self.sent += 1
        if self.aborted:
            return CLOSE_GOING_AWAY, "send stalled"
        if self.revoked:
            self.outcome = "device deleted (closed with 1008)"
            return CLOSE_POLICY_VIOLATION, "credential no longer valid"
        if self.subscription.overflowed:
            self.outcome = "subscriber too slow (closed with 1013)"
            return CLOSE_TRY_AGAIN_LATER, "subscriber too slow"
        self.outcome = "server shutting down (closed with 1001)"
        return CLOSE_GOING_AWAY, "server shutting down"

    async def watch_sends(self, stall_after: float) -> None:
        """Abort the connection when one send has made no progress for ``stall_after`` s.

        Hypercorn writes to the socket under a cancel shield, so a peer that never reads
        would hold the pump (and its task) forever; closing the socket is the only way out.
        Checks every ``stall_after / 2`` seconds, so a stall is caught within 1.5 x that.
        """
        while True:
            await trio.sleep(stall_after / 2)
            started = self._send_started
            if started is not None and trio.current_time() - started >= stall_after:
                self.aborted = True
                self.outcome = f"send stalled for {stall_after:g} s, connection aborted"
                self.subscription.close()
                if not abort_transport(self.ws):
                    log.warning("websocket send stalled but its socket could not be found")
                return

    async def watch_device(self, sup: Any, device_id: int) -> None:
        """End the stream once the device of its API key is deleted (the key died with it).

        Checks the supervisor's in-memory records every ``REVALIDATE_INTERVAL`` seconds.
        """
        while True:
            await trio.sleep(REVALIDATE_INTERVAL)
            try:
                sup.get(device_id)
            except DeviceNotFound:
                self.revoked = True
                self.subscription.close()
                return


_encoded: OrderedDict[int, tuple[Event, str]] = OrderedDict()
_ENCODED_MAX = 64


def encode(event: Event) -> str:
    """The event's JSON text, encoded once however many connections send it.

    Remembers the last few events by identity (holding them, so an id cannot be reused).
    """
    key = id(event)
    hit = _encoded.get(key)
    if hit is not None and hit[0] is event:
        return hit[1]
    text = json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False)
    _encoded[key] = (event, text)
    if len(_encoded) > _ENCODED_MAX:
        _encoded.popitem(last=False)
    return text


async def _discard_incoming(ws: Any) -> None:
    """Read and drop client messages, so the peer's pongs/closes keep flowing."""
    try:
        while True:
            await ws.receive()
    except Exception:  # the connection is gone; the pump learns it through cancellation
        return


async def _close(ws: Any, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason)
    except Exception:  # already closed (by the peer or Hypercorn): nothing left to say
        pass


def _client_address(ws: Any) -> str:
    client = ws.scope.get("client")
    return str(client[0]) if client else "unknown"


def _peer(ws: Any) -> str:
    client = ws.scope.get("client") if hasattr(ws, "scope") else None
    if client:
        return f"{client[0]}:{client[1]}"
    return "unknown"


def abort_transport(ws: Any) -> bool:
    """Reset the TCP connection under ``ws``; True when a socket was found and shut.

    Finds the :class:`trio.SocketStream` by walking from the ASGI ``send`` callable through
    Hypercorn's objects (bound methods, partials and their ``send``/``stream`` attributes),
    sets ``SO_LINGER`` to 0 (so the close discards unsent data with a RST rather than
    holding it for a reader that never comes) and shuts the socket down, which wakes the
    blocked write with an error that Hypercorn handles as a closed connection.
    """
    stream = _find_socket_stream(getattr(ws, "_send", None))
    if stream is None:
        return False
    sock = stream.socket
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return True


def _find_socket_stream(start: Any, depth: int = 10) -> trio.SocketStream | None:
    seen: set[int] = set()
    frontier = [start]
    for _ in range(depth):
        following: list[Any] = []
        for obj in frontier:
            if obj is None or id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, trio.SocketStream):
                return obj
            if isinstance(obj, trio.SSLStream):
                following.append(obj.transport_stream)
                continue
            if isinstance(obj, partial):
                following.append(obj.func)
                following.extend(obj.args)
                continue
            owner = getattr(obj, "__self__", None)
            if owner is not None:
                following.append(owner)
                continue
            for name in ("stream", "send"):
                following.append(getattr(obj, name, None))
        frontier = following
    return None


def configure_hypercorn(config: Any, *, ping_interval: float | None = None) -> None:
    """Turn on WebSocket keep-alive in a :class:`hypercorn.config.Config`.

    ``ping_interval`` defaults to ``WASUP_WS_PING_INTERVAL`` from the environment, else 25 s;
    0 turns pings (and the read timeout) off.
    Hypercorn sends a ping every ``ping_interval`` seconds; a live client answers with a
    pong, which counts as data read, so ``read_timeout`` (two intervals and ten seconds)
    closes peers that went silent. ``read_timeout`` also bounds how long an HTTP client may
    stay silent mid-request, which is far above any wasup handler's deadline.
    """
    # The server discards what clients send; no reason to let one buffer 16 MiB frames.
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE
    if ping_interval is None:
        ping_interval = float(os.environ.get(PING_INTERVAL_KEY) or DEFAULT_PING_INTERVAL)
    if ping_interval <= 0:
        config.websocket_ping_interval = None
        return
    config.websocket_ping_interval = ping_interval
    config.read_timeout = math.ceil(2 * ping_interval + 10)


_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|api_key|apikey|key)=)[^&\s\"']*")
_DEVICE_KEY = re.compile(r"dev_[A-Za-z0-9_\-]{8,}")


def redact(text: str) -> str:
    """``text`` with query-string tokens and device keys replaced by ``***``."""
    text = _SECRET_QUERY.sub(r"\1***", text)
    return _DEVICE_KEY.sub("dev_***", text)
