"""The storage interface: the repositories the core reads and writes through, as typed protocols.

Synopsis::

    row = await store.run(lambda repos: repos.devices.record_transition(
        device_id, from_status="connecting", to_status="connected",
        reason="engine_connected", at=now, paired=True, last_connection=now))

``Store.run(job)`` runs ``job(repos)`` inside one transaction of the backend and returns its
result after the commit. ``repos`` is a :class:`Repositories`: every repository in it is bound to
that transaction, so several writes in one job (a state change, its history row and the outbox
rows of its events) are stored together or not at all. A job must not keep ``repos`` beyond its
own call, and it runs off the Trio thread: it must not touch Trio.

The repositories are the only layer that speaks SQL; nothing above ``storage`` sees a connection,
a cursor or a statement. The SQLite backend (:mod:`storage.db` with :mod:`storage.repositories`)
implements these protocols; another backend implements the same ones, and the core does not
change.

Errors every repository may raise (``storage.errors``): ``Conflict`` for a unique value already
taken, ``NotFound`` for a missing device; a backend's own errors propagate as they are and roll
the job back.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from storage.message_interface import (
    MessageActionRepository,
    MessageHistoryRepository,
    MessageRepository,
    ReadRepository,
    SendRepository,
)
from storage.models import (
    ALL_EVENTS,
    Claim,
    DatabaseStatistics,
    DeliveryTarget,
    DeviceRow,
    Due,
    EventQuery,
    EventRow,
    HistoryEntry,
    HistoryRow,
    LoggedEvent,
    Outage,
    PrunedEvents,
    WebhookBacklog,
)
from storage.models import ColumnValue as ColumnValue
from storage.models import JsonObject as JsonObject

T = TypeVar("T")



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


class DeviceRepository(Protocol):
    """Devices (``DeviceRow``) with their status; each status change logs a history row."""

    def insert(
        self,
        *,
        user_id: str,
        alias: str,
        session_id: str,
        business_type: str | None,
        phone_number: str | None,
        description: str | None,
        api_key_hash: str,
        status: str,
        now: str,
    ) -> DeviceRow:
        """Store a new device and its first history row (``None -> status``, ``"created"``).

        Raises: ``Conflict`` (``field`` ``"session_id"``, ``"alias"`` or ``"api_key_hash"``).
        """
        ...

    def get(self, ref: str | int) -> DeviceRow | None:
        """The device with numeric id ``ref``, or session id ``ref`` (then an id of ASCII digits).

        Raises: nothing of its own.
        """
        ...

    def get_by_key_hash(self, key_hash: str) -> DeviceRow | None:
        """The device whose ``api_key_hash`` equals ``key_hash``.

        Raises: nothing of its own.
        """
        ...

    def all(self) -> list[DeviceRow]:
        """Every device, ordered by id.

        Raises: nothing of its own.
        """
        ...

    def page(
        self,
        *,
        user_id: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[DeviceRow], int]:
        """One page of devices by id, filtered by owner and/or status, and the matching total.

        Raises: nothing of its own.
        """
        ...

    def count_by_status(self) -> dict[str, int]:
        """Number of devices per status; statuses with no device are absent.

        Raises: nothing of its own.
        """
        ...

    def update(self, device_id: int, **fields: ColumnValue) -> DeviceRow:
        """Set the given columns (any ``DeviceRow`` field but ``id``, ``created_at``).

        Raises: ``NotFound``; ``Conflict`` for a taken alias, session id or key hash;
        ``TypeError`` for an unknown field.
        """
        ...

    def record_transition(
        self,
        device_id: int,
        *,
        from_status: str | None,
        to_status: str,
        reason: str | None,
        at: str,
        **extra_fields: ColumnValue,
    ) -> DeviceRow:
        """Set ``status``, ``status_reason``, ``updated_at`` and ``extra_fields``; log the change.

        Raises: ``NotFound`` (nothing written); ``TypeError`` for an unknown field.
        """
        ...

    def increment_stats(
        self, device_id: int, *, sent: int = 0, received: int = 0, at: str
    ) -> DeviceRow:
        """Add to the message counters and set ``last_activity = at``.

        Raises: ``NotFound``.
        """
        ...

    def delete(self, device_id: int) -> bool:
        """Remove the device and everything that belongs to it; False if there was none.

        Raises: nothing of its own.
        """
        ...


class HistoryRepository(Protocol):
    """The status changes of each device, in order."""

    def of(self, device_id: int) -> list[HistoryRow]:
        """The device's status changes, oldest first (empty for an unknown device).

        Raises: nothing of its own.
        """
        ...


    def page(self, device_id: int, before: int | None, limit: int) -> list[HistoryEntry]:
        """Up to ``limit`` status changes, newest first, older than the entry ``before`` (from
        the newest when None).

        Raises: nothing of its own.
        """
        ...


class SettingsRepository(Protocol):
    """Per-device settings documents, one per ``kind`` (``"ai"``, ``"webhook"``)."""

    def get(self, device_id: int, kind: str) -> JsonObject | None:
        """The stored document of this kind, or None.

        Raises: nothing of its own.
        """
        ...

    def put(self, device_id: int, kind: str, value: JsonObject) -> None:
        """Replace the document of this kind (insert or overwrite).

        Raises: ``NotFound``; ``TypeError`` / ``ValueError`` if ``value`` is not JSON.
        """
        ...

    def delete(self, device_id: int, kind: str) -> bool:
        """Remove the document of this kind; False if there was none.

        Raises: nothing of its own.
        """
        ...

    def devices_with(self, kind: str) -> list[int]:
        """The ids of the devices that have a document of this kind.

        Raises: nothing of its own.
        """
        ...


class CredentialRepository(Protocol):
    """Each device's engine credentials: an opaque blob."""

    def get(self, device_id: int) -> bytes | None:
        """The device's credentials, or None.

        Raises: nothing of its own.
        """
        ...

    def put(self, device_id: int, data: bytes) -> None:
        """Store (or replace) the device's credentials.

        Raises: ``NotFound``.
        """
        ...

    def delete(self, device_id: int) -> bool:
        """Wipe the device's credentials; False if there were none.

        Raises: nothing of its own.
        """
        ...

    def all(self) -> dict[int, bytes]:
        """Every device's credentials, by device id.

        Raises: nothing of its own.
        """
        ...


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


