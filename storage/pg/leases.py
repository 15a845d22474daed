"""Cluster membership and device leases in PostgreSQL (the ``nodes`` and ``device_leases``
tables of migration 3, ``wanted_by`` of migration 4, ``nodes.run_token`` of migration 5).

Synopsis::

    held = await db.run(lambda r: r.leases.renew("node-a", lease_seconds=15))
    got = await db.run(lambda r: r.leases.claim("node-a", lease_seconds=15, limit=10))

Every time here is the database's clock (``now()``: the transaction's start), never a node's:
a lease ``expires_at`` is ``now() + lease``, a device is free when its row has no owner or its
lease expired, and a node is live while its heartbeat is younger than the lease. The fencing
``epoch`` grows by one on every change of owner (a claim, a release), so a write carrying an
older epoch is refused by :meth:`PgLeases.holds`.

A node id is run by one process at a time: the process writes a random ``run_token`` into the
node's row when it joins (:meth:`PgLeases.join`), and each of its lease jobs first checks that
the row still carries it (:meth:`PgLeases.runs`). A second process started with the same id
takes the id over: its join replaces the token and frees the devices of the first (each once
its lease ends, since the first may still run them until it notices), and the first's next
lease job finds another token.

Concurrency: a claim locks the rows it takes with ``FOR UPDATE SKIP LOCKED`` (two nodes
claiming at once take different devices, neither waits); :meth:`PgLeases.holds` takes a key
share lock on the device's lease row, which only ``FOR UPDATE`` conflicts with: a claim by
another node skips the device until the fenced transaction committed (or the fenced
transaction sees the new owner and changes nothing), while the owner's renewals and releases,
plain updates of the row, never wait for its actors' transactions.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from storage.pg.sql import pg_of


@attrs.frozen
class Lease:
    """A lease this node holds: the device and its fencing epoch (and the node that asked for
    the device, if one did: rebalancing)."""

    device_id: int
    epoch: int
    wanted_by: str | None = None


@attrs.frozen
class NodeRow:
    """A node of the cluster as the database shows it: its row with the number of live leases
    it holds, ages by the database's clock."""

    node_id: str
    advertise_url: str
    capacity: int | None
    #: Devices it holds a live lease on.
    devices: int
    #: Seconds since its last heartbeat.
    heartbeat_age: float
    draining: bool
    #: Of its devices, those another node asked for (leaving it: rebalancing).
    giving: int = 0
    #: Devices it asked for that are not its yet (coming to it).
    coming: int = 0

    @property
    def settled(self) -> int:
        """Its devices once the devices asked for moved."""
        return self.devices - self.giving + self.coming


@attrs.frozen
class Joined:
    """What a node's join found: the devices an earlier process of its id held (now free, each
    once its lease ends), and that process's heartbeat age if it was another process's row."""

    released: list[int]
    #: Seconds since the heartbeat of the process that held the node id before (None: the
    #: node had no row, or a row of this same run).
    previous_age: float | None = None


def _asker_live(lease: str) -> str:
    """SQL: whether the node asking for the lease row ``l`` (``l.wanted_by``) is live (its
    heartbeat younger than the lease, the parameter ``lease``) and not draining."""
    return (
        "EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = l.wanted_by AND NOT n.draining"
        f" AND n.heartbeat_at > now() - make_interval(secs => {lease}))"
    )


def _leases(rows: Sequence[tuple[object, ...]]) -> list[Lease]:
    return sorted(
        (Lease(int(str(r[0])), int(str(r[1])), None if r[2] is None else str(r[2])) for r in rows),
        key=lambda lease: lease.device_id,
    )


_NODES = """
    SELECT n.node_id, n.advertise_url, n.capacity,
           (SELECT count(*) FROM device_leases l
             WHERE l.owner = n.node_id AND l.expires_at > now()),
           EXTRACT(EPOCH FROM now() - n.heartbeat_at), n.draining,
           (SELECT count(*) FROM device_leases l
             WHERE l.owner = n.node_id AND l.expires_at > now()
               AND l.wanted_by IS NOT NULL AND l.wanted_by <> n.node_id),
           (SELECT count(*) FROM device_leases l
             WHERE l.wanted_by = n.node_id AND (l.owner IS DISTINCT FROM n.node_id
               OR l.expires_at IS NULL OR l.expires_at <= now()))
      FROM nodes n
"""

#: Device statuses of a login under way (showing a QR code, pairing, connecting): such a
#: device is never asked for (moving it would restart its pairing on another node).
IN_LOGIN = ("pending", "connecting")


def _node(r: Sequence[object]) -> NodeRow:
    return NodeRow(
        node_id=str(r[0]),
        advertise_url=str(r[1]),
        capacity=None if r[2] is None else int(str(r[2])),
        devices=int(str(r[3])),
        heartbeat_age=max(0.0, float(str(r[4]))),
        draining=bool(r[5]),
        giving=int(str(r[6])),
        coming=int(str(r[7])),
    )


