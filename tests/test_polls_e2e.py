"""Poll votes end to end: a whole wasup (simulator engine) over HTTP, the WebSocket and a
webhook. The device sends a poll, voters vote through the simulator's control (by option
name; the simulated WhatsApp carries the options' hashes, as WhatsApp does), change their vote
and withdraw it; each vote is one ``message_received`` with the options named, and the poll's
stored tally follows each. Also a received multiple-choice poll, a vote on a poll wasup does
not know, and the choices a phone would not allow (400). Real sockets and a real clock, every
wait under a deadline."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from supervisor import message_content as mc
from tests.test_send_kinds_e2e import PEER, PEER_JID, Setup, connected

OTHER = "+15550001111"
OTHER_JID = "15550001111@s.whatsapp.net"


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


async def vote(setup: Setup, poll_id: str, options: list[str], voter: str = PEER) -> int:
    """A vote delivered by the simulator; the HTTP status."""
    r = await setup.api.post(f"/simulator/devices/{setup.sid}/messages", json={
        "from": voter, "type": "poll_vote", "messageId": poll_id, "options": options})
    if r.status_code == 200:
        assert r.json()["data"]["status"] == "delivered"
    return r.status_code


async def voted(setup: Setup, count: int, others: int = 0) -> dict[str, Any]:
    """The ``count``-th poll vote event, the same on the WebSocket and the webhook (after
    ``others`` incoming messages that are no votes)."""
    await setup.until("message_received", count + others)
    ws = [e for e in setup.seen("message_received") if e["data"]["type"] == "poll_vote"]
    hooked = [e for e in setup.hooked("message_received") if e["data"]["type"] == "poll_vote"]
    assert len(ws) == len(hooked) == count
    assert ws[-1]["data"] == hooked[-1]["data"]
    data: dict[str, Any] = ws[-1]["data"]
    return data


async def poll_of(setup: Setup, message_id: str) -> dict[str, Any]:
    r = await setup.api.get(f"/devices/{setup.sid}/messages/{message_id}")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["type"] == "poll"
    poll: dict[str, Any] = r.json()["data"]["poll"]
    return poll


async def test_votes_on_the_devices_poll_are_named_and_tallied(tmp_path: Path) -> None:
    async with connected(tmp_path) as setup:
        r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
            "to": PEER, "type": "poll", "poll": {"question": "Lunch?", "options": ["Yes", "No"]}})
        assert r.status_code == 200, r.text
        poll_id = r.json()["data"]["messageId"]
        await setup.until("message_sent", 1)
        assert await poll_of(setup, poll_id) == {
            "question": "Lunch?", "options": ["Yes", "No"], "multiple": False,
            "votes": {}, "tally": {"Yes": 0, "No": 0}}

        assert await vote(setup, poll_id, ["Yes"]) == 200
        data = await voted(setup, 1)
        assert data["from"] == PEER_JID and data["text"] == ""
        assert data["pollVote"] == {"messageId": poll_id, "options": ["Yes"],
                                    "optionHashes": [sha("Yes")], "unknownPoll": False}
        poll = await poll_of(setup, poll_id)
        assert (poll["votes"], poll["tally"]) == ({PEER_JID: ["Yes"]}, {"Yes": 1, "No": 0})

        # WhatsApp's id of the poll (what a real vote carries) names the same poll
        wa_id = setup.engine.sent_messages(setup.device["id"])[-1].message_id
        assert wa_id != poll_id
        assert await vote(setup, wa_id, ["No"], voter=OTHER) == 200
        assert (await voted(setup, 2))["pollVote"]["messageId"] == poll_id
        assert (await poll_of(setup, poll_id))["tally"] == {"Yes": 1, "No": 1}

        assert await vote(setup, poll_id, ["No"]) == 200  # PEER changes their vote
        assert (await voted(setup, 3))["pollVote"]["options"] == ["No"]
        poll = await poll_of(setup, poll_id)
        assert poll["votes"] == {PEER_JID: ["No"], OTHER_JID: ["No"]}
        assert poll["tally"] == {"Yes": 0, "No": 2}

        assert await vote(setup, poll_id, []) == 200  # PEER withdraws
        assert (await voted(setup, 4))["pollVote"] == {
            "messageId": poll_id, "options": [], "optionHashes": [], "unknownPoll": False}
        poll = await poll_of(setup, poll_id)
        assert (poll["votes"], poll["tally"]) == ({OTHER_JID: ["No"]}, {"Yes": 0, "No": 1})

        # what a phone would not let the voter choose: 400, nothing delivered
        for options, why in ((["Yes", "No"], "one choice"), (["Maybe"], "not an option")):
            r = await setup.api.post(f"/simulator/devices/{setup.sid}/messages", json={
                "from": PEER, "type": "poll_vote", "messageId": poll_id, "options": options})
            assert r.status_code == 400, r.text
            assert r.json()["field"] == "options" and why in r.json()["error"]
        assert (await poll_of(setup, poll_id))["tally"] == {"Yes": 0, "No": 1}

        # the history shows the same poll, and each vote as a message of its own
        r = await setup.api.get(f"/devices/{setup.sid}/chats/{PEER_JID}/messages")
        assert r.status_code == 200, r.text
        listed = r.json()["data"]
        assert [m["type"] for m in listed] == ["poll_vote"] * 3 + ["poll"]  # OTHER's chat aside
        assert listed[-1]["poll"]["tally"] == {"Yes": 0, "No": 1}
        assert listed[0]["pollVote"]["options"] == []
        stats = (await setup.api.get(f"/devices/{setup.sid}")).json()["data"]["statistics"]
        assert stats["messagesReceived"] == 0  # votes act on a message: not counted
        assert len(setup.seen("message_received")) == 4


async def test_a_received_multiple_choice_poll_and_an_unknown_one(tmp_path: Path) -> None:
    async with connected(tmp_path) as setup:
        r = await setup.api.post(f"/simulator/devices/{setup.sid}/messages", json={
            "from": PEER, "type": "poll",
            "poll": {"question": "Toppings?", "options": ["ham", "olives", "basil"],
                     "multiple": True}})
        assert r.status_code == 200, r.text
        poll_id = r.json()["data"]["messageId"]

        assert await vote(setup, poll_id, ["basil", "ham"]) == 200
        data = await voted(setup, 1, others=1)  # the poll itself arrived as one too
        assert data["pollVote"]["options"] == ["ham", "basil"]  # in the poll's order
        assert sorted(data["pollVote"]["optionHashes"]) == sorted([sha("basil"), sha("ham")])
        assert (await poll_of(setup, poll_id))["tally"] == {"ham": 1, "olives": 0, "basil": 1}
        assert await vote(setup, poll_id, ["ham", "ham"]) == 400  # an option twice

        # a poll wasup never saw: one event still, the choice as hashes, nothing changed
        assert await vote(setup, "3AUNKNOWNPOLL", ["Maybe"]) == 200
        data = await voted(setup, 2, others=1)
        assert data["pollVote"] == {"messageId": "3AUNKNOWNPOLL", "options": None,
                                    "optionHashes": [sha("Maybe")], "unknownPoll": True}
        r = await setup.api.get(f"/devices/{setup.sid}/messages/{data['messageId']}")
        assert r.status_code == 200 and r.json()["data"]["pollVote"]["unknownPoll"] is True
        assert (await poll_of(setup, poll_id))["votes"] == {PEER_JID: ["ham", "basil"]}

        # its sender deletes the poll for everyone: it takes no more votes
        r = await setup.api.post(f"/simulator/devices/{setup.sid}/messages", json={
            "from": PEER, "type": "revoke", "messageId": poll_id})
        assert r.status_code == 200, r.text
        assert await vote(setup, poll_id, ["olives"]) == 200
        assert (await voted(setup, 3, others=2))["pollVote"]["unknownPoll"] is True


async def test_a_vote_waits_offline_and_arrives_named(tmp_path: Path) -> None:
    """A vote for a device that is offline waits in the simulated WhatsApp's queue (kept in
    wasup's database) as WhatsApp keeps it, by its hashes, and is named when it arrives."""
    async with connected(tmp_path) as setup:
        r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
            "to": PEER, "type": "poll",
            "poll": {"question": "Open?", "options": ["Yes", "No"], "multiple": True}})
        assert r.status_code == 200, r.text
        poll_id = r.json()["data"]["messageId"]
        await setup.until("message_sent", 1)
        r = await setup.api.post(f"/simulator/devices/{setup.sid}/disconnect", json={})
        assert r.status_code == 200, r.text
        r = await setup.api.post(f"/simulator/devices/{setup.sid}/messages", json={
            "from": PEER, "type": "poll_vote", "messageId": poll_id, "options": ["No", "Yes"]})
        assert r.status_code == 202 and r.json()["data"]["status"] == "queued", r.text
        (queued,) = setup.engine.queued(setup.device["id"])
        assert queued.content == mc.PollVote(
            setup.engine.sent_messages(setup.device["id"])[-1].message_id,
            option_hashes=(sha("No"), sha("Yes")))  # no names on the way
        assert (await setup.api.post(f"/devices/{setup.sid}/login")).status_code in (200, 202)
        data = await voted(setup, 1)
        assert data["pollVote"]["options"] == ["Yes", "No"]
        assert (await poll_of(setup, poll_id))["tally"] == {"Yes": 1, "No": 1}