class Repositories(Protocol):
    """Every repository, bound to one transaction (what a :meth:`Store.run` job receives)."""

    @property
    def devices(self) -> DeviceRepository: ...

    @property
    def history(self) -> HistoryRepository: ...

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def message_history(self) -> MessageHistoryRepository: ...

    @property
    def settings(self) -> SettingsRepository: ...

    @property
    def credentials(self) -> CredentialRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def sends(self) -> SendRepository: ...

    @property
    def message_actions(self) -> MessageActionRepository: ...

    @property
    def reads(self) -> ReadRepository: ...

    @property
    def events(self) -> EventRepository: ...


class Store(Protocol):
    """A database the core runs jobs against (``storage.db.Database`` for SQLite)."""

    async def run(self, job: Callable[[Repositories], T]) -> T:
        """Run ``job(repos)`` in one transaction; return its result after the commit.

        Raises: what ``job`` raised (its work rolled back); ``TransactionFailed``;
        ``DatabaseClosed``.
        """
        ...

    def statistics(self) -> DatabaseStatistics:
        """Counters of the database's work so far; cheap, safe to call from Trio at any time.

        Raises: nothing.
        """
        ...

    @property
    def outage(self) -> Outage | None:
        """The storage outage in progress (writes fail with ``StorageUnavailable``), or None."""
        ...

    def raise_if_unavailable(self) -> None:
        """Raise ``StorageUnavailable`` at once if a write failed for an outage moments ago."""
        ...

    async def probe(self) -> Outage | None:
        """:attr:`outage`, after checking (with a write, at most every few seconds) whether it
        is over."""
        ...
