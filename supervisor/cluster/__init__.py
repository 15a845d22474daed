"""Several wasup nodes on one PostgreSQL: membership, device leases, fencing and placement,
and every node's events on every node.

:mod:`.node` is the node as the rest of wasup sees it (:class:`~.node.ClusterNode`, held as
``Devices.cluster``); :mod:`.leases` runs its heartbeat, renewals, claims, hand-overs and
self-stop; :mod:`.book` holds the pure decisions of the lease protocol; :mod:`.fence` checks
every write of a device's actor against the device's lease; :mod:`.feed` hands every node's
events, read from the event log, to this node's WebSocket streams. docs/cluster.md describes
the deployment and the failure behaviour.
"""