@attrs.define(eq=False)
class PgLeases:
    """The ``nodes`` and ``device_leases`` tables, inside one job's transaction."""

    _db: object

    def heartbeat(
        self, node_id: str, advertise_url: str, capacity: int | None, draining: bool
    ) -> None:
        """Insert or refresh the node's row: its URL, capacity, draining flag and heartbeat
        (now)."""
        pg_of(self._db).execute(
            "INSERT INTO nodes (node_id, advertise_url, capacity, draining)"
            " VALUES (?, ?, ?, ? <> 0)"  # a bool is sent as 0/1 (storage.pg.sql)
            " ON CONFLICT (node_id) DO UPDATE SET advertise_url = excluded.advertise_url,"
            " capacity = excluded.capacity, draining = excluded.draining, heartbeat_at = now()",
            (node_id, advertise_url, capacity, draining),
        )

    def join(
        self, node_id: str, run_token: str, advertise_url: str, capacity: int | None
    ) -> Joined:
        """Make ``run_token``'s process the node ``node_id``: insert or take over its row (live,
        not draining) and free the leases an earlier process of the id holds, with new epochs
        (nothing it still writes is accepted). Such a device stays unclaimable until its lease
        ends, since that process may still run it until it notices (by its own clock, never
        past the lease)."""
        sql = pg_of(self._db)
        before = sql.execute(
            "SELECT run_token, EXTRACT(EPOCH FROM now() - heartbeat_at) FROM nodes"
            " WHERE node_id = ? FOR UPDATE",
            (node_id,),
        ).fetchone()
        sql.execute(
            "INSERT INTO nodes (node_id, advertise_url, capacity, draining, run_token)"
            " VALUES (?, ?, ?, false, ?)"
            " ON CONFLICT (node_id) DO UPDATE SET advertise_url = excluded.advertise_url,"
            " capacity = excluded.capacity, draining = false, heartbeat_at = now(),"
            " started_at = now(), run_token = excluded.run_token",
            (node_id, advertise_url, capacity, run_token),
        )
        rows = sql.execute(
            "UPDATE device_leases SET owner = NULL, epoch = epoch + 1"
            " WHERE owner = ? RETURNING device_id",
            (node_id,),
        ).fetchall()
        previous = None
        if before is not None and before[0] != run_token:
            previous = max(0.0, float(str(before[1])))
        return Joined(sorted(int(str(r[0])) for r in rows), previous)

    def runs(self, node_id: str, run_token: str) -> bool:
        """Whether the node's row carries ``run_token`` (its process still runs the node id);
        the row stays share-locked until the job's transaction ends, so a join of another
        process waits for it."""
        row = pg_of(self._db).execute(
            "SELECT 1 FROM nodes WHERE node_id = ? AND run_token = ? FOR SHARE",
            (node_id, run_token),
        ).fetchone()
        return row is not None

    def leave(self, node_id: str) -> None:
        """Remove the node's row (it stopped; its leases must be released first)."""
        pg_of(self._db).execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))

    def claim(
        self,
        node_id: str,
        lease_seconds: float,
        limit: int,
        device_ids: Sequence[int] | None = None,
    ) -> list[Lease]:
        """Take up to ``limit`` free or expired devices (only those of ``device_ids`` when
        given) for ``lease_seconds``; returns them with their new epochs.

        Devices another live node asked for (``wanted_by``, rebalancing) are left to it; those
        this node asked for come first. Devices without a lease row get one here. A device
        freed by a join (:meth:`join`) is free once its lease ends.
        """
        sql = pg_of(self._db)
        if limit <= 0:
            return []
        ids = None if device_ids is None else list(device_ids)
        sql.execute(
            "INSERT INTO device_leases (device_id) SELECT d.id FROM devices d"
            " WHERE NOT EXISTS (SELECT 1 FROM device_leases l WHERE l.device_id = d.id)"
            + ("" if ids is None else " AND d.id = ANY(?)")
            + " ON CONFLICT DO NOTHING",
            () if ids is None else (ids,),
        )
        rows = sql.execute(
            "UPDATE device_leases SET owner = ?1, expires_at = now() + make_interval(secs => ?2),"
            " epoch = epoch + 1, wanted_by = NULL"
            " WHERE device_id IN ("
            "  SELECT l.device_id FROM device_leases l"
            "   WHERE (l.expires_at IS NULL OR l.expires_at <= now())"
            "     AND (l.wanted_by IS NULL OR l.wanted_by = ?1 OR NOT " + _asker_live("?2") + ")"
            + ("" if ids is None else " AND l.device_id = ANY(?4)")
            + "   ORDER BY (l.wanted_by IS NOT DISTINCT FROM ?1) DESC, l.device_id"
            "   LIMIT ?3 FOR UPDATE SKIP LOCKED)"
            " RETURNING device_id, epoch, wanted_by",
            (node_id, lease_seconds, limit) if ids is None else (node_id, lease_seconds, limit, ids),
        ).fetchall()
        return _leases(rows)

    def renew(self, node_id: str, lease_seconds: float) -> list[Lease]:
        """Extend every live lease of the node to ``now() + lease_seconds``, in one statement;
        returns the leases it still holds (an expired one is not renewed: it may be another
        node's by now), each with ``wanted_by`` if another node asked for the device. Only a
        live node that is not draining keeps its ask: the asks of dead or draining nodes are
        cleared here (the device stays)."""
        rows = pg_of(self._db).execute(
            "UPDATE device_leases l SET expires_at = now() + make_interval(secs => ?1),"
            " wanted_by = CASE WHEN l.wanted_by IS NULL OR " + _asker_live("?1")
            + " THEN l.wanted_by END"
            " WHERE l.owner = ?2 AND l.expires_at > now()"
            " RETURNING l.device_id, l.epoch, l.wanted_by",
            (lease_seconds, node_id),
        ).fetchall()
        return _leases(rows)

    def release(self, node_id: str, device_ids: Sequence[int] | None = None) -> list[int]:
        """Give up the node's leases of ``device_ids`` (None: all of them): the devices are
        free at once, with a new epoch. Returns the devices released."""
        ids = None if device_ids is None else list(device_ids)
        rows = pg_of(self._db).execute(
            "UPDATE device_leases SET owner = NULL, expires_at = NULL, epoch = epoch + 1"
            " WHERE owner = ?" + ("" if ids is None else " AND device_id = ANY(?)")
            + " RETURNING device_id",
            (node_id,) if ids is None else (node_id, ids),
        ).fetchall()
        return sorted(int(str(r[0])) for r in rows)

    def holds(self, device_id: int, node_id: str, epoch: int) -> bool:
        """Whether ``node_id`` holds the device's live lease with ``epoch`` now; the lease row
        stays key-share-locked until the job's transaction ends (the fence of an actor's write:
        no claim takes the device meanwhile, see the module docstring)."""
        row = pg_of(self._db).execute(
            "SELECT 1 FROM device_leases WHERE device_id = ? AND owner = ? AND epoch = ?"
            " AND expires_at > now() FOR KEY SHARE",
            (device_id, node_id, epoch),
        ).fetchone()
        return row is not None

    def want(self, node_id: str, donor: str, count: int, keep: int) -> list[int]:
        """Ask ``donor`` for up to ``count`` of its devices (rebalancing), leaving it at least
        ``keep`` of those no node asked for yet: marks them ``wanted_by`` this node; returns
        the devices marked.

        Never marked: a device in a login (:data:`IN_LOGIN`: its pairing would restart on
        another node); those without a connection (``disconnected``, ``qr_timeout``,
        ``logged_out``) come first, then connected ones. Asks of one donor take turns (a lock
        of the transaction, named after the donor, that no other statement takes: no row of
        ``nodes`` is locked, so two nodes asking each other at once cannot deadlock), so the
        second sees the first's marks.
        """
        if count <= 0:
            return []
        sql = pg_of(self._db)
        sql.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ("wasup.want:" + donor,))
        row = sql.execute(
            "SELECT count(*) FROM device_leases WHERE owner = ? AND expires_at > now()"
            " AND (wanted_by IS NULL OR wanted_by = owner)",
            (donor,),
        ).fetchone()
        spare = (0 if row is None else int(str(row[0]))) - keep
        if spare <= 0:
            return []
        rows = sql.execute(
            "UPDATE device_leases SET wanted_by = ?1 WHERE device_id IN ("
            " SELECT l.device_id FROM device_leases l JOIN devices d ON d.id = l.device_id"
            "  WHERE l.owner = ?2 AND l.expires_at > now() AND l.wanted_by IS NULL"
            "    AND d.status <> ALL(?4)"
            "  ORDER BY d.status = 'connected', l.device_id DESC LIMIT ?3"
            "  FOR UPDATE OF l SKIP LOCKED)"
            " RETURNING device_id",
            (node_id, donor, min(count, spare), list(IN_LOGIN)),
        ).fetchall()
        return sorted(int(str(r[0])) for r in rows)

    def nodes(self) -> list[NodeRow]:
        """Every node's row with its live leases, by node id."""
        rows = pg_of(self._db).execute(_NODES + " ORDER BY n.node_id").fetchall()
        return [_node(r) for r in rows]

    def owner(self, device_id: int) -> NodeRow | None:
        """The node holding the device's live lease, or None (free, expired, or no such
        device)."""
        row = pg_of(self._db).execute(
            _NODES + " JOIN device_leases d ON d.owner = n.node_id"
            " WHERE d.device_id = ? AND d.expires_at > now()",
            (device_id,),
        ).fetchone()
        return None if row is None else _node(row)

    def unleased(self) -> int:
        """Devices no node holds a live lease on."""
        row = pg_of(self._db).execute(
            "SELECT count(*) FROM devices d WHERE NOT EXISTS (SELECT 1 FROM device_leases l"
            " WHERE l.device_id = d.id AND l.owner IS NOT NULL AND l.expires_at > now())"
        ).fetchone()
        return 0 if row is None else int(str(row[0]))
