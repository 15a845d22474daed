"""Actions on messages and chats, end to end with the simulator over HTTP and the WebSocket:
incoming reactions, edits and revokes change their target in the history (and are still
published once each), the device reacts, edits and revokes through its outbound queue, and
marking a chat read sends read receipts and resets its unread count. Real sockets and a real
clock, with deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from supervisor.engines.simulator import SimulatorEngine

from .test_receive_e2e import connected_device, until

PEER = "+15557654321"
PEER_JID = "15557654321@s.whatsapp.net"
OTHER = "+15550001111"


async def receive(api: httpx.AsyncClient, sid: str, body: dict[str, Any]) -> str:
    """A message the simulator delivers from PEER (stored once the call returns); its id."""
    r = await api.post(f"/simulator/devices/{sid}/messages", json={"from": PEER, **body})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "delivered"
    message_id: str = r.json()["data"]["messageId"]
    return message_id


async def message(api: httpx.AsyncClient, sid: str, message_id: str) -> dict[str, Any]:
    r = await api.get(f"/devices/{sid}/messages/{message_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def unread(api: httpx.AsyncClient, sid: str) -> dict[str, int]:
    r = await api.get(f"/devices/{sid}/chats")
    assert r.status_code == 200, r.text
    return {c["chatId"]: c["unreadCount"] for c in r.json()["data"]}


def simulator(server: Any) -> SimulatorEngine:
    engine = server.sup.engine
    assert isinstance(engine, SimulatorEngine)
    return engine


async def test_incoming_actions_change_their_target_and_are_published_once(
    tmp_path: Path,
) -> None:
    async with connected_device(tmp_path) as (_server, api, device, events):
        sid = device["sessionId"]
        target = await receive(api, sid, {"text": "see you at 5"})
        fresh = await message(api, sid, target)
        assert (fresh["edited"], fresh["revoked"], fresh["reactions"]) == (False, False, {})

        await receive(api, sid, {"type": "reaction", "messageId": target, "emoji": "👍"})
        assert (await message(api, sid, target))["reactions"] == {PEER_JID: "👍"}
        await receive(api, sid, {"type": "reaction", "messageId": target, "emoji": "🎉"})
        assert (await message(api, sid, target))["reactions"] == {PEER_JID: "🎉"}

        await receive(api, sid, {"type": "edit", "messageId": target, "text": "see you at 6"})
        edited = await message(api, sid, target)
        assert (edited["text"], edited["edited"], edited["type"]) == ("see you at 6", True, "text")
        assert edited["editedAt"] is not None
        assert edited["reactions"] == {PEER_JID: "🎉"}  # an edit keeps the reactions

        await receive(api, sid, {"type": "reaction", "messageId": target, "emoji": ""})
        assert (await message(api, sid, target))["reactions"] == {}

        # A caption is edited like a text.
        image = await receive(api, sid, {"type": "image", "media": {"data": "iVBORw0KGgo="},
                                         "caption": "old"})
        await receive(api, sid, {"type": "edit", "messageId": image, "text": "new"})
        shown = await message(api, sid, image)
        assert (shown["text"], shown["media"]["caption"], shown["edited"]) == ("new", "new", True)

        await receive(api, sid, {"type": "revoke", "messageId": target})
        revoked = await message(api, sid, target)
        assert (revoked["type"], revoked["revoked"], revoked["text"]) == ("text", True, None)
        assert revoked["revokedAt"] is not None
        # A revoked message takes no edit or reaction any more.
        await receive(api, sid, {"type": "edit", "messageId": target, "text": "back"})
        await receive(api, sid, {"type": "reaction", "messageId": target, "emoji": "👍"})
        after = await message(api, sid, target)
        assert (after["text"], after["reactions"], after["revoked"]) == (None, {}, True)

        # An action on a message wasup never stored changes nothing and is still published.
        await receive(api, sid, {"type": "reaction", "messageId": "3ANOTSTORED", "emoji": "👍"})

        await until(events, 11)
        kinds = [e["data"]["type"] for e in events if e["type"] == "message_received"]
        assert kinds == ["text", "reaction", "reaction", "edit", "reaction", "image", "edit",
                         "revoke", "edit", "reaction", "reaction"]
        assert len(events) == 11  # exactly one event each


async def test_a_reaction_to_an_own_send_finds_it_by_whatsapps_id(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (server, api, device, _events):
        sid = device["sessionId"]
        r = await api.post(f"/devices/{sid}/messages", json={"to": PEER, "text": "hello"})
        assert r.status_code == 200, r.text
        mine = r.json()["data"]["messageId"]
        wa_id = simulator(server).sent_messages(device["id"])[-1].message_id
        assert wa_id != mine
        await receive(api, sid, {"type": "reaction", "messageId": wa_id, "emoji": "❤️"})
        assert (await message(api, sid, mine))["reactions"] == {PEER_JID: "❤️"}
        await receive(api, sid, {"type": "reaction", "messageId": mine, "emoji": "😮"})
        assert (await message(api, sid, mine))["reactions"] == {PEER_JID: "😮"}


async def test_reading_a_chat_sends_receipts_and_resets_its_unread_count(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (server, api, device, _events):
        sid = device["sessionId"]
        sim = simulator(server)
        first = await receive(api, sid, {"text": "one"})
        second = await receive(api, sid, {"text": "two"})
        await receive(api, sid, {"type": "reaction", "messageId": first, "emoji": "👍"})
        assert await unread(api, sid) == {PEER_JID: 2}  # a reaction is no unread message

        r = await api.post(f"/devices/{sid}/chats/{PEER}/read")
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"chatId": PEER_JID, "read": 2}
        receipts = sim.reads(device["id"])
        assert [(x.chat, x.messages) for x in receipts] == [
            (PEER_JID, ((first, None), (second, None)))
        ]
        assert await unread(api, sid) == {PEER_JID: 0}

        # Nothing new: nothing is sent again.
        r = await api.post(f"/devices/{sid}/chats/{PEER_JID}/read")
        assert r.json()["data"] == {"chatId": PEER_JID, "read": 0}
        assert len(sim.reads(device["id"])) == 1

        third = await receive(api, sid, {"text": "three"})
        assert await unread(api, sid) == {PEER_JID: 1}
        r = await api.post(f"/devices/{sid}/chats/{PEER}/read")
        assert r.json()["data"]["read"] == 1
        assert sim.reads(device["id"])[-1].messages == ((third, None),)

        # A chat without messages has nothing to read; a device key may read its own chats.
        r = await api.post(f"/devices/{sid}/chats/{OTHER}/read")
        assert r.status_code == 200 and r.json()["data"]["read"] == 0
        key = device["apiKey"]
        r = await api.post(f"/devices/{sid}/chats/{PEER}/read", headers={"X-API-TOKEN": key})
        assert r.status_code == 200, r.text

        for chat in ("not-a-chat", "123", "15557654321@example.com"):
            r = await api.post(f"/devices/{sid}/chats/{chat}/read")
            assert r.status_code == 400 and r.json()["field"] == "chatId", r.text
        r = await api.post("/devices/999999/chats/{PEER}/read")
        assert r.status_code == 404

        await api.post(f"/simulator/devices/{sid}/disconnect", json={})
        await receive_while_offline(api, sid)
        r = await api.post(f"/devices/{sid}/chats/{PEER}/read")
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "DEVICE_CONFLICT"


async def receive_while_offline(api: httpx.AsyncClient, sid: str) -> None:
    r = await api.post(f"/simulator/devices/{sid}/messages", json={"from": PEER, "text": "x"})
    assert r.status_code == 202, r.text
