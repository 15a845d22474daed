"""Frozen values for rows the storage layer hands out.

Rows come back from the backend as mappings or value tuples; the named constructors turn them into
these values, so nothing outside ``storage`` sees a cursor or a row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

#: A value a device column holds: text, a number, a flag or nothing.
ColumnValue = str | int | float | bool | None

#: A JSON object as stored (settings documents, delivery views). Its shape belongs to the caller;
#: storage keeps it as text and gives it back parsed.
JsonObject = dict[str, Any]


@attrs.frozen
class DeviceRow:
    """One device as stored. Timestamps are ISO strings like ``2025-06-19T12:00:00.000Z``."""

    id: int
    session_id: str
    user_id: str
    alias: str
    business_type: str | None
    phone_number: str | None
    description: str | None
    status: str
    status_reason: str | None
    created_at: str
    updated_at: str
    last_connection: str | None
    paired: bool
    push_name: str | None
    platform: str | None
    jid: str | None
    last_seen: str | None
    battery: int | None
    messages_sent: int
    messages_received: int
    last_activity: str | None
    api_key_hash: str
    ban_until: float | None = None  # epoch before which WhatsApp refuses the account
    reconnect_attempt: int = 0  # consecutive failed connects, for the backoff schedule

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DeviceRow:
        """Build from a ``devices`` row (``sqlite3.Row`` or any mapping with the column names)."""
        return cls(
            id=row["id"],
            session_id=row["session_id"],
            user_id=row["user_id"],
            alias=row["alias"],
            business_type=row["business_type"],
            phone_number=row["phone_number"],
            description=row["description"],
            status=row["status"],
            status_reason=row["status_reason"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            last_connection=row["last_connection"],
            paired=bool(row["paired"]),
            push_name=row["push_name"],
            platform=row["platform"],
            jid=row["jid"],
            last_seen=row["last_seen"],
            battery=row["battery"],
            messages_sent=row["messages_sent"],
            messages_received=row["messages_received"],
            last_activity=row["last_activity"],
            api_key_hash=row["api_key_hash"],
            ban_until=row["ban_until"],
            reconnect_attempt=row["reconnect_attempt"],
        )

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> DeviceRow:
        """Build from column values in ``DEVICE_COLUMNS`` order (the fast path for queries
        that select ``DEVICE_COLUMNS``; name lookups on ``sqlite3.Row`` are slow)."""
        v = tuple(values)
        return cls(*v[:12], bool(v[12]), *v[13:])  # type: ignore[call-arg]  # values come from the DB row


#: ``DeviceRow``'s fields, which are also the ``devices`` columns, in order.
DEVICE_COLUMNS = tuple(f.name for f in attrs.fields(DeviceRow))
assert DEVICE_COLUMNS[12] == "paired"

#: Columns of ``devices`` that ``update_device`` / ``record_transition`` may change.
MUTABLE_DEVICE_FIELDS = frozenset(
    f.name for f in attrs.fields(DeviceRow) if f.name not in {"id", "created_at"}
)


@attrs.frozen
class HistoryRow:
    """One change of a device's status. ``from_status`` is None for the row written at creation."""

    from_status: str | None
    to_status: str
    reason: str | None
    at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HistoryRow:
        return cls(
            from_status=row["from_status"],
            to_status=row["to_status"],
            reason=row["reason"],
            at=row["at"],
        )


@attrs.frozen
class HistoryEntry:
    """A :class:`HistoryRow` with its position in the device's history (``id`` grows with
    every change: the cursor of a page)."""

    id: int
    change: HistoryRow


@attrs.frozen
class WebhookBacklog:
    """A device's webhook outbox at a glance: deliveries waiting (and since when, epoch of the
    oldest one's creation, None if none waits) and deliveries that ran out of retries."""

    pending: int
    oldest_pending_at: float | None
    failed: int


@attrs.frozen
class MessageRow:
    """One message sent (``direction == "out"``) or received (``"in"``) by a device."""

    device_id: int
    message_id: str
    chat: str
    direction: str
    text: str | None
    status: str | None
    at: str
    sender: str | None = None
    #: The kind (``text``, ``image``, ... ``undecryptable``), the content as JSON text (the
    #: ``message_received`` event's content fields) and the id of the quoted message.
    type: str = "text"
    content: str | None = None
    quoted: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MessageRow:
        return cls(
            device_id=row["device_id"],
            message_id=row["message_id"],
            chat=row["chat"],
            direction=row["direction"],
            text=row["text"],
            status=row["status"],
            at=row["at"],
            sender=row["sender"],
            type=row["type"],
            content=row["content"],
            quoted=row["quoted"],
        )


