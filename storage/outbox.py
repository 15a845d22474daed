"""The webhook outbox in SQLite: one row per event to deliver, and one attempts row per try.

The ``outbox`` repository, bound to the database thread's connection and called inside
``Database.run`` (so inside a transaction). :meth:`SqliteOutbox.enqueue_events` is called by the
device actor in the same transaction as the state change or message that caused the events: an
event is stored for delivery if and only if its cause is stored. The dispatcher
(``supervisor.webhooks.dispatcher``) claims due rows, delivers them and records each attempt
here; nothing about a delivery lives anywhere else, so a process killed at any point resumes from
these tables (at-least-once).

Row life: ``pending`` (``next_attempt_at`` says when) → ``delivered`` | ``failed`` (retries
exhausted) | ``disabled`` (the endpoint was disabled or removed). A redelivery puts any row
back to ``pending``.

The device's webhook settings (``settings`` kind ``"webhook"``, a document whose shape
``supervisor.webhooks.settings`` defines) are stored here as an opaque document: which events are stored comes from the caller
(``enqueue_events(wanted=...)``, read in the same transaction, so the same-transaction rule
also covers a settings change), and so do where a claimed row goes and what signs it
(``claim_due(target=...)``). Only ``supervisor.webhooks.settings`` knows the document's keys.

Enqueue, claim and attempt run per event and per delivery, and keep prepared SQL:
``json_each`` and arithmetic updates have no sqlite-utils equivalent, and its inserts cost
about ten times a prepared one (see ``storage.devices``). The delivery views use sqlite-utils.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs
import sqlite_utils

from common.clock import iso, now_epoch, parse_iso
from common.ids import new_message_id
from storage.event_interface import OutboundEvent
from storage.models import (
    OUTBOX_STATUSES,
    Claim,
    DeliveryTarget,
    Due,
    EventRow,
    WebhookBacklog,
    envelope_text,
)
from storage.settings import SqliteSettings

__all__ = ["STATUSES", "WEBHOOK_KIND", "Claim", "Due", "SqliteOutbox", "body_of"]

WEBHOOK_KIND = "webhook"
STATUSES = OUTBOX_STATUSES


def body_of(envelope: Mapping[str, object]) -> str:
    """The exact JSON body sent (and signed) for an event envelope (``{"id", "type",
    "sessionId", "data", "timestamp"}``, no ``id`` for an event that was not logged): the
    same bytes as the WebSocket's (:func:`storage.models.envelope_text`)."""
    event_id = envelope.get("id")
    session_id = envelope.get("sessionId")
    timestamp = envelope.get("timestamp")
    return envelope_text(
        event_id if isinstance(event_id, int) else None,
        str(envelope["type"]),
        session_id if isinstance(session_id, str) else "",
        json.dumps(envelope.get("data", {}), separators=(",", ":"), ensure_ascii=False,
                   default=str),
        timestamp if isinstance(timestamp, str) else "",
    )


def _epoch(timestamp: object) -> float:
    """Epoch of an envelope's ISO timestamp (the actor took it from Trio's clock)."""
    if isinstance(timestamp, str):
        try:
            return parse_iso(timestamp)
        except ValueError:
            pass
    return now_epoch()


_COLUMNS = (
    "id, device_id, event_type, created_at, next_attempt_at, attempts, status, payload, event_id"
)
_EVENT_COLS = "e.id, e.device_id, e.session_id, e.type, e.data, e.timestamp"


def _body(payload: str, event: Sequence[Any]) -> str:
    """A delivery's body: the row's own ``payload`` if it has one, else its logged event's
    envelope (the ``events`` columns of a join)."""
    return payload if payload or event[0] is None else EventRow(*event).envelope_text


