"""From whatsmeow's Go threads to a device's sink: what one session's Go clients report.

Go calls back on its own threads; :meth:`GoReports.post` copies what it got and hands it to
Trio. A lifecycle event (a QR code, a status, connected, disconnected...) goes with
``TrioToken.run_sync_soon`` and the callback returns at once. An incoming message or a
completed pairing goes with ``trio.from_thread.run`` to :meth:`GoReports.commit`, which hands it
to the device with ``sink.deliver`` and returns only once the device committed it (the message
stored with its webhook outbox rows, the pairing stored as paired): Go's callback returns only
then. A poll vote is decrypted first (:mod:`supervisor.engines.whatsmeow_votes`). When the
device cannot store it (``DeliveryFailed``), the failure is logged and counted and Go carries
on; nothing raises into Go.

What that guarantees, and what it cannot: neonize 0.5.2 puts whatsmeow's events into a Go
channel of 100 slots and whatsmeow acknowledges a message to WhatsApp once its event is in
that channel, before wasup sees it. While wasup commits one message, up to 100 more may wait
there, already acknowledged; a crash (kill -9, power loss) loses those, and WhatsApp does not
send them again. The window is bounded: once the channel is full, whatsmeow's event handler
waits, so it acknowledges nothing more until wasup has committed. On an orderly stop the
channel's contents are lost the same way only if the device is stopped while messages stream
in. On the Trio thread,
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
    MessageReceived,
    Paired,
    PairingFailed,
    QrCode,
    Retry,
    Sink,
    TemporaryBan,
)
from supervisor.errors import DeliveryFailed, EngineError
from supervisor.message_content import PollVote
from supervisor.proxy import redact

from .whatsmeow_account import notices as account_notices
from .whatsmeow_groups import GROUP_CODES, group_notices
from .whatsmeow_link import GoCallback, GoEvent, GoExit, GoQr, GoStatus, Link, LinkState
from .whatsmeow_translate import advice_for, exit_event, translate, translate_pairing_status
from .whatsmeow_votes import decrypted

log = logging.getLogger("wasup.engine.whatsmeow")


#: neonize's event codes that may carry an incoming message or a completed pairing: their Go
#: callback waits until the device committed what they carry (see the module docstring).
COMMITTED_CODES = frozenset({2, 17, 44})  # PairStatus, Message, UndecryptableMessage


@attrs.define(eq=False)
class GoReports:
    """The Go-to-Trio side of one :class:`~supervisor.engines.whatsmeow.WhatsmeowSession`.

    ``current`` returns the session's current link; ``hold`` stops a link's client for the
    session (a connection that ended with its credentials kept, not to be retried by
    whatsmeow); ``token`` is the Trio run's token (set before the first Go client starts).
    """

    session_id: str
    sink: Sink
    current: Callable[[], Link | None]
    hold: Callable[[Link], None]
    reconnect_grace: float
    token: trio.lowlevel.TrioToken | None = None
    #: The engine's worker threads (a poll vote's decryption runs on one).
    limiter: trio.CapacityLimiter | None = None
    #: Messages and pairings not stored (the device could not commit them), for statistics.
    not_stored: int = 0

    def post(self, holder: list[Link], what: GoCallback) -> None:
        """Runs on a Go thread: hand over and return; never raises.

        A message or pairing event blocks this Go thread until the device committed it (or
        could not): whatsmeow's event loop then waits, which is the backpressure. Every other
        callback returns at once.
        """
        token = self.token
        if token is None or not holder:
            return
        try:
            if isinstance(what, GoEvent) and what.code in COMMITTED_CODES:
                trio.from_thread.run(self.commit, holder[0], what, trio_token=token)
            else:
                token.run_sync_soon(self.deliver, holder[0], what)
        except BaseException:  # trio.RunFinishedError: the process is shutting down
            pass

    def deliver(self, link: Link, what: GoCallback) -> None:
        """Runs on the Trio thread (a ``run_sync_soon`` callback): must never raise."""
        try:
            self.handle(link, what)
        except Exception:
            log.exception("device %s: whatsmeow callback %r not handled", self.session_id, what)

    async def commit(self, link: Link, what: GoEvent) -> None:
        """Runs on the Trio thread for a Go thread that waits: hand a message or a pairing to
        the device and return once it is committed. Never raises: what the device could not
        store is logged (and counted) and Go carries on."""
        try:
            if self.current() is not link:
                return  # from a client that was stopped since
            for event in self.events_of(link, what):
                if isinstance(event, MessageReceived | Paired):
                    self.note(link, event)
                    if isinstance(event, MessageReceived) and isinstance(event.content, PollVote):
                        # Before the commit's wait: a stop meanwhile does not lose the vote.
                        event = await decrypted(link.client, what.data, event, self.limiter)
                    # Stopping the link stops waiting (see Link.commits): the device still
                    # commits what it was handed, and Go's thread is free to end.
                    with link.committing() as scope:
                        await self.sink.deliver(event)
                    if scope.cancelled_caught:
                        return
                else:
                    self.emit(link, event)
        except DeliveryFailed as exc:
            self.not_stored += 1
            log.warning("device %s: an incoming %s was not stored (%s)", self.session_id,
                        "pairing" if what.code == 2 else "message", exc.reason)
        except Exception:
            log.exception("device %s: whatsmeow event %d not handled", self.session_id, what.code)

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
                    self.emit(link, exit_event(error or "connection closed"))
            case _ if not current:
                pass  # from a client that was stopped since
            case GoQr(code=code):
                link.codes.append(code)
                if link.shown == 0 or link.want_qr:
                    self.show_latest(link)
            case GoStatus(status=status):
                log.debug("device %s: pairing status %s", self.session_id, status)
                self.emit_all(link, translate_pairing_status(status))
            case GoEvent():
                self.emit_all(link, self.events_of(link, what))

    def events_of(self, link: Link, what: GoEvent) -> list[EngineEvent]:
        """The engine events a Go event means for ``link`` (none for the account record and
        for whatsmeow's own reconnects)."""
        cls = INT_TO_EVENT.get(what.code)
        if cls is None:
            return []
        message = cls.FromString(what.data)
        if what.code == 0:
            link.me = message
            return []
        if self.reconnecting(link, message):
            return []
        if what.code in GROUP_CODES:
            return group_notices(message, me=link.me)
        noticed = account_notices(message)  # presence and calls
        if noticed is not None:
            return noticed
        return translate(message, now=now_epoch(), me=link.me)

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

    def note(self, link: Link, event: EngineEvent) -> None:
        """What ``event`` tells about ``link`` (how far it got, how it ended)."""
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
            case PairingFailed(reason=reason, restart=True):
                # whatsmeow closed the pairing connection: the client is of no more use (its
                # Go thread stays parked, see whatsmeow_client); a new pairing starts anew.
                link.failure = EngineError(reason, recoverable=True)
        link.poke()

    def emit(self, link: Link, event: EngineEvent) -> None:
        """Note ``event`` on ``link`` and report it; a connection that ended with its
        credentials kept and must wait (``Retry.HOLD`` or ``Retry.SLOW``) has its client
        stopped at once, so whatsmeow does not reconnect it by itself."""
        self.note(link, event)
        self.sink(event)
        if isinstance(event, Disconnected | LoggedOut | PairingFailed):
            advice = advice_for(event.reason)
            if advice is not None:
                log.warning("device %s: %s: %s", self.session_id, event.reason, advice)
        if isinstance(event, Disconnected) and event.retry is not Retry.BACKOFF:
            self.hold(link)
