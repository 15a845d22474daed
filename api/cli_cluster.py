"""``wasup serve``'s cluster options: this node's place among several on one PostgreSQL.

Each option has an environment variable (the flag wins)::

    --node-id               WASUP_NODE_ID               this node's name, unique in the cluster
    --advertise-url         WASUP_ADVERTISE_URL         http://host:port the other nodes reach it at
    --cluster-secret        WASUP_CLUSTER_SECRET        shared by every node (signs forwarded calls)
    --capacity              WASUP_CAPACITY              devices this node runs at most (default: unbounded)
    --lease-seconds         WASUP_LEASE_SECONDS         15  a device's lease, by the database's clock
    --lease-renew-seconds   WASUP_LEASE_RENEW_SECONDS   5   between renewals (and heartbeats)
    --lease-scan-seconds    WASUP_LEASE_SCAN_SECONDS    2   between scans for free devices
    --rebalance-per-minute  WASUP_REBALANCE_PER_MINUTE  30  devices a node takes from others per minute

Node id, advertise URL and secret come together or not at all (none: a single node), and need
``--database`` (a cluster shares one PostgreSQL). The lease timings must leave the safety margin
(a fifth of the lease) after a renewal: ``renew + lease / 5 < lease`` (see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

from supervisor.cluster.book import LeaseTiming
from supervisor.config import ClusterConfig

DEFAULTS = ClusterConfig(node_id="", advertise_url="", secret="")
#: What a node id may be: letters, digits, ``.``, ``_`` and ``-``, at most 64.
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: The fewest characters a cluster secret may have.
MIN_SECRET = 16
CLUSTER_ENV = {
    "node_id": "WASUP_NODE_ID",
    "advertise_url": "WASUP_ADVERTISE_URL",
    "secret": "WASUP_CLUSTER_SECRET",
    "capacity": "WASUP_CAPACITY",
    "lease_seconds": "WASUP_LEASE_SECONDS",
    "renew_seconds": "WASUP_LEASE_RENEW_SECONDS",
    "scan_seconds": "WASUP_LEASE_SCAN_SECONDS",
    "rebalance_per_minute": "WASUP_REBALANCE_PER_MINUTE",
}


def _env(env: Mapping[str, str], field: str) -> str | None:
    return env.get(CLUSTER_ENV[field]) or None


def add_arguments(serve: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Add the cluster options (defaults from ``env``) to ``wasup serve``."""
    group = serve.add_argument_group("cluster (several nodes on one PostgreSQL; docs/cluster.md)")
    group.add_argument("--node-id", default=_env(env, "node_id"),
                       help="this node's name, unique in the cluster (turns the cluster on)")
    group.add_argument("--advertise-url", default=_env(env, "advertise_url"),
                       help="the http://host:port other nodes reach this node's API at")
    group.add_argument("--cluster-secret", default=_env(env, "secret"),
                       help=f"the secret every node shares (at least {MIN_SECRET} characters)")
    group.add_argument("--capacity", type=int, default=_env(env, "capacity"),
                       help="devices this node runs at most (default: unbounded)")
    group.add_argument("--lease-seconds", type=float,
                       default=_env(env, "lease_seconds") or f"{DEFAULTS.lease_seconds:g}",
                       help="seconds a device's lease lasts (default 15)")
    group.add_argument("--lease-renew-seconds", type=float,
                       default=_env(env, "renew_seconds") or f"{DEFAULTS.renew_seconds:g}",
                       help="seconds between lease renewals and heartbeats (default 5)")
    group.add_argument("--lease-scan-seconds", type=float,
                       default=_env(env, "scan_seconds") or f"{DEFAULTS.scan_seconds:g}",
                       help="seconds between scans for free or expired devices (default 2)")
    group.add_argument("--rebalance-per-minute", type=int,
                       default=_env(env, "rebalance_per_minute")
                       or str(DEFAULTS.rebalance_per_minute),
                       help="devices a node takes from others per minute (default 30)")


def cluster_from(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ClusterConfig | None:
    """The cluster options of ``args`` checked (``parser.error`` naming the option when one is
    wrong); None without a node id, advertise URL and secret."""
    given = {
        "node-id": args.node_id, "advertise-url": args.advertise_url,
        "cluster-secret": args.cluster_secret,
    }
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        parser.error(
            "a cluster node needs --node-id, --advertise-url and --cluster-secret together "
            f"(missing: {', '.join('--' + m for m in missing)})"
        )
    if args.database_url is None:
        parser.error("a cluster node needs --database (every node shares one PostgreSQL)")
    if not NODE_ID.fullmatch(args.node_id):
        parser.error("node-id must be 1 to 64 letters, digits, '.', '_' or '-'")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", args.advertise_url):
        parser.error("advertise-url must be an http:// or https:// URL (http://host:port)")
    if len(args.cluster_secret) < MIN_SECRET:
        parser.error(f"cluster-secret must have at least {MIN_SECRET} characters")
    if args.capacity is not None and args.capacity < 1:
        parser.error("capacity must be at least 1 (leave it out: unbounded)")
    if args.rebalance_per_minute < 0:
        parser.error("rebalance-per-minute must be 0 (no rebalancing) or more")
    timing = LeaseTiming(args.lease_seconds, args.lease_renew_seconds, args.lease_scan_seconds)
    problem = timing.check()
    if problem is not None:
        parser.error(problem)
    return ClusterConfig(
        node_id=args.node_id,
        advertise_url=args.advertise_url.rstrip("/"),
        secret=args.cluster_secret,
        capacity=args.capacity,
        lease_seconds=timing.lease,
        renew_seconds=timing.renew,
        scan_seconds=timing.scan,
        rebalance_per_minute=args.rebalance_per_minute,
    )
