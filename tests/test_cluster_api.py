"""The cluster through the HTTP API: GET /api/whatsapp/cluster (operator only; 404 on a single
node), the owner in a device's detail, and the lease metrics of /metrics."""

from __future__ import annotations

from pathlib import Path

import trio

from supervisor.config import ClusterConfig
from tests.conftest import api_client, running_server
from tests.pg_support import TestPostgres


async def test_a_single_node_says_it_is_not_a_cluster(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        answer = await api.get("/cluster")
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "NOT_FOUND" and "not a cluster" in answer.json()["error"]
        created = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        detail = (await api.get(f"/devices/{created.json()['data']['id']}")).json()["data"]
        assert "node" not in detail


async def test_the_cluster_route_lists_the_nodes_for_the_operator_only(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    cluster = ClusterConfig(node_id="node-a", advertise_url="http://127.0.0.1:1",
                            secret="0123456789abcdef", capacity=50)
    async with running_server(tmp_path / "data", database_url=url, cluster=cluster) as server:
        async with api_client(server) as api:
            created = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            assert created.status_code == 201, created.text
            device = created.json()["data"]
            answer = await api.get("/cluster")
            assert answer.status_code == 200, answer.text
            data = answer.json()["data"]
            assert data["node"] == "node-a" and data["leaseSeconds"] == 15
            [node] = data["nodes"]
            assert node["nodeId"] == "node-a" and node["devices"] == 1
            assert node["capacity"] == 50 and node["alive"] and not node["draining"]
            assert 0 <= node["heartbeatAge"] < 15
            detail = (await api.get(f"/devices/{device['id']}")).json()["data"]
            assert detail["node"] == "node-a"
            metrics = (await api.get("/metrics")).text
            assert "wasup_cluster_leases_held 1.0" in metrics
            assert "wasup_cluster_fenced_writes_total 0.0" in metrics
            assert "wasup_cluster_lease_claims_total 1.0" in metrics
            assert "wasup_cluster_mirror_reloads_total 1.0" in metrics  # every row, at start
            assert "wasup_cluster_notify_reconnects_total 0.0" in metrics
            # the device's QR code, stored for the other nodes (written just after it shows)
            qr = await api.get(f"/devices/{device['id']}/qr")
            assert qr.status_code == 200, qr.text
            with trio.fail_after(10):
                while "wasup_cluster_qr_writes_total 0.0" in metrics:
                    await trio.sleep(0.05)
                    metrics = (await api.get("/metrics")).text
            assert "wasup_cluster_qr_writes_total" in metrics
        async with api_client(server, token=device["apiKey"]) as as_device:
            refused = await as_device.get("/cluster")
            assert refused.status_code == 403, refused.text
        async with api_client(server, token=None) as anonymous:
            assert (await anonymous.get("/cluster")).status_code == 401
