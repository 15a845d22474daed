"""The cluster as the operator sees it (under ``/api/whatsapp``), and its metrics.

::

    GET /cluster        (operator token only)
        -> 200 {"success": true, "data": {"node": "<the node that answered>",
                "leaseSeconds", "renewSeconds", "scanSeconds", "rebalancePerMinute",
                "nodes": [{"nodeId", "advertiseUrl", "capacity", "devices", "heartbeatAge",
                           "alive", "draining"}, ...]}}                        by nodeId
        -> 404 NOT_FOUND "not a cluster" on a single node (started without --node-id)

``devices`` counts a node's live leases; ``heartbeatAge`` is seconds since its last heartbeat
by the database's clock; ``alive`` is ``heartbeatAge < leaseSeconds`` (a node that stopped
without draining stays listed, not alive, until it starts again; a drained node leaves the
list). In a cluster a device's detail (GET /devices/{deviceId}) also names the node holding its
lease as ``node`` (null while it moves between nodes): :func:`device_node`.

``/metrics`` of a cluster node adds (:class:`ClusterCollector`)::

    wasup_cluster_leases_held                  gauge: devices this node holds now
    wasup_cluster_lease_claims_total           counter: leases claimed (free, expired, asked for)
    wasup_cluster_leases_lost_total            counter: leases a renewal found gone
    wasup_cluster_handovers_total              counter: devices handed over (rebalancing, drain)
    wasup_cluster_self_stops_total             counter: times the node stopped its engines
                                               because it could not renew in time
    wasup_cluster_fenced_writes_total          counter: actor writes refused by the fence
    wasup_cluster_renewals_total{outcome}      counter: ok / failed
    wasup_cluster_mirror_rows_read_total       counter: rows of other nodes' devices re-read
                                               after their change was announced
    wasup_cluster_mirror_reloads_total         counter: reloads of every row (at start, and
                                               when announcements may have been lost)
    wasup_cluster_qr_writes_total              counter: QR codes of this node's devices stored
                                               (or cleared) for the other nodes to show
    wasup_cluster_notify_reconnects_total      counter: the listening connection (LISTEN/
                                               NOTIFY) opened again after it broke

and, from its feed of the cluster's events (:class:`FeedCollector`,
:mod:`supervisor.cluster.feed`)::

    wasup_cluster_feed_events_total            counter: events handed to this node's streams
    wasup_cluster_feed_reads_total             counter: reads of the event log
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response

from api.auth import require_operator
from api.errors import ApiError
from api.routes_devices import ok
from api.state import current_state
from storage.pg.store import PgStore
from supervisor.cluster.feed import ClusterFeed
from supervisor.cluster.node import ClusterNode
from supervisor.devices import Devices

bp = Blueprint("cluster", __name__)

API_PREFIX = "/api/whatsapp"

NOT_A_CLUSTER = "not a cluster: this wasup runs as a single node (no --node-id)"


@bp.get("/cluster")
async def get_cluster() -> Response:
    require_operator()
    node = current_state().sup.cluster
    if node is None:
        raise ApiError(404, "NOT_FOUND", NOT_A_CLUSTER)
    config = node.config
    nodes = [
        {
            "nodeId": info.node_id,
            "advertiseUrl": info.advertise_url,
            "capacity": info.capacity,
            "devices": info.devices,
            "heartbeatAge": round(info.heartbeat_age, 3),
            "alive": node.alive(info),
            "draining": info.draining,
        }
        for info in await node.nodes()
    ]
    data: dict[str, Any] = {
        "node": node.node_id,
        "leaseSeconds": config.lease_seconds,
        "renewSeconds": config.renew_seconds,
        "scanSeconds": config.scan_seconds,
        "rebalancePerMinute": config.rebalance_per_minute,
        "nodes": nodes,
    }
    return ok(data)


class ClusterCollector(Collector):
    """The lease metrics of one cluster node (see the module docstring)."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.node.stats
        yield GaugeMetricFamily("wasup_cluster_leases_held", "Devices this node holds now",
                                value=float(self.node.held()))
        for name, doc, value in (
            ("wasup_cluster_lease_claims", "Leases claimed", stats.claimed),
            ("wasup_cluster_leases_lost", "Leases a renewal found gone", stats.lost),
            ("wasup_cluster_handovers", "Devices handed over to other nodes", stats.handed_over),
            ("wasup_cluster_self_stops", "Engines stopped for want of a lease renewal",
             stats.self_stops),
            ("wasup_cluster_fenced_writes", "Actor writes refused by the lease fence",
             stats.fenced_writes),
        ):
            yield CounterMetricFamily(name, doc, value=float(value))
        renewals = CounterMetricFamily("wasup_cluster_renewals", "Lease renewals by outcome",
                                       labels=["outcome"])
        renewals.add_metric(["ok"], float(stats.renewals))
        renewals.add_metric(["failed"], float(stats.failed_renewals))
        yield renewals
        node = self.node
        for name, doc, count in (
            ("wasup_cluster_mirror_rows_read", "Rows of other nodes' devices re-read",
             0 if node.mirror is None else node.mirror.refreshed),
            ("wasup_cluster_mirror_reloads", "Reloads of every device row by the mirror",
             0 if node.mirror is None else node.mirror.reloads),
            ("wasup_cluster_qr_writes", "QR codes of this node's devices stored or cleared",
             0 if node.qr_store is None else node.qr_store.writes),
            ("wasup_cluster_notify_reconnects", "Listening connection opened again after it "
             "broke", node.db.notify_reconnects if isinstance(node.db, PgStore) else 0),
        ):
            yield CounterMetricFamily(name, doc, value=float(count))


def install(app: Quart, devices: Devices) -> None:
    """Register the route, and the lease metrics of a cluster node on ``app``'s registry
    (after :func:`api.metrics.install`)."""
    app.register_blueprint(bp, url_prefix=API_PREFIX)
    if devices.cluster is not None:
        app.extensions["wasup.metrics"].registry.register(ClusterCollector(devices.cluster))


class FeedCollector(Collector):
    """The counters of a cluster node's event feed (see the module docstring)."""

    def __init__(self, feed: ClusterFeed) -> None:
        self.feed = feed

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("wasup_cluster_feed_events",
                                  "Events the cluster feed handed to this node's streams",
                                  value=float(self.feed.fed))
        yield CounterMetricFamily("wasup_cluster_feed_reads", "Reads of the event log by the"
                                  " cluster feed", value=float(self.feed.reads))


def install_feed(app: Quart, feed: ClusterFeed) -> None:
    """Register the metrics of a cluster node's event feed on ``app``'s registry (after
    :func:`api.metrics.install`)."""
    app.extensions["wasup.metrics"].registry.register(FeedCollector(feed))
