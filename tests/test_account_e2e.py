"""Presence, profile and calls end to end: every route over HTTP against a live wasup with the
simulator, the ``presence`` and ``call_received`` events on the WebSocket, and what the
simulated WhatsApp saw (presences sent, subscriptions, the profile, rejected calls). Real
sockets and a real clock, with deadlines."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from api.server import Server
from supervisor.engines.simulator import SimulatorEngine
from supervisor.engines.simulator_account import AccountState

from .conftest import api_client, running_server
from .test_messaging_e2e import create, wait_status
from .test_receive_e2e import connected_device

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 10.0
PEER = "+15557654321"
PEER_JID = "15557654321@s.whatsapp.net"
GROUP = "120363000000000001@g.us"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@asynccontextmanager
async def connected(
    tmp_path: Path,
) -> AsyncIterator[tuple[Server, httpx.AsyncClient, str, list[dict[str, Any]]]]:
    """A server with one connected device (push name Shop Ann) and the presence and call
    events a WebSocket subscriber receives."""
    async with connected_device(tmp_path, "presence,call_received,message_sent",
                                {"pushName": "Shop Ann"}) as (server, api, device, events):
        yield server, api, device["sessionId"], events


def world(server: Server, sid: str) -> AccountState:
    engine = server.sup.engine
    assert isinstance(engine, SimulatorEngine)
    return engine.server.account.of(server.sup.get(sid).id)


async def poll(cond: Callable[[], bool]) -> None:
    """Wait (real time, at most DEADLINE seconds) until ``cond()`` holds."""
    for _ in range(int(DEADLINE / 0.02)):
        if cond():
            return
        await trio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def until(events: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    await poll(lambda: len(events) >= count)
    await trio.sleep(0.1)  # nothing more arrives
    return events


def error(r: httpx.Response, status: int, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    if field is not None:
        assert body["field"] == field, body


async def test_presence_subscribe_and_events(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, sid, events):
        # Not subscribed yet: the contact's presence does not reach the device.
        r = await api.post(f"/simulator/devices/{sid}/presence",
                           json={"from": PEER, "state": "available"})
        assert r.status_code == 200 and r.json()["data"]["delivered"] is False
        r = await api.post(f"/devices/{sid}/contacts/{PEER}/presence/subscribe")
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"contact": PEER_JID}
        # Subscribed, but the device has not shown itself available: still nothing.
        r = await api.post(f"/simulator/devices/{sid}/presence",
                           json={"from": PEER, "state": "available"})
        assert r.json()["data"]["delivered"] is False
        r = await api.post(f"/devices/{sid}/presence", json={"state": "available"})
        assert r.status_code == 200 and r.json()["data"] == {"state": "available"}

        for body in ({"from": PEER, "state": "available"},
                     {"from": PEER, "state": "typing"},
                     {"from": PEER, "state": "recording", "chat": GROUP},
                     {"from": PEER, "state": "unavailable", "lastSeen": 1_750_000_000}):
            r = await api.post(f"/simulator/devices/{sid}/presence", json=body)
            assert r.status_code == 200 and r.json()["data"]["delivered"] is True, r.text
        await until(events, 4)
        assert [(e["type"], e["sessionId"], e["data"]) for e in events] == [
            ("presence", sid, {"from": PEER_JID, "state": "available", "chat": None,
                               "lastSeen": None}),
            ("presence", sid, {"from": PEER_JID, "state": "typing", "chat": PEER_JID,
                               "lastSeen": None}),
            ("presence", sid, {"from": PEER_JID, "state": "recording", "chat": GROUP,
                               "lastSeen": None}),
            ("presence", sid, {"from": PEER_JID, "state": "unavailable", "chat": None,
                               "lastSeen": "2025-06-15T15:06:40.000Z"}),
        ]
        assert PEER_JID in world(server, sid).subscriptions

        # The device's own presence and its chat presences reach WhatsApp.
        for chat, state in ((PEER, "typing"), (GROUP, "recording"), (PEER_JID, "paused")):
            r = await api.post(f"/devices/{sid}/chats/{chat}/presence", json={"state": state})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["state"] == state
        r = await api.post(f"/devices/{sid}/presence", json={"state": "unavailable"})
        assert r.status_code == 200
        sent = [(p.state, p.chat) for p in world(server, sid).presences]
        assert sent == [("available", None), ("typing", PEER_JID), ("recording", GROUP),
                        ("paused", PEER_JID), ("unavailable", None)]
        # Unavailable again: presences stop.
        r = await api.post(f"/simulator/devices/{sid}/presence",
                           json={"from": PEER, "state": "available"})
        assert r.json()["data"]["delivered"] is False

        # Bad input names the field; nothing reaches WhatsApp.
        error(await api.post(f"/devices/{sid}/presence", json={"state": "busy"}), 400, "state")
        error(await api.post(f"/devices/{sid}/presence", json={}), 400, "state")
        error(await api.post(f"/devices/{sid}/presence", json={"state": "available", "x": 1}),
              400, "x")
        error(await api.post(f"/devices/{sid}/chats/{PEER}/presence",
                             json={"state": "available"}), 400, "state")
        error(await api.post(f"/devices/{sid}/chats/not-a-chat/presence",
                             json={"state": "typing"}), 400, "chatId")
        error(await api.post(f"/devices/{sid}/contacts/{GROUP}/presence/subscribe"), 400,
              "contact")
        error(await api.post(f"/devices/{sid}/contacts/abc/presence/subscribe", json={"a": 1}),
              400, "a")
        assert len(world(server, sid).presences) == 5
        error(await api.post("/devices/nope/presence", json={"state": "available"}), 404)


async def test_profile_read_and_set(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, sid, _events):
        r = await api.get(f"/devices/{sid}/profile")
        assert r.status_code == 200, r.text
        profile = r.json()["data"]
        assert profile["name"] == "Shop Ann" and profile["about"] is None
        assert profile["pictureUrl"] is None and profile["jid"].endswith("@s.whatsapp.net")

        r = await api.put(f"/devices/{sid}/profile", json={"name": "Ann's Shop",
                                                           "about": "Open 9-5"})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["name"] == "Ann's Shop"
        r = await api.get(f"/devices/{sid}")
        assert r.json()["data"]["connectionInfo"]["pushName"] == "Ann's Shop"  # its record too
        r = await api.put(f"/devices/{sid}/profile", json={"about": ""})
        assert r.status_code == 200
        r = await api.get(f"/devices/{sid}/profile")
        assert (r.json()["data"]["name"], r.json()["data"]["about"]) == ("Ann's Shop", "")

        # A PNG, wider than high and larger than 640: a 640x640 JPEG reaches WhatsApp.
        image = png(1000, 800)
        r = await api.put(f"/devices/{sid}/profile/picture",
                          json={"media": {"data": base64.b64encode(image).decode()}})
        assert r.status_code == 200, r.text
        picture_id = r.json()["data"]["pictureId"]
        stored = world(server, sid).picture
        assert stored is not None
        with Image.open(io.BytesIO(stored)) as img:
            assert (img.format, img.size) == ("JPEG", (640, 640))
        r = await api.get(f"/devices/{sid}/profile")
        assert r.json()["data"]["pictureId"] == picture_id
        assert r.json()["data"]["pictureUrl"].endswith(f"/{picture_id}.jpg")
        # As a multipart upload, a small one keeps its size.
        r = await api.put(f"/devices/{sid}/profile/picture",
                          files={"file": ("me.png", png(100, 120), "image/png")})
        assert r.status_code == 200, r.text
        with Image.open(io.BytesIO(world(server, sid).picture or b"")) as img:
            assert img.size == (100, 100)
        # Larger than the 1 MiB other bodies may have: this route takes files.
        noise = io.BytesIO()
        Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3)).save(noise, "PNG")
        assert len(noise.getvalue()) > 1 << 20
        r = await api.put(f"/devices/{sid}/profile/picture",
                          json={"media": {"data": base64.b64encode(noise.getvalue()).decode()}})
        assert r.status_code == 200, r.text

        error(await api.put(f"/devices/{sid}/profile", json={}), 400, "body")
        error(await api.put(f"/devices/{sid}/profile", json={"name": "x" * 26}), 400, "name")
        error(await api.put(f"/devices/{sid}/profile", json={"name": ""}), 400, "name")
        error(await api.put(f"/devices/{sid}/profile", json={"about": "x" * 140}), 400, "about")
        error(await api.put(f"/devices/{sid}/profile", json={"name": "a\nb"}), 400, "name")
        error(await api.put(f"/devices/{sid}/profile/picture",
                            json={"media": {"data": base64.b64encode(b"%PDF-1.4").decode()}}),
              400, "media")
        error(await api.put(f"/devices/{sid}/profile/picture", json={}), 400, "media")
        error(await api.put(f"/devices/{sid}/profile/picture", json={"media": {"data": "!"}}),
              400, "media.data")
        error(await api.put(f"/devices/{sid}/profile/picture",
                            files={"file": ("x.txt", b"hello", "text/plain")}), 400, "file")
        error(await api.put(f"/devices/{sid}/profile/picture",
                            json={"media": {"url": "http://127.0.0.1:9/a.png"}}), 400,
              "media.url")

        # The device's own key may use the routes; another device's key may not see it.
        other = await create(api, "Other")
        own_key = server.sup.get(sid)
        assert own_key is not None
        async with api_client(server, token=other["apiKey"]) as stranger:
            error(await stranger.get(f"/devices/{sid}/profile"), 404)


async def test_calls_reject_and_auto_reject(tmp_path: Path) -> None:
    async with connected(tmp_path) as (server, api, sid, events):
        r = await api.get(f"/devices/{sid}/settings/calls")
        assert r.json()["data"] == {"autoReject": False, "message": None}
        r = await api.post(f"/simulator/devices/{sid}/calls", json={"from": PEER, "video": True})
        assert r.status_code == 200, r.text
        call_id = r.json()["data"]["callId"]
        await until(events, 1)
        assert events[0]["type"] == "call_received"
        assert events[0]["data"] == {"callId": call_id, "from": PEER_JID, "video": True,
                                     "isGroup": False, "rejected": False}
        assert world(server, sid).rejections == []
        r = await api.post(f"/devices/{sid}/calls/{call_id}/reject", json={"from": PEER_JID})
        assert r.status_code == 200, r.text
        assert [(x.call_id, x.caller) for x in world(server, sid).rejections] == [
            (call_id, PEER_JID)]

        r = await api.put(f"/devices/{sid}/settings/calls",
                          json={"autoReject": True, "message": "Please write: we answer here."})
        assert r.status_code == 200, r.text
        r = await api.get(f"/devices/{sid}/settings/calls")
        assert r.json()["data"] == {"autoReject": True, "message": "Please write: we answer here."}
        r = await api.post(f"/simulator/devices/{sid}/calls", json={"from": PEER, "group": True})
        second = r.json()["data"]["callId"]
        await until(events, 3)
        call = next(e for e in events[1:] if e["type"] == "call_received")
        assert call["data"] == {"callId": second, "from": PEER_JID, "video": False,
                                "isGroup": True, "rejected": True}
        sent = next(e for e in events[1:] if e["type"] == "message_sent")
        assert sent["data"]["to"] == PEER_JID and sent["data"]["origin"] == "autoreply"
        assert sent["data"]["text"] == "Please write: we answer here."
        await poll(lambda: len(world(server, sid).rejections) >= 2)
        assert world(server, sid).rejections[-1].call_id == second
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        texts = [m.message.content for m in engine.sent_messages(server.sup.get(sid).id)]
        assert len(texts) == 1

        # Without a message: rejected, nothing sent.
        r = await api.put(f"/devices/{sid}/settings/calls", json={"autoReject": True})
        assert r.json()["data"] == {"autoReject": True, "message": None}
        await api.post(f"/simulator/devices/{sid}/calls", json={"from": PEER})
        await until(events, 4)
        assert events[3]["data"]["rejected"] is True
        assert len(engine.sent_messages(server.sup.get(sid).id)) == 1

        error(await api.put(f"/devices/{sid}/settings/calls", json={}), 400, "autoReject")
        error(await api.put(f"/devices/{sid}/settings/calls", json={"autoReject": "yes"}), 400,
              "autoReject")
        error(await api.put(f"/devices/{sid}/settings/calls",
                            json={"autoReject": True, "message": 5}), 400, "message")
        error(await api.put(f"/devices/{sid}/settings/calls",
                            json={"autoReject": True, "message": "x" * 1001}), 400, "message")
        error(await api.post(f"/devices/{sid}/calls/{call_id}/reject", json={}), 400, "from")
        error(await api.post(f"/devices/{sid}/calls/{call_id}/reject", json={"from": "x"}), 400,
              "from")
        error(await api.post(f"/devices/{sid}/calls/a.b/reject", json={"from": PEER}), 400,
              "callId")
        error(await api.post(f"/simulator/devices/{sid}/calls", json={"from": GROUP}), 400,
              "from")


async def test_a_device_that_is_not_connected_answers_409(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await create(api, "Shop")
        sid = device["sessionId"]
        await wait_status(api, sid, "pending")
        for method, path, body in [
            ("POST", "/presence", {"state": "available"}),
            ("POST", f"/chats/{PEER}/presence", {"state": "typing"}),
            ("POST", f"/contacts/{PEER}/presence/subscribe", {}),
            ("GET", "/profile", None),
            ("PUT", "/profile", {"name": "Ann"}),
            ("PUT", "/profile/picture", {"media": {"data": base64.b64encode(png(8, 8)).decode()}}),
            ("POST", "/calls/ABC123/reject", {"from": PEER}),
        ]:
            r = await api.request(method, f"/devices/{sid}{path}", json=body)
            error(r, 409)
            assert r.json()["code"] == "DEVICE_CONFLICT"
        # Settings are stored whatever the connection.
        r = await api.put(f"/devices/{sid}/settings/calls", json={"autoReject": True})
        assert r.status_code == 200
        error(await api.post(f"/simulator/devices/{sid}/calls", json={"from": PEER}), 409)
        error(await api.post(f"/simulator/devices/{sid}/presence",
                             json={"from": PEER, "state": "typing"}), 409)
