"""Receiving every kind of message, end to end: the simulator's HTTP control delivers it, the
WebSocket shows exactly one event for it, the database keeps it with its kind and content, and
the statistics count what is a message. Real sockets and a real clock, with deadlines."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from api.server import Server
from supervisor.engines.simulator import SimulatorEngine

from .conftest import TEST_TOKEN, api_client, running_server
from .test_messaging_e2e import create, wait_status

DEADLINE = 10.0
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
PDF = b"%PDF-1.4\n" + b"x" * 300
PEER = "+15557654321"
PEER_JID = "15557654321@s.whatsapp.net"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@asynccontextmanager
async def connected_device(
    tmp_path: Path,
    events_filter: str = "message_received,message_undecryptable,message_sent,message_status",
    scan: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Server, httpx.AsyncClient, dict[str, Any], list[dict[str, Any]]]]:
    """A server with one connected device (paired with the simulator's ``scan`` body) and the
    events of ``events_filter`` a WebSocket subscriber receives."""
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await create(api, "Shop")
        sid = device["sessionId"]
        await wait_status(api, sid, "pending")
        r = await api.post(f"/simulator/devices/{sid}/scan", json=scan or {})
        assert r.status_code == 200, r.text
        await wait_status(api, sid, "connected")
        events: list[dict[str, Any]] = []
        url = f"{server.ws_url}/?token={TEST_TOKEN}&events={events_filter}"
        async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:

            async def collect() -> None:
                while True:
                    events.append(json.loads(await ws.get_message()))

            nursery.start_soon(collect)
            await trio.sleep(0.05)  # subscribed
            yield server, api, device, events
            nursery.cancel_scope.cancel()


async def until(events: list[dict[str, Any]], count: int) -> None:
    with trio.fail_after(DEADLINE):
        for _ in range(int(DEADLINE / 0.02) + 1):
            if len(events) >= count:
                break
            await trio.sleep(0.02)
    await trio.sleep(0.1)  # nothing more arrives


#: (body, the event's type, what its data must hold).
KINDS: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
    ({"text": "hello", "pushName": "Ann"}, "message_received",
     {"type": "text", "text": "hello", "hasMedia": False, "media": None, "pushName": "Ann"}),
    ({"type": "image", "media": {"data": b64(PNG)}, "caption": "a chart"}, "message_received",
     {"type": "image", "text": "a chart", "hasMedia": True,
      "media": {"mimetype": "image/png", "size": len(PNG),
                "sha256": hashlib.sha256(PNG).hexdigest(), "filename": None,
                "caption": "a chart"}}),
    ({"type": "video", "media": {"data": b64(b"\x00" * 64), "mimetype": "video/mp4"}},
     "message_received", {"type": "video", "hasMedia": True}),
    ({"type": "audio", "media": {"data": b64(b"ID3" + b"\x01" * 40)}}, "message_received",
     {"type": "audio", "media": {"mimetype": "audio/mpeg", "size": 43,
                                 "sha256": hashlib.sha256(b"ID3" + b"\x01" * 40).hexdigest(),
                                 "filename": None, "seconds": None}}),
    ({"type": "audio", "voice": True, "media": {"data": b64(b"OggS" + b"\x02" * 20)}},
     "message_received", {"type": "voice", "hasMedia": True}),
    ({"type": "document", "media": {"data": b64(PDF), "filename": "q3.pdf"}, "caption": "Q3"},
     "message_received",
     {"type": "document", "text": "Q3",
      "media": {"mimetype": "application/pdf", "size": len(PDF),
                "sha256": hashlib.sha256(PDF).hexdigest(), "filename": "q3.pdf",
                "caption": "Q3"}}),
    ({"type": "sticker", "media": {"data": b64(b"RIFF" + b"\x03" * 16)}}, "message_received",
     {"type": "sticker", "media": {"mimetype": "image/webp", "size": 20,
                                   "sha256": hashlib.sha256(b"RIFF" + b"\x03" * 16).hexdigest(),
                                   "filename": None, "animated": False}}),
    ({"type": "location", "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin"}},
     "message_received",
     {"type": "location", "hasMedia": False,
      "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin", "address": None}}),
    ({"type": "contact", "contact": {"name": "Bob", "phoneNumber": "+15550001111"}},
     "message_received", {"type": "contact"}),
    ({"type": "poll", "poll": {"question": "Lunch?", "options": ["yes", "no"]}},
     "message_received",
     {"type": "poll", "text": "Lunch?",
      "poll": {"question": "Lunch?", "options": ["yes", "no"], "multiple": False}}),
    ({"type": "poll_vote", "messageId": "3APOLL", "options": ["yes"]}, "message_received",
     {"type": "poll_vote", "pollVote": {"messageId": "3APOLL", "options": None,
                                        "optionHashes": [hashlib.sha256(b"yes").hexdigest()],
                                        "unknownPoll": True}}),
    ({"type": "reaction", "messageId": "3ATARGET", "emoji": "👍"}, "message_received",
     {"type": "reaction", "reaction": {"messageId": "3ATARGET", "emoji": "👍"}}),
    ({"type": "reaction", "messageId": "3ATARGET", "emoji": ""}, "message_received",
     {"type": "reaction", "reaction": {"messageId": "3ATARGET", "emoji": ""}}),
    ({"type": "edit", "messageId": "3ATARGET", "text": "fixed"}, "message_received",
     {"type": "edit", "text": "fixed", "edit": {"messageId": "3ATARGET", "text": "fixed"}}),
    ({"type": "revoke", "messageId": "3ATARGET"}, "message_received",
     {"type": "revoke", "revoke": {"messageId": "3ATARGET"}}),
    ({"type": "unsupported", "kind": "liveLocationMessage"}, "message_received",
     {"type": "unsupported", "unsupported": {"kind": "liveLocationMessage"}}),
    ({"type": "text", "text": "re", "replyTo": "3AQUOTED"}, "message_received",
     {"type": "text", "quoted": {"messageId": "3AQUOTED", "chat": PEER_JID, "from": None}}),
    ({"type": "undecryptable"}, "message_undecryptable", {"reason": "decrypt_failed"}),
]

#: Of KINDS, the ones that count in messagesReceived (not reactions, edits, revokes, votes,
#: undecryptable messages).
COUNTED = 12


async def test_every_kind_yields_one_event_and_one_stored_message(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (server, api, device, events):
        sid = device["sessionId"]
        ids = []
        for body, _, _ in KINDS:
            r = await api.post(f"/simulator/devices/{sid}/messages", json={"from": PEER, **body})
            assert r.status_code == 200, (body, r.text)
            assert r.json()["data"]["status"] == "delivered"
            ids.append(r.json()["data"]["messageId"])
        await until(events, len(KINDS))
        assert len(events) == len(KINDS)  # exactly one event each
        for (body, kind, expected), message_id, event in zip(KINDS, ids, events, strict=True):
            assert event["type"] == kind and event["sessionId"] == sid, body
            data = event["data"]
            assert data["messageId"] == message_id
            assert (data["from"], data["chat"], data["senderPn"]) == (PEER_JID, PEER_JID, PEER_JID)
            assert data["isGroup"] is False and data["fromMe"] is False
            for key, value in expected.items():
                assert data[key] == value, (body, key, data)
            assert "data" not in json.dumps(data.get("media"))  # never the bytes

        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        assert engine.media(device["id"], ids[1]) == PNG  # kept for a download, byte for byte
        assert engine.media(device["id"], ids[0]) is None

        rows = await server.sup.db.run(
            lambda r: [r.messages.get(device["id"], m) for m in ids]
        )
        for (body, _, expected), row in zip(KINDS, rows, strict=True):
            assert row is not None and row.direction == "in"
            stored = json.loads(row.content or "null")
            assert row.type == stored["type"] == expected.get("type", "undecryptable"), body
            assert row.quoted == body.get("replyTo")
        assert json.loads(rows[7].content or "")["location"]["name"] == "Berlin"

        stats = (await api.get(f"/devices/{sid}")).json()["data"]["statistics"]
        assert stats["messagesReceived"] == COUNTED


async def test_a_media_message_waits_offline_and_arrives_once(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (_server, api, device, events):
        sid = device["sessionId"]
        r = await api.post(f"/simulator/devices/{sid}/disconnect", json={})
        assert r.status_code == 200
        body = {"from": PEER, "type": "image", "media": {"data": b64(PNG)}}
        r = await api.post(f"/simulator/devices/{sid}/messages", json=body)
        assert r.status_code == 202 and r.json()["data"]["status"] == "queued"
        assert (await api.post(f"/devices/{sid}/login")).status_code in (200, 202)
        await until(events, 1)
        assert [e["data"]["type"] for e in events] == ["image"]


async def test_receipts_play_the_recipients_phone(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (_server, api, device, events):
        sid = device["sessionId"]
        r = await api.post(f"/devices/{sid}/messages", json={"to": PEER, "text": "hello"})
        assert r.status_code == 200, r.text
        message_id = r.json()["data"]["messageId"]
        for status in ("delivered", "read"):
            r = await api.post(f"/simulator/devices/{sid}/receipts",
                               json={"messageId": message_id, "status": status})
            assert r.status_code == 200, r.text
            assert r.json()["data"] == {"sessionId": sid, "messageId": message_id,
                                        "status": status}
        await until(events, 4)
        assert [(e["type"], e["data"].get("status")) for e in events] == [
            ("message_sent", "sent"), ("message_status", "sent"), ("message_status", "delivered"),
            ("message_status", "read"),
        ]
        for body, field in [
            ({"messageId": "3ANEVERSENT", "status": "read"}, "messageId"),
            ({"messageId": message_id, "status": "played"}, "status"),
            ({"messageId": message_id}, "status"),
            ({"status": "read"}, "messageId"),
            ({"messageId": "a b", "status": "read"}, "messageId"),
            ({"messageId": message_id, "status": "read", "at": 1}, "at"),
        ]:
            r = await api.post(f"/simulator/devices/{sid}/receipts", json=body)
            assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)
        await api.post(f"/simulator/devices/{sid}/disconnect", json={})
        r = await api.post(f"/simulator/devices/{sid}/receipts",
                           json={"messageId": message_id, "status": "read"})
        assert r.status_code == 409


#: Bodies the simulator refuses, with the field named.
BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "gif", "text": "x"}, "type"),
    ({"type": 5}, "type"),
    ({"type": "image"}, "media"),
    ({"type": "image", "media": {"data": "not base64!"}}, "media.data"),
    ({"type": "image", "media": {"data": "AAA"}}, "media.data"),
    ({"type": "image", "media": {"data": ""}}, "media.data"),
    ({"type": "image", "media": {"data": "AAAA", "mimetype": "png"}}, "media.mimetype"),
    ({"type": "image", "media": {"data": "AAAA", "url": "https://x"}}, "media.url"),
    ({"type": "image", "media": {"data": "AAAA"}, "caption": ""}, "caption"),
    ({"type": "image", "media": {"data": "AAAA"}, "voice": True}, "voice"),
    ({"type": "audio", "media": {"data": "AAAA"}, "voice": "yes"}, "voice"),
    ({"type": "text", "text": "x", "media": {"data": "AAAA"}}, "media"),
    ({"type": "location", "location": {"latitude": 91, "longitude": 0}}, "location.latitude"),
    ({"type": "location", "location": {"latitude": 0, "longitude": "1"}}, "location.longitude"),
    ({"type": "location", "location": {"latitude": 0, "longitude": True}}, "location.longitude"),
    ({"type": "location"}, "location"),
    ({"type": "contact", "contact": {"name": "Bob"}}, "contact.phoneNumber"),
    ({"type": "contact", "contact": {"name": "Bob", "phoneNumber": "12"}}, "contact.phoneNumber"),
    ({"type": "contact", "contact": {"vcard": "V", "name": "Bob"}}, "contact"),
    ({"type": "poll", "poll": {"question": "Q", "options": ["a"]}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "Q", "options": ["a", "a"]}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "Q", "options": ["a", "b"], "multiple": 1}},
     "poll.multiple"),
    ({"type": "poll", "poll": {"options": ["a", "b"]}}, "poll.question"),
    ({"type": "reaction", "emoji": "👍"}, "messageId"),
    ({"type": "reaction", "messageId": "3A"}, "emoji"),
    ({"type": "reaction", "messageId": "3A", "emoji": "x" * 33}, "emoji"),
    ({"type": "edit", "messageId": "3A"}, "text"),
    ({"type": "revoke", "messageId": ""}, "messageId"),
    ({"type": "undecryptable", "reason": "lost"}, "reason"),
    ({"type": "unsupported", "kind": ""}, "kind"),
    ({"text": "x", "replyTo": "no spaces please"}, "replyTo"),
    ({"text": "x", "pushName": ""}, "pushName"),
]


async def test_bad_bodies_are_refused_naming_the_field(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (_server, api, device, events):
        sid = device["sessionId"]
        for body, field in BAD:
            r = await api.post(f"/simulator/devices/{sid}/messages", json={"from": PEER, **body})
            assert r.status_code == 400, (body, r.text)
            assert r.json()["field"] == field, (body, r.text)
        assert events == []
