"""Events and the EventBus that fans them out to subscribers.

Usage::

    bus.publish(Event(session_id, device_id, DeviceConnected(), now_iso()))
    async with bus.subscribe(types=frozenset({"device_connected"})) as sub:
        async for event in sub:
            ...
        if sub.overflowed:
            ...  # this subscriber fell behind and was dropped

Resource handling: every subscriber has a bounded queue. :meth:`EventBus.publish` is
synchronous and never blocks: an event goes into each matching subscriber's queue with
``send_nowait``; a subscriber whose queue is full is dropped on the spot (its iteration ends
and ``overflowed`` is set), so a slow consumer can neither stall an actor nor make memory grow.

Cluster-wide streams (what a WebSocket reads: :meth:`EventBus.stream`): on one node they are
ordinary subscriptions. In a cluster, the node's feed of the event log
(:mod:`supervisor.cluster.feed`) is attached to the bus (:meth:`EventBus.attach_feed`); a
stream then receives what the feed reads back from the log, every node's events in id order
(:meth:`EventBus.publish_logged`), and nothing of :meth:`EventBus.publish`, so an event of this
node is not sent twice. The other subscribers (auto-reply, the health check) keep receiving
this node's events from :meth:`EventBus.publish`, as on one node.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, Protocol, TypeVar

import attrs
import trio

from storage.models import envelope_text

from .payloads import Payload, QrShown, to_log, to_wire

log = logging.getLogger("wasup.events")


@attrs.frozen
class Event:
    """One thing that happened to one device: its payload record (``data``) and when.

    ``id`` is its place in the durable event log (:mod:`supervisor.event_log`), set by the job
    that logs it with its cause; an event is published only once logged. Nothing is encoded
    when an event is made: :meth:`to_json` turns the payload into its wire JSON through
    :func:`supervisor.payloads.to_wire` (a QR code's PNG is rendered then), and
    :attr:`json_text` is that envelope encoded, once, however many subscribers send it
    (from ``data_text``, the JSON the log stored, when there is one).
    """

    session_id: str
    device_id: int
    data: Payload
    timestamp: str
    id: int | None = None
    data_text: str | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def type(self) -> str:
        """The wire type of the payload (``device_status``, ``message_received``, ...)."""
        return self.data.type

    def to_json(self) -> dict[str, object]:
        """The envelope sent on the WebSocket and in webhooks (no ``id`` if not logged)."""
        head: dict[str, object] = {} if self.id is None else {"id": self.id}
        return head | {
            "type": self.data.type,
            "sessionId": self.session_id,
            "data": to_wire(self.data),
            "timestamp": self.timestamp,
        }

    def wire_data(self) -> str:
        """``data`` as compact JSON text."""
        if self.data_text is not None:
            return self.data_text
        return json.dumps(to_wire(self.data), separators=(",", ":"), ensure_ascii=False)

    def log_data(self) -> str:
        """``data`` as the event log keeps it (:func:`supervisor.payloads.to_log`)."""
        if self.logged_whole:
            return self.wire_data()
        return json.dumps(to_log(self.data), separators=(",", ":"), ensure_ascii=False)

    @property
    def logged_whole(self) -> bool:
        """Whether the log keeps all of ``data`` (all but a QR code's image): a webhook body
        can then be made from the log."""
        return not isinstance(self.data, QrShown)

    @functools.cached_property
    def json_text(self) -> str:
        """:meth:`to_json` as compact JSON text, encoded on first use and then kept."""
        return envelope_text(self.id, self.type, self.session_id, self.wire_data(),
                             self.timestamp)


@attrs.frozen
class DeviceSelection:
    """Devices a subscriber picked by numeric id or by session id.

    A session id matches whichever device carries it when the event is published, so a
    subscriber may name a device before it is created.
    """

    ids: frozenset[int] = frozenset()
    session_ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, refs: frozenset[str]) -> DeviceSelection:
        """Numeric ids (ASCII digits) and session ids, from references a client gave."""
        ids = frozenset(int(ref) for ref in refs if ref.isascii() and ref.isdigit())
        return cls(ids=ids, session_ids=frozenset(ref for ref in refs if not ref.isdigit()))

    def matches(self, event: Envelope) -> bool:
        return event.device_id in self.ids or event.session_id in self.session_ids


class Envelope(Protocol):
    """What a stream sends of an event: its envelope's JSON text, with what its filters read.
    An :class:`Event` is one; so is a :class:`LoggedEnvelope`, an event read back from the
    log."""

    @property
    def id(self) -> int | None: ...

    @property
    def device_id(self) -> int: ...

    @property
    def session_id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def json_text(self) -> str: ...


@attrs.frozen
class LoggedEnvelope:
    """An event as the log holds it (another node's, in a cluster): its envelope's JSON
    text, made once however many streams send it."""

    id: int
    device_id: int
    session_id: str
    type: str
    json_text: str


E = TypeVar("E", bound=Envelope)


@attrs.define(eq=False)
class Subscription(Generic[E]):
    """A subscriber's view of the bus; use as an async context manager, then iterate.

    It receives the events that pass all three filters: ``device_ids`` (None: any device),
    ``selection`` (None: any device) and ``types`` (None: any type).
    """

    _bus: EventBus
    device_ids: frozenset[int] | None
    types: frozenset[str] | None
    _send: trio.MemorySendChannel[E]
    _receive: trio.MemoryReceiveChannel[E]
    selection: DeviceSelection | None = None
    overflowed: bool = False

    def wants(self, event: Envelope) -> bool:
        return (
            (self.device_ids is None or event.device_id in self.device_ids)
            and (self.types is None or event.type in self.types)
            and (self.selection is None or self.selection.matches(event))
        )

    def _offer(self, event: E) -> bool:
        """Queue ``event``; False when the subscriber is full and has been dropped."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.overflowed = True
            self._send.close()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    def close(self) -> None:
        self._bus._forget(self)
        self._send.close()

    async def __aenter__(self) -> Subscription[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self._receive.aclose()

    def __aiter__(self) -> AsyncIterator[E]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[E]:
        async for event in self._receive:
            yield event

    async def receive(self) -> E:
        """The next event; raises ``trio.EndOfChannel`` once dropped or closed."""
        return await self._receive.receive()


@attrs.define(eq=False)
class EventBus:
    """Fans events out to subscribers through bounded queues."""

    default_maxsize: int = 256
    _subscribers: set[Subscription[Event]] = attrs.field(factory=set)
    #: The streams the feed of the log fills (cluster mode only).
    _streams: set[Subscription[Envelope]] = attrs.field(factory=set)
    _taps: list[Callable[[Event], None]] = attrs.field(factory=list)
    #: Whether a feed of the log fills the streams (cluster mode).
    fed: bool = False
    published: int = 0
    dropped_subscribers: int = 0

    def subscribe(
        self,
        *,
        device_ids: frozenset[int] | None = None,
        types: frozenset[str] | None = None,
        selection: DeviceSelection | None = None,
        maxsize: int | None = None,
    ) -> Subscription[Event]:
        """A new subscription to this node's events; they are filtered here, before they take
        room in its queue (see :class:`Subscription` for the filters)."""
        send, receive = trio.open_memory_channel[Event](maxsize or self.default_maxsize)
        sub = Subscription(self, device_ids, types, send, receive, selection)
        self._subscribers.add(sub)
        return sub

    def stream(
        self,
        *,
        device_ids: frozenset[int] | None = None,
        types: frozenset[str] | None = None,
        selection: DeviceSelection | None = None,
        maxsize: int | None = None,
    ) -> Subscription[Envelope]:
        """A new subscription to every event of the filters' devices, wherever they happen:
        in a cluster (a feed attached), every node's events as the feed reads them from the
        log, in id order; else this node's, as :meth:`subscribe`."""
        if not self.fed:
            local: Subscription[Envelope] = self.subscribe(  # type: ignore[assignment]
                device_ids=device_ids, types=types, selection=selection, maxsize=maxsize
            )  # an Event is an Envelope; the stream only reads (see Envelope)
            return local
        send, receive = trio.open_memory_channel[Envelope](maxsize or self.default_maxsize)
        sub = Subscription(self, device_ids, types, send, receive, selection)
        self._streams.add(sub)
        return sub

    def attach_feed(self) -> None:
        """From now on, :meth:`stream` subscriptions are filled by :meth:`publish_logged`
        (the node's feed of the log calls this before any stream opens)."""
        self.fed = True

    def _forget(self, sub: Subscription[E]) -> None:
        self._subscribers.discard(sub)  # in one set or the other
        self._streams.discard(sub)

    def tap(self, fn: Callable[[Event], None]) -> None:
        """Call ``fn(event)`` synchronously for every event (it must be quick and not raise)."""
        self._taps.append(fn)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers) + len(self._streams)

    def has_subscribers(self) -> bool:
        """Whether any subscriber (not counting taps) would receive events now."""
        return bool(self._subscribers)

    def has_streams(self) -> bool:
        """Whether any stream fed from the log is open (cluster mode)."""
        return bool(self._streams)

    def wants(self, type_: str, device_id: int) -> bool:
        """Whether any subscriber or stream might receive an event of this type for this
        device (a subscriber's ``selection`` is not consulted: it may name the device by
        session id)."""
        return any(
            (sub.device_ids is None or device_id in sub.device_ids)
            and (sub.types is None or type_ in sub.types)
            for subs in (self._subscribers, self._streams) for sub in subs
        )

    def publish(self, event: Event) -> None:
        """Hand this node's ``event`` to the taps and the subscribers (and to the streams,
        unless a feed of the log fills them)."""
        self.published += 1
        for fn in self._taps:
            try:
                fn(event)
            except Exception:
                log.exception("event tap failed for %s", event.type)
        if self._subscribers:
            _fan_out(self, self._subscribers, event)

    def publish_logged(self, envelope: Envelope) -> None:
        """Hand ``envelope``, read from the log by the node's feed, to the streams."""
        if self._streams:
            _fan_out(self, self._streams, envelope)


def _fan_out(bus: EventBus, subs: set[Subscription[E]], event: E) -> None:
    """Offer ``event`` to each of ``subs`` that wants it, dropping the full ones."""
    for sub in list(subs):
        if sub.wants(event) and not sub._offer(event):
            subs.discard(sub)
            bus.dropped_subscribers += 1
            log.warning(
                "event subscriber dropped: it fell behind (queue of %d full)",
                sub._send.statistics().max_buffer_size,
            )
