"""The composition root: :func:`serve` builds every wasup service and runs them in one order.

Usage::

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, config, api_token)    # ready: port bound
        print(server.url)                                          # http://127.0.0.1:3001
        server.dispatcher.statistics(); server.autoreply.statistics()
        server.shutdown()                                          # graceful stop

Start order, each ready before the next starts (OTP's children in order; hypercorn's
``trio/run.py`` and trio's ``serve_listeners``)::

    open_supervisor (database, engine, actors)
      -> MessageRetention (prunes stored messages: supervisor.retention)
      -> EventRetention (prunes the event log: supervisor.event_retention)
      -> WebhookDispatcher (woken through sup.outbox_listeners)
        -> AutoReply
          -> create_app -> Hypercorn (HTTP and the WebSocket on one port)

Shutdown runs the same chain in reverse: when ``shutdown_trigger`` returns (or
:meth:`Server.shutdown` is called) WebSocket streams are closed with 1001, Hypercorn stops
accepting and lets requests in flight finish for ``graceful_timeout`` seconds; then auto-reply
is cancelled, then the dispatcher, then event and message retention, then the supervisor stops every
actor, newest first, and closes the engine and the database. A caller wanting a hard deadline on all of that sets it on
the enclosing cancel scope (``wasup serve`` does).

Error handling: an error in any service cancels the others and propagates out of :func:`serve`
(as an ExceptionGroup from the nurseries).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from api import metrics, routes_cluster
from api.app import API_PREFIX, create_app
from api.logging import REDACT
from api.state import ApiSettings, WsSettings
from api.ws.endpoint import MAX_CLIENT_MESSAGE, close_streams
from supervisor.autoreply import AutoReply
from supervisor.cluster.feed import cluster_feed
from supervisor.config import Config
from supervisor.devices import Devices
from supervisor.engine import Engine
from supervisor.event_retention import EventRetention
from supervisor.retention import MessageRetention
from supervisor.supervisor import open_supervisor
from supervisor.webhooks.dispatcher import WebhookDispatcher

log = logging.getLogger("wasup.server")

#: Access log line: no query string (it may carry ``?token=``), no headers.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(D)sus'

GRACEFUL_TIMEOUT = 5.0


@attrs.define(eq=False)
class Server:
    """What :func:`serve` reports once it is ready: the bound address and every service."""

    host: str
    port: int
    sup: Devices
    dispatcher: WebhookDispatcher
    autoreply: AutoReply
    app: QuartTrio
    api_token: str = attrs.field(repr=False)
    _stop: trio.Event = attrs.field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/"

    def shutdown(self) -> None:
        """Start a graceful shutdown (returns at once; :func:`serve` returns when done)."""
        self._stop.set()


def hypercorn_config(
    host: str,
    port: int,
    *,
    graceful_timeout: float = GRACEFUL_TIMEOUT,
    ws: WsSettings | None = None,
) -> hypercorn.config.Config:
    """Hypercorn's configuration for wasup: one insecure bind, redacted logs, WebSocket
    keep-alive.

    Hypercorn sends a ping every ``ws.ping_interval`` seconds (0: none); a live client answers
    with a pong, which counts as data read, so ``read_timeout`` (two intervals and ten seconds)
    closes peers that went silent. ``read_timeout`` also bounds how long an HTTP client may
    stay silent mid-request, which is far above any wasup handler's deadline.
    """
    ws = ws or WsSettings()
    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    access = logging.getLogger("wasup.access")
    if REDACT not in access.filters:
        access.addFilter(REDACT)
    config.accesslog = access
    config.errorlog = logging.getLogger("wasup.http")
    config.access_log_format = ACCESS_LOG_FORMAT
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    # The server discards what clients send; no reason to let one buffer 16 MiB frames.
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE
    if ws.ping_interval > 0:
        config.websocket_ping_interval = ws.ping_interval
        config.read_timeout = math.ceil(2 * ws.ping_interval + 10)
    else:
        config.websocket_ping_interval = None
    return config


_BIND_RE = re.compile(r"^https?://(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+)):(?P<port>\d+)$")


def _parse_bind(bind: str) -> tuple[str, int]:
    match = _BIND_RE.match(bind)
    if match is None:
        raise RuntimeError(f"cannot parse hypercorn bind {bind!r}")
    return match["v6"] or match["host"], int(match["port"])


@asynccontextmanager
async def _running(run: Callable[..., Awaitable[None]]) -> AsyncIterator[None]:
    """Run the service ``run`` (started with ``nursery.start``, so it is ready) for the body
    of the ``async with``; cancel it when the body is done."""
    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        yield
        nursery.cancel_scope.cancel()


async def serve(
    config: Config,
    api_token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 3001,
    settings: ApiSettings | None = None,
    engine: Engine | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve wasup until ``shutdown_trigger`` returns or :meth:`Server.shutdown` is called.

    Reports a :class:`Server` (with the port actually bound, useful with ``port=0``) through
    ``task_status`` once the socket listens and every stored device has been restored.

    Error handling: binding the port (OSError) or opening the database fail before
    ``started``; later errors of any service end the others and propagate.
    Resource handling: every service is stopped, in reverse order of start, before this returns.
    """
    settings = settings or ApiSettings()
    stop = trio.Event()
    async with open_supervisor(config, engine=engine) as sup:
        dispatcher = WebhookDispatcher(sup.db, config, bus=sup.bus)
        sup.outbox_listeners.append(dispatcher.notify)
        autoreply = AutoReply(sup)
        retention = MessageRetention(
            sup.db, days=config.message_retention_days, count=config.message_retention_count
        )
        event_retention = EventRetention(sup.db, days=config.event_retention_days)
        # A cluster's WebSocket streams read every node's events from the log.
        feed = cluster_feed(config, sup.db, sup.bus)
        app = create_app(sup, api_token, settings, autoreply=autoreply)
        if feed is not None:
            routes_cluster.install_feed(app, feed)
        operations = metrics.operations(app)
        sup.bus.tap(operations.observe)
        dispatcher.lag_observer = operations.observe_lag
        hconfig = hypercorn_config(
            host,
            port,
            graceful_timeout=settings.graceful_timeout,
            ws=settings.ws,
        )

        async def trigger() -> None:
            async with trio.open_nursery() as race:

                async def first(fn: Callable[[], Awaitable[Any]]) -> None:
                    await fn()
                    race.cancel_scope.cancel()

                race.start_soon(first, stop.wait)
                if shutdown_trigger is not None:
                    race.start_soon(first, shutdown_trigger)
            # A cluster node hands its devices over first (docs/cluster.md), while it answers.
            if sup.cluster is not None:
                await sup.cluster.drain()
            # WebSocket clients get 1001 "server shutting down" within the grace period.
            close_streams(app)

        async def run_http(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn.trio.serve(app, hconfig, shutdown_trigger=trigger, task_status=task_status)
            log.info("http server stopped")

        try:
            async with (
                _running(retention.run), _running(event_retention.run),
                _running(dispatcher.run), _running(autoreply.run),
                _running(feed.run) if feed is not None else nullcontext(),
            ):
                async with trio.open_nursery() as http:
                    binds: list[str] = await http.start(run_http)
                    bound_host, bound_port = _parse_bind(binds[0])
                    server = Server(
                        host=bound_host,
                        port=bound_port,
                        sup=sup,
                        dispatcher=dispatcher,
                        autoreply=autoreply,
                        app=app,
                        api_token=api_token,
                        stop=stop,
                    )
                    log.info("wasup listening on %s (engine %s)", server.url, config.engine)
                    task_status.started(server)
        finally:
            sup.outbox_listeners.remove(dispatcher.notify)
