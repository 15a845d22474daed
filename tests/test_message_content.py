"""The content records: their wire fields are the ones docs/events.md documents, they survive
the simulator's persisted offline queue, and what counts as a received message."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from storage.models import MessageRow
from supervisor import message_content as mc
from supervisor.autoreply.guards import screen
from supervisor.autoreply.prompt import turns_from_history
from supervisor.engines.simulator_queue import QueuedMessage
from supervisor.payloads import MessageReceived, content_wire, converter, to_wire

DOCS = Path(__file__).resolve().parent.parent / "docs"
MEDIA = mc.MediaInfo("image/png", 10, "ab" * 32, "a.png")

SAMPLES: list[mc.Content] = [
    mc.Text("hi"), mc.Image(MEDIA, caption="c"), mc.Video(MEDIA), mc.Audio(MEDIA, seconds=3),
    mc.Voice(MEDIA), mc.Document(MEDIA, caption="d"), mc.Sticker(MEDIA, animated=True),
    mc.Location(1.5, 2.5, name="n"), mc.Contact("Bob", ("V",)), mc.Poll("q", ("a", "b")),
    mc.PollVote("P"), mc.Reaction("T", "👍"), mc.Edit("T", "new"), mc.Revoke("T"),
    mc.Unsupported("liveLocationMessage"), mc.Undecryptable("decrypt_failed"),
]


def documented_fields() -> dict[str, list[str]]:
    """The type's own field and its keys, from docs/events.md's table."""
    document = (DOCS / "events.md").read_text(encoding="utf-8")
    table = document.split("The type's own field:", 1)[1].split("\n\n", 2)[1]
    fields = {}
    for line in table.splitlines()[2:]:
        kind, field, value = (cell.strip() for cell in line.strip("|").split("|"))
        keys = re.findall(r'"(\w+)"', value.split("`")[1])
        fields[kind.strip("`")] = [field.strip("`"), *keys]
    return fields


def test_every_kind_is_sampled_and_typed() -> None:
    assert [c.type for c in SAMPLES] == list(mc.CONTENT_TYPES)
    assert {r.type for r in get_args(mc.Content)} == set(mc.CONTENT_TYPES)


@pytest.mark.parametrize("content", SAMPLES[:-1], ids=lambda c: c.type)
def test_wire_fields_are_the_documented_ones(content: mc.Content) -> None:
    wire = content_wire(converter, content)
    assert list(wire)[:4] == ["type", "text", "hasMedia", "media"]
    assert wire["text"] == mc.text_of(content)
    documented = documented_fields()
    if isinstance(content, get_args(mc.MediaContent)):
        assert wire["hasMedia"] is True and list(wire) == ["type", "text", "hasMedia", "media"]
        assert isinstance(wire["media"], dict)
        assert list(wire["media"])[:4] == ["mimetype", "size", "sha256", "filename"]
    elif content.type == "text":
        assert list(wire) == ["type", "text", "hasMedia", "media"]
    else:
        field, *keys = documented[content.type]
        assert list(wire)[4:] == [field]
        value = wire[field]
        assert isinstance(value, dict) and list(value) == keys
    json.dumps(wire)  # JSON as it is


def test_message_received_wire_puts_the_content_after_the_chat() -> None:
    payload = MessageReceived("m", "f", "c", "", False, False, "t",
                              content=mc.Reaction("T", ""), quoted=mc.Quoted("q", "c", "s"))
    wire = to_wire(payload)
    assert list(wire)[:8] == ["messageId", "from", "chat", "type", "text", "hasMedia", "media",
                              "reaction"]
    assert wire["quoted"] == {"messageId": "q", "chat": "c", "from": "s"}


@pytest.mark.parametrize("content", SAMPLES, ids=lambda c: c.type)
def test_a_queued_message_keeps_its_content_through_json(content: mc.Content) -> None:
    queued = QueuedMessage("3A1", "c@s.whatsapp.net", "c@s.whatsapp.net", mc.text_of(content),
                           False, 1.0, content, "3A0", "Ann")
    again = QueuedMessage.from_json(json.loads(json.dumps(queued.to_json())))
    assert again == queued
    event = again.event()
    assert event.content == content and event.quoted == mc.Quoted("3A0", chat="c@s.whatsapp.net")


def test_a_queued_message_of_an_earlier_wasup_is_a_text() -> None:
    old = {"messageId": "3A1", "chat": "c", "sender": "c", "text": "hi", "isGroup": False,
           "timestamp": 1.0}
    assert QueuedMessage.from_json(old).event().content == mc.Text("hi")
    with pytest.raises(TypeError):
        QueuedMessage.from_json({**old, "content": {"type": "image"}})


def test_what_counts_as_a_received_message() -> None:
    counted = [c.type for c in SAMPLES if mc.counted(c)]
    assert counted == ["text", "image", "video", "audio", "voice", "document", "sticker",
                       "location", "contact", "poll", "unsupported"]


def test_auto_reply_answers_messages_not_edits_or_reactions() -> None:
    def received(content: mc.Content) -> MessageReceived:
        return MessageReceived("m", "15557654321@s.whatsapp.net", "15557654321@s.whatsapp.net",
                               mc.text_of(content), False, False, "", content=content)

    assert screen(received(mc.Text("hi")), max_age=600.0) != "ignored_other"
    assert screen(received(mc.Image(MEDIA, caption="what is this?")), 600.0) != "ignored_other"
    assert screen(received(mc.Edit("T", "hi")), max_age=600.0) == "ignored_other"
    assert screen(received(mc.Reaction("T", "👍")), max_age=600.0) == "ignored_other"
    rows = [MessageRow(1, "a", "c", "in", "hi", None, "t"),
            MessageRow(1, "b", "c", "in", "hi!", None, "t", type="edit")]
    assert [t.message_id for t in turns_from_history(rows)] == ["a"]
