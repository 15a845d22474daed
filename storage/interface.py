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
change. The protocols of messages live in :mod:`storage.message_interface`, those of the event
log and the webhook outbox in :mod:`storage.event_interface`; this module re-exports the latter.

Errors every repository may raise (``storage.errors``): ``Conflict`` for a unique value already
taken, ``NotFound`` for a missing device; a backend's own errors propagate as they are and roll
the job back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from storage.event_interface import EventRepository as EventRepository
from storage.event_interface import OutboundEvent as OutboundEvent
from storage.event_interface import OutboxRepository as OutboxRepository
from storage.message_interface import (
    MessageActionRepository,
    MessageHistoryRepository,
    MessageRepository,
    ReadRepository,
    SendRepository,
)
from storage.models import ColumnValue as ColumnValue
from storage.models import (
    DatabaseStatistics,
    DeviceRow,
    HistoryEntry,
    HistoryRow,
    Outage,
)
from storage.models import JsonObject as JsonObject

T = TypeVar("T")


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
