"""Pairing by phone code and messaging, end to end over real sockets (simulator engine).

A whole wasup server on 127.0.0.1 (the shared ``running_server`` fixture), httpx for HTTP and
trio-websocket for the event stream; the simulator plays the phone and WhatsApp. Real clock:
every wait has an absolute deadline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from supervisor.engines.simulator import SimulatorEngine

from .conftest import TEST_TOKEN, api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 10.0


async def wait_status(api: httpx.AsyncClient, device: str, status: str) -> dict[str, Any]:
    with trio.fail_after(DEADLINE):
        while True:
            r = await api.get(f"/devices/{device}")
            data: dict[str, Any] = r.json()["data"]
            if data["status"] == status:
                return data
            await trio.sleep(0.02)


async def create(api: httpx.AsyncClient, alias: str) -> dict[str, Any]:
    r = await api.post("/devices", json={"userId": "u1", "alias": alias})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def test_pair_by_code_send_receive_receipts_statistics(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await create(api, "Shop")
        sid = device["sessionId"]
        await wait_status(api, sid, "pending")
        events: list[dict[str, Any]] = []
        async with open_websocket_url(f"{server.ws_url}/?token={TEST_TOKEN}") as ws:

            async def collect() -> None:
                while True:
                    events.append(json.loads(await ws.get_message()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                await trio.sleep(0.05)  # subscribed

                # -- pair by phone code -------------------------------------------------------
                with trio.fail_after(DEADLINE):
                    while True:  # the pairing connection must be up (first QR shown)
                        r = await api.post(f"/devices/{sid}/pair-code",
                                           json={"phoneNumber": "+15551234567"})
                        if r.status_code != 409:
                            break
                        await trio.sleep(0.02)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["success"] is True
                code = body["data"]["code"]
                assert len(code) == 9 and code[4] == "-"
                assert body["data"]["expiresAt"].endswith("Z")
                r = await api.post(f"/simulator/devices/{sid}/scan", json={"code": code})
                assert r.status_code == 200, r.text
                assert r.json()["data"]["phoneNumber"] == "+15551234567"
                connected = await wait_status(api, sid, "connected")
                assert connected["connectionInfo"]["isConnected"] is True

                # A pair code for a connected device is a conflict.
                r = await api.post(f"/devices/{sid}/pair-code", json={"phoneNumber": "+15551234567"})
                assert r.status_code == 409 and r.json()["code"] == "DEVICE_CONFLICT"

                # -- send -----------------------------------------------------------------------
                r = await api.post(f"/devices/{sid}/messages",
                                   json={"to": "+1 555-765-4321", "text": "hello"})
                assert r.status_code == 200, r.text
                sent = r.json()["data"]
                assert sent["to"] == "15557654321@s.whatsapp.net"
                assert sent["status"] == "sent" and sent["messageId"]
                engine = server.sup.engine
                assert isinstance(engine, SimulatorEngine)
                assert [m.text for m in engine.sent_messages(device["id"])] == ["hello"]
                # WhatsApp knows the message by its own id; events and the API by wasup's.
                wa_id = engine.sent_messages(device["id"])[0].message_id

                # -- receive --------------------------------------------------------------------
                r = await api.post(f"/simulator/devices/{sid}/messages",
                                   json={"from": "+15557654321", "text": "hi back"})
                assert r.status_code == 200, r.text

                # -- receipts -------------------------------------------------------------------
                await engine.ack(device["id"], wa_id, "delivered")
                await engine.ack(device["id"], wa_id, "read")

                with trio.fail_after(DEADLINE):
                    for _ in range(1000):
                        if any(e["type"] == "message_status" and e["data"]["status"] == "read"
                               for e in events):
                            break
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()

        types = [e["type"] for e in events if e["sessionId"] == sid]
        assert "message_sent" in types and "message_received" in types
        out = next(e for e in events if e["type"] == "message_sent")
        assert out["data"]["messageId"] == sent["messageId"]
        assert out["data"]["text"] == "hello"
        inbound = next(e for e in events if e["type"] == "message_received")
        assert inbound["data"]["text"] == "hi back"
        statuses = [(e["data"]["messageId"], e["data"]["status"])
                    for e in events if e["type"] == "message_status"]
        assert statuses == [(sent["messageId"], s) for s in ("sent", "delivered", "read")]

        # -- statistics -------------------------------------------------------------------------
        r = await api.get(f"/devices/{sid}")
        stats = r.json()["data"]["statistics"]
        assert stats["messagesSent"] == 1
        assert stats["messagesReceived"] == 1
        assert stats["lastActivity"] is not None


async def test_device_key_sends_for_its_own_device_only(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        mine, other = await create(api, "Mine"), await create(api, "Other")
        for d in (mine, other):
            await wait_status(api, d["sessionId"], "pending")
            r = await api.post(f"/simulator/devices/{d['sessionId']}/scan", json={})
            assert r.status_code == 200, r.text
            await wait_status(api, d["sessionId"], "connected")
        async with api_client(server, token=mine["apiKey"]) as key:
            r = await key.post(f"/devices/{mine['id']}/messages", json={"to": "15557654321", "text": "x"})
            assert r.status_code == 200, r.text
            r = await key.post(f"/devices/{other['id']}/messages", json={"to": "15557654321", "text": "x"})
            assert r.status_code == 404
            r = await key.post(f"/devices/{other['id']}/pair-code", json={"phoneNumber": "+15551234567"})
            assert r.status_code == 404


async def test_validation_and_conflicts(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await create(api, "Shop")
        sid = device["sessionId"]
        cases: list[tuple[str, Any, str]] = [
            ("messages", {"to": "15557654321"}, "text"),
            ("messages", {"text": "x"}, "to"),
            ("messages", {"to": "hello", "text": "x"}, "to"),
            ("messages", {"to": "123", "text": "x"}, "to"),
            ("messages", {"to": "1555@example.com", "text": "x"}, "to"),
            ("messages", {"to": 15557654321, "text": "x"}, "to"),
            ("messages", {"to": "15557654321", "text": ""}, "text"),
            ("messages", {"to": "15557654321", "text": "x" * 4097}, "text"),
            ("messages", {"to": "15557654321", "text": "x", "extra": 1}, "extra"),
            ("messages", [], "body"),
            ("pair-code", {}, "phoneNumber"),
            ("pair-code", {"phoneNumber": "abc"}, "phoneNumber"),
            ("pair-code", {"phoneNumber": "+0123456789"}, "phoneNumber"),
            ("pair-code", {"phoneNumber": 15551234567}, "phoneNumber"),
        ]
        for path, body, field in cases:
            r = await api.post(f"/devices/{sid}/{path}", json=body)
            assert r.status_code == 400, (path, body, r.text)
            err = r.json()
            assert err["success"] is False and err["code"] == "INVALID_REQUEST"
            assert field in err["error"], (body, err)
        r = await api.post(
            f"/devices/{sid}/messages", content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400
        # Not connected: 409 with a clear error.
        r = await api.post(f"/devices/{sid}/messages", json={"to": "15557654321", "text": "x"})
        assert r.status_code == 409
        assert r.json()["code"] == "DEVICE_CONFLICT" and "not connected" in r.json()["error"]
        # Unknown device: 404.
        r = await api.post("/devices/nope/messages", json={"to": "15557654321", "text": "x"})
        assert r.status_code == 404
        # Cancelled (qr_timeout): a pair code is a conflict.
        await wait_status(api, sid, "pending")
        r = await api.post(f"/sessions/{sid}/cancel")
        assert r.status_code == 200
        r = await api.post(f"/devices/{sid}/pair-code", json={"phoneNumber": "+15551234567"})
        assert r.status_code == 409


async def test_tracked_sends_over_http(tmp_path: Path) -> None:
    """The pacing settings, 200 sent then 202 pending, the queue in the device record, a retry
    with the same Idempotency-Key, and bad ttl, key and settings."""
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await create(api, "Paced")
        sid = device["sessionId"]
        await wait_status(api, sid, "pending")
        r = await api.post(f"/simulator/devices/{sid}/scan", json={})
        assert r.status_code == 200, r.text
        await wait_status(api, sid, "connected")
        r = await api.get(f"/devices/{sid}/settings/sending")
        assert r.json()["data"] == {"ratePerMinute": 60.0, "burst": 5}
        r = await api.put(f"/devices/{sid}/settings/sending", json={"ratePerMinute": 1, "burst": 1})
        assert r.status_code == 200 and r.json()["data"] == {"ratePerMinute": 1.0, "burst": 1}
        r = await api.get(f"/devices/{sid}/settings/sending")
        assert r.json()["data"] == {"ratePerMinute": 1.0, "burst": 1}

        first = await api.post(f"/devices/{sid}/messages", json={"to": "15557654321", "text": "a"},
                               headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 200 and first.json()["data"]["status"] == "sent"
        second = await api.post(f"/devices/{sid}/messages",
                                json={"to": "15557654321", "text": "b", "ttl": 30},
                                headers={"Idempotency-Key": "k-2"})
        assert second.status_code == 202, second.text
        assert second.json()["data"]["status"] == "pending"
        queue = (await api.get(f"/devices/{sid}")).json()["data"]["outboundQueue"]
        assert queue == {"pending": 1, "stuck": 0}
        # Retries answer the message made the first time, and send nothing.
        again = await api.post(f"/devices/{sid}/messages",
                               json={"to": "15557654321", "text": "a"},
                               headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 200 and again.json()["data"] == first.json()["data"]
        again = await api.post(f"/devices/{sid}/messages",
                               json={"to": "15557654321", "text": "b"},
                               headers={"Idempotency-Key": "k-2"})
        assert again.status_code == 202 and again.json()["data"] == second.json()["data"]
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        assert [m.text for m in engine.sent_messages(device["id"])] == ["a"]

        for body, headers, field in [
            ({"to": "15557654321", "text": "x", "ttl": 0}, {}, "ttl"),
            ({"to": "15557654321", "text": "x", "ttl": "5"}, {}, "ttl"),
            ({"to": "15557654321", "text": "x"}, {"Idempotency-Key": "a b"}, "Idempotency-Key"),
        ]:
            r = await api.post(f"/devices/{sid}/messages", json=body, headers=headers)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
        for body, field in [({"ratePerMinute": 0, "burst": 1}, "ratePerMinute"),
                            ({"ratePerMinute": 5, "burst": 0.5}, "burst"),
                            ({"ratePerMinute": 5}, "burst")]:
            r = await api.put(f"/devices/{sid}/settings/sending", json=body)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