#: The states of a webhook outbox row: ``pending`` (due at ``next_attempt_at``), ``delivered``,
#: ``failed`` (retries exhausted), ``disabled`` (the endpoint was disabled or removed).
OUTBOX_STATUSES = ("pending", "delivered", "failed", "disabled")


@attrs.frozen
class DeliveryTarget:
    """Where a device's deliveries go and the secrets that sign them (its webhook settings
    decide: ``supervisor.webhooks.settings``)."""

    # Kept out of repr: a query string may carry a token, and secrets are secrets.
    url: str = attrs.field(repr=False)
    secrets: tuple[str, ...] = attrs.field(repr=False)


@attrs.frozen
class Claim:
    """A cluster node taking the outbox rows it delivers (PostgreSQL only: see
    ``storage.pg.outbox``): its id, and how long the claim holds (seconds, by the database's
    clock)."""

    node_id: str
    seconds: float


@attrs.frozen
class Due:
    """A claimed outbox row with what its delivery needs (read in the claiming transaction)."""

    id: str
    device_id: int
    event_type: str
    payload: str
    attempts: int
    created_at: str
    # Kept out of repr: a query string may carry a token, and secrets are secrets.
    url: str = attrs.field(repr=False)
    secrets: tuple[str, ...] = attrs.field(repr=False)


@attrs.frozen
class Outage:
    """A storage outage in progress (``Store.outage``): writes fail for a reason that is not
    the caller's (see :class:`storage.errors.StorageUnavailable`).

    ``reason``: SQLite's message for the first failure; ``since``: ``trio.current_time()`` then;
    ``refused``: writes refused so far in this outage.
    """

    reason: str
    since: float
    refused: int


@attrs.frozen
class DatabaseStatistics:
    """A snapshot of the database's counters (``Store.statistics()``).

    ``jobs``: jobs run so far (including failed ones); ``failed_jobs``: jobs whose function
    raised (or whose transaction failed); ``commits``: transactions committed; ``batches``:
    transactions attempted; ``largest_batch``: most jobs in one transaction; ``queued``: jobs
    submitted and not yet taken by the thread.
    """

    jobs: int
    failed_jobs: int
    commits: int
    batches: int
    largest_batch: int
    queued: int


@attrs.frozen
class SendRow:
    """One tracked send as stored."""

    device_id: int
    message_id: str
    idempotency_key: str | None
    chat: str
    text: str
    origin: str
    state: str  # queued | sending | done
    status: str  # pending | sent | failed (receipts move the message's own status on)
    reason: str | None
    wa_id: str | None
    created_at: str
    accepted_epoch: float
    expires_epoch: float
    stuck: bool
    #: The message to send as JSON (``supervisor.outgoing.Outgoing.to_json``); None for a row
    #: stored before sends carried more than ``text``.
    payload: JsonObject | None = None


def envelope_text(
    event_id: int | None, type_: str, session_id: str, data: str, timestamp: str
) -> str:
    """An event's envelope as compact JSON text, ``{"id", "type", "sessionId", "data",
    "timestamp"}`` (no ``id`` when it was never logged); ``data`` is its JSON text already.

    The one encoder of the envelope: the live stream, a replay from the log and a webhook body
    all send the same bytes for the same event.
    """
    head = "" if event_id is None else f'"id":{int(event_id)},'
    return (
        f'{{{head}"type":{_text(type_)},"sessionId":{_text(session_id)},"data":{data},'
        f'"timestamp":{_text(timestamp)}}}'
    )


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@attrs.frozen
class LoggedEvent:
    """One event to append to the log: its device, type, ``data`` as JSON text, and when."""

    device_id: int
    session_id: str
    type: str
    data: str
    timestamp: str


@attrs.frozen
class EventRow:
    """One event of the log, as stored; ``id`` grows with every event appended."""

    id: int
    device_id: int
    session_id: str
    type: str
    data: str
    timestamp: str

    @property
    def envelope_text(self) -> str:
        """The envelope the WebSocket and webhooks send for it (:func:`envelope_text`)."""
        return envelope_text(self.id, self.type, self.session_id, self.data, self.timestamp)


@attrs.frozen
class EventQuery:
    """Which logged events a reader may and wants to see (None: no limit of that kind).

    ``device_ids`` is what the credential allows; ``selected_ids`` / ``selected_sessions``
    are the devices the reader picked (an event matches either); ``types`` the event types.
    """

    device_ids: frozenset[int] | None = None
    selected_ids: frozenset[int] | None = None
    selected_sessions: frozenset[str] | None = None
    types: frozenset[str] | None = None


#: The query that lets every event through.
ALL_EVENTS = EventQuery()


@attrs.frozen
class PrunedEvents:
    """One retention batch: how many events it deleted, and the id to go on after (None:
    nothing older than the cutoff is left past it)."""

    deleted: int
    after: int | None
