"""The mirror: on a cluster node, the directory rows of devices other nodes run, kept fresh.

Every node holds every device's row in its directory, so reads (a device, lists, sessions,
health) are answered on any node without a query. The node that runs a device's actor keeps its
row fresh itself (the actor puts it after every write); every other row is re-read here when
PostgreSQL announces a change of it (``wasup_devices``, sent at commit with the device's id):

- a changed row replaces the one in the directory, a new device enters it;
- a deleted device leaves it;
- ``"*"`` (notifications may have been lost: the listening connection broke, or this reader
  fell behind) reloads every row.

Usage::

    mirror = Mirror(db, db.listen, devices.directory, owns=node.owns)
    await nursery.start(mirror.run)    # started: listening, and every row loaded once

Announcements that arrive together are read in one transaction. A row is re-read after the
commit that announced it, so the directory shows what the owner wrote within the time of one
notification and one query.

Error handling: a read that fails (the database is unavailable) is logged and, after
:data:`RETRY_SECONDS`, replaced by a reload of every row (announcements may have been missed
meanwhile); nothing is raised to the node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from functools import partial

import attrs
import trio

import storage
from storage.models import DeviceRow
from storage.pg.store import PgStore

from ..devices import Devices
from ..directory import DeviceDirectory
from ..status import Status
from ..view import DeviceShown

log = logging.getLogger("wasup.cluster.mirror")

#: The channel PostgreSQL announces device changes on (payload: the device id).
CHANNEL = "wasup_devices"
#: The payload that says "anything may have changed".
RELOAD = "*"
#: Seconds before a failed read is replaced by a reload.
RETRY_SECONDS = 1.0
#: Announcements read together at most.
BATCH = 256

Listen = Callable[[str], AbstractAsyncContextManager[trio.MemoryReceiveChannel[str]]]


@attrs.define(eq=False)
class Mirror:
    """Keeps the directory rows of devices this node does not run fresh (see the module doc)."""

    db: storage.Store
    listen: Listen
    directory: DeviceDirectory
    #: Whether this node runs the device's actor (its row is the actor's to keep).
    owns: Callable[[int], bool]
    #: Rows re-read and full reloads so far (for tests and metrics).
    refreshed: int = 0
    reloads: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and keep the rows fresh, until cancelled; started once listening with every
        row loaded."""
        async with self.listen(CHANNEL) as payloads:
            await self._settle(self.reload)
            task_status.started()
            async for payload in payloads:
                batch = {payload}
                while len(batch) < BATCH:
                    try:
                        batch.add(payloads.receive_nowait())
                    except trio.WouldBlock:
                        break
                if RELOAD in batch:
                    await self._settle(self.reload)
                else:
                    await self._settle(partial(self.refresh, _ids(batch)))

    async def _settle(self, work: Callable[[], Awaitable[None]]) -> None:
        """Do ``work``; on a database failure, reload every row until one succeeds."""
        try:
            await work()
            return
        except storage.StorageUnavailable as exc:
            log.warning("device rows of other nodes not read (%s): reloading", exc)
        while True:
            await trio.sleep(RETRY_SECONDS)
            try:
                await self.reload()
                return
            except storage.StorageUnavailable:
                continue

    async def refresh(self, device_ids: Iterable[int]) -> None:
        """Re-read the rows of ``device_ids`` (a missing one leaves the directory)."""
        wanted = [d for d in device_ids if not self.owns(d)]
        if not wanted:
            return
        rows: list[tuple[int, DeviceRow | None]] = await self.db.run(
            lambda r: [(d, r.devices.get(d)) for d in wanted]
        )
        for device_id, row in rows:
            if self.owns(device_id):  # claimed meanwhile: the actor keeps it now
                continue
            if row is None:
                self.directory.drop(device_id)
            else:
                self.directory.put(row)
        self.refreshed += len(rows)

    async def reload(self) -> None:
        """Re-read every row: devices gone leave the directory, new ones enter it."""
        rows = await self.db.run(lambda r: r.devices.all())
        present = {row.id for row in rows}
        for row in rows:
            if not self.owns(row.id):
                self.directory.put(row)
        for device_id in [d for d in self.directory.mapping() if d not in present]:
            if not self.owns(device_id):
                self.directory.drop(device_id)
        self.reloads += 1


def _ids(payloads: Iterable[str]) -> list[int]:
    ids = []
    for payload in payloads:
        try:
            ids.append(int(payload))
        except ValueError:
            log.warning("ignored a %s notification with payload %r", CHANNEL, payload[:40])
    return sorted(set(ids))


async def outbound_counts(devices: Devices, device_id: int) -> tuple[int, int]:
    """``(pending, stuck)`` sends of the device, on any node: as its actor shows them on the
    node that runs it, else from the database (the ``sends`` not sent yet).

    Raises: DeviceNotFound; StorageUnavailable.
    """
    if devices.supervisor.child(device_id) is not None:
        return devices.outbound_counts(device_id)
    sends = await devices.db.run(lambda r: r.sends.open(device_id))
    return len(sends), sum(1 for s in sends if s.stuck)


async def shown(devices: Devices, device_id: int) -> DeviceShown:
    """What the device shows, on any node (what its health reads): its actor's view on the
    node that runs it; elsewhere its mirrored status, :func:`outbound_counts` (the same as its
    detail's), and ``live`` while a node holds its lease.

    Raises: DeviceNotFound; StorageUnavailable.
    """
    child = devices.supervisor.child(device_id)
    if child is not None:
        return child.view.value
    status = Status(devices.get(device_id).status)
    pending, stuck = await outbound_counts(devices, device_id)
    cluster = devices.cluster
    live = cluster is not None and await cluster.owner_id(device_id) is not None
    return DeviceShown(status, live=live, pending_sends=pending, stuck_sends=stuck)


async def start_mirror(devices: Devices, nursery: trio.Nursery) -> Mirror:
    """Run a :class:`Mirror` of ``devices``' directory in ``nursery`` (a cluster node: the
    database is PostgreSQL); returns it once listening with every row loaded."""
    cluster = devices.cluster
    db = devices.db
    assert cluster is not None and isinstance(db, PgStore), "a cluster node on PostgreSQL"
    mirror = Mirror(db, db.listen, devices.directory, owns=cluster.owns)
    await nursery.start(mirror.run)
    return mirror
