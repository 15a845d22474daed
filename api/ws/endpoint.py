"""The WebSocket endpoint at ``/``: a handshake, then one stream, for each connection.

``register(app)`` serves it and keeps the app's :class:`OpenStreams`, which counts connections
per credential and closes every stream when a graceful shutdown begins (:func:`close_streams`).
"""

from __future__ import annotations

import logging
import math

import attrs
import trio
from quart import Blueprint, Quart, Response, current_app
from quart.wrappers import Websocket

from api.errors import ApiError, response_for
from api.state import current_state
from api.ws.handshake import Handshake, admit, connection_cap
from api.ws.stream import Stream
from api.ws.transport import current_websocket
from supervisor.errors import InvalidRequest
from supervisor.event_log import Replay

log = logging.getLogger("wasup.api.ws")

bp = Blueprint("ws", __name__)

#: Largest message a client may send (it is read and discarded), in bytes.
MAX_CLIENT_MESSAGE = 64 * 1024

_KEY = "wasup.ws"


@attrs.define(eq=False)
class OpenStreams:
    """The streams one app is serving, and whether it is shutting down."""

    streams: set[Stream] = attrs.field(factory=set)
    closing: bool = False

    def held_by(self, credential_id: str) -> int:
        """How many open streams ``credential_id`` holds."""
        return sum(1 for s in self.streams if s.credential_id == credential_id)

    def close_all(self) -> None:
        """End every stream (each closes with 1001 once its pending send is done); refuse
        handshakes from now on."""
        self.closing = True
        for stream in list(self.streams):
            stream.subscription.close()


def register(app: Quart) -> None:
    """Serve the event stream on ``app`` (``create_app`` calls this once)."""
    app.register_blueprint(bp)
    app.extensions[_KEY] = OpenStreams()


def streams_of(app: Quart) -> OpenStreams:
    """The :class:`OpenStreams` of ``app`` (set up by :func:`register`)."""
    streams: OpenStreams = app.extensions[_KEY]
    return streams


def open_streams(app: Quart) -> int:
    """How many WebSocket connections ``app`` is streaming events to."""
    return len(streams_of(app).streams)


def close_streams(app: Quart) -> None:
    """End every stream of ``app``: each connection is closed with 1001 "server shutting
    down" once its pending send is done. Call it when a graceful shutdown starts, so that
    clients learn why instead of being cut off when the grace period ends. Handshakes after
    this call are answered 503."""
    streams_of(app).close_all()


@bp.websocket("/")
async def events_socket() -> Response | None:
    """Stream events to one client until it leaves, falls behind, or the server stops.

    Error handling: a refused handshake is answered with the HTTP error envelope
    (:func:`api.errors.response_for`). After the handshake nothing is raised to Quart: the
    connection ends with a close code (see :mod:`api.ws`).
    """
    ws = current_websocket()
    state = current_state()
    streams = streams_of(current_app)
    settings = state.settings.ws
    try:
        admitted = await admit(state, Handshake.of(ws), closing=streams.closing)
        if streams.held_by(admitted.principal.credential_id) >= settings.max_per_credential:
            raise connection_cap(settings.max_per_credential)
    except (ApiError, InvalidRequest) as exc:
        log.info("websocket refused: %s (from %s)", exc, _peer(ws))
        return response_for(exc)
    principal, stream_filter = admitted.principal, admitted.stream_filter
    # Subscribe before accepting: nothing published after the handshake is missed. In a
    # cluster, the stream is every node's events, read from the log by this node's feed.
    subscription = state.sup.bus.stream(
        device_ids=admitted.device_ids,
        selection=stream_filter.selection,
        types=stream_filter.types,
        maxsize=settings.queue_size,
    )
    stream = Stream(ws=ws, subscription=subscription, credential_id=principal.credential_id)
    streams.streams.add(stream)  # counted from here on: no checkpoint since the check above
    async with subscription:
        try:
            await ws.accept(subprotocol=admitted.subprotocol)
            log.info(
                "websocket opened for %s from %s (sessions=%s, events=%s)",
                principal.credential_id,
                _peer(ws),
                ",".join(sorted(stream_filter.refs)) if stream_filter.refs else "all",
                ",".join(sorted(stream_filter.types)) if stream_filter.types else "all",
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.discard_incoming)
                if settings.send_timeout > 0 and math.isfinite(settings.send_timeout):
                    nursery.start_soon(stream.watch_sends, settings.send_timeout)
                if principal.device_id is not None:
                    nursery.start_soon(stream.watch_device, state.sup, principal.device_id)
                replay = None
                if stream_filter.since is not None:
                    replay = Replay(
                        state.sup.db, stream_filter.since,
                        stream_filter.query(admitted.device_ids),
                    )
                code, reason = await stream.pump(replay)
                nursery.cancel_scope.cancel()
        finally:
            streams.streams.discard(stream)
            log.info(
                "websocket closed for %s after %d events: %s",
                principal.credential_id,
                stream.sent,
                stream.outcome,
            )
    if not stream.aborted:
        await stream.close(code, reason)
    return None


def _peer(ws: Websocket) -> str:
    client = ws.scope.get("client")
    if client:
        return f"{client[0]}:{client[1]}"
    return "unknown"
