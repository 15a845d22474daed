"""The event log over HTTP (under ``/api/whatsapp``).

::

    GET /events?since=&sessionId=&type=&limit=
        -> 200 {"success": true, "data": [<event envelope>, ...],
                "pagination": {"limit", "hasMore", "nextSince", "oldestId"}}     oldest first

The events logged after ``since`` (an event id; 0 or absent: from the oldest kept), each the
envelope the WebSocket sends (docs/events.md), in id order. ``sessionId`` (session ids or
numeric device ids, comma-separated) and ``type`` (event types, comma-separated) filter them, as
the WebSocket's ``sessionId`` and ``events`` do. Pass ``pagination.nextSince`` as ``since`` for
the next page; ``hasMore`` false means the page reached the newest event logged. A page may hold
fewer than ``limit`` events (even none) and still not be the last: each page examines a bounded
range of ids. ``oldestId`` is the oldest event the log keeps (retention, docs/configuration.md):
a client whose last id is below it has missed events that are gone. The operator token sees
every device's events, a device's API key its own device's only.

Errors: 400 INVALID_REQUEST naming the parameter (``since``: an event id; ``limit``: 1 to
500; ``type``: a known event type; ``sessionId``).
"""

from __future__ import annotations

import json
import re
from functools import partial

from quart import Blueprint, Response, request

from api.auth import current_principal
from api.routes_devices import ok
from api.state import current_state
from api.validation import int_param
from api.ws.handshake import StreamFilter, since_param
from supervisor.errors import InvalidRequest
from supervisor.event_log import read_page
from supervisor.payloads import EVENT_TYPES

bp = Blueprint("events", __name__)

LIMIT_DEFAULT = 100
LIMIT_MAX = 500

#: ``sessionId`` and ``type``: comma lists of session ids or numeric device ids, and of event
#: types; the same patterns are in docs/openapi.yaml.
REFS = re.compile(r"[A-Za-z0-9_.-]{1,200}(,[A-Za-z0-9_.-]{1,200})*")
TYPES = re.compile(rf"({'|'.join(sorted(EVENT_TYPES))})(,({'|'.join(sorted(EVENT_TYPES))}))*")


@bp.get("/events")
async def list_events() -> Response:
    since = since_param(request.args.getlist("since")) or 0
    limit = int_param(request.args, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    chosen = StreamFilter(refs=_listed("sessionId", REFS), types=_listed("type", TYPES))
    principal = current_principal()
    device_ids = None if principal.device_id is None else frozenset({principal.device_id})
    page = await current_state().sup.db.run(
        partial(read_page, since=since, limit=limit, query=chosen.query(device_ids))
    )
    return ok(
        [json.loads(row.envelope_text) for row in page.rows],
        pagination={
            "limit": limit,
            "hasMore": page.has_more,
            "nextSince": page.next_since,
            "oldestId": page.oldest,
        },
    )



def _listed(name: str, pattern: re.Pattern[str]) -> frozenset[str] | None:
    """The values of the comma list ``name`` (None when absent).

    Raises: InvalidRequest(field=name) for a value the pattern refuses, or a repeated name.
    """
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1 or pattern.fullmatch(values[0]) is None:
        what = "event types" if name == "type" else "session ids or device ids"
        raise InvalidRequest(f"{name}: must be one comma-separated list of {what}", field=name)
    return frozenset(values[0].split(","))
