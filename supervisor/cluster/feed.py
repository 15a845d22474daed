"""The node's feed of the cluster's events: the event log tailed by id, handed to the node's
WebSocket streams.

Usage (cluster mode only; ``api.server`` wires it)::

    feed = cluster_feed(config, db, bus)  # None on one node; else attached to the bus
    if feed is not None:
        await nursery.start(feed.run)

Every node appends its devices' events to the one log (:mod:`supervisor.event_log`), and the
appends commit in id order (:mod:`storage.pg.events`). The feed reads the events after the
last id it handed on, oldest first, and gives each to the bus's streams
(:meth:`supervisor.events.EventBus.publish_logged`): a WebSocket on any node sees every
node's events, in id order, with no gap; this node's own events come the same way, and only
that way, so none is sent twice. It reads when ``wasup_events`` says events were appended
(``PgStore.listen``), and at least every :data:`POLL_SECONDS` whatever it heard, so a lost
notification delays an event by one second at most.

While no stream is open the feed reads nothing but the newest id, and starts from there when
one opens; a stream that resumes (``?since=``) reads what came before from the log itself (see
:class:`supervisor.event_log.Replay`).

Error handling: a storage outage pauses the feed (it goes on from its last id when the
database is back: nothing is skipped); any other failure of a read is logged and tried again
a second later. Resource handling: one task, and the store's listening connection.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import attrs
import trio

from storage import EventRow, Repositories, StorageUnavailable, Store
from storage.models import ALL_EVENTS, envelope_text
from storage.pg import PgStore
from supervisor.config import Config
from supervisor.event_log import EventPage, read_page
from supervisor.events import EventBus, LoggedEnvelope
from supervisor.payloads import QrShown
from supervisor.qr import render_string

log = logging.getLogger("wasup.cluster.feed")

#: Longest wait between two reads of the log (seconds), whatever the notifications say.
POLL_SECONDS = 1.0
#: Most events one read takes.
PAGE = 500
#: The notification channel the log's appends announce themselves on.
CHANNEL = "wasup_events"


@attrs.define(eq=False)
class ClusterFeed:
    """Tails the event log for the bus's streams (see the module doc)."""

    db: PgStore
    bus: EventBus
    poll: float = POLL_SECONDS
    #: The newest id handed on (or skipped while no stream was open).
    last: int = 0
    #: Events handed to the streams, and reads of the log, since start.
    fed: int = 0
    reads: int = 0
    _wake: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.bus.attach_feed()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed the streams until cancelled; ready once the newest id is known and the
        notifications are listened to."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            while True:
                try:
                    _, self.last = await self.db.run(_bounds)
                    break
                except StorageUnavailable as exc:
                    await trio.sleep(exc.retry_after)
            task_status.started()
            while True:
                self._wake = trio.Event()  # before reading: a wake-up during it is kept
                try:
                    await self._catch_up()
                except StorageUnavailable as exc:
                    await trio.sleep(min(exc.retry_after, self.poll))
                    continue
                except Exception:
                    log.exception("reading the event log failed; trying again in 1 s")
                    await trio.sleep(1.0)
                    continue
                with trio.move_on_after(self.poll):
                    await self._wake.wait()

    def wake(self) -> None:
        """Read the log now (events were appended)."""
        self._wake.set()

    async def _listen(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with self.db.listen(CHANNEL) as notes:
            task_status.started()
            async for _ in notes:  # "" per appending statement, "*" after a reconnect
                self._wake.set()

    async def _catch_up(self) -> None:
        """Hand on every event after :attr:`last`, page by page."""
        while True:
            if not self.bus.has_streams():
                _, newest = await self.db.run(_bounds)
                if not self.bus.has_streams():  # none opened meanwhile: nobody to miss them
                    self.last = max(self.last, newest)
                    return
            page = await self.db.run(partial(_page, self.last))
            self.reads += 1
            for row in page.rows:
                self.bus.publish_logged(await self._envelope(row))
                self.fed += 1
            self.last = max(self.last, page.next_since)
            if not page.has_more:
                return

    async def _envelope(self, row: EventRow) -> LoggedEnvelope:
        """``row`` as the streams send it: the log's envelope, but a QR code with its image,
        rendered (in a worker thread, and once for every node's streams: the render cache)
        when a stream wants it."""
        text = row.envelope_text
        if row.type == QrShown.type and self.bus.wants(row.type, row.device_id):
            data = json.loads(row.data)
            qr_string = data.get("qrString")
            if data.get("qrCode") is None and isinstance(qr_string, str):
                data["qrCode"] = await render_string(qr_string)
                text = envelope_text(
                    row.id, row.type, row.session_id,
                    json.dumps(data, separators=(",", ":"), ensure_ascii=False), row.timestamp,
                )
        return LoggedEnvelope(row.id, row.device_id, row.session_id, row.type, text)


def cluster_feed(config: Config, db: Store, bus: EventBus) -> ClusterFeed | None:
    """The feed of a cluster node (attached to ``bus``: its streams read the log from now
    on), or None on a single node."""
    if config.cluster is None or not isinstance(db, PgStore):
        return None
    return ClusterFeed(db, bus)


def _bounds(repos: Repositories) -> tuple[int, int]:
    return repos.events.bounds()


def _page(since: int, repos: Repositories) -> EventPage:
    return read_page(repos, since, limit=PAGE, query=ALL_EVENTS)
