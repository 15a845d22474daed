"""Health, troubleshooting, state history and readiness over HTTP, end to end (simulator
engine, real sockets, real clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from supervisor.config import SendingConfig
from tests.conftest import api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 10.0


async def created(api: httpx.AsyncClient, alias: str, user: str = "u1") -> dict[str, Any]:
    r = await api.post("/devices", json={"userId": user, "alias": alias})
    assert r.status_code == 201, r.text
    device: dict[str, Any] = r.json()["data"]
    return device


async def wait_status(api: httpx.AsyncClient, ref: str, status: str) -> dict[str, Any]:
    with trio.fail_after(DEADLINE):
        while True:
            r = await api.get(f"/devices/{ref}")
            data: dict[str, Any] = r.json()["data"]
            if data["status"] == status:
                return data
            await trio.sleep(0.01)


async def connected(api: httpx.AsyncClient, alias: str, user: str = "u1") -> dict[str, Any]:
    device = await created(api, alias, user)
    r = await api.post(f"/simulator/devices/{device['id']}/scan", json={})
    assert r.status_code == 200, r.text
    return await wait_status(api, device["sessionId"], "connected")


async def health_of(api: httpx.AsyncClient, ref: str, query: str = "") -> dict[str, Any]:
    r = await api.get(f"/devices/{ref}/health{query}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def test_a_connected_device_passes_and_its_test_message_is_acknowledged(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await connected(api, "Shop")
        sid = device["sessionId"]
        data = await health_of(api, sid)
        assert data["deviceId"] == sid and data["status"] == "pass", data
        checks = data["checks"]
        assert checks["deviceExists"]["data"]["sessionId"] == sid
        assert checks["connectionStatus"] == {
            "status": "pass", "value": "connected", "message": "connected to WhatsApp"}
        assert {"lastActivity", "engineLiveness", "timeInState", "reconnectAttempts",
                "webhookBacklog", "webhookFailures", "stuckSends"} <= set(checks)
        assert "messageSending" not in checks

        data = await health_of(api, sid, "?sendTest=true")
        sending = data["checks"]["messageSending"]
        assert sending["status"] == "pass" and sending["value"] == "sent", sending
        # The test message went to the device's own number.
        r = await api.get(f"/devices/{sid}/chats")
        assert r.status_code == 200
        own = device["phoneNumber"].lstrip("+")
        assert [c["chatId"].lstrip("+") for c in r.json()["data"]] == [own]

        r = await api.get(f"/devices/{sid}/troubleshoot")
        assert r.status_code == 200
        shot = r.json()["data"]
        assert shot["issues"] == [] and shot["recommendations"] == [] and shot["health"] == "pass"


async def test_failed_devices_fail_and_troubleshooting_explains_them(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        for reason, status in (("stream_replaced", "disconnected"),
                               ("client_outdated", "disconnected"),
                               ("banned", "logged_out")):
            device = await connected(api, reason.replace("_", "-"))
            sid = device["sessionId"]
            r = await api.post(f"/simulator/devices/{sid}/fail", json={"reason": reason})
            assert r.status_code == 200, r.text
            await wait_status(api, sid, status)

            data = await health_of(api, sid, "?sendTest=true")
            assert data["status"] == "fail"
            check = data["checks"]["connectionStatus"]
            assert check["status"] == "fail" and reason in check["message"]
            assert data["checks"]["messageSending"]["status"] == "fail"

            r = await api.get(f"/devices/{sid}/troubleshoot")
            shot = r.json()["data"]
            assert shot["statusReason"] == reason and shot["health"] == "fail"
            assert len(shot["issues"]) == len(shot["recommendations"]) >= 2
            assert shot["issues"][0].startswith(f"{status}: ")
            assert shot["issues"][1].startswith(f"statusReason {reason}: ")
        # client_outdated says to upgrade neonize; stream_replaced to stop the other client.
        r = await api.get("/devices/user_u1_device_client-outdated/troubleshoot")
        assert "Upgrade neonize" in r.json()["data"]["recommendations"][1]
        r = await api.get("/devices/user_u1_device_stream-replaced/troubleshoot")
        assert "Stop the other process" in r.json()["data"]["recommendations"][1]


async def test_stuck_sends_and_a_webhook_backlog_show(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        # A webhook endpoint that refuses connections: every delivery waits for its retry.
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()
        async with running_server(
            tmp_path / "data", allow_networks=("127.0.0.0/8",),
            # One send a minute: a second send waits for its turn and is stuck after 0.2 s.
            sending=SendingConfig(stuck_after=0.2, rate_per_minute=1.0, burst=1),
        ) as server, api_client(server) as api:
            device = await connected(api, "Shop")
            sid = device["sessionId"]
            r = await api.put(f"/devices/{sid}/settings/webhook",
                              json={"url": f"http://127.0.0.1:{port}/hook"})
            assert r.status_code == 200, r.text
            for text, code, status in (("first", 200, "sent"), ("second", 202, "pending")):
                r = await api.post(f"/devices/{sid}/messages",
                                   json={"to": "+15550000001", "text": text})
                assert r.status_code == code and r.json()["data"]["status"] == status, r.text
            with trio.fail_after(DEADLINE):
                while True:
                    checks = (await health_of(api, sid))["checks"]
                    if checks["stuckSends"]["value"] == 1 and checks["webhookBacklog"]["value"]:
                        break
                    await trio.sleep(0.05)
            assert checks["stuckSends"]["status"] == "warn"
            assert "1 of 1 waiting sends are stuck" in checks["stuckSends"]["message"]
            assert "webhook deliveries wait" in checks["webhookBacklog"]["message"]
            r = await api.get(f"/devices/{sid}/troubleshoot")
            assert any(i.startswith("stuckSends: ") for i in r.json()["data"]["issues"])
        nursery.cancel_scope.cancel()


async def test_users_health_lists_every_device_of_the_user(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        one = await connected(api, "One")
        two = await created(api, "Two")
        await created(api, "Other", user="u2")
        r = await api.get("/users/u1/health")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["userId"] == "u1" and data["totalDevices"] == 2
        assert [h["deviceId"] for h in data["healthChecks"]] == [
            one["sessionId"], two["sessionId"]]
        assert data["healthChecks"][0]["status"] == "pass"
        assert data["healthChecks"][1]["checks"]["connectionStatus"]["status"] == "warn"
        assert sum(data["summary"].values()) == 2
        # A device key sees its own device only.
        async with api_client(server, token=two["apiKey"]) as own:
            r = await own.get("/users/u1/health")
            assert [h["deviceId"] for h in r.json()["data"]["healthChecks"]] == [two["sessionId"]]
            r = await own.get(f"/devices/{one['sessionId']}/health")
            assert r.status_code == 404
        r = await api.get("/users/nobody/health")
        assert r.json()["data"]["totalDevices"] == 0


async def test_history_pages_newest_first_by_cursor(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await connected(api, "Shop")
        sid = device["sessionId"]
        r = await api.post(f"/simulator/devices/{sid}/fail", json={"reason": "stream_replaced"})
        assert r.status_code == 200
        await wait_status(api, sid, "disconnected")
        r = await api.post(f"/devices/{sid}/logout")
        assert r.status_code == 200, r.text

        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        pages = 0
        while True:
            query = "?limit=2" + (f"&before={cursor}" if cursor else "")
            r = await api.get(f"/devices/{sid}/history{query}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["data"]) <= 2
            seen += body["data"]
            pages += 1
            if not body["pagination"]["hasMore"]:
                assert body["pagination"]["nextCursor"] is None
                break
            cursor = body["pagination"]["nextCursor"]
        assert [(h["from"], h["to"], h["reason"]) for h in seen] == [
            ("disconnected", "logged_out", "logout"),
            ("connected", "disconnected", "stream_replaced"),
            ("connecting", "connected", None),
            ("pending", "connecting", None),
            (None, "pending", "created"),
        ]
        assert pages == 3
        assert [h["at"] for h in seen] == sorted((h["at"] for h in seen), reverse=True)


async def test_bad_parameters_are_400_naming_them(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await created(api, "Shop")
        sid = device["sessionId"]
        for path, field in ((f"/devices/{sid}/health?sendTest=yes", "sendTest"),
                            (f"/devices/{sid}/history?limit=0", "limit"),
                            (f"/devices/{sid}/history?before=abc", "before"),
                            ("/users/bad%20user/health", "userId")):
            r = await api.get(path)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["field"] == field
        for path in ("/devices/nope/health", "/devices/nope/troubleshoot", "/devices/nope/history"):
            r = await api.get(path)
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"


async def test_ready_names_its_checks(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server, token=None) as api:
        r = await api.get("/ready")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["status"] == "ready"
        assert set(data["checks"]) == {"database", "devices", "engine"}


async def test_ready_answers_503_naming_the_failing_check(tmp_path: Path, monkeypatch: Any) -> None:
    from supervisor import readiness

    async with running_server(tmp_path / "data") as server, api_client(server, token=None) as api:
        # The whatsmeow engine is loaded once neonize's adapter module is: without it, not ready.
        monkeypatch.setattr(readiness, "engine_check", lambda name: readiness.engine_check_of(
            "whatsmeow", loaded=frozenset()))
        r = await api.get("/ready")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["code"] == "SERVICE_UNAVAILABLE"
        assert body["error"] == "not ready: engine: neonize's Go library is not loaded"
        assert r.headers["Retry-After"] == "1"
        monkeypatch.undo()
        assert (await api.get("/ready")).status_code == 200
