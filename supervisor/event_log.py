"""The durable event log, from the core's side: logging events with their cause.

Usage (inside a storage job, the one that stores what caused the events)::

    def job(r: storage.Repositories) -> None:
        r.devices.record_transition(...)
        event_log.append(r, events)       # each item of `events` now carries its log id
    await db.run(job)
    for event in events:
        bus.publish(event)

Every event wasup publishes goes through :func:`append` first, in the same transaction as its
cause, so nothing is published that is not logged, and nothing is logged whose cause was not
stored. The ids come from the log (``storage`` ``events``); a WebSocket client resumes from the
last one it saw, ``GET /events`` pages them, and a webhook delivery references its event by id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import attrs

from storage import EventQuery, EventRow, LoggedEvent, Repositories, Store

from .events import Event


def append(repos: Repositories, events: list[Event]) -> None:
    """Log ``events`` in order, in the caller's transaction, replacing each item of the list
    by the same event with its ``id`` (and the ``data`` JSON the log stored, so that it is
    encoded once; a QR code's is its own, with the image the log leaves out).

    A job may run again after its batch was rolled back: the events are then logged again and
    take new ids, which are the ones that count.
    """
    if not events:
        return
    texts = [event.log_data() for event in events]
    ids = repos.events.append([
        LoggedEvent(event.device_id, event.session_id, event.type, text, event.timestamp)
        for event, text in zip(events, texts, strict=True)
    ])
    events[:] = [
        attrs.evolve(event, id=event_id, data_text=text if event.logged_whole else None)
        for event, event_id, text in zip(events, ids, texts, strict=True)
    ]


#: Most events one page of a replay reads.
REPLAY_PAGE = 200
#: Most ids one query examines: a filter that matches little costs bounded work per query,
#: however large the log.
SCAN = 5000


@attrs.frozen
class EventPage:
    """One page of the log: its events, the ``since`` to ask for the next page, whether the log
    holds newer events than that (matching or not), and the oldest id kept (0: none)."""

    rows: list[EventRow]
    next_since: int
    has_more: bool
    oldest: int


def read_page(
    repos: Repositories, since: int, *, limit: int, query: EventQuery, newest: int | None = None
) -> EventPage:
    """The events after ``since`` that ``query`` lets through, oldest first: at most ``limit``,
    and among at most :data:`SCAN` ids (a page may be empty and still not the last); nothing
    beyond ``newest`` when given. A ``since`` older than the log starts at the oldest kept."""
    oldest, last = repos.events.bounds()
    if newest is not None:
        last = min(last, newest)
    cursor = max(since, oldest - 1)
    if cursor >= last:
        return EventPage([], since, False, oldest)
    until = min(last, cursor + SCAN)
    rows = repos.events.after(cursor, until=until, limit=limit, query=query)
    following = rows[-1].id if rows and len(rows) >= limit else until
    return EventPage(rows, following, following < last, oldest)


@attrs.define(eq=False)
class Replay:
    """The logged events after ``since`` that ``query`` lets through, in pages
    (:func:`read_page`), up to the newest event logged when :meth:`pages` starts
    (:attr:`newest` from then on).

    Usage (a WebSocket resuming: subscribe to the bus first, so nothing falls in between)::

        replay = Replay(db, since, query)
        async for page in replay.pages():
            ...send each row's envelope_text...
        # then the live events, skipping those with an id <= replay.newest

    A ``since`` older than the log starts at the oldest event kept; one at or beyond the
    newest replays nothing.
    """

    db: Store
    since: int
    query: EventQuery
    page: int = attrs.field(factory=lambda: REPLAY_PAGE)
    newest: int = 0

    async def pages(self) -> AsyncIterator[list[EventRow]]:
        _, self.newest = await self.db.run(lambda r: r.events.bounds())
        cursor = self.since
        while True:
            page = await self.db.run(partial(
                _page, cursor, self.page, self.query, self.newest))
            if page.rows:
                yield page.rows
            if not page.has_more:
                return
            cursor = page.next_since


def _page(since: int, limit: int, query: EventQuery, newest: int,
          repos: Repositories) -> EventPage:
    return read_page(repos, since, limit=limit, query=query, newest=newest)
