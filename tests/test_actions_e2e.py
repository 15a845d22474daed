"""Actions on messages and chats, end to end with the simulator over HTTP and the WebSocket:
incoming reactions, edits and revokes change their target in the history (and are still
published once each), the device reacts, edits and revokes through its outbound queue, and
marking a chat read sends read receipts and resets its unread count. Real sockets and a real
clock, with deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import storage
from common.clock import iso, now_epoch
from storage.models import SendRow
from supervisor import message_content as mc
from supervisor.engines.simulator import SimulatorEngine

from .test_receive_e2e import connected_device, until

pytestmark = pytest.mark.both_backends  # tests/store_support.py

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

        # Only the sender edits a message: an edit from someone else changes nothing.
        theirs = await receive(api, sid, {"text": "the meeting is at noon"})
        r = await api.post(f"/simulator/devices/{sid}/messages", json={
            "from": OTHER, "type": "edit", "messageId": theirs, "text": "cancelled"})
        assert r.status_code == 200, r.text
        assert (await message(api, sid, theirs))["edited"] is False
        assert (await message(api, sid, theirs))["text"] == "the meeting is at noon"

        await until(events, 13)
        kinds = [e["data"]["type"] for e in events if e["type"] == "message_received"]
        assert kinds == ["text", "reaction", "reaction", "edit", "reaction", "image", "edit",
                         "revoke", "edit", "reaction", "reaction", "text", "edit"]
        assert len(events) == 13  # exactly one event each


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


async def unpaced(api: httpx.AsyncClient, sid: str) -> None:
    """A burst large enough that every send here leaves at once (200, not 202)."""
    r = await api.put(f"/devices/{sid}/settings/sending",
                      json={"ratePerMinute": 600, "burst": 100})
    assert r.status_code == 200, r.text


async def send_text(api: httpx.AsyncClient, sid: str, text: str) -> str:
    r = await api.post(f"/devices/{sid}/messages", json={"to": PEER, "text": text})
    assert r.status_code == 200, r.text
    message_id: str = r.json()["data"]["messageId"]
    return message_id


async def test_the_device_reacts_edits_and_revokes_through_its_outbound_queue(
    tmp_path: Path,
) -> None:
    async with connected_device(tmp_path) as (server, api, device, events):
        sid, did = device["sessionId"], device["id"]
        sim = simulator(server)
        me = server.sup.get(did).jid
        assert me is not None
        await unpaced(api, sid)
        theirs = await receive(api, sid, {"text": "can you come at 5?"})
        mine = await send_text(api, sid, "yes, at 5")
        mine_wa = sim.sent_messages(did)[-1].message_id

        # A reaction to their message: a send of its own, with the right target.
        r = await api.post(f"/devices/{sid}/messages/{theirs}/reaction", json={"emoji": "👍"})
        assert r.status_code == 200, r.text
        answer = r.json()["data"]
        assert answer["status"] == "sent" and answer["to"] == PEER_JID
        assert answer["messageId"].startswith("msg_")
        sent = sim.sent_messages(did)[-1]
        assert sent.content == mc.Reaction(theirs, "👍") and sent.to_jid == PEER_JID
        assert sent.message.target is not None and sent.message.target.wa_id == theirs
        assert (await message(api, sid, theirs))["reactions"] == {me: "👍"}
        reaction = await message(api, sid, answer["messageId"])
        assert (reaction["type"], reaction["fromMe"], reaction["status"]) == (
            "reaction", True, "sent")
        # ... removed again.
        r = await api.post(f"/devices/{sid}/messages/{theirs}/reaction", json={"emoji": ""})
        assert r.status_code == 200, r.text
        assert sim.sent_messages(did)[-1].content == mc.Reaction(theirs, "")
        assert (await message(api, sid, theirs))["reactions"] == {}

        # A reaction to its own message names WhatsApp's id of it, by either id.
        for ref in (mine, mine_wa):
            r = await api.post(f"/devices/{sid}/messages/{ref}/reaction", json={"emoji": "✅"})
            assert r.status_code == 200, r.text
            assert sim.sent_messages(did)[-1].content == mc.Reaction(mine_wa, "✅")
        assert (await message(api, sid, mine))["reactions"] == {me: "✅"}

        # An edit of its own message.
        r = await api.patch(f"/devices/{sid}/messages/{mine}", json={"text": "yes, at 6"})
        assert r.status_code == 200, r.text
        assert sim.sent_messages(did)[-1].content == mc.Edit(mine_wa, "yes, at 6")
        edited = await message(api, sid, mine)
        assert (edited["text"], edited["edited"]) == ("yes, at 6", True)

        # Someone else's message is not the device's to edit or revoke.
        for method in ("PATCH", "DELETE"):
            r = await api.request(method, f"/devices/{sid}/messages/{theirs}",
                                  json={"text": "x"} if method == "PATCH" else None)
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "DEVICE_CONFLICT" and "own" in r.json()["error"]

        # A revoke of its own message.
        r = await api.delete(f"/devices/{sid}/messages/{mine}")
        assert r.status_code == 200, r.text
        assert sim.sent_messages(did)[-1].content == mc.Revoke(mine_wa)
        gone = await message(api, sid, mine)
        assert (gone["revoked"], gone["text"], gone["type"], gone["reactions"]) == (
            True, None, "text", {})
        for method, path, body in [
            ("PATCH", f"/devices/{sid}/messages/{mine}", {"text": "back"}),
            ("DELETE", f"/devices/{sid}/messages/{mine}", None),
            ("POST", f"/devices/{sid}/messages/{mine}/reaction", {"emoji": "👍"}),
            # an action is no message to act on
            ("POST", f"/devices/{sid}/messages/{reaction['messageId']}/reaction",
             {"emoji": "👍"}),
        ]:
            r = await api.request(method, path, json=body)
            assert r.status_code == 409, (path, r.text)

        for method, path, body in [
            ("POST", f"/devices/{sid}/messages/3ANOSUCH/reaction", {"emoji": "👍"}),
            ("PATCH", f"/devices/{sid}/messages/3ANOSUCH", {"text": "x"}),
            ("DELETE", f"/devices/{sid}/messages/3ANOSUCH", None),
        ]:
            r = await api.request(method, path, json=body)
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", (path, r.text)

        # Each action raised message_sent of its type; only the text counts as a message sent.
        await until(events, 1 + 2 * 7)  # received; sent and status for each of 7 sends
        sent_types = [e["data"]["type"] for e in events if e["type"] == "message_sent"]
        assert sent_types == ["text", "reaction", "reaction", "reaction", "reaction", "edit",
                              "revoke"]
        stats = (await api.get(f"/devices/{sid}")).json()["data"]["statistics"]
        assert stats["messagesSent"] == 1


#: Bodies the action routes refuse, with the field named.
BAD_ACTIONS: list[tuple[str, str, Any, str]] = [
    ("POST", "/reaction", {}, "emoji"),
    ("POST", "/reaction", {"emoji": 5}, "emoji"),
    ("POST", "/reaction", {"emoji": None}, "emoji"),
    ("POST", "/reaction", {"emoji": "x" * 33}, "emoji"),
    ("POST", "/reaction", {"emoji": " "}, "emoji"),
    ("POST", "/reaction", {"emoji": "👍\n"}, "emoji"),
    ("POST", "/reaction", {"emoji": "👍", "to": "+1555"}, "to"),
    ("POST", "/reaction", ["👍"], "body"),
    ("PATCH", "", {}, "text"),
    ("PATCH", "", {"text": ""}, "text"),
    ("PATCH", "", {"text": "  "}, "text"),
    ("PATCH", "", {"text": "x" * 4097}, "text"),
    ("PATCH", "", {"text": ["x"]}, "text"),
    ("PATCH", "", {"text": "x", "caption": "y"}, "caption"),
]


async def test_action_bodies_are_checked_before_anything_else(tmp_path: Path) -> None:
    async with connected_device(tmp_path) as (_server, api, device, _events):
        sid = device["sessionId"]
        theirs = await receive(api, sid, {"text": "hi"})
        for method, suffix, body, field in BAD_ACTIONS:
            for target in (theirs, "3ANOSUCH"):
                r = await api.request(method, f"/devices/{sid}/messages/{target}{suffix}",
                                      json=body)
                assert r.status_code == 400, (body, r.text)
                assert r.json()["field"] == field, (body, r.text)
        assert (await message(api, sid, theirs))["reactions"] == {}


async def test_an_edit_after_whatsapps_window_and_an_action_on_a_pending_send_are_refused(
    tmp_path: Path,
) -> None:
    async with connected_device(tmp_path) as (server, api, device, _events):
        sid, did = device["sessionId"], device["id"]
        await unpaced(api, sid)
        now = now_epoch()

        def own(r: storage.Repositories, message_id: str, wa_id: str, age: float) -> None:
            at = iso(now - age)
            r.sends.insert(SendRow(
                device_id=did, message_id=message_id, idempotency_key=None, chat=PEER_JID,
                text="old", origin="api", state="done", status="sent", reason=None,
                wa_id=wa_id, created_at=at, accepted_epoch=now - age,
                expires_epoch=now - age + 300, stuck=False))
            r.messages.insert(did, message_id=message_id, chat=PEER_JID, direction="out",
                              text="old", status="sent", at=at)

        await server.sup.db.run(lambda r: own(r, "msg_sixteen", "3EB0SIXTEEN", 16 * 60))
        await server.sup.db.run(lambda r: own(r, "msg_fourteen", "3EB0FOURTEEN", 14 * 60))
        r = await api.patch(f"/devices/{sid}/messages/msg_sixteen", json={"text": "late"})
        assert r.status_code == 409 and "15 minutes" in r.json()["error"], r.text
        assert (await message(api, sid, "msg_sixteen"))["text"] == "old"
        r = await api.patch(f"/devices/{sid}/messages/msg_fourteen", json={"text": "in time"})
        assert r.status_code == 200, r.text
        assert simulator(server).sent_messages(did)[-1].content == mc.Edit(
            "3EB0FOURTEEN", "in time")
        # A revoke has a window of 2 days.
        r = await api.delete(f"/devices/{sid}/messages/msg_sixteen")
        assert r.status_code == 200, r.text
        day = 24 * 3600
        await server.sup.db.run(lambda r: own(r, "msg_3days", "3EB0THREEDAYS", 3 * day))
        await server.sup.db.run(lambda r: own(r, "msg_1day", "3EB0ONEDAY", 1 * day))
        r = await api.delete(f"/devices/{sid}/messages/msg_3days")
        assert r.status_code == 409 and "2 days" in r.json()["error"], r.text
        assert (await message(api, sid, "msg_3days"))["revoked"] is False
        r = await api.delete(f"/devices/{sid}/messages/msg_1day")
        assert r.status_code == 200, r.text
        assert simulator(server).sent_messages(did)[-1].content == mc.Revoke("3EB0ONEDAY")
        # A reaction has no window.
        r = await api.post(f"/devices/{sid}/messages/msg_3days/reaction", json={"emoji": "👍"})
        assert r.status_code == 200, r.text

        # Offline: a send waits in the queue; acting on it is refused until it left, and an
        # action on a sent message waits in the queue too (202) and applies once it left.
        sent = await send_text(api, sid, "sent before")
        await api.post(f"/simulator/devices/{sid}/disconnect", json={})
        r = await api.post(f"/devices/{sid}/messages", json={"to": PEER, "text": "queued"})
        assert r.status_code == 202, r.text
        queued = r.json()["data"]["messageId"]
        r = await api.post(f"/devices/{sid}/messages/{queued}/reaction", json={"emoji": "👍"})
        assert r.status_code == 409 and "pending" in r.json()["error"], r.text
        r = await api.post(f"/devices/{sid}/messages/{sent}/reaction", json={"emoji": "👍"})
        assert r.status_code == 202 and r.json()["data"]["status"] == "pending", r.text
        assert (await message(api, sid, sent))["reactions"] == {}
        assert (await api.post(f"/devices/{sid}/login")).status_code in (200, 202)
        me = server.sup.get(did).jid
        for _ in range(500):
            if (await message(api, sid, sent))["reactions"] == {me: "👍"}:
                break
            await trio.sleep(0.02)
        assert (await message(api, sid, sent))["reactions"] == {me: "👍"}


async def receive_while_offline(api: httpx.AsyncClient, sid: str) -> None:
    r = await api.post(f"/simulator/devices/{sid}/messages", json={"from": PEER, "text": "x"})
    assert r.status_code == 202, r.text
