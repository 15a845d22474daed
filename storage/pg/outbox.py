"""The webhook outbox in PostgreSQL: SQLite's repository (:mod:`storage.outbox`) with the device
filter as PostgreSQL's JSON function, the delivery views written in SQL, and the claims of a
cluster's nodes.

Claims (``Claim``: a node's id and how long it holds): a node's scan locks the due rows it
reads with ``FOR UPDATE SKIP LOCKED`` (a row another node's scan holds right now is passed
over, not waited for) and writes ``claimed_by``/``claimed_until`` (now + the claim's seconds,
by the database's clock) on those it takes, in the scan's transaction. A row claimed by another
node is left out until its claim expires: then the node that took it died or stalled, and any
node may take it again (at-least-once). A node takes back its own claims at once (it knows
which of them it has in flight). Recording an attempt clears the claim, and so does a node that
stops (``release``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from storage.outbox import _COLUMNS, Claim, SqliteOutbox
from storage.pg.sql import pg_of

#: Rows free for ``claim`` to take: never claimed, claimed by a node whose claim expired, or
#: by this node itself.
_FREE = "(o.claimed_until IS NULL OR o.claimed_until < now() OR o.claimed_by = ?)"


@attrs.define(eq=False)
class PgOutbox(SqliteOutbox):
    """The ``webhook_outbox`` and ``webhook_attempts`` tables."""

    _EXCLUDED_DEVICES = "SELECT value::bigint FROM json_array_elements_text(?::json)"
    _RELEASE = ", claimed_by = NULL, claimed_until = NULL"

    def _claim_sql(self, claim: Claim | None) -> tuple[str, str, tuple[object, ...]]:
        if claim is None:
            return "", "", ()
        return f" AND {_FREE}", " FOR UPDATE OF o SKIP LOCKED", (claim.node_id,)

    def _take(self, ids: list[str], claim: Claim) -> None:
        pg_of(self._db).execute(
            "UPDATE webhook_outbox SET claimed_by = ?,"
            " claimed_until = now() + make_interval(secs => ?) WHERE id = ANY(?)",
            (claim.node_id, claim.seconds, ids),
        )

    def release(self, claim: Claim) -> int:
        """Clear the claims of ``claim``'s node on its pending rows (it stops delivering:
        another node may take them at once); how many."""
        cursor = pg_of(self._db).execute(
            "UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL"
            " WHERE claimed_by = ? AND status = 'pending'",
            (claim.node_id,),
        )
        return cursor.rowcount

    def next_due(
        self,
        exclude: Iterable[str] = (),
        exclude_devices: Iterable[int] = (),
        claim: Claim | None = None,
    ) -> float | None:
        due = super().next_due(exclude, exclude_devices, claim)
        if claim is None:
            return due
        found: list[float] = [] if due is None else [due]
        # Another node's claim: due again when it expires (by the database's clock).
        expiry = pg_of(self._db).execute(
            "SELECT extract(epoch FROM min(claimed_until))::float8 FROM webhook_outbox"
            " WHERE status = 'pending' AND claimed_until >= now() AND claimed_by <> ?",
            (claim.node_id,),
        ).fetchone()
        if expiry is not None and expiry[0] is not None:
            found.append(float(str(expiry[0])))
        return min(found, default=None)

    def list_deliveries(
        self,
        device_id: int,
        *,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """The device's deliveries, newest first, each with its attempts; and the total count."""
        sql = pg_of(self._db)
        where = "device_id = ? AND (?::text IS NULL OR status = ?)"
        params = (device_id, status, status)
        total = sql.execute(f"SELECT count(*) FROM webhook_outbox WHERE {where}", params)
        count = total.fetchone()
        rows = sql.rows(
            f"SELECT {_COLUMNS} FROM webhook_outbox WHERE {where}"
            " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
            (*params, max(0, int(limit)), max(0, int(offset))),
        )
        return [self._delivery(r) for r in rows], 0 if count is None else int(str(count[0]))

    def get_delivery(self, device_id: int, outbox_id: str) -> dict[str, Any] | None:
        """One delivery of the device with its attempts, or None."""
        rows = pg_of(self._db).rows(
            f"SELECT {_COLUMNS} FROM webhook_outbox WHERE id = ? AND device_id = ?",
            (outbox_id, device_id),
        )
        return self._delivery(rows[0]) if rows else None

    def _attempts(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        return pg_of(self._db).rows(
            "SELECT at, status_code, error, duration_ms FROM webhook_attempts"
            " WHERE outbox_id = ? ORDER BY id",
            (row["id"],),
        )
