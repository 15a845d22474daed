"""From whatsmeow's Go threads to a device's sink: what one session's Go clients report.

Go calls back on its own threads; :meth:`GoReports.post` copies what it got and hands it to
Trio with ``TrioToken.run_sync_soon``, nothing more. On the Trio thread,
:meth:`GoReports.handle` updates the :class:`~supervisor.engines.whatsmeow_link.Link` and
reports engine events (translated by :mod:`supervisor.engines.whatsmeow_translate`) through
the sink. Whatever a client that is no longer the session's current one reports is dropped.

whatsmeow reconnects a connected client by itself after a ``Disconnected``: that event starts
a grace period (``reconnect_grace`` seconds, a Trio system task) and is reported as the
connection lost only when no ``Connected`` came within it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio
from neonize.events import INT_TO_EVENT
from neonize.proto import Neonize_pb2 as nz

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
from supervisor.proxy import redact

from .whatsmeow_link import GoCallback, GoEvent, GoExit, GoQr, GoStatus, Link, LinkState
from .whatsmeow_translate import connect_error_reason, translate, translate_pairing_status

log = logging.getLogger("wasup.engine.whatsmeow")


@attrs.define(eq=False)
class GoReports:
    """The Go-to-Trio side of one :class:`~supervisor.engines.whatsmeow.WhatsmeowSession`.

    ``current`` returns the session's current link; ``token`` is the Trio run's token (set
    before the first Go client starts).
    """

    session_id: str
    sink: Sink
    current: Callable[[], Link | None]
    reconnect_grace: float
    token: trio.lowlevel.TrioToken | None = None

    def post(self, holder: list[Link], what: GoCallback) -> None:
        """Runs on a Go thread: hand over and return; never raises, never blocks."""
        token = self.token
        if token is None or not holder:
            return
        try:
            token.run_sync_soon(self.deliver, holder[0], what)
        except Exception:  # trio.RunFinishedError: the process is shutting down
            pass

    def deliver(self, link: Link, what: GoCallback) -> None:
        """Runs on the Trio thread (a ``run_sync_soon`` callback): must never raise."""
        try:
            self.handle(link, what)
        except Exception:
            log.exception("device %s: whatsmeow callback %r not handled", self.session_id, what)

    def handle(self, link: Link, what: GoCallback) -> None:
        current = self.current() is link
        match what:
            case GoExit(error=error):
                error = redact(error, link.proxy)
                link.exit_error = error
                link.end_grace()
                link.poke()
                if current and not link.waiting and not link.client.stopped:
                    # The connection ended on its own while nobody waited for it. The link
                    # stays until stop() (which the actor calls on Disconnected) releases it.
                    reason = connect_error_reason(error or "connection closed")
                    self.emit(link, Disconnected(reason))
            case _ if not current:
                pass  # from a client that was stopped since
            case GoQr(code=code):
                link.codes.append(code)
                if link.shown == 0 or link.want_qr:
                    self.show_latest(link)
            case GoStatus(status=status):
                log.debug("device %s: pairing status %s", self.session_id, status)
                self.emit_all(link, translate_pairing_status(status))
            case GoEvent(code=code, data=data):
                cls = INT_TO_EVENT.get(code)
                if cls is None:
                    return
                message = cls.FromString(data)
                if code == 0:
                    link.me = message
                    return
                if self.reconnecting(link, message):
                    return
                self.emit_all(link, translate(message, now=now_epoch(), me=link.me))

    def reconnecting(self, link: Link, message: object) -> bool:
        """Whether ``message`` is part of whatsmeow reconnecting a connected client by itself:
        a ``Disconnected`` starts the grace period (nothing reported yet), a ``Connected``
        within it ends the grace (the connection carries on, nothing reported)."""
        if link.state is not LinkState.CONNECTED or not link.live or link.client.stopped:
            return False
        if isinstance(message, nz.Disconnected):
            if link.grace is None:
                link.grace = trio.CancelScope()
                trio.lowlevel.spawn_system_task(self.grace, link, link.grace)
            return True
        if isinstance(message, nz.Connected) and link.grace is not None:
            link.end_grace()
            link.reconnects += 1
            log.info("device %s: whatsmeow reconnected by itself", self.session_id)
            return True
        return False

    async def grace(self, link: Link, scope: trio.CancelScope) -> None:
        """A system task: report the connection lost unless whatsmeow reconnects in time."""
        try:
            with scope:
                await trio.sleep(self.reconnect_grace)
                if link.grace is scope and self.current() is link and link.live:
                    link.grace = None
                    log.info("device %s: whatsmeow did not reconnect within %g s",
                             self.session_id, self.reconnect_grace)
                    self.emit(link, Disconnected("connection_lost"))
        except Exception:
            log.exception("device %s: reconnect grace failed", self.session_id)

    def show_latest(self, link: Link) -> None:
        link.shown = len(link.codes)
        link.want_qr = False
        if link.state is LinkState.STARTING:
            link.state = LinkState.SHOWING_QR
        link.poke()
        self.sink(QrCode(link.codes[-1]))

    def emit_all(self, link: Link, events: list[EngineEvent]) -> None:
        for event in events:
            self.emit(link, event)

    def emit(self, link: Link, event: EngineEvent) -> None:
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
