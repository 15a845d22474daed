"""The WebSocket handshake: who is connecting and what they asked to see.

An :class:`Offer` lists the token candidates a handshake carries (query, header, subprotocols);
:func:`admit` authenticates them through :mod:`api.auth`, the same code as HTTP, and parses the
query filters into a :class:`StreamFilter`. Every refusal is an exception that
:func:`api.errors.response_for` turns into the HTTP error envelope, as for any HTTP request.

Usage::

    admitted = await admit(state, Handshake.of(ws), closing=streams.closing)
    bus.subscribe(device_ids=admitted.device_ids, selection=admitted.stream_filter.selection)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs
from quart.wrappers import Websocket
from werkzeug.datastructures import Headers, MultiDict

from api.auth import ONE_TOKEN, Principal, authenticate, charge, refuse
from api.errors import ApiError
from api.state import AppState
from api.validation import check_params
from storage import EventQuery
from supervisor.errors import InvalidRequest
from supervisor.events import DeviceSelection
from supervisor.payloads import EVENT_TYPES

#: The subprotocol name a browser may offer next to its token, so that the token itself is
#: not echoed back in the handshake response.
SUBPROTOCOL = "wasup"

MAX_FILTER_VALUES = 100
MAX_FILTER_LENGTH = 200
MAX_OFFERED_PROTOCOLS = 8


@attrs.frozen
class Handshake:
    """What wasup reads from a WebSocket handshake (the query, headers, offered protocols)."""

    args: MultiDict[str, str]
    headers: Headers
    subprotocols: tuple[str, ...]
    client_address: str

    @classmethod
    def of(cls, ws: Websocket) -> Handshake:
        client = ws.scope.get("client")
        return cls(
            args=ws.args,
            headers=ws.headers,
            subprotocols=tuple(ws.requested_subprotocols),
            client_address=str(client[0]) if client else "unknown",
        )


@attrs.frozen
class StreamFilter:
    """What one connection asked to see, on top of what its credential allows.

    ``refs`` holds session ids and numeric device ids (as strings); ``None`` means all.
    """

    refs: frozenset[str] | None = None
    types: frozenset[str] | None = None
    #: Resume after this event id (the log's events first, then the live stream); None: live.
    since: int | None = None

    @classmethod
    def from_query(cls, args: MultiDict[str, str]) -> StreamFilter:
        """Parse ``sessionId`` and ``events`` (each repeated or a comma list; empty values are
        ignored) and ``since``.

        Raises: InvalidRequest (naming the parameter) for an unknown event type, too many
        values or an over-long one, a ``since`` that is not one event id.
        """
        refs = _split(args.getlist("sessionId"), "sessionId")
        types = _split(args.getlist("events"), "events")
        if types is not None:
            unknown = sorted(types - EVENT_TYPES)
            if unknown:
                raise InvalidRequest(f"unknown event type: {unknown[0]}", "events")
        return cls(refs=refs, types=types, since=since_param(args.getlist("since")))

    def query(self, device_ids: frozenset[int] | None) -> EventQuery:
        """What of the event log this connection sees, as a credential limited to
        ``device_ids`` (None: all)."""
        chosen = self.selection
        return EventQuery(
            device_ids=device_ids,
            selected_ids=None if chosen is None else chosen.ids,
            selected_sessions=None if chosen is None else chosen.session_ids,
            types=self.types,
        )

    @property
    def selection(self) -> DeviceSelection | None:
        """The devices ``refs`` name, for the bus to filter by (None: every device)."""
        return None if self.refs is None else DeviceSelection.of(self.refs)


#: An event id a client may resume from: 0 (everything kept) or a positive id of at most 18
#: digits; the same pattern is in docs/openapi.yaml (``EventId``).
SINCE_PATTERN = r"^(0|[1-9][0-9]{0,17})$"


def since_param(values: list[str]) -> int | None:
    """The ``since`` query parameter (None when absent).

    Raises: InvalidRequest(field="since") unless it is one event id.
    """
    if not values:
        return None
    if len(values) > 1 or re.fullmatch(SINCE_PATTERN, values[0]) is None:
        raise InvalidRequest("since: must be one event id (a non-negative integer)", "since")
    return int(values[0])


def _split(values: Iterable[str], field: str) -> frozenset[str] | None:
    items = [part.strip() for value in values for part in value.split(",")]
    items = [item for item in items if item]
    if not items:
        return None
    if len(items) > MAX_FILTER_VALUES:
        raise InvalidRequest(f"too many values (at most {MAX_FILTER_VALUES})", field)
    if any(len(item) > MAX_FILTER_LENGTH for item in items):
        raise InvalidRequest(f"value too long (at most {MAX_FILTER_LENGTH} characters)", field)
    return frozenset(items)


@attrs.frozen
class Offer:
    """The credentials a handshake carries and the subprotocol to answer with.

    ``tokens`` holds every value offered as a credential, in order: each ``token`` query
    parameter, each ``X-API-TOKEN`` header, each offered subprotocol but ``wasup`` (of the first
    :data:`MAX_OFFERED_PROTOCOLS`). A handshake is admitted only when every one of them is valid
    and all name the same credential: a bad token anywhere refuses it. ``echo`` is ``wasup``
    when the client offered it (the token is then never reflected), else the first token
    offered as a subprotocol, else None.
    """

    tokens: tuple[str, ...]
    echo: str | None

    @classmethod
    def from_handshake(cls, handshake: Handshake) -> Offer:
        tokens = [value.strip() for value in handshake.args.getlist("token")]
        tokens += [value.strip() for value in handshake.headers.getlist("X-API-TOKEN")]
        offered = [p.strip() for p in handshake.subprotocols[:MAX_OFFERED_PROTOCOLS] if p.strip()]
        protocol_tokens = [p for p in offered if p != SUBPROTOCOL]
        echo: str | None = None
        if SUBPROTOCOL in handshake.subprotocols:
            echo = SUBPROTOCOL
        elif protocol_tokens:
            echo = protocol_tokens[0]
        return cls(tokens=tuple(dict.fromkeys(tokens + protocol_tokens)), echo=echo)


@attrs.frozen
class Admitted:
    """An accepted handshake: who, which subprotocol to echo, and what they want to see."""

    principal: Principal
    subprotocol: str | None
    stream_filter: StreamFilter

    @property
    def device_ids(self) -> frozenset[int] | None:
        """The devices the credential may see (None: all)."""
        device_id = self.principal.device_id
        return None if device_id is None else frozenset({device_id})


async def admit(state: AppState, handshake: Handshake, *, closing: bool) -> Admitted:
    """Authenticate ``handshake`` and parse its filters, in the order the API documents.

    Raises: ApiError 401/429 from :mod:`api.auth` (no valid credential; failed attempts share
    the HTTP per-address budget), InvalidRequest for a bad filter, ApiError 503 while the
    server shuts down (``closing``), ApiError 429 from the credential's rate limit (a
    handshake costs one request).
    """
    if len(handshake.headers.getlist("X-API-TOKEN")) > 1:
        refuse(state, handshake.client_address, ONE_TOKEN)
    offer = Offer.from_handshake(handshake)
    if not offer.tokens:
        refuse(state, handshake.client_address, "missing api token")
    principal: Principal | None = None
    for token in offer.tokens:
        found = await authenticate(state, token)
        if found is None:
            refuse(state, handshake.client_address, "invalid api token")
        if principal is not None and found != principal:
            refuse(state, handshake.client_address, "conflicting api tokens")
        principal = found
    assert principal is not None  # offer.tokens is not empty
    check_params({}, handshake.args.items(multi=True))
    stream_filter = StreamFilter.from_query(handshake.args)
    if closing:
        raise ApiError(
            503, "SERVICE_UNAVAILABLE", "server shutting down", headers={"Retry-After": "5"}
        )
    charge(state, principal)
    return Admitted(principal=principal, subprotocol=offer.echo, stream_filter=stream_filter)


def connection_cap(most: int) -> ApiError:
    """The 429 for a credential already holding ``most`` open connections."""
    return ApiError(
        429, "RATE_LIMIT_EXCEEDED",
        f"too many websocket connections for this credential (at most {most})",
        headers={"Retry-After": "5"},
    )

