"""Poll votes below the API: naming a vote's option hashes after the stored poll
(``supervisor.polls``), the tally the history shows, the votes the poll's row keeps on both
storage backends, the simulator's checks of a vote by option name, the vote's wire JSON against
docs/events.md's example, and the simulator control's body (``api.sim_messages``)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from api.sim_messages import sim_incoming
from storage import Repositories
from storage.message_actions import StoredPoll
from storage.models import SendRow
from supervisor import message_content as mc
from supervisor import polls
from supervisor.engine import MessageReceived
from supervisor.engines.simulator_polls import SimulatedPolls
from supervisor.errors import InvalidRequest
from supervisor.payloads import MessageReceived as ReceivedPayload
from supervisor.payloads import to_wire
from tests.store_support import Backend
from tests.test_history_storage import at
from tests.test_storage import new_device

DOCS = Path(__file__).resolve().parent.parent / "docs"
A = "15550000001@s.whatsapp.net"
B = "15550000002@s.whatsapp.net"
POLL = StoredPoll("msg_poll", ("Yes", "No", "Maybe"))


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def test_an_option_hash_is_sha256_of_its_name() -> None:
    # whatsmeow's HashPollOptions: sha256.Sum256([]byte(option)), so UTF-8 bytes
    assert polls.option_hash("Yes") == sha("Yes")
    assert polls.option_hash("Café 🍕") == hashlib.sha256("Café 🍕".encode()).hexdigest()


def test_named_votes() -> None:
    vote = mc.PollVote("3EB0WA", option_hashes=(sha("Maybe"), sha("Yes")))
    assert polls.named(vote, POLL) == mc.PollVote(
        "msg_poll", options=("Yes", "Maybe"), option_hashes=vote.option_hashes)
    withdrawn = polls.named(mc.PollVote("3EB0WA", option_hashes=()), POLL)
    assert (withdrawn.options, withdrawn.unknown_poll) == ((), False)
    # a hash of no option: left out of the names, kept in the hashes
    odd = polls.named(mc.PollVote("3EB0WA", option_hashes=(sha("Yes"), sha("Nope"))), POLL)
    assert odd.options == ("Yes",) and odd.option_hashes == (sha("Yes"), sha("Nope"))
    unknown = polls.named(vote, None)
    assert (unknown.target_id, unknown.options, unknown.unknown_poll) == ("3EB0WA", None, True)
    undecrypted = mc.PollVote("3EB0WA")
    assert polls.named(undecrypted, POLL) is undecrypted  # nothing to name


def test_the_tally_counts_voters_per_option_in_the_polls_order() -> None:
    poll = {"question": "q", "options": ["Yes", "No", "Maybe"], "multiple": True,
            "votes": {A: ["Maybe", "Yes"], B: ["Yes"]}}
    shown = polls.with_tally(poll)
    assert shown["tally"] == {"Yes": 2, "No": 0, "Maybe": 1}
    assert list(shown["tally"]) == ["Yes", "No", "Maybe"]
    assert shown["votes"] == poll["votes"]
    fresh = polls.with_tally({"question": "q", "options": ["a", "b"], "multiple": False})
    assert (fresh["votes"], fresh["tally"]) == ({}, {"a": 0, "b": 0})
    # what no vote could have written is not counted (a stale option, junk)
    odd = polls.with_tally({"options": ["a"], "votes": {A: ["gone", "a", "a"], B: "a"}})
    assert odd["tally"] == {"a": 1}


def vote_event(content: mc.PollVote, sender: str = B) -> MessageReceived:
    return MessageReceived(message_id="3AVOTE", chat=sender, sender=sender, text="",
                           is_group=False, from_me=False, timestamp=1.0, content=content)


async def test_the_polls_row_keeps_each_voters_latest_choice(backend: Backend) -> None:
    async with backend.open() as db:

        def fill(r: Repositories) -> int:
            d = new_device(r).id
            content = {"type": "poll", "text": "Lunch?", "hasMedia": False, "media": None,
                       "poll": {"question": "Lunch?", "options": ["Yes", "No"],
                                "multiple": False}}
            r.messages.insert(d, message_id="msg_poll", chat=A, direction="out",
                              text="Lunch?", status="sent", at=at(1), type="poll",
                              content=content)
            r.sends.insert(SendRow(
                device_id=d, message_id="msg_poll", idempotency_key=None, chat=A,
                text="Lunch?", origin="api", state="done", status="sent", reason=None,
                wa_id="3EB0POLL", created_at=at(1), accepted_epoch=1.0, expires_epoch=2.0,
                stuck=False))
            r.messages.insert(d, message_id="3ATEXT", chat=A, direction="in", text="hi",
                              status="received", at=at(2), type="text",
                              content={"type": "text", "text": "hi"})
            return d

        d = await db.run(fill)

        async def poll() -> dict[str, Any]:
            row = await db.run(lambda r: r.messages.get(d, "msg_poll"))
            assert row is not None
            stored: dict[str, Any] = json.loads(row.content or "{}")["poll"]
            return stored

        # found by wasup's id and by WhatsApp's id of the own send alike
        expected = StoredPoll("msg_poll", ("Yes", "No"))
        assert await db.run(lambda r: r.message_actions.poll(d, "msg_poll")) == expected
        assert await db.run(lambda r: r.message_actions.poll(d, "3EB0POLL")) == expected
        assert await db.run(lambda r: r.message_actions.poll(d, "3ATEXT")) is None  # no poll
        assert await db.run(lambda r: r.message_actions.poll(d, "3ANONE")) is None

        def counted(r: Repositories, vote: mc.PollVote, sender: str) -> mc.Content:
            ev = polls.name_vote(r.message_actions, d, vote_event(vote, sender))
            assert r.message_actions.vote(d, "3EB0POLL", voter=sender,
                                          options=ev.content.options or ())  # type: ignore[union-attr]
            return ev.content

        named = await db.run(lambda r: counted(r, mc.PollVote("3EB0POLL", option_hashes=(
            sha("Yes"),)), A))
        assert named == mc.PollVote("msg_poll", ("Yes",), (sha("Yes"),))
        await db.run(lambda r: counted(r, mc.PollVote("3EB0POLL", option_hashes=(sha("No"),)), B))
        assert (await poll())["votes"] == {A: ["Yes"], B: ["No"]}
        await db.run(lambda r: counted(r, mc.PollVote("3EB0POLL", option_hashes=(sha("No"),)), A))
        assert (await poll())["votes"] == {A: ["No"], B: ["No"]}
        await db.run(lambda r: counted(r, mc.PollVote("3EB0POLL", option_hashes=()), B))
        assert await poll() == {"question": "Lunch?", "options": ["Yes", "No"],
                                "multiple": False, "votes": {A: ["No"]}}
        # not a poll, or no such message: nothing changes
        assert not await db.run(lambda r: r.message_actions.vote(d, "3ATEXT", voter=A,
                                                                 options=["x"]))
        assert not await db.run(lambda r: r.message_actions.vote(d, "3ANONE", voter=A,
                                                                 options=["x"]))
        # a revoked poll takes no more votes and is no poll to name a vote after
        assert await db.run(lambda r: r.message_actions.revoke(d, "msg_poll", at=at(3)))
        assert not await db.run(lambda r: r.message_actions.vote(d, "msg_poll", voter=B,
                                                                 options=["Yes"]))
        assert await db.run(lambda r: r.message_actions.poll(d, "msg_poll")) is None


def test_the_simulator_checks_a_choice_against_the_poll() -> None:
    known = SimulatedPolls(cap=2)
    known.keep(1, "3ASINGLE", mc.Poll("q", ("Yes", "No")))
    known.keep(1, "3AMULTI", mc.Poll("q", ("a", "b", "c"), multiple=True))
    ballot = known.ballot(1, mc.PollVote("3AMULTI", options=("c", "a")))
    assert ballot == mc.PollVote("3AMULTI", option_hashes=(sha("c"), sha("a")))  # no names
    assert known.ballot(1, mc.PollVote("3ASINGLE", options=())).option_hashes == ()
    for target, options, why in (("3ASINGLE", ("Yes", "No"), "one choice"),
                                 ("3ASINGLE", ("yes",), "not an option"),
                                 ("3AMULTI", ("a", "a"), "at most once")):
        with pytest.raises(InvalidRequest, match=why) as caught:
            known.ballot(1, mc.PollVote(target, options=options))
        assert caught.value.field == "options"
    # another device's poll, or one it never carried: the names hashed as they are
    assert known.ballot(2, mc.PollVote("3ASINGLE", options=("x", "y"))).option_hashes == (
        sha("x"), sha("y"))
    known.keep(1, "3ATHIRD", mc.Poll("q", ("a", "b")))  # over the cap: the least recently
    assert known.get(1, "3AMULTI") is None  # used goes (3ASINGLE was voted on last)
    assert known.get(1, "3ASINGLE") is not None
    known.forget(1)
    assert known.get(1, "3ASINGLE") is None


@pytest.mark.parametrize(("body", "field"), [
    ({}, "options"),
    ({"options": "Yes"}, "options"),
    ({"options": [5]}, "options"),
    ({"options": [""]}, "options"),
    ({"options": ["a\nb"]}, "options"),
    ({"options": ["x" * 101]}, "options"),
    ({"options": [str(n) for n in range(13)]}, "options"),
    ({"options": ["a", "a"]}, "options"),
    ({"options": ["a"], "emoji": "x"}, "emoji"),
])
def test_the_simulator_controls_vote_body(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        sim_incoming({"from": "+15551234567", "type": "poll_vote", "messageId": "3A", **body})
    assert caught.value.field == field


def test_the_simulator_controls_vote_names_its_choice() -> None:
    req = sim_incoming({"from": "+15551234567", "type": "poll_vote", "messageId": "3APOLL",
                        "options": ["Yes"]})
    assert req.content == mc.PollVote("3APOLL", options=("Yes",))
    empty = sim_incoming({"from": "+15551234567", "type": "poll_vote", "messageId": "3APOLL",
                          "options": []})
    assert empty.content == mc.PollVote("3APOLL", options=())


def test_a_vote_round_trips_through_the_queues_json() -> None:
    for vote in (mc.PollVote("3A", option_hashes=(sha("a"),)), mc.PollVote("3A"),
                 mc.PollVote("msg_x", ("a",), (sha("a"),)), mc.PollVote("3A", None, (), True)):
        assert mc.from_json(json.loads(json.dumps(mc.to_json(vote)))) == vote
    assert mc.from_json({"type": "poll_vote", "target_id": "3A"}) == mc.PollVote("3A")


def test_the_documented_vote_example_is_the_wire_json() -> None:
    document = (DOCS / "events.md").read_text(encoding="utf-8")
    section = document.split("### `message_received`", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"A poll vote's `data`.*?```json\n(.*?)\n```", section, flags=re.S)
    assert block is not None
    data = json.loads(block.group(1))
    vote = data["pollVote"]
    payload = ReceivedPayload(
        data["messageId"], data["from"], data["chat"], data["text"], data["isGroup"],
        data["fromMe"], data["timestamp"], data["senderLid"], data["senderPn"],
        content=mc.PollVote(vote["messageId"], tuple(vote["options"]),
                            tuple(vote["optionHashes"]), vote["unknownPoll"]),
        push_name=data["pushName"],
    )
    assert to_wire(payload) == data
    assert list(to_wire(payload)) == list(data)
    assert vote["optionHashes"] == [sha(o) for o in vote["options"]]
