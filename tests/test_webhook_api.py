"""Webhook endpoints end to end: a whole wasup (simulator engine) on 127.0.0.1, a receiver on
127.0.0.1 (allowed through ``webhook_allow_networks``), real sockets and Trio's real clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from standardwebhooks.webhooks import Webhook

from tests.conftest import api_client, running_server
from tests.webhook_support import Receiver, start_receiver

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 20.0


@asynccontextmanager
async def setup(tmp_path: Path, *script: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Receiver, dict[str, Any]]]:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, *script)
        async with running_server(
            tmp_path / "data", allow_networks=("127.0.0.0/8",)
        ) as server, api_client(server) as api:
            r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            assert r.status_code == 201, r.text
            yield api, receiver, r.json()["data"]
        nursery.cancel_scope.cancel()


async def test_settings_deliveries_redeliver_and_test(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with setup(tmp_path) as (api, receiver, device):
            sid = device["sessionId"]
            r = await api.put(
                f"/devices/{sid}/settings/webhook",
                json={"url": receiver.url, "events": ["status"]},
            )
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            secret = data["secret"]
            assert secret.startswith("whsec_") and data["secretSet"] is True
            assert "message_received" not in data["events"] and "device_status" in data["events"]

            # Shown once: a second PUT keeps the secret and does not show it.
            r = await api.put(
                f"/devices/{device['id']}/settings/webhook",
                json={"url": receiver.url, "events": ["status"]},
            )
            assert "secret" not in r.json()["data"]
            r = await api.get(f"/devices/{sid}/settings/webhook")
            assert r.status_code == 200 and secret not in r.text

            # The phone scans: device_status / device_connected events go out, signed.
            r = await api.post(f"/simulator/devices/{sid}/scan", json={})
            assert r.status_code == 200, r.text
            n = 0
            while not any(
                json.loads(q.body)["type"] == "device_connected" for q in receiver.requests
            ):
                n += 1
                await receiver.wait_requests(n)
            for request in receiver.requests:
                body = Webhook(secret).verify(request.body, request.headers)
                assert body["sessionId"] == sid
                assert body["type"] in data["events"]

            # The delivery log.
            while True:
                r = await api.get(f"/devices/{sid}/webhook/deliveries", params={"limit": 1})
                page = r.json()
                if page["pagination"]["total"] == len(receiver.requests) and all(
                    i["status"] == "delivered" for i in page["data"]
                ):
                    break
                await trio.sleep(0.02)
            assert page["pagination"]["limit"] == 1 and len(page["data"]) == 1
            item = page["data"][0]
            assert item["attempts"] == 1 and item["attemptLog"][0]["statusCode"] == 200
            assert item["attemptLog"][0]["durationMs"] >= 0
            r = await api.get(f"/devices/{sid}/webhook/deliveries", params={"status": "pending"})
            assert r.json()["pagination"]["total"] == 0
            r = await api.get(f"/devices/{sid}/webhook/deliveries", params={"status": "bogus"})
            assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST"

            # Redeliver: same webhook-id again.
            before = len(receiver.requests)
            r = await api.post(f"/devices/{sid}/webhook/deliveries/{item['id']}/redeliver")
            assert r.status_code == 202, r.text
            await receiver.wait_requests(before + 1)
            assert receiver.requests[-1].headers["webhook-id"] == item["id"]
            r = await api.post(f"/devices/{sid}/webhook/deliveries/msg_nope/redeliver")
            assert r.status_code == 404

            # The test event reports the outcome.
            receiver.script.append(503)
            r = await api.post(f"/devices/{sid}/settings/webhook/test")
            assert r.status_code == 200, r.text
            outcome = r.json()["data"]
            assert outcome["delivered"] is False and outcome["statusCode"] == 503
            r = await api.post(f"/devices/{sid}/settings/webhook/test")
            outcome = r.json()["data"]
            assert outcome["delivered"] is True and outcome["statusCode"] == 200
            last = receiver.requests[-1]
            assert last.headers["webhook-id"] == outcome["webhookId"]
            assert Webhook(secret).verify(last.body, last.headers)["type"] == "webhook_test"


async def test_refused_urls_and_access(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with setup(tmp_path) as (api, _receiver, device):
            sid = device["sessionId"]
            for url in (
                "http://169.254.169.254/latest/meta-data/",
                "http://[::ffff:10.0.0.1]/",
                "http://100.64.1.1/",
                "ftp://example.com/",
            ):
                r = await api.put(f"/devices/{sid}/settings/webhook", json={"url": url})
                assert r.status_code == 400, (url, r.text)
                assert r.json()["code"] == "INVALID_REQUEST"
            r = await api.put(f"/devices/{sid}/settings/webhook", json={"url": 5})
            assert r.status_code == 400
            r = await api.post(f"/devices/{sid}/settings/webhook/test")
            assert r.status_code == 409
            r = await api.get(f"/devices/{sid}/settings/webhook")
            assert r.status_code == 404
            r = await api.put("/devices/nope/settings/webhook", json={"url": "https://a.example/"})
            assert r.status_code == 404

            # A device key sees only its own device.
            r = await api.post("/devices", json={"userId": "u1", "alias": "Other"})
            other = r.json()["data"]
            headers = {"X-API-TOKEN": device["apiKey"]}
            r = await api.get(f"/devices/{other['sessionId']}/webhook/deliveries", headers=headers)
            assert r.status_code == 404
            r = await api.get(f"/devices/{sid}/webhook/deliveries", headers=headers)
            assert r.status_code == 200 and r.json()["data"] == []


async def test_delivery_ids_that_are_not_ids_are_not_found(tmp_path: Path) -> None:
    """A delivery id is a ``msg_`` id; any other path segment (non-ASCII digits, bytes that
    are not UTF-8, a long one) is no such delivery with the error envelope, never a 500."""
    with trio.fail_after(DEADLINE):
        async with setup(tmp_path) as (api, receiver, device):
            sid = device["sessionId"]
            r = await api.put(f"/devices/{sid}/settings/webhook", json={"url": receiver.url})
            assert r.status_code == 200, r.text
            base = f"/devices/{sid}/webhook/deliveries"
            for raw in ("%F0%9D%A9%BB3", "%C2%B3", "3", "%FF", "msg_" + "a" * 500, "msg_%00"):
                for method, path in (("GET", f"{base}/{raw}"), ("POST", f"{base}/{raw}/redeliver")):
                    r = await api.request(method, path)
                    assert r.status_code == 404, (method, raw, r.text)
                    body = r.json()
                    assert body["success"] is False and body["code"] == "NOT_FOUND", body


async def test_device_ids_of_non_ascii_digits_are_not_found(tmp_path: Path) -> None:
    """``³`` and ``𝩻3`` are not numeric device ids: 404 with the envelope on every webhook
    route, never a 500."""
    with trio.fail_after(DEADLINE):
        async with setup(tmp_path) as (api, _receiver, _device):
            for dev in ("%C2%B3", "%F0%9D%A9%BB3"):
                for method, path in (
                    ("GET", f"/devices/{dev}/webhook/deliveries"),
                    ("GET", f"/devices/{dev}/webhook/deliveries/msg_x"),
                    ("POST", f"/devices/{dev}/webhook/deliveries/%F0%9D%A9%BB3/redeliver"),
                    ("GET", f"/devices/{dev}/settings/webhook"),
                    ("GET", f"/devices/{dev}/settings/ai"),
                ):
                    r = await api.request(method, path)
                    assert r.status_code == 404, (method, path, r.text)
                    assert r.json()["success"] is False
