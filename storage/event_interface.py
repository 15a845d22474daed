"""The storage interface of events: the durable event log every published event is appended to,
and the webhook outbox that delivers the events a device's webhook wants, with the claims that
share its rows among cluster nodes.

Part of :mod:`storage.interface` (its :class:`~storage.interface.Repositories` holds these), in
a module of its own so each stays one readable page; the same rules hold (see there).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from storage.models import (
    ALL_EVENTS,
    Claim,
    DeliveryTarget,
    Due,
    EventQuery,
    EventRow,
    JsonObject,
    LoggedEvent,
    PrunedEvents,
    WebhookBacklog,
)


class OutboundEvent(Protocol):
    """An event the webhook outbox may store: its ``type``, its ``id`` in the event log (None:
    not logged), and its envelope on demand.

    ``to_json()`` returns ``{"id", "type", "sessionId", "data", "timestamp"}``; it is called
    only for the events a device's webhook wants (a body is stored only for those the log does
    not keep whole; the others' are made from the log when they are delivered).
    """

    @property
    def type(self) -> str: ...

    @property
    def id(self) -> int | None: ...

    @property
    def logged_whole(self) -> bool:
        """Whether the log keeps the whole envelope (else the outbox row keeps its body)."""
        ...

    def to_json(self) -> Mapping[str, object]: ...


class OutboxRepository(Protocol):
    """The webhook outbox: one row per event to deliver, one attempt row per try."""

    def get_webhook_settings(self, device_id: int) -> JsonObject | None:
        """The device's webhook settings document, or None.

        Raises: nothing of its own.
        """
        ...

    def put_webhook_settings(self, device_id: int, value: JsonObject) -> None:
        """Store the device's webhook settings document.

        Raises: ``NotFound``.
        """
        ...

    def enqueue_events(
        self,
        device_id: int,
        events: Sequence[Mapping[str, object] | OutboundEvent],
        *,
        wanted: Collection[str],
        now: float | None = None,
    ) -> int:
        """Store the events whose type is in ``wanted``; how many rows were written.

        Raises: nothing of its own.
        """
        ...

    def claim_due(
        self,
        *,
        now: float,
        limit: int,
        exclude: Iterable[str] = (),
        busy: Mapping[int, int] | None = None,
        per_device: int | None = None,
        target: Callable[[int], DeliveryTarget | None],
        claim: Claim | None = None,
    ) -> list[Due]:
        """Up to ``limit`` pending rows due at ``now``, with the URL and active secrets that
        ``target(device_id)`` gives (None: the rows become ``disabled``); with a ``claim`` (a
        cluster node, PostgreSQL only), written as that node's until the claim expires.

        Raises: nothing of its own.
        """
        ...

    def next_due(
        self,
        exclude: Iterable[str] = (),
        exclude_devices: Iterable[int] = (),
        claim: Claim | None = None,
    ) -> float | None:
        """When the earliest pending row is due (epoch; another node's claimed row: when the
        claim expires), or None.

        Raises: nothing of its own.
        """
        ...

    def record_attempt(
        self,
        outbox_id: str,
        *,
        at: str,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        status: str,
        next_attempt_at: float | None = None,
    ) -> bool:
        """Append an attempt and move the row to ``status``; False if the row is gone.

        Raises: ``ValueError`` for an unknown status.
        """
        ...

    def release(self, claim: Claim) -> int:
        """Clear the claims of ``claim``'s node on its pending rows (it stops delivering); how
        many. PostgreSQL only.

        Raises: ValueError on SQLite.
        """
        ...

    def disable_pending(self, device_id: int) -> int:
        """Mark the device's pending rows ``disabled``; how many.

        Raises: nothing of its own.
        """
        ...

    def list_deliveries(
        self, device_id: int, *, status: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[JsonObject], int]:
        """The device's deliveries, newest first, with their attempts; and the total.

        Raises: nothing of its own.
        """
        ...

    def backlog(self, device_id: int) -> WebhookBacklog:
        """How many of the device's deliveries wait, since when, and how many failed.

        Raises: nothing of its own.
        """
        ...

    def get_delivery(self, device_id: int, outbox_id: str) -> JsonObject | None:
        """One delivery of the device with its attempts, or None.

        Raises: nothing of its own.
        """
        ...

    def redeliver(self, device_id: int, outbox_id: str, *, now: float) -> JsonObject | None:
        """Put a delivery back to ``pending``, due at ``now``; None if there is none.

        Raises: nothing of its own.
        """
        ...


class EventRepository(Protocol):
    """The durable event log: every published event, by increasing ``id``."""

    def append(self, events: Sequence[LoggedEvent]) -> list[int]:
        """Log ``events`` in order, in the transaction that stores their cause; their ids (each
        larger than any id handed out before, never reused).

        Raises: nothing of its own.
        """
        ...

    def bounds(self) -> tuple[int, int]:
        """``(oldest, newest)`` ids kept; ``(0, 0)`` when the log is empty.

        Raises: nothing of its own.
        """
        ...

    def after(
        self, since: int, *, until: int, limit: int, query: EventQuery = ALL_EVENTS
    ) -> list[EventRow]:
        """Up to ``limit`` events with ``since < id <= until`` that ``query`` lets through,
        oldest first (the id range bounds the rows examined).

        Raises: nothing of its own.
        """
        ...

    def pinned(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` a pending webhook delivery references (kept by retention).

        Raises: nothing of its own.
        """
        ...

    def prune(self, before: str, *, after: int, limit: int) -> PrunedEvents:
        """Delete the events stamped before ``before`` (ISO) among the ``limit`` oldest with an
        id above ``after``, keeping those :meth:`pinned`; a finished delivery of a deleted event
        keeps its body in the outbox row.

        Raises: nothing of its own.
        """
        ...
