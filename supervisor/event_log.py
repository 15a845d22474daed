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

import attrs

from storage import LoggedEvent, Repositories

from .events import Event


def append(repos: Repositories, events: list[Event]) -> None:
    """Log ``events`` in order, in the caller's transaction, replacing each item of the list
    by the same event with its ``id`` (and the ``data`` JSON the log stored, so that it is
    encoded once).

    A job may run again after its batch was rolled back: the events are then logged again and
    take new ids, which are the ones that count.
    """
    if not events:
        return
    texts = [event.wire_data() for event in events]
    ids = repos.events.append([
        LoggedEvent(event.device_id, event.session_id, event.type, text, event.timestamp)
        for event, text in zip(events, texts, strict=True)
    ])
    events[:] = [
        attrs.evolve(event, id=event_id, data_text=text)
        for event, event_id, text in zip(events, ids, texts, strict=True)
    ]
