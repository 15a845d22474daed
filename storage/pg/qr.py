"""The QR code each pairing device shows, in PostgreSQL (``device_qr``, migration 3): written by
the device's owner, read by any node of the cluster.

Synopsis::

    await db.run(lambda r: r.qr.show(7, "node-a", StoredQr("2@...", 1, 3, 1764537660.0)))
    qr = await db.run(lambda r: r.qr.get(7))          # StoredQr or None
    await db.run(lambda r: r.qr.clear(7, "node-a"))    # pairing ended

A write changes something only while ``node`` holds the device's lease (``device_leases.owner``):
a node that lost the device cannot overwrite the QR code its new owner shows. A device's row
goes with the device (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import attrs

from storage.errors import NotFound
from storage.pg.sql import PgSql

_OWNED = "EXISTS (SELECT 1 FROM device_leases WHERE device_id = ? AND owner = ?)"


@attrs.frozen
class StoredQr:
    """A QR code on show: its string, attempt of max_attempts, and expiry (epoch seconds)."""

    qr_string: str
    attempt: int
    max_attempts: int
    expires_at_epoch: float


@attrs.define(eq=False)
class PgQr:
    """The ``device_qr`` table."""

    _sql: PgSql

    def show(self, device_id: int, node: str, qr: StoredQr) -> bool:
        """Store the QR code ``device_id`` shows, if ``node`` holds its lease; whether it did."""
        try:
            cursor = self._sql.execute(
                "INSERT INTO device_qr (device_id, qr_string, attempt, max_attempts,"
                " expires_at_epoch) SELECT ?, ?, ?, ?, ? WHERE " + _OWNED +
                " ON CONFLICT (device_id) DO UPDATE SET qr_string = excluded.qr_string,"
                " attempt = excluded.attempt, max_attempts = excluded.max_attempts,"
                " expires_at_epoch = excluded.expires_at_epoch",
                (device_id, qr.qr_string, qr.attempt, qr.max_attempts, qr.expires_at_epoch,
                 device_id, node),
            )
        except NotFound:  # the device was deleted meanwhile
            return False
        return cursor.rowcount > 0

    def clear(self, device_id: int, node: str) -> bool:
        """Remove the device's QR code (pairing ended), if ``node`` holds its lease."""
        cursor = self._sql.execute(
            "DELETE FROM device_qr WHERE device_id = ? AND " + _OWNED,
            (device_id, device_id, node),
        )
        return cursor.rowcount > 0

    def get(self, device_id: int) -> StoredQr | None:
        """The QR code the device shows (possibly expired: see ``expires_at_epoch``), or None."""
        row = self._sql.execute(
            "SELECT qr_string, attempt, max_attempts, expires_at_epoch FROM device_qr"
            " WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredQr(str(row[0]), int(str(row[1])), int(str(row[2])), float(str(row[3])))
