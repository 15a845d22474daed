"""Message history over HTTP, end to end (simulator engine, real sockets, real clock): the chat
list with unread counts, a chat's pages by cursor with filters, one message with its status,
device keys, and 400s naming the parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 10.0
ALICE = "+15550000001"
ALICE_JID = "15550000001@s.whatsapp.net"
BOB = "+15550000002"
BOB_JID = "15550000002@s.whatsapp.net"


async def connected_device(api: httpx.AsyncClient, alias: str) -> dict[str, Any]:
    r = await api.post("/devices", json={"userId": "u1", "alias": alias})
    assert r.status_code == 201, r.text
    device: dict[str, Any] = r.json()["data"]
    r = await api.post(f"/simulator/devices/{device['id']}/scan", json={})
    assert r.status_code == 200, r.text
    with trio.fail_after(DEADLINE):
        while True:
            r = await api.get(f"/devices/{device['id']}")
            if r.json()["data"]["status"] == "connected":
                return device
            await trio.sleep(0.01)


async def receive(api: httpx.AsyncClient, sid: str, body: dict[str, Any]) -> str:
    """A message the simulator delivers (``body`` as its route takes it); its id. The
    simulator answers only once wasup stored the message, so it is in the history at once."""
    r = await api.post(f"/simulator/devices/{sid}/messages", json=body)
    assert r.status_code == 200, r.text
    message_id: str = r.json()["data"]["messageId"]
    assert (await api.get(f"/devices/{sid}/messages/{message_id}")).status_code == 200
    return message_id


async def receive_text(api: httpx.AsyncClient, sid: str, sender: str, text: str) -> str:
    return await receive(api, sid, {"from": sender, "text": text})


async def send(api: httpx.AsyncClient, sid: str, to: str, text: str) -> str:
    r = await api.post(f"/devices/{sid}/messages", json={"to": to, "text": text})
    assert r.status_code == 200, r.text
    message_id: str = r.json()["data"]["messageId"]
    return message_id


async def test_chats_pages_and_one_message(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await connected_device(api, "Shop")
        sid = device["sessionId"]
        a1 = await receive_text(api, sid, ALICE, "hi 1")
        out = await send(api, sid, ALICE, "hello alice")
        a2 = await receive_text(api, sid, ALICE, "hi 2")
        a3 = await receive_text(api, sid, ALICE, "hi 3")
        b1 = await receive_text(api, sid, BOB, "from bob")

        # The chat list: Bob's chat is the newest; Alice has two unread since the answer.
        r = await api.get(f"/devices/{sid}/chats")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(c["chatId"], c["unreadCount"], c["lastMessage"]["messageId"])
                for c in body["data"]] == [(BOB_JID, 1, b1), (ALICE_JID, 2, a3)]
        assert body["data"][0]["isGroup"] is False
        assert body["pagination"] == {"limit": 50, "hasMore": False, "nextCursor": None}
        r = await api.get(f"/devices/{sid}/chats", params={"limit": 1})
        first = r.json()
        assert [c["chatId"] for c in first["data"]] == [BOB_JID]
        assert first["pagination"]["hasMore"] is True
        r = await api.get(
            f"/devices/{sid}/chats", params={"before": first["pagination"]["nextCursor"]}
        )
        assert [c["chatId"] for c in r.json()["data"]] == [ALICE_JID]

        # A chat's messages, by phone number or JID, newest first, by cursor.
        r = await api.get(f"/devices/{sid}/chats/{ALICE}/messages", params={"limit": 3})
        page = r.json()
        assert r.status_code == 200, r.text
        assert [m["messageId"] for m in page["data"]] == [a3, a2, out]
        assert page["pagination"]["hasMore"] is True
        r = await api.get(
            f"/devices/{sid}/chats/{ALICE_JID}/messages",
            params={"limit": 3, "before": page["pagination"]["nextCursor"]},
        )
        rest = r.json()
        assert [m["messageId"] for m in rest["data"]] == [a1]
        assert rest["pagination"] == {"limit": 3, "hasMore": False, "nextCursor": None}
        mine = (await api.get(f"/devices/{sid}/chats/{ALICE}/messages",
                              params={"fromMe": "true"})).json()["data"]
        assert [(m["messageId"], m["fromMe"], m["text"]) for m in mine] == [
            (out, True, "hello alice")
        ]
        theirs = (await api.get(f"/devices/{sid}/chats/{ALICE}/messages",
                                params={"fromMe": "false"})).json()["data"]
        assert [m["messageId"] for m in theirs] == [a3, a2, a1]
        assert theirs[0]["from"] == ALICE_JID and theirs[0]["chatId"] == ALICE_JID
        # since / until: the time window of the stored messages, any RFC 3339 offset.
        stamp = mine[0]["timestamp"]
        window = (await api.get(f"/devices/{sid}/chats/{ALICE}/messages",
                                params={"since": stamp, "until": stamp})).json()["data"]
        assert [m["messageId"] for m in window] == [out]
        later = (await api.get(f"/devices/{sid}/chats/{ALICE}/messages",
                               params={"since": "2999-01-01T00:00:00+02:00"})).json()["data"]
        assert later == []
        old = (await api.get(f"/devices/{sid}/chats/{ALICE}/messages",
                             params={"until": "2000-01-01T00:00:00Z"})).json()["data"]
        assert old == []
        # Every kind is kept with its content, and filtered by type.
        loc = await receive(api, sid, {
            "from": ALICE, "type": "location", "replyTo": a1,
            "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin"},
        })
        r = await api.get(f"/devices/{sid}/chats/{ALICE}/messages", params={"type": "location"})
        located = r.json()["data"]
        assert [m["messageId"] for m in located] == [loc]
        assert located[0]["type"] == "location" and located[0]["hasMedia"] is False
        assert located[0]["location"]["name"] == "Berlin"
        assert located[0]["quoted"]["messageId"] == a1
        texts = (await api.get(f"/devices/{sid}/chats/{ALICE}/messages",
                               params={"type": "text"})).json()["data"]
        assert [m["messageId"] for m in texts] == [a3, a2, out, a1]
        assert texts[0]["type"] == "text" and texts[0]["text"] == "hi 3"
        # An unknown chat is empty.
        r = await api.get(f"/devices/{sid}/chats/120363000000000009@g.us/messages")
        assert r.status_code == 200 and r.json()["data"] == []

        # One message with its status; the simulator's phone reads the sent one eventually.
        r = await api.get(f"/devices/{device['id']}/messages/{out}")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["messageId"] == out and data["fromMe"] is True
        assert data["status"] in {"sent", "delivered", "read"}
        r = await api.get(f"/devices/{sid}/messages/nope")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"

        # A device key sees its own device's history only.
        other = await connected_device(api, "Other")
        async with api_client(server, token=device["apiKey"]) as own:
            assert (await own.get(f"/devices/{sid}/chats")).status_code == 200
            assert (await own.get(f"/devices/{sid}/messages/{out}")).status_code == 200
            r = await own.get(f"/devices/{other['sessionId']}/chats")
            assert r.status_code == 404 and r.json()["code"] == "DEVICE_NOT_FOUND"
            r = await own.get(f"/devices/{other['sessionId']}/messages/{out}")
            assert r.status_code == 404
        # Another device's messages are not this one's.
        r = await api.get(f"/devices/{other['id']}/messages/{out}")
        assert r.status_code == 404
        assert (await api.get(f"/devices/{other['id']}/chats")).json()["data"] == []


BAD_PARAMETERS = [
    ("/chats/hello/messages", {}, "chatId"),
    ("/chats/0155512345/messages", {}, "chatId"),
    ("/chats/123@example.com/messages", {}, "chatId"),
    ("/chats", {"limit": "0"}, "limit"),
    ("/chats", {"limit": "101"}, "limit"),
    ("/chats", {"limit": "ten"}, "limit"),
    ("/chats", {"before": "abc"}, "before"),
    ("/chats", {"before": "0"}, "before"),
    ("/chats/+15550000001/messages", {"before": "-1"}, "before"),
    ("/chats/+15550000001/messages", {"before": "9" * 19}, "before"),
    ("/chats/+15550000001/messages", {"since": "yesterday"}, "since"),
    ("/chats/+15550000001/messages", {"since": "2025-06-19"}, "since"),
    ("/chats/+15550000001/messages", {"until": "2025-02-30T00:00:00Z"}, "until"),
    ("/chats/+15550000001/messages", {"until": "2025-06-19T12:00:00"}, "until"),
    ("/chats/+15550000001/messages", {"until": "2025-06-19T12:00:00+24:00"}, "until"),
    ("/chats/+15550000001/messages", {"fromMe": "yes"}, "fromMe"),
    ("/chats/+15550000001/messages", {"type": "gif"}, "type"),
]


async def test_bad_parameters_are_400_naming_them(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        sid = r.json()["data"]["sessionId"]
        for path, params, field in BAD_PARAMETERS:
            r = await api.get(f"/devices/{sid}{path}", params=params)
            assert r.status_code == 400, (path, params, r.text)
            body = r.json()
            assert body["code"] == "INVALID_REQUEST" and body["field"] == field, (path, params)


def test_rfc3339_times_become_stored_times() -> None:
    from api.routes_history import stored_time

    assert stored_time("since", "2025-06-19T14:00:00.1234+02:00") == "2025-06-19T12:00:00.123Z"
    assert stored_time("since", "2025-06-19t12:00:00z") == "2025-06-19T12:00:00.000Z"
    assert stored_time("since", "2016-12-31T23:59:60Z") == "2016-12-31T23:59:59.999Z"
    assert stored_time("since", "0000-01-01T00:00:00Z") == "0000-01-01T00:00:00.000Z"
    assert stored_time("until", "9999-12-31T23:59:59-05:00") == "9999-12-31T23:59:59.999Z"
    assert stored_time("since", "0001-01-01T00:00:00+05:00") == "0000-01-01T00:00:00.000Z"
