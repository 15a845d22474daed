"""The HTTP API end to end over real sockets: Hypercorn on 127.0.0.1 (port 0), httpx and
trio-websocket as clients, the simulator engine as WhatsApp.

Rules: only 127.0.0.1 servers these tests start; real time (no autojump: the server runs real
sockets), so every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from api.openapi import load_spec
from api.ratelimit import RateLimitPolicy
from api.server import Server
from api.state import ApiSettings
from tests.conftest import TEST_TOKEN, api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PNG_URL = "data:image/png;base64,"
SEED_SESSION = "user_user123_device_business-account-1"


async def next_event(ws: WebSocketConnection, type_: str, session_id: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            event = json.loads(await ws.get_message())
            if event["type"] == type_ and event["sessionId"] == session_id:
                return event


def served(server: Server, rule: str) -> bool:
    return any(r.rule == rule for r in server.app.url_map.iter_rules())


async def test_seed_journey(tmp_path: Path) -> None:
    async with running_server(
        tmp_path / "data", allow_networks=("127.0.0.0/8",)
    ) as server, api_client(server) as api, open_websocket_url(
        server.ws_url + f"?token={TEST_TOKEN}"
    ) as ws:
        # -- create (seed request body, seed response shape) --
        r = await api.post(
            "/devices",
            json={
                "userId": "user123",
                "alias": "Business Account 1",
                "businessType": "retail",
                "phoneNumber": "+1234567890",
                "description": "Main business account for customer support",
            },
        )
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["success"] is True
        assert body["message"] == "Device created successfully. Scan QR code to authenticate."
        dev = body["data"]
        assert isinstance(dev["id"], int)
        assert dev["sessionId"] == SEED_SESSION
        assert dev["userId"] == "user123"
        assert dev["alias"] == "Business Account 1"
        assert dev["businessType"] == "retail"
        assert dev["status"] == "pending"
        assert dev["apiKey"].startswith("dev_") and len(dev["apiKey"]) >= 4 + 32
        assert ISO.match(dev["createdAt"])
        assert dev["qrCode"].startswith(PNG_URL)
        sid, key = dev["sessionId"], dev["apiKey"]

        # -- the QR over the WebSocket and over HTTP --
        event = await next_event(ws, "qr_code", sid)
        assert event["data"]["qrCode"].startswith(PNG_URL)
        assert ISO.match(event["timestamp"])
        r = await api.get(f"/devices/{sid}/qr")
        assert r.status_code == 200, r.text
        qr = r.json()["data"]
        assert set(qr) >= {"qrCode", "qrString", "expiresAt", "attempt", "maxAttempts"}
        assert qr["qrCode"].startswith(PNG_URL)
        assert ISO.match(qr["expiresAt"])
        assert (qr["attempt"], qr["maxAttempts"]) == (1, 3)

        # numeric id and sessionId name the same device
        by_id = (await api.get(f"/devices/{dev['id']}")).json()["data"]
        assert by_id["sessionId"] == sid

        # -- scan through the simulator: connecting, then connected --
        r = await api.post(
            f"/simulator/devices/{sid}/scan",
            json={"phoneNumber": "+1234567890", "pushName": "Business Account"},
        )
        assert r.status_code == 200, r.text
        await next_event(ws, "device_connected", sid)
        r = await api.get(f"/devices/{sid}")
        assert r.status_code == 200
        d = r.json()["data"]
        assert d["status"] == "connected"
        assert d["phoneNumber"] == "+1234567890"
        assert ISO.match(d["lastConnection"]) and ISO.match(d["updatedAt"])
        info = d["connectionInfo"]
        assert info["isConnected"] is True
        assert info["pushName"] == "Business Account"
        assert info["platform"] == "android"
        assert set(info) == {"isConnected", "lastSeen", "platform", "battery", "pushName"}
        assert set(d["statistics"]) == {"messagesSent", "messagesReceived", "lastActivity"}
        r = await api.get(f"/devices/{sid}/qr")
        assert (r.status_code, r.json()["code"]) == (409, "DEVICE_CONFLICT")

        # an incoming message shows in the statistics and on the WebSocket
        r = await api.post(
            f"/simulator/devices/{sid}/messages", json={"from": "+15550001111", "text": "hi"}
        )
        assert r.status_code == 200, r.text
        received = await next_event(ws, "message_received", sid)
        assert received["data"]["text"] == "hi"

        # -- a second device; list with status filter and pagination --
        r = await api.post(
            "/devices",
            json={"userId": "user123", "alias": "Support Account", "businessType": "support"},
        )
        assert r.status_code == 201
        second = r.json()["data"]
        assert second["sessionId"] == "user_user123_device_support-account"
        r = await api.get("/users/user123/devices")
        listing = r.json()
        assert listing["success"] is True
        assert listing["pagination"] == {"total": 2, "page": 1, "limit": 50}
        item = listing["data"][0]
        for field in ["id", "sessionId", "alias", "phoneNumber", "status", "lastConnection",
                      "messagesSent", "businessType"]:
            assert field in item
        assert [i["sessionId"] for i in listing["data"]] == [sid, second["sessionId"]]
        connected = (await api.get("/users/user123/devices", params={"status": "connected"})).json()
        assert [i["sessionId"] for i in connected["data"]] == [sid]
        assert connected["pagination"]["total"] == 1
        page2 = (await api.get("/users/user123/devices", params={"page": 2, "limit": 1})).json()
        assert [i["sessionId"] for i in page2["data"]] == [second["sessionId"]]
        assert page2["pagination"] == {"total": 2, "page": 2, "limit": 1}
        assert (await api.get("/users/nobody/devices")).json()["data"] == []

        # -- update (seed body) --
        r = await api.put(
            f"/devices/{sid}",
            json={
                "alias": "Updated Business Account",
                "businessType": "ecommerce",
                "description": "Primary e-commerce customer service account",
                "phoneNumber": "+1234567890",
            },
        )
        assert r.status_code == 200, r.text
        updated = r.json()["data"]
        assert updated["alias"] == "Updated Business Account"
        assert updated["businessType"] == "ecommerce"
        assert updated["description"] == "Primary e-commerce customer service account"
        assert updated["sessionId"] == sid

        # -- both settings (when their route modules are installed) --
        if served(server, "/api/whatsapp/devices/<device_id>/settings/webhook"):
            r = await api.put(
                f"/devices/{sid}/settings/webhook",
                json={
                    "url": "http://127.0.0.1:9/webhooks/whatsapp",
                    "events": ["message", "status"],
                    "secret": "webhook_secret",
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()["success"] is True
        if served(server, "/api/whatsapp/devices/<device_id>/settings/ai"):
            r = await api.put(
                f"/devices/{sid}/settings/ai",
                json={
                    "enabled": True,
                    "provider": "openai",
                    "model": "gpt-3.5-turbo",
                    "autoReply": True,
                },
            )
            assert r.status_code == 200, r.text

        # -- sessions, the device key's view --
        sessions = (await api.get("/sessions")).json()["data"]
        assert {s["sessionId"] for s in sessions} == {sid, second["sessionId"]}
        async with api_client(server, token=key) as mine:
            assert (await mine.get(f"/devices/{sid}")).status_code == 200
            other = await mine.get(f"/devices/{second['sessionId']}")
            assert (other.status_code, other.json()["code"]) == (404, "DEVICE_NOT_FOUND")
            assert [s["sessionId"] for s in (await mine.get("/sessions")).json()["data"]] == [sid]
            own_list = (await mine.get("/users/user123/devices")).json()
            assert [i["sessionId"] for i in own_list["data"]] == [sid]
            assert own_list["pagination"]["total"] == 1
            create = await mine.post("/devices", json={"userId": "user123", "alias": "X"})
            assert (create.status_code, create.json()["code"]) == (403, "FORBIDDEN")
            sim = await mine.post(f"/simulator/devices/{sid}/disconnect", json={})
            assert sim.status_code == 403

        # -- cancel, logout, login again --
        r = await api.post(f"/sessions/{sid}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["status"] == "disconnected"
        assert r.json()["data"]["statusReason"] == "cancelled"
        r = await api.post(f"/devices/{sid}/logout")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["status"] == "logged_out"
        r = await api.post(f"/devices/{sid}/login")
        assert r.status_code == 200, r.text
        login = r.json()
        assert login["message"] == "Login initiated. Scan QR code if required."
        assert login["data"]["sessionId"] == sid
        assert login["data"]["status"] == "pending"
        assert login["data"]["qrCode"].startswith(PNG_URL)

        # -- delete: gone, and its key with it --
        r = await api.delete(f"/devices/{sid}")
        assert r.status_code == 200, r.text
        assert r.json()["success"] is True
        r = await api.get(f"/devices/{sid}")
        assert (r.status_code, r.json()["code"]) == (404, "DEVICE_NOT_FOUND")
        async with api_client(server, token=key) as gone:
            r = await gone.get(f"/devices/{sid}")
            assert (r.status_code, r.json()["code"]) == (401, "AUTHENTICATION_FAILED")


# -- bad input --------------------------------------------------------------------------------

MIB = 1024 * 1024

# (method, path, body: dict | bytes | None, token, status, code, field)
BAD_REQUESTS: list[tuple[str, str, Any, str | None, int, str, str | None]] = [
    ("GET", "/sessions", None, None, 401, "AUTHENTICATION_FAILED", None),
    ("GET", "/sessions", None, "wrong", 401, "AUTHENTICATION_FAILED", None),
    ("GET", "/sessions", None, "dev_" + "0" * 32, 401, "AUTHENTICATION_FAILED", None),
    ("GET", "/sessions", None, "x" * 5000, 401, "AUTHENTICATION_FAILED", None),
    ("POST", "/devices", b"{not json", TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("POST", "/devices", b"", TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("POST", "/devices", b"\xff\xfe\x00", TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("POST", "/devices", b"[" * 200_000, TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("POST", "/devices", b"[1, 2]", TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("POST", "/devices", b"null", TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("POST", "/devices", {"alias": "a"}, TEST_TOKEN, 400, "INVALID_REQUEST", "userId"),
    ("POST", "/devices", {"userId": "u", "alias": "a", "admin": True}, TEST_TOKEN, 400,
     "INVALID_REQUEST", "admin"),
    ("POST", "/devices", {"userId": ["u"], "alias": "a"}, TEST_TOKEN, 400, "INVALID_REQUEST",
     "userId"),
    ("POST", "/devices", {"userId": "u", "alias": 12}, TEST_TOKEN, 400, "INVALID_REQUEST",
     "alias"),
    ("POST", "/devices", {"userId": "u", "alias": ""}, TEST_TOKEN, 400, "INVALID_REQUEST",
     "alias"),
    ("POST", "/devices", {"userId": "u", "alias": "a" * 101}, TEST_TOKEN, 400,
     "INVALID_REQUEST", "alias"),
    ("POST", "/devices", {"userId": "u", "alias": "a", "phoneNumber": "12345"}, TEST_TOKEN,
     400, "INVALID_REQUEST", "phoneNumber"),
    ("POST", "/devices", {"userId": "u", "alias": "a", "phoneNumber": "+1 (555) 123"},
     TEST_TOKEN, 400, "INVALID_REQUEST", "phoneNumber"),
    ("POST", "/devices", {"userId": "../etc", "alias": "a"}, TEST_TOKEN, 400,
     "INVALID_REQUEST", "userId"),
    ("POST", "/devices", {"userId": "u", "alias": "<script>"}, TEST_TOKEN, 201, "", None),
    ("POST", "/devices", {"userId": "u", "alias": "<script>"}, TEST_TOKEN, 409,
     "DEVICE_CONFLICT", None),
    ("POST", "/devices", b"x" * (2 * MIB), TEST_TOKEN, 413, "PAYLOAD_TOO_LARGE", None),
    ("PUT", "/devices/user_u_device_script", {}, TEST_TOKEN, 400, "INVALID_REQUEST", "body"),
    ("PUT", "/devices/user_u_device_script", {"alias": None}, TEST_TOKEN, 400,
     "INVALID_REQUEST", "alias"),
    ("PUT", "/devices/user_u_device_script", {"businessType": 3}, TEST_TOKEN, 400,
     "INVALID_REQUEST", "businessType"),
    ("PUT", "/devices/nope", {"alias": "x"}, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("GET", "/devices/999999", None, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("GET", "/devices/%00%ff", None, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("GET", "/devices/" + "x" * 3000, None, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("GET", "/devices/nope/qr", None, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("POST", "/devices/nope/login", None, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("POST", "/sessions/nope/cancel", None, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("GET", "/users/bad%20user/devices", None, TEST_TOKEN, 400, "INVALID_REQUEST", "userId"),
    ("GET", "/users/u/devices?status=online", None, TEST_TOKEN, 400, "INVALID_REQUEST",
     "status"),
    ("GET", "/users/u/devices?limit=1000", None, TEST_TOKEN, 400, "INVALID_REQUEST", "limit"),
    ("GET", "/users/u/devices?page=0", None, TEST_TOKEN, 400, "INVALID_REQUEST", "page"),
    ("GET", "/users/u/devices?page=1e3", None, TEST_TOKEN, 400, "INVALID_REQUEST", "page"),
    ("GET", "/nothing/here", None, TEST_TOKEN, 404, "NOT_FOUND", None),
    ("GET", "/nothing/here", None, None, 404, "NOT_FOUND", None),
    ("DELETE", "/sessions", None, TEST_TOKEN, 405, "METHOD_NOT_ALLOWED", None),
    ("PATCH", "/devices/x", {"alias": "y"}, TEST_TOKEN, 405, "METHOD_NOT_ALLOWED", None),
    ("TRACE", "/metrics", None, TEST_TOKEN, 405, "METHOD_NOT_ALLOWED", None),
    ("TRACE", "/metrics", None, None, 405, "METHOD_NOT_ALLOWED", None),
    ("DELETE", "/health", None, None, 405, "METHOD_NOT_ALLOWED", None),
    ("TRACE", "/openapi.json", None, None, 405, "METHOD_NOT_ALLOWED", None),
    ("POST", "/simulator/devices/nope/scan", {}, TEST_TOKEN, 404, "DEVICE_NOT_FOUND", None),
    ("POST", "/simulator/devices/user_u_device_script/scan", {"phoneNumber": "5"}, TEST_TOKEN,
     400, "INVALID_REQUEST", "phoneNumber"),
    ("POST", "/simulator/devices/user_u_device_script/messages", {"from": "+15550001111",
     "text": "x"}, TEST_TOKEN, 409, "DEVICE_CONFLICT", None),
    ("POST", "/simulator/devices/user_u_device_script/unlink", {"x": 1}, TEST_TOKEN, 400,
     "INVALID_REQUEST", "x"),
]


async def test_bad_input_table(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server:
        async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
            for method, path, body, token, status, code, field in BAD_REQUESTS:
                headers = {"X-API-TOKEN": token} if token is not None else {}
                kwargs: dict[str, Any] = {"headers": headers}
                if isinstance(body, bytes):
                    kwargs["content"] = body
                    headers["Content-Type"] = "application/json"
                elif body is not None:
                    kwargs["json"] = body
                r = await client.request(method, path, **kwargs)
                case = f"{method} {path} {str(body)[:60]!r}"
                assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
                assert r.headers["content-type"].startswith("application/json"), case
                payload = r.json()
                assert "Traceback" not in r.text, case
                if status >= 400:
                    assert payload["success"] is False, case
                    assert payload["code"] == code, f"{case}: {payload}"
                    assert isinstance(payload["error"], str) and payload["error"], case
                    if field is not None:
                        assert payload.get("field") == field, f"{case}: {payload}"
                if status == 405:
                    assert "allow" in r.headers, case


async def test_keep_alive_survives_unread_bodies(tmp_path: Path) -> None:
    """A large body on a request answered without reading it (404, 401) must not stall the
    next request on the same connection."""
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        with trio.fail_after(10):
            for _ in range(3):
                r = await api.put(
                    "/devices/nope",
                    content=b'{"alias": "' + b"x" * 300_000 + b'"}',
                    headers={"Content-Type": "application/json"},
                )
                assert r.status_code == 404
                assert (await api.get("/sessions")).status_code == 200


async def test_rate_limit_429_with_headers(tmp_path: Path) -> None:
    settings = ApiSettings(rate_limit=RateLimitPolicy(rate=0.5, burst=3))
    async with running_server(tmp_path / "data", settings=settings) as server:
        async with api_client(server) as api:
            first = await api.get("/sessions")
            assert first.headers["RateLimit-Policy"] == '"default";q=3;w=6'
            assert re.fullmatch(r'"default";r=2;t=\d+', first.headers["RateLimit"])
            await api.get("/sessions")
            await api.get("/sessions")
            r = await api.get("/sessions")
            assert r.status_code == 429
            assert r.json() == {
                "success": False, "error": "too many requests", "code": "RATE_LIMIT_EXCEEDED"
            }
            assert int(r.headers["Retry-After"]) >= 1
            assert r.headers["RateLimit"].startswith('"default";r=0;')
        # another credential has its own bucket
        async with api_client(server) as api:
            create = await api.post("/devices", json={"userId": "u", "alias": "a"})
        assert create.status_code == 429  # the operator's bucket is still empty


async def test_secrets_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_server(tmp_path / "data", api_token="s3cret-operator-token") as server:
        async with httpx.AsyncClient(base_url=server.api_url) as client:
            headers = {"X-API-TOKEN": "s3cret-operator-token"}
            r = await client.post(
                "/devices", json={"userId": "u", "alias": "a"}, headers=headers
            )
            key = r.json()["data"]["apiKey"]
            await client.get("/sessions?token=s3cret-operator-token", headers=headers)
            await client.get(f"/devices/1?api_key={key}", headers={"X-API-TOKEN": key})
            await client.get("/sessions", headers={"X-API-TOKEN": "wrong-guess-token"})
    # Every server-side record (the clients' own httpx/httpcore logs are not wasup's).
    text = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    assert "/sessions" in text  # the access log did run
    for secret in ["s3cret-operator-token", key, "wrong-guess-token"]:
        assert secret not in text


async def test_openapi_served(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server:
        async with httpx.AsyncClient(base_url=server.api_url) as client:
            r = await client.get("/openapi.json")  # no credential needed
            plain = await client.get(server.url + "/")  # the WebSocket endpoint, over HTTP
            assert (plain.status_code, plain.json()["code"]) == (400, "INVALID_REQUEST")
            assert "WebSocket" in plain.json()["error"]
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.1")
    assert "/devices/{deviceId}" in spec["paths"]
    assert "/simulator/devices/{deviceId}/scan" in spec["paths"]


async def test_simulator_routes_absent_without_simulator(tmp_path: Path) -> None:
    settings = ApiSettings(simulator_routes=False)
    async with running_server(tmp_path / "data", settings=settings) as server:
        async with api_client(server) as api:
            r = await api.post("/simulator/devices/1/scan", json={})
            assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND")
            spec = (await api.get("/openapi.json")).json()
            assert not any(p.startswith("/simulator/") for p in spec["paths"])


# -- the command line -------------------------------------------------------------------------


def test_wasup_serve_prints_token_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASUP_")}
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "api.cli", "serve", "--engine", "simulator", "--port", "0",
           "--data-dir", str(data)]
    for run in range(2):
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        port = None
        for line in proc.stdout:
            lines.append(line)
            match = re.search(r"wasup listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "".join(lines)
        token = (data / "api_token").read_text().strip()
        r = httpx.get(f"http://127.0.0.1:{port}/api/whatsapp/sessions",
                      headers={"X-API-TOKEN": token})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        lines.append(out)
        output = "".join(lines)
        assert proc.returncode == 0, output
        assert "wasup stopped" in output
        assert (token in output) == (run == 0), output  # printed on the first start only
    assert oct((data / "api_token").stat().st_mode & 0o777) == "0o600"


async def test_health_and_metrics(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/api/whatsapp/health")
            assert r.json() == {"success": True, "data": {"status": "ok"}}
            created = await client.post(
                "/api/whatsapp/devices",
                json={"userId": "u", "alias": "a"},
                headers={"X-API-TOKEN": TEST_TOKEN},
            )
            key = created.json()["data"]["apiKey"]
            assert (await client.get("/metrics")).status_code == 401
            r = await client.get("/metrics", headers={"X-API-TOKEN": key})
            assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN")
            for headers in ({"X-API-TOKEN": TEST_TOKEN},
                            {"Authorization": f"Bearer {TEST_TOKEN}"}):
                r = await client.get("/metrics", headers=headers)
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/plain")
            text = r.text
            # The same under the API prefix, as the spec's second server says.
            r = await client.get("/api/whatsapp/metrics", headers={"X-API-TOKEN": TEST_TOKEN})
            assert r.status_code == 200 and "wasup_devices" in r.text
            assert (await client.get("/api/whatsapp/metrics")).status_code == 401
            r = await client.request("TRACE", "/metrics")
            assert (r.status_code, r.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
            assert "GET" in r.headers["allow"]
    assert 'wasup_devices{status="pending"} 1.0' in text
    assert 'route="/api/whatsapp/devices",status="201"' in text
    assert "wasup_http_request_duration_seconds_bucket" in text


async def test_rename_to_an_alias_in_use_is_409(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        first = (await api.post("/devices", json={"userId": "u", "alias": "Foo"})).json()["data"]
        assert (await api.put(f"/devices/{first['id']}", json={"alias": "Bar"})).status_code == 200
        other = (await api.post("/devices", json={"userId": "u", "alias": "Baz"})).json()["data"]
        # "Bar" is taken by the first device (whose sessionId still says "foo").
        r = await api.put(f"/devices/{other['id']}", json={"alias": "Bar"})
        assert (r.status_code, r.json()["code"]) == (409, "DEVICE_CONFLICT")
        # Nothing changed, and the device's actor is still there to answer.
        again = await api.get(f"/devices/{other['id']}")
        assert (again.status_code, again.json()["data"]["alias"]) == (200, "Baz")


async def test_spec_and_api_agree_on_blank_message_text(tmp_path: Path) -> None:
    """A text is refused (400) exactly when the spec's pattern refuses it: whitespace only,
    by Python's and Unicode's definition (ECMA's \\s differs: \\x1c-\\x1f, \\x85, \\ufeff)."""
    schema = load_spec()["components"]["schemas"]["SendTextMessage"]["properties"]["text"]
    pattern = re.compile(schema["pattern"])
    blanks = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    texts = [*blanks, "\t \u3000", "\ufeff", "\u200b", "a", " a "]
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = (await api.post("/devices", json={"userId": "u", "alias": "T"})).json()["data"]
        for text in texts:
            r = await api.post(
                f"/devices/{device['id']}/messages", json={"to": "+15551234567", "text": text}
            )
            refused = r.status_code == 400 and r.json()["field"] == "text"
            assert refused == (pattern.search(text) is None), (repr(text), r.status_code, r.text)


async def raw_exchange(
    server: Server, request: bytes, *, wait: float = 5.0, first_chunk_only: bool = False
) -> bytes:
    """Send ``request`` as is on a new connection; what came back until the server closed it
    (or ``wait`` seconds passed, or, with ``first_chunk_only``, the first bytes arrived: the
    client then hangs up at once)."""
    stream = await trio.open_tcp_stream(server.host, server.port)
    received = b""
    try:
        await stream.send_all(request)
        with trio.move_on_after(wait):
            while chunk := await stream.receive_some(65536):
                received += chunk
                if first_chunk_only:
                    break
    except trio.BrokenResourceError:
        pass  # the server closed first: what arrived is the answer
    finally:
        await stream.aclose()
    return received


async def test_oversized_content_length_is_413_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Many unauthenticated requests announcing a body over the limit and sending none, their
    clients hanging up as soon as the answer starts: each is answered 413, and the server logs
    no error (Hypercorn half-closes such a connection while the answer is being sent)."""
    caplog.set_level(logging.WARNING)
    head = (
        b"POST /api/whatsapp/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000000\r\n\r\n"
    )
    answers: list[bytes] = []

    async def one(server: Server) -> None:
        answers.append(await raw_exchange(server, head, wait=2.0, first_chunk_only=True))

    async with running_server(tmp_path / "data") as server:
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(one, server)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()
    for answer in answers:
        if answer:  # an answer dropped in that instant never reaches the client
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
