"""Any node answers, with two real ``wasup serve`` cluster nodes on one real PostgreSQL.

Each node runs the in-process simulator. A device created on node B runs there; every call for
it made on node A is answered as node B answers it: commands go to B signed with the cluster
secret (login, the simulator's scan, a send, a settings change, delete), reads are answered by
A from its own directory and the database (the device, the QR code, the stored settings), and
show B's writes within a fraction of a second. A forward with a forged signature is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from api import cluster_signing
from common.clock import now_epoch
from tests.pg_support import TestPostgres
from tests.server_process import Launcher
from tests.test_kill9 import free_port, wait_ready

TOKEN = "cluster-e2e-operator-token"
SECRET = "cluster-e2e-secret"
DEADLINE = 60.0


def _args(url: str, name: str, port: int, *more: str) -> tuple[str, ...]:
    return ("--database", url, "--node-id", name, "--advertise-url",
            f"http://127.0.0.1:{port}", "--cluster-secret", SECRET, "--qr-wait", "0",
            "--rate-burst", "1000", *more)


def _api(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                             headers={"X-API-TOKEN": TOKEN}, timeout=DEADLINE)


async def _data(api: httpx.AsyncClient, path: str) -> Any:
    r = await api.get(path)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _until_status(api: httpx.AsyncClient, sid: str, status: str) -> float:
    started = trio.current_time()
    with trio.fail_after(DEADLINE):
        while (await _data(api, f"/devices/{sid}"))["status"] != status:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return trio.current_time() - started


async def test_node_a_answers_for_a_device_node_b_runs(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    port_a, port_b = free_port(), free_port()
    env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "warning"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with trio.fail_after(300):
        async with (
            Launcher(tmp_path / "a" / "data", port_a, env,
                     _args(url, "a", port_a, "--capacity", "1")) as node_a,
            Launcher(tmp_path / "b" / "data", port_b, env, _args(url, "b", port_b)) as node_b,
            _api(port_a) as a,
            _api(port_b) as b,
        ):
            await node_a.start()
            await node_b.start()
            await wait_ready(a)
            await wait_ready(b)

            # created on A, which has room for one device: the second runs on B
            r = await a.post("/devices", json={"userId": "u1", "alias": "On A"})
            assert r.status_code == 201, r.text
            on_a = r.json()["data"]["sessionId"]
            r = await a.post("/devices", json={"userId": "u1", "alias": "No room on A"})
            assert r.status_code == 201, r.text
            moved = r.json()["data"]["sessionId"]
            with trio.fail_after(DEADLINE):
                while (await a.get(f"/devices/{moved}/qr")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            # node B answers for the device on A alike
            login_b, login_a = await b.post(f"/devices/{on_a}/login"), await a.post(
                f"/devices/{on_a}/login")
            assert login_b.status_code == 200 and login_b.json() == login_a.json()

            # created on B: B runs it; A knows it at once
            r = await b.post("/devices", json={"userId": "u1", "alias": "On B"})
            assert r.status_code == 201, r.text
            sid = r.json()["data"]["sessionId"]
            device_key = {"X-API-TOKEN": r.json()["data"]["apiKey"]}
            with trio.fail_after(DEADLINE):
                while (await a.get(f"/devices/{sid}")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            # the device's own key works on A too, for reads and forwarded commands alike,
            # and still on its own device only
            assert (await a.get(f"/devices/{sid}", headers=device_key)).status_code == 200
            r = await a.put(f"/devices/{sid}/settings/proxy", json={"url": None},
                            headers=device_key)
            assert r.status_code == 200, r.text
            r = await a.post(f"/devices/{on_a}/logout", headers=device_key)
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"

            # the QR code: stored by B, read on A
            with trio.fail_after(DEADLINE):
                while (await b.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            with trio.fail_after(DEADLINE):
                while (qr_a := await a.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            qr_b = await b.get(f"/devices/{sid}/qr")
            assert qr_a.json() == qr_b.json()
            assert qr_a.json()["data"]["qrCode"].startswith("data:image/png;base64,")

            # login through A is B's login (pending: idempotent, the same QR code)
            login_a, login_b = await a.post(f"/devices/{sid}/login"), await b.post(
                f"/devices/{sid}/login")
            assert login_a.status_code == login_b.status_code == 200, login_a.text
            assert login_a.json() == login_b.json()
            assert login_a.json()["data"]["status"] == "pending"

            # the phone scans through A: B's simulator pairs it; A reads B's writes
            r = await a.post(f"/simulator/devices/{sid}/scan", json={})
            assert r.status_code == 200, r.text
            seconds = await _until_status(a, sid, "connected")
            print(f"\nconnected on B, read on A after {seconds * 1000:.0f} ms")
            await _until_status(b, sid, "connected")
            device_a, device_b = await _data(a, f"/devices/{sid}"), await _data(b, f"/devices/{sid}")
            assert device_a == device_b
            # its health, answered on A without a test send, reads what B's actor shows
            checks_a = (await _data(a, f"/devices/{sid}/health"))["checks"]
            checks_b = (await _data(b, f"/devices/{sid}/health"))["checks"]
            for name in ("engineLiveness", "stuckSends"):
                assert checks_a[name]["status"] == checks_b[name]["status"] == "pass", checks_a
            assert checks_a["stuckSends"] == checks_b["stuckSends"]
            # a write on B, read on A: within a fraction of a second
            r = await b.put(f"/devices/{sid}", json={"description": "written on B"})
            assert r.status_code == 200, r.text
            started = trio.current_time()
            with trio.fail_after(DEADLINE):
                while (await _data(a, f"/devices/{sid}"))["description"] != "written on B":  # noqa: ASYNC110
                    await trio.sleep(0.005)
            seconds = trio.current_time() - started
            print(f"a device row written on B read on A after {seconds * 1000:.0f} ms")
            assert seconds < 2.0  # typically ~0.1 s; loose for a loaded test machine
            qr_gone = await a.get(f"/devices/{sid}/qr")
            assert qr_gone.status_code == 409, qr_gone.text  # not pairing any more

            # a send through A, replayed on B with its Idempotency-Key: the same message
            key = {"Idempotency-Key": "e2e-send-1"}
            body = {"to": "+15550001111", "text": "through node A"}
            sent_a = await a.post(f"/devices/{sid}/messages", json=body, headers=key)
            assert sent_a.status_code in (200, 202), sent_a.text
            sent_b = await b.post(f"/devices/{sid}/messages", json=body, headers=key)
            assert sent_b.status_code in (200, 202), sent_b.text
            assert sent_a.json()["data"]["messageId"] == sent_b.json()["data"]["messageId"]
            refused = await a.post(f"/devices/{sid}/messages", json={"to": "+1", "text": ""})
            assert refused.status_code == 400  # B's validation, answered unchanged
            assert refused.json() == (await b.post(
                f"/devices/{sid}/messages", json={"to": "+1", "text": ""})).json()

            # a settings change through A: stored by B's actor, read on either node
            pace = {"ratePerMinute": 12.0, "burst": 3}
            put = await a.put(f"/devices/{sid}/settings/sending", json=pace)
            assert put.status_code == 200, put.text
            assert put.json()["data"] == pace
            assert await _data(a, f"/devices/{sid}/settings/sending") == await _data(
                b, f"/devices/{sid}/settings/sending")
            assert (await _data(a, f"/devices/{sid}/settings/sending"))["ratePerMinute"] == 12.0

            # a forged forward reaches nobody: refused by B unserved
            path = f"/api/whatsapp/devices/{sid}"
            forged = cluster_signing.sign(b"not-the-secret", "DELETE", path.encode(), b"",
                                          node="a", now=now_epoch())
            r = await b.delete(f"/devices/{sid}", headers=forged)
            assert r.status_code == 401 and r.json()["code"] == "AUTHENTICATION_FAILED"
            r = await a.delete(f"/devices/{sid}", headers=forged)  # nor forwarded by A
            assert r.status_code == 401
            assert (await _data(b, f"/devices/{sid}"))["status"] == "connected"

            # delete through A: gone on both nodes
            r = await a.delete(f"/devices/{sid}")
            assert r.status_code == 200, r.text
            assert r.json()["data"]["sessionId"] == sid
            assert (await b.get(f"/devices/{sid}")).status_code == 404
            with trio.fail_after(DEADLINE):
                while (await a.get(f"/devices/{sid}")).status_code != 404:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            gone = await a.post(f"/devices/{sid}/logout")
            assert gone.status_code == 404 and gone.json()["code"] == "DEVICE_NOT_FOUND"

            # counted on each node's /metrics
            metrics_a = (await a.get("/metrics")).text
            metrics_b = (await b.get("/metrics")).text
            assert 'wasup_forwards_total{outcome="answered"}' in metrics_a
            assert 'wasup_forwards_total{outcome="refused"} 1.0' in metrics_b
