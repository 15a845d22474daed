"""WhatsApp's failures and offline queue, end to end over HTTP (simulator engine).

A whole wasup server on 127.0.0.1 (the shared ``running_server`` fixture); the simulator's
control routes play WhatsApp: ``fail`` reports a failure the way the real engine does, and
``messages`` sent while the device is offline wait in the offline queue. Real clock: every
wait has an absolute deadline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from api.server import Server
from supervisor.engines.simulator import SimulatorEngine
from tests.store_support import peek_config

from .conftest import TEST_TOKEN, api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 10.0
#: A reconnect backoff short enough that a device which is not held would be back within the
#: tests' pauses.
QUICK_BACKOFF: dict[str, Any] = {"backoff_base": 0.05, "backoff_jitter": 0.0}


async def until(check: Callable[[], bool], deadline: float = DEADLINE) -> None:
    """Wait until ``check()`` holds (it reads what another task collects, or polls)."""
    with trio.fail_after(deadline):
        while not check():  # noqa: ASYNC110 (the events come from another connection)
            await trio.sleep(0.02)


def received(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "message_received"]


async def wait_device(
    api: httpx.AsyncClient, sid: str, status: str, reason: str | None = None,
    deadline: float = DEADLINE,
) -> dict[str, Any]:
    """The device once it shows ``status`` (and ``reason``, if given)."""
    with trio.fail_after(deadline):
        while True:
            data: dict[str, Any] = (await api.get(f"/devices/{sid}")).json()["data"]
            if data["status"] == status and (reason is None or data["statusReason"] == reason):
                return data
            await trio.sleep(0.02)


async def connected_device(api: httpx.AsyncClient, alias: str) -> str:
    r = await api.post("/devices", json={"userId": "u1", "alias": alias})
    assert r.status_code == 201, r.text
    sid: str = r.json()["data"]["sessionId"]
    with trio.fail_after(DEADLINE):
        # the first QR code is not on show yet: polling the server is all there is
        while (r := await api.post(f"/simulator/devices/{sid}/scan", json={})).status_code == 409:  # noqa: ASYNC110
            await trio.sleep(0.02)
    assert r.status_code == 200, r.text
    await wait_device(api, sid, "connected")
    return sid


def credentials_of(server: Server, sid: str) -> bytes | None:
    rows = peek_config(
        server.sup.config,
        "SELECT c.data FROM credentials c JOIN devices d ON d.id = c.device_id"
        " WHERE d.session_id = ?", (sid,),
    )
    return bytes(rows[0][0]) if rows else None


@asynccontextmanager
async def event_stream(server: Server) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event the server publishes while the block runs, in order."""
    events: list[dict[str, Any]] = []
    async with open_websocket_url(f"{server.ws_url}/?token={TEST_TOKEN}") as ws:

        async def collect() -> None:
            while True:
                events.append(json.loads(await ws.get_message()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await trio.sleep(0.05)  # subscribed
            yield events
            nursery.cancel_scope.cancel()


async def fail(api: httpx.AsyncClient, sid: str, **body: Any) -> httpx.Response:
    return await api.post(f"/simulator/devices/{sid}/fail", json=body)


async def test_account_locked_and_banned_log_out_and_wipe(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        for reason in ("account_locked", "banned"):
            sid = await connected_device(api, reason)
            r = await fail(api, sid, reason=reason)
            assert r.status_code == 200, r.text
            device = await wait_device(api, sid, "logged_out", reason)
            assert device["connectionInfo"]["isConnected"] is False
            assert credentials_of(server, sid) is None


async def test_temporary_ban_holds_for_the_seconds_given(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        sid = await connected_device(api, "Banned a while")
        r = await fail(api, sid, reason="temporary_ban", seconds=3600)
        assert r.status_code == 200, r.text
        await wait_device(api, sid, "disconnected", "temporary_ban")
        assert credentials_of(server, sid) is not None


async def test_fail_answers_400_naming_the_field_and_409_for_a_wrong_state(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        sid = await connected_device(api, "Checks")
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "reason"),
            ({"reason": "gone_fishing"}, "reason"),
            ({"reason": 405}, "reason"),
            ({"reason": "banned", "seconds": 5}, "seconds"),
            ({"reason": "temporary_ban", "seconds": 0}, "seconds"),
            ({"reason": "temporary_ban", "seconds": 1.5}, "seconds"),
            ({"reason": "temporary_ban", "seconds": True}, "seconds"),
            ({"reason": "temporary_ban", "seconds": None}, "seconds"),
            ({"reason": "banned", "extra": 1}, "extra"),
        ]
        for body, field in cases:
            r = await fail(api, sid, **body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["code"] == "INVALID_REQUEST" and r.json()["field"] == field, body
        r = await api.post(f"/simulator/devices/{sid}/fail", content=b"[1]",
                           headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body"
        r = await fail(api, sid, reason="pair_error")  # connected, not pairing
        assert r.status_code == 409 and r.json()["code"] == "DEVICE_CONFLICT", r.text
        r = await fail(api, "user_u1_device_nosuch", reason="banned")
        assert r.status_code == 404, r.text
        # nothing happened to the device
        data = (await api.get(f"/devices/{sid}")).json()["data"]
        assert data["status"] == "connected"
        async with api_client(server, token=None) as anonymous:
            r = await anonymous.post(f"/simulator/devices/{sid}/fail", json={"reason": "banned"})
            assert r.status_code == 401


async def test_messages_sent_during_a_network_outage_arrive_in_order(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", **QUICK_BACKOFF) as server, \
            api_client(server) as api:
        sid = await connected_device(api, "Outage")
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        async with event_stream(server) as events:
            await engine.set_reachable(False)
            r = await api.post(f"/simulator/devices/{sid}/disconnect", json={})
            assert r.status_code == 200, r.text
            await wait_device(api, sid, "disconnected")
            texts = [f"during the outage {i}" for i in range(5)]
            for text in texts:
                r = await api.post(f"/simulator/devices/{sid}/messages",
                                   json={"from": "+15550002222", "text": text})
                assert r.status_code == 202, r.text
            await engine.set_reachable(True)
            await until(lambda: len(received(events)) >= len(texts))
        assert [m["text"] for m in received(events)] == texts
        assert engine.queued(server.sup.get(sid).id) == []
async def test_client_outdated_keeps_the_session_and_login_reconnects_without_a_scan(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path / "data", **QUICK_BACKOFF) as server, api_client(server) as api:
        sid = await connected_device(api, "Outdated")
        creds = credentials_of(server, sid)
        assert creds is not None
        async with event_stream(server) as events:
            r = await fail(api, sid, reason="client_outdated")
            assert r.status_code == 200, r.text
            device = await wait_device(api, sid, "disconnected", "client_outdated")
            assert credentials_of(server, sid) == creds  # the session is not wiped
            await trio.sleep(0.3)
            # held: it retries only on the slow schedule, not at once
            assert (await api.get(f"/devices/{sid}")).json()["data"]["status"] == "disconnected"
            r = await api.post(f"/devices/{sid}/login")
            assert r.status_code == 200, r.text
            device = await wait_device(api, sid, "connected")
        assert device["connectionInfo"]["isConnected"] is True
        assert credentials_of(server, sid) == creds
        assert not [e for e in events if e["type"] == "qr_code"]  # no new scan


async def test_stream_replaced_holds_until_login_which_reconnects_without_a_scan(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path / "data", **QUICK_BACKOFF) as server, api_client(server) as api:
        sid = await connected_device(api, "Replaced")
        creds = credentials_of(server, sid)
        async with event_stream(server) as events:
            r = await fail(api, sid, reason="stream_replaced")
            assert r.status_code == 200, r.text
            await wait_device(api, sid, "disconnected", "stream_replaced")
            await trio.sleep(0.5)  # several backoff periods: still held
            data = (await api.get(f"/devices/{sid}")).json()["data"]
            assert (data["status"], data["statusReason"]) == ("disconnected", "stream_replaced")
            assert credentials_of(server, sid) == creds
            r = await api.post(f"/devices/{sid}/login")
            assert r.status_code == 200, r.text
            await wait_device(api, sid, "connected")
        assert credentials_of(server, sid) == creds
        assert not [e for e in events if e["type"] == "qr_code"]


async def test_pair_error_is_visible_before_pairing_goes_on(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Scan fails"})
        sid = r.json()["data"]["sessionId"]
        with trio.fail_after(DEADLINE):
            while (await api.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.02)
        async with event_stream(server) as events:
            r = await fail(api, sid, reason="pair_error")
            assert r.status_code == 200, r.text
            # the failure is published at once (pending, pair_error), before the device asks
            # for a new pairing connection, whose new QR code follows it
            await until(lambda: any(e["type"] == "qr_code" for e in events))
            kinds = [(e["type"], e["data"].get("to"), e["data"].get("reason"))
                     for e in events]
            assert ("device_status", "pending", "pair_error") in kinds, kinds
            failed = kinds.index(("device_status", "pending", "pair_error"))
            assert "qr_code" in [kind for kind, _, _ in kinds[failed + 1:]], kinds
            r = await api.post(f"/simulator/devices/{sid}/scan", json={})
            assert r.status_code == 200, r.text
            await wait_device(api, sid, "connected")


async def test_messages_sent_while_disconnected_arrive_in_order_after_reconnect(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path / "data", **QUICK_BACKOFF) as server, api_client(server) as api:
        sid = await connected_device(api, "Offline")
        r = await api.post("/devices", json={"userId": "u1", "alias": "Never paired"})
        unpaired = r.json()["data"]["sessionId"]
        r = await api.post(f"/simulator/devices/{unpaired}/messages",
                           json={"from": "+15550001111", "text": "x"})
        assert r.status_code == 409, r.text  # not linked: WhatsApp has nowhere to queue it

        async with event_stream(server) as events:
            r = await fail(api, sid, reason="stream_replaced")  # held: stays offline
            await wait_device(api, sid, "disconnected", "stream_replaced")
            texts = [f"while offline {i}" for i in range(10)]
            ids = []
            for text in texts:
                r = await api.post(f"/simulator/devices/{sid}/messages",
                                   json={"from": "+15550001111", "text": text})
                assert r.status_code == 202, r.text
                assert r.json()["data"]["status"] == "queued"
                ids.append(r.json()["data"]["messageId"])
            await trio.sleep(0.2)
            assert not [e for e in events if e["type"] == "message_received"]

            r = await api.post(f"/devices/{sid}/login")
            assert r.status_code == 200, r.text
            await wait_device(api, sid, "connected")
            await until(lambda: len(received(events)) >= len(texts))
            # connected again: a message is delivered at once, after the queued ones
            r = await api.post(f"/simulator/devices/{sid}/messages",
                               json={"from": "+15550001111", "text": "online"})
            assert r.status_code == 200 and r.json()["data"]["status"] == "delivered", r.text
            await until(lambda: len(received(events)) > len(texts))
        arrived = received(events)
        assert [m["text"] for m in arrived] == [*texts, "online"]
        assert [m["messageId"] for m in arrived[:-1]] == ids
        data = (await api.get(f"/devices/{sid}")).json()["data"]
        assert data["statistics"]["messagesReceived"] == len(texts) + 1


