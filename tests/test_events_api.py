"""GET /api/whatsapp/events: the event log in pages over HTTP, with its filters, what a device
key may see, and its refusals. A live wasup on 127.0.0.1 (real clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from supervisor import event_log
from tests.conftest import api_client, running_server
from tests.lifecycle_support import wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

TIMEOUT = 60


async def pages(api: httpx.AsyncClient, query: str = "", since: int = 0,
                limit: int = 3) -> list[dict[str, Any]]:
    """Every event the log gives ``query``, following ``nextSince`` page by page."""
    seen: list[dict[str, Any]] = []
    while True:
        r = await api.get(f"/events?since={since}&limit={limit}{query}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= limit
        seen += body["data"]
        since = body["pagination"]["nextSince"]
        if not body["pagination"]["hasMore"]:
            return seen


async def test_pages_filters_and_device_keys(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server(tmp_path / "data") as server, api_client(server) as api:
            made = []
            for alias in ("One", "Two"):
                r = await api.post("/devices", json={"userId": "u1", "alias": alias})
                assert r.status_code == 201, r.text
                made.append(r.json()["data"])
            for device in made:
                r = await api.post(f"/simulator/devices/{device['id']}/scan", json={})
                assert r.status_code == 200, r.text
                await wait_status(server.sup, device["id"], "connected", within=TIMEOUT)
            one, two = made
            everything = await pages(api, limit=500)
            ids = [e["id"] for e in everything]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert set(everything[0]) == {"id", "type", "sessionId", "data", "timestamp"}
            # Small pages give the same events.
            assert await pages(api, limit=2) == everything
            # From an id on; by device; by type.
            assert await pages(api, since=ids[2]) == everything[3:]
            assert await pages(api, f"&sessionId={one['sessionId']}") == [
                e for e in everything if e["sessionId"] == one["sessionId"]]
            assert await pages(api, f"&sessionId={two['id']}&type=device_connected,qr_code") == [
                e for e in everything if e["sessionId"] == two["sessionId"]
                and e["type"] in ("device_connected", "qr_code")]
            # A device key sees its own device only, whatever it asks for.
            async with api_client(server, token=one["apiKey"]) as key:
                own = [e for e in everything if e["sessionId"] == one["sessionId"]]
                assert await pages(key) == own
                assert await pages(key, f"&sessionId={two['sessionId']}") == []
            r = await api.get(f"/events?since={ids[-1]}")
            assert r.json()["data"] == []
            assert r.json()["pagination"] == {
                "limit": 100, "hasMore": False, "nextSince": ids[-1], "oldestId": ids[0]}


async def test_a_sparse_filter_pages_in_bounded_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page examines at most SCAN ids: a filter that matches little answers empty pages
    that are not the last, and following nextSince finds every match."""
    monkeypatch.setattr(event_log, "SCAN", 2)
    with trio.fail_after(TIMEOUT):
        async with running_server(tmp_path / "data") as server, api_client(server) as api:
            r = await api.post("/devices", json={"userId": "u1", "alias": "One"})
            device = r.json()["data"]
            r = await api.post(f"/simulator/devices/{device['id']}/scan", json={})
            await wait_status(server.sup, device["id"], "connected", within=TIMEOUT)
            r = await api.get("/events?since=0&type=device_connected")
            body = r.json()
            assert body["data"] == [] and body["pagination"]["hasMore"] is True
            found = await pages(api, "&type=device_connected", limit=10)
            assert [e["type"] for e in found] == ["device_connected"]


@pytest.mark.parametrize("query, field", [
    ("since=-1", "since"), ("since=abc", "since"), ("since=1.5", "since"),
    ("since=1&since=2", "since"), ("since=" + "9" * 19, "since"),
    ("limit=0", "limit"), ("limit=501", "limit"),
    ("type=nope", "type"), ("type=qr_code,", "type"), ("type=", "type"),
    ("sessionId=", "sessionId"), ("sessionId=a%20b", "sessionId"),
])
async def test_bad_parameters_are_refused(tmp_path: Path, query: str, field: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server(tmp_path / "data") as server, api_client(server) as api:
            r = await api.get(f"/events?{query}")
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "INVALID_REQUEST" and r.json()["field"] == field
            async with api_client(server, token=None) as anonymous:
                assert (await anonymous.get("/events")).status_code == 401
