"""The stored QR code: in a cluster the device's owner writes the QR code it shows to
``device_qr``, so ``GET /devices/{id}/qr`` answers on any node.

Usage::

    store = QrStore(db, "node-a")
    ctx.qr_listeners.append(store.shown)        # the actors say when their QR code changes
    nursery.start_soon(store.run)               # writes them, newest only
    attempt = await current_qr(devices, "7")     # any node: GET /qr

On a single node nothing is stored: :func:`current_qr` answers from the actor's view, in
memory, as :meth:`~supervisor.devices.Devices.current_qr` always did.

:meth:`QrStore.shown` never blocks an actor: it records the device's newest QR code (or None:
pairing ended) and wakes the writer, which writes each device's newest one in one transaction;
a QR code replaced before it was written is never written. A write changes nothing once this
node lost the device's lease (:class:`storage.pg.qr.PgQr`).

Error handling: a write that fails (the database is unavailable) is logged and tried again
after :data:`RETRY_SECONDS` unless a newer code replaced it; :func:`current_qr` raises
:class:`DeviceConflict` as the in-memory path does (not pairing, or no QR code yet) and
``StorageUnavailable`` when the database cannot be read.
"""

from __future__ import annotations

import logging
from typing import cast

import attrs
import trio

import storage
from common.clock import now_epoch
from storage.pg.qr import StoredQr
from storage.pg.repositories import PgRepositories

from ..context import ActorContext
from ..devices import Devices
from ..errors import DeviceConflict
from ..qr import QrAttempt

log = logging.getLogger("wasup.cluster.qr")

#: Seconds before a failed write is tried again.
RETRY_SECONDS = 1.0


def _pg(repos: storage.Repositories) -> PgRepositories:
    return cast(PgRepositories, repos)


@attrs.define(eq=False)
class QrStore:
    """Writes the QR codes this node's actors show (see the module docstring)."""

    db: storage.Store
    node_id: str
    _newest: dict[int, QrAttempt | None] = attrs.field(factory=dict)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    #: Writes done (stored or cleared), for tests and metrics.
    writes: int = 0

    def shown(self, device_id: int, qr: QrAttempt | None) -> None:
        """The device shows ``qr`` now (None: no QR code). Never blocks."""
        self._newest[device_id] = qr
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what :meth:`shown` recorded, until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            if not await self.write_pending():
                await trio.sleep(RETRY_SECONDS)

    async def write_pending(self) -> bool:
        """Write each device's newest QR code recorded since the last write; whether it
        worked (on a database failure they stay pending, unless replaced meanwhile)."""
        self._wake = trio.Event()
        batch, self._newest = self._newest, {}
        if not batch:
            return True
        try:
            await self.db.run(lambda r: self._write(_pg(r), batch))
        except storage.StorageUnavailable as exc:
            log.warning("the QR codes of %d devices were not stored: %s", len(batch), exc)
            for device_id, qr in batch.items():
                self._newest.setdefault(device_id, qr)
            self._wake.set()
            return False
        self.writes += len(batch)
        return True

    def _write(self, repos: PgRepositories, batch: dict[int, QrAttempt | None]) -> None:
        for device_id, qr in batch.items():
            if qr is None:
                repos.qr.clear(device_id, self.node_id)
            else:
                repos.qr.show(device_id, self.node_id, StoredQr(
                    qr.qr_string, qr.attempt, qr.max_attempts, qr.expires_at_epoch))


async def stored_qr(db: storage.Store, device_id: int) -> QrAttempt | None:
    """The QR code the device's owner stored, unless it expired; None otherwise."""
    found = await db.run(lambda r: _pg(r).qr.get(device_id))
    if found is None or found.expires_at_epoch <= now_epoch():
        return None
    return QrAttempt.expiring(found.qr_string, attempt=found.attempt,
                              max_attempts=found.max_attempts,
                              expires_at_epoch=found.expires_at_epoch)


async def current_qr(devices: Devices, ref: str | int) -> QrAttempt:
    """The QR code the device shows: from its actor on a single node or on its owner, else
    the one its owner stored.

    Raises: DeviceNotFound; DeviceConflict (not pairing, or no QR code yet);
    StorageUnavailable.
    """
    cluster = devices.cluster
    device_id = devices.resolve(ref)
    if cluster is None or cluster.owns(device_id):
        return devices.current_qr(device_id)
    row = devices.get(device_id)
    if row.status != "pending":
        raise DeviceConflict(f"device is {row.status}, not pairing: no QR code")
    found = await stored_qr(devices.db, device_id)
    if found is None:
        raise DeviceConflict("the QR code is not ready yet, try again shortly")
    return found


async def start_qr_store(devices: Devices, ctx: ActorContext, nursery: trio.Nursery) -> QrStore:
    """Store the QR codes the actors of ``ctx`` show, from ``nursery`` (a cluster node)."""
    assert devices.cluster is not None
    store = QrStore(devices.db, devices.cluster.node_id)
    ctx.qr_listeners.append(store.shown)
    await nursery.start(store.run)
    return store


async def wait_qr(devices: Devices, ref: str | int, within: float) -> QrAttempt | None:
    """The QR code on show, waiting up to ``within`` seconds for the first one on the node
    that runs the device; on another node (a device created here and taken by another node
    for want of room) the one stored now, if any. None when there is none.

    Raises: DeviceNotFound; StorageUnavailable.
    """
    cluster = devices.cluster
    device_id = devices.resolve(ref)
    if cluster is None or cluster.owns(device_id):
        return await devices.wait_qr(device_id, within)
    return await stored_qr(devices.db, device_id)