@attrs.define(eq=False)
class SqliteOutbox:
    """The ``webhook_outbox`` and ``webhook_attempts`` tables."""

    _db: sqlite_utils.Database
    _settings: SqliteSettings

    #: The device ids in a JSON array parameter, as rows (the devices a query leaves out).
    _EXCLUDED_DEVICES = "SELECT value FROM json_each(?)"
    #: What recording an attempt also sets (PostgreSQL: clears the row's claim).
    _RELEASE = ""

    def get_webhook_settings(self, device_id: int) -> dict[str, Any] | None:
        """The device's stored webhook settings, or None (one primary-key lookup)."""
        return self._settings.get(device_id, WEBHOOK_KIND)

    def put_webhook_settings(self, device_id: int, value: dict[str, Any]) -> None:
        """Store the device's webhook settings (replacing them).

        Error handling: ``storage.errors.NotFound`` if the device does not exist.
        """
        self._settings.put(device_id, WEBHOOK_KIND, value)

    def enqueue_events(
        self,
        device_id: int,
        events: Sequence[Mapping[str, object] | OutboundEvent],
        *,
        wanted: Collection[str],
        now: float | None = None,
    ) -> int:
        """Store the events whose type is in ``wanted`` (the device's webhook decides which:
        ``supervisor.webhooks.settings.enqueue``); return how many rows were written.

        ``events`` are envelopes ``{"type", "sessionId", "data", "timestamp"}``, or
        :class:`~storage.interface.OutboundEvent` objects (``supervisor.events.Event``: then
        ``to_json()``, which may render a QR image, runs only for events the webhook wants).
        Call inside the transaction that stores their cause. Each row gets a fresh
        ``webhook-id`` and is due at once (``now``, default: the event's own timestamp).

        Error handling: ``sqlite3`` errors propagate (and roll back the caller's work with it).
        """
        if not events or not wanted:
            return 0
        rows = []
        for event in events:
            event_id: int | None = None
            if isinstance(event, Mapping):
                kind = event.get("type")
                if kind not in wanted:
                    continue
                envelope: Mapping[str, object] = event
                body = body_of(envelope)
            else:
                kind = event.type
                if kind not in wanted:
                    continue
                event_id = event.id
                envelope = event.to_json()
                # The body of an event the log keeps whole is made from the log when it is
                # delivered.
                whole = event_id is not None and event.logged_whole
                body = "" if whole else body_of(envelope)
            at = _epoch(envelope.get("timestamp")) if now is None else now
            created = envelope.get("timestamp")
            if not isinstance(created, str):
                created = iso(at)
            rows.append((new_message_id(), device_id, kind, body, created, at, event_id))
        if rows:
            # Prepared SQL: in the transaction of every state change and message.
            self._db.conn.executemany(
                "INSERT INTO webhook_outbox "
                "(id, device_id, event_type, payload, created_at, next_attempt_at, attempts,"
                " status, event_id) VALUES (?, ?, ?, ?, ?, ?, 0, 'pending', ?)",
                rows,
            )
        return len(rows)

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
        """Up to ``limit`` pending rows due at ``now`` (earliest first), leaving out ``exclude``
        (the rows already in flight), each with its device's URL and active secrets as
        ``target(device_id)`` gives them (None: the device's webhook is gone or disabled).
        With ``per_device``, no device gets more than that many rows in flight, counting the
        ``busy`` ones (device id -> rows in flight): one slow endpoint cannot take every slot.

        Nothing is written for a claimed row: the dispatcher keeps its in-flight set in memory,
        and a process that dies mid-delivery finds the row still due at the next start, which
        is what makes delivery at-least-once. Rows of a device whose webhook is gone or
        disabled become ``disabled`` instead.

        With a ``claim`` (a cluster node; PostgreSQL only), the claimed rows are written as
        its own until the claim expires, and rows another node claimed are left out until
        theirs has: two nodes never deliver a row at once, and the rows of a node that died
        are taken again once its claims expire. Recording the attempt clears the claim.
        """
        skip = set(exclude)
        if limit <= 0:
            return []
        taken = dict(busy or {})
        full = [d for d, n in taken.items() if per_device is not None and n >= per_device]
        conn = self._db.conn
        rows = self._due_rows(now, full, limit + len(skip), claim)
        targets: dict[int, DeliveryTarget | None] = {}
        claimed: list[Due] = []
        for row in rows:
            outbox_id, device_id = row[0], row[1]
            if outbox_id in skip:
                continue
            if per_device is not None and taken.get(device_id, 0) >= per_device:
                continue
            if device_id not in targets:
                targets[device_id] = target(device_id)
            found = targets[device_id]
            if found is None:
                conn.execute(
                    "UPDATE webhook_outbox SET status = 'disabled' WHERE id = ?", (outbox_id,)
                )
                continue
            taken[device_id] = taken.get(device_id, 0) + 1
            claimed.append(
                Due(
                    id=outbox_id,
                    device_id=device_id,
                    event_type=row[2],
                    payload=_body(row[3], row[6:]),
                    attempts=row[4],
                    created_at=row[5],
                    url=found.url,
                    secrets=found.secrets,
                )
            )
            if len(claimed) >= limit:
                break
        if claim is not None and claimed:
            self._take([row.id for row in claimed], claim)
        return claimed

    def _due_rows(
        self, now: float, full: list[int], limit: int, claim: Claim | None
    ) -> list[Sequence[Any]]:
        """The pending rows due at ``now``, earliest first, but the devices in ``full`` (and,
        with a ``claim``, those another node claimed): the outbox columns :meth:`claim_due`
        reads, then the logged event's."""
        free, lock, params = self._claim_sql(claim)
        # Prepared SQL: the dispatcher's loop; the device filter goes through json_each, which
        # sqlite-utils has no call for.
        rows: list[Sequence[Any]] = self._db.conn.execute(
            "SELECT o.id, o.device_id, o.event_type, o.payload, o.attempts, o.created_at,"
            f" {_EVENT_COLS} FROM webhook_outbox o LEFT JOIN events e ON e.id = o.event_id "
            "WHERE o.status = 'pending' AND o.next_attempt_at <= ? "
            f"AND o.device_id NOT IN ({self._EXCLUDED_DEVICES}){free} "
            f"ORDER BY o.next_attempt_at LIMIT ?{lock}",
            (now, json.dumps(full), *params, limit),
        ).fetchall()
        return rows

    def _claim_sql(self, claim: Claim | None) -> tuple[str, str, tuple[object, ...]]:
        """What a scan under ``claim`` adds to its query: the filter of the rows free to take,
        the row lock, and the filter's parameters (PostgreSQL: :mod:`storage.pg.outbox`).

        Raises: ValueError for a claim (SQLite has no claims).
        """
        if claim is not None:
            raise ValueError("claims need PostgreSQL (a cluster)")
        return "", "", ()

    def _take(self, ids: list[str], claim: Claim) -> None:
        """Write ``claim`` on the rows ``ids`` (PostgreSQL: :mod:`storage.pg.outbox`)."""
        raise ValueError("claims need PostgreSQL (a cluster)")

    def release(self, claim: Claim) -> int:
        """Clear the claims of ``claim``'s node (PostgreSQL: :mod:`storage.pg.outbox`)."""
        raise ValueError("claims need PostgreSQL (a cluster)")

    def next_due(
        self,
        exclude: Iterable[str] = (),
        exclude_devices: Iterable[int] = (),
        claim: Claim | None = None,
    ) -> float | None:
        """When the earliest pending row is due (epoch), leaving out the rows in ``exclude``
        and the devices in ``exclude_devices``; None if there is none. With a ``claim`` (a
        cluster node, PostgreSQL only), a row another node claimed is due once its claim
        expires."""
        free, _, params = self._claim_sql(claim)
        skip = set(exclude)
        # Prepared SQL: with every claim (json_each, as in claim_due).
        for row in self._db.conn.execute(
            "SELECT o.id, o.next_attempt_at FROM webhook_outbox o WHERE o.status = 'pending' "
            f"AND o.device_id NOT IN ({self._EXCLUDED_DEVICES}){free} "
            "ORDER BY o.next_attempt_at LIMIT ?",
            (json.dumps(sorted(set(exclude_devices))), *params, len(skip) + 1),
        ):
            if row[0] not in skip:
                return float(row[1])
        return None

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
        """Append an attempt and move the row to ``status`` (``pending`` with
        ``next_attempt_at`` for a retry). Returns False if the row is gone (device deleted
        meanwhile)."""
        if status not in STATUSES:
            raise ValueError(f"unknown outbox status {status!r}")
        conn = self._db.conn
        # Prepared SQL: once per delivery; an arithmetic update has no sqlite-utils equivalent.
        cur = conn.execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, status = ?, "
            f"next_attempt_at = COALESCE(?, next_attempt_at){self._RELEASE} WHERE id = ?",
            (status, next_attempt_at, outbox_id),
        )
        if cur.rowcount == 0:
            return False
        conn.execute(
            "INSERT INTO webhook_attempts (outbox_id, at, status_code, error, duration_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (outbox_id, at, status_code, error, round(duration_ms, 1)),
        )
        return True

    def disable_pending(self, device_id: int) -> int:
        """Mark the device's pending rows ``disabled`` (its endpoint was disabled); return how
        many."""
        # An update of many rows by a condition: sqlite-utils updates one row by primary key.
        cur = self._db.conn.execute(
            "UPDATE webhook_outbox SET status = 'disabled' WHERE device_id = ? AND status = 'pending'",
            (device_id,),
        )
        return cur.rowcount

    def list_deliveries(
        self,
        device_id: int,
        *,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """The device's deliveries, newest first, each with its attempts; and the total count."""
        where = "device_id = ?"
        params: list[object] = [device_id]
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        table = self._db.table("webhook_outbox")
        total = table.count_where(where, params)
        rows = table.rows_where(
            where,
            params,
            select=_COLUMNS,
            order_by="created_at DESC, rowid DESC",
            limit=max(0, int(limit)),
            offset=max(0, int(offset)),
        )
        return [self._delivery(r) for r in list(rows)], int(total)

    def backlog(self, device_id: int) -> WebhookBacklog:
        """How many of the device's deliveries wait, since when, and how many failed."""
        pending, oldest, failed = self._db.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending'),"
            " min(created_at) FILTER (WHERE status = 'pending'),"
            " count(*) FILTER (WHERE status = 'failed')"
            " FROM webhook_outbox WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        return WebhookBacklog(
            pending=int(pending), oldest_pending_at=None if oldest is None else parse_iso(oldest),
            failed=int(failed),
        )

    def get_delivery(self, device_id: int, outbox_id: str) -> dict[str, Any] | None:
        """One delivery of the device with its attempts, or None."""
        rows = self._db.table("webhook_outbox").rows_where(
            "id = ? AND device_id = ?", [outbox_id, device_id], select=_COLUMNS
        )
        for row in list(rows):
            return self._delivery(row)
        return None

    def redeliver(self, device_id: int, outbox_id: str, *, now: float) -> dict[str, Any] | None:
        """Put a delivery back to ``pending``, due at ``now``, with a fresh retry schedule (the
        attempt log and the ``webhook-id`` are kept). None if there is no such delivery."""
        # The row must belong to the device: a condition beyond the primary key, which
        # Table.update does not take.
        cur = self._db.conn.execute(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ? "
            "WHERE id = ? AND device_id = ?",
            (now, outbox_id, device_id),
        )
        if cur.rowcount == 0:
            return None
        return self.get_delivery(device_id, outbox_id)

    def _delivery(self, row: Mapping[str, Any]) -> dict[str, Any]:
        payload = row["payload"]
        if not payload and row["event_id"] is not None:
            logged = self._db.conn.execute(
                "SELECT id, device_id, session_id, type, data, timestamp FROM events"
                " WHERE id = ?",
                (row["event_id"],),
            ).fetchone()
            if logged is not None:
                payload = EventRow(*logged).envelope_text
        attempts = [
            {
                "at": a["at"],
                "statusCode": a["status_code"],
                "error": a["error"],
                "durationMs": a["duration_ms"],
            }
            for a in self._attempts(row)
        ]
        return {
            "id": row["id"],
            "eventType": row["event_type"],
            "status": row["status"],
            "attempts": row["attempts"],
            "createdAt": row["created_at"],
            "nextAttemptAt": iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
            "payload": json.loads(payload) if payload else {},
            "attemptLog": attempts,
        }

    def _attempts(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The attempts of the delivery ``row``, oldest first."""
        return list(
            self._db.table("webhook_attempts").rows_where(
                "outbox_id = ?",
                [row["id"]],
                select="at, status_code, error, duration_ms",
                order_by="id",
            )
        )
