"""One WebSocket connection's stream: the pump from its bus subscription to its socket, and
the watchdogs that end it.

The bus has already filtered what reaches the subscription (devices and event types, resolved
at the handshake), so the pump only sends: each event's JSON text is encoded once, on the
:class:`supervisor.events.Event`, however many connections send it. A connection that resumes
(``?since=``) first gets the logged events after its id (:class:`supervisor.event_log.Replay`,
read in pages with the same filters), then the live ones. In a cluster the live ones are every
node's, as the node's feed reads them from the log (:meth:`supervisor.events.EventBus.stream`),
in id order.

Resource handling: the subscription is the only buffer; a full one is dropped by the bus
(close 1013). A send goes straight to the socket; :meth:`Stream.watch_sends` aborts a
connection whose send makes no progress (see :func:`api.ws.transport.abort`).
"""

from __future__ import annotations

import logging

import attrs
import trio
from quart.wrappers import Websocket

from api.ws.transport import abort
from storage import StorageError
from supervisor.devices import Devices
from supervisor.errors import DeviceNotFound
from supervisor.event_log import Replay
from supervisor.events import Envelope, Subscription

log = logging.getLogger("wasup.api.ws")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

#: How often a device key's stream checks that its device still exists, in seconds.
REVALIDATE_INTERVAL = 30.0


@attrs.define(eq=False)
class Stream:
    """One connection's pump from its subscription to its socket, with its watchdogs."""

    ws: Websocket
    subscription: Subscription[Envelope]
    credential_id: str
    sent: int = 0
    outcome: str = "client left"
    aborted: bool = False
    revoked: bool = False
    _send_started: float | None = None

    async def pump(self, replay: Replay | None = None) -> tuple[int, str]:
        """Send the ``replay`` (a resume's logged events), then the live events until the
        subscription ends; returns the close code and reason.

        The subscription was opened before the replay read the newest id, so together they
        hold every event: those up to :attr:`Replay.newest` come from the log, and the live
        ones with such an id (published while the replay ran) are skipped, neither missed nor
        sent twice.
        """
        replayed = 0
        if replay is not None:
            try:
                async for page in replay.pages():
                    for row in page:
                        await self._send(row.envelope_text)
            except StorageError as exc:
                log.warning("websocket resume failed: %s", exc)
                self.outcome = "event log unavailable (closed with 1013)"
                return CLOSE_TRY_AGAIN_LATER, "event log unavailable, try again"
            replayed = replay.newest
        async for event in self.subscription:
            if event.id is not None and event.id <= replayed:
                continue
            await self._send(event.json_text)
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

    async def _send(self, text: str) -> None:
        self._send_started = trio.current_time()
        try:
            await self.ws.send(text)
        finally:
            self._send_started = None
        self.sent += 1

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
                if not abort(self.ws):
                    log.warning("websocket send stalled but its socket could not be found")
                return

    async def watch_device(self, sup: Devices, device_id: int) -> None:
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

    async def discard_incoming(self) -> None:
        """Read and drop client messages, so the peer's pongs and closes keep flowing."""
        try:
            while True:
                await self.ws.receive()
        except Exception:  # the connection is gone; the pump learns it through cancellation
            return

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (nothing when the peer or Hypercorn already closed)."""
        try:
            await self.ws.close(code, reason)
        except Exception:  # already closed: nothing left to say
            pass
