"""Every kind of message goes out through a device (Devices.send, simulator engine, MockClock):
the simulated WhatsApp receives the content as given, ``message_sent`` carries its type and
content, the history shows the outgoing message's type; a reply quotes its target, an unknown
``replyTo`` is refused naming the field; a stored send survives as JSON of any kind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from api.routes_history import message_view
from supervisor import message_content as mc
from supervisor.errors import InvalidRequest
from supervisor.outgoing import Outgoing, Target, resolve_target
from supervisor.payloads import to_wire
from tests.store_support import backend_of

from .lifecycle_support import connected_device, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

TO = "15557654321@s.whatsapp.net"

#: One message of each kind without a media file.
PLAIN: list[mc.Content] = [
    mc.Text("hello"),
    mc.Location(52.52, 13.405, name="Brandenburger Tor", address="Pariser Platz"),
    mc.Contact("Ada", ("BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL:+15550001111\nEND:VCARD",)),
    mc.Poll("Lunch?", ("pizza", "sushi"), multiple=True),
]


#: A small PNG-looking file and one message of each media kind carrying it.
FILE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
SHA = hashlib.sha256(FILE).hexdigest()


def _info(mimetype: str, filename: str | None = None) -> mc.MediaInfo:
    return mc.MediaInfo(mimetype=mimetype, size=len(FILE), sha256=SHA, filename=filename)


MEDIA: list[mc.Content] = [
    mc.Image(_info("image/png"), caption="our menu"),
    mc.Video(_info("video/mp4"), caption="the shop"),
    mc.Audio(_info("audio/mpeg"), seconds=30),
    mc.Voice(_info("audio/ogg; codecs=opus"), seconds=3),
    mc.Document(_info("application/pdf", "prices.pdf"), caption="prices"),
    mc.Sticker(_info("image/webp")),
]


def _pinned(sup: Any, sha: str) -> bool:
    return (sup.media.pinned_dir / sha).exists()


@pytest.mark.parametrize("content", PLAIN, ids=lambda c: c.type)
async def test_a_message_of_each_kind_goes_out_whole(
    autojump_clock, tmp_path: Path, content: mc.Content
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        answer = await sup.send(device, TO, Outgoing(content))
        assert answer["status"] == "sent"
        [sent] = engine.sent_messages(device)
        assert (sent.to_jid, sent.content, sent.media) == (TO, content, None)
        [(_, event)] = rec.of(device, "message_sent")
        wire = to_wire(event.data)
        assert (wire["messageId"], wire["type"], wire["text"]) == (
            answer["messageId"], content.type, mc.text_of(content))
        if not isinstance(content, mc.Text):
            assert content.type in wire  # the kind's own object, as message_received has it
        stored = await sup.db.run(lambda r: r.messages.get(device, answer["messageId"]))
        assert (stored.direction, stored.type, stored.status) == ("out", content.type, "sent")
        # The history shows it as the event did: its type, text and the kind's own object.
        shown = message_view(stored)
        assert (shown["fromMe"], shown["status"]) == (True, "sent")
        if isinstance(content, mc.Poll):  # the history adds the votes so far: none yet
            votes, tally = shown["poll"].pop("votes"), shown["poll"].pop("tally")
            assert (votes, tally) == ({}, dict.fromkeys(content.options, 0))
        assert {k: shown[k] for k in wire if k in shown and k != "status"} == {
            k: wire[k] for k in wire if k in shown and k != "status"}


@pytest.mark.parametrize("content", MEDIA, ids=lambda c: c.type)
async def test_a_media_message_goes_out_with_its_file_byte_for_byte(
    autojump_clock, tmp_path: Path, content: mc.Content
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        assert await sup.media.put(FILE, pin=True) == SHA  # as the API keeps an upload
        answer = await sup.send(device, TO, Outgoing(content))
        assert answer["status"] == "sent"
        [sent] = engine.sent_messages(device)
        assert sent.content == content and sent.media == FILE
        [(_, event)] = rec.of(device, "message_sent")
        wire = to_wire(event.data)
        assert (wire["type"], wire["hasMedia"], wire["media"]["sha256"]) == (
            content.type, True, SHA)
        stored = await sup.db.run(lambda r: r.messages.get(device, answer["messageId"]))
        assert stored.type == content.type
        # Sent: the file is no longer pinned, it waits in the cache.
        assert not _pinned(sup, SHA) and await sup.media.get(SHA) == FILE


async def test_a_media_file_missing_from_the_store_fails_the_send(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        answer = await sup.send(device, TO, Outgoing(MEDIA[0]))
        assert answer["status"] == "pending"
        assert engine.sent_messages(device) == []
        [(_, event)] = rec.of(device, "message_status")
        assert (event.data.message_id, event.data.status, event.data.reason) == (
            answer["messageId"], "failed", "media_missing")


async def test_a_file_two_queued_sends_share_stays_pinned_until_the_last_is_done(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        await engine.set_reachable(False)
        await engine.drop(device)
        await wait_status(sup, device, "disconnected")
        await sup.media.put(FILE, pin=True)
        await sup.send(device, TO, Outgoing(MEDIA[0]))
        await sup.media.put(FILE, pin=True)
        await sup.send(device, TO, Outgoing(MEDIA[1]), ttl=5)
        await trio.sleep(30)  # the second one expires: the first still needs the file
        assert [e.data.reason for _, e in rec.of(device, "message_status")] == ["expired"]
        assert _pinned(sup, SHA)
        await engine.set_reachable(True)
        await wait_status(sup, device, "connected")
        await trio.sleep(5)  # the queue's next turn after the connection
        [sent] = engine.sent_messages(device)
        assert sent.media == FILE
        assert not _pinned(sup, SHA)


async def test_a_refused_send_unpins_its_file(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        await sup.media.put(FILE, pin=True)
        with pytest.raises(InvalidRequest):
            await sup.send(device, TO, Outgoing(MEDIA[0]), reply_to="3EB0NOSUCHMESSAGE")
        assert not _pinned(sup, SHA)


async def test_a_reply_quotes_its_target(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        incoming = await engine.incoming_message(device, TO, "are you open?")
        answer = await sup.send(device, TO, Outgoing(mc.Text("yes")), reply_to=incoming.message_id)
        [sent] = engine.sent_messages(device)
        quoted = sent.message.quoted
        assert quoted is not None
        assert (quoted.wa_id, quoted.chat, quoted.sender, quoted.from_me, quoted.type) == (
            incoming.message_id, TO, TO, False, "text")
        [(_, event)] = rec.of(device, "message_sent")
        assert to_wire(event.data)["quoted"] == {
            "messageId": incoming.message_id, "chat": TO, "from": TO}
        stored = await sup.db.run(lambda r: r.messages.get(device, answer["messageId"]))
        assert stored.quoted == incoming.message_id
        # A reply to the device's own send names it by wasup's id; WhatsApp gets its own id.
        await sup.send(device, TO, Outgoing(mc.Text("and until 9")), reply_to=answer["messageId"])
        own = engine.sent_messages(device)[-1].message.quoted
        assert own is not None
        assert (own.wa_id, own.message_id, own.sender, own.from_me) == (
            sent.message_id, answer["messageId"], None, True)


async def test_an_unknown_reply_to_is_refused_naming_the_field(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        with pytest.raises(InvalidRequest) as info:
            await sup.send(device, TO, Outgoing(mc.Text("yes")), reply_to="3EB0NOSUCHMESSAGE")
        assert info.value.field == "replyTo"
        assert engine.sent_messages(device) == []
        assert rec.of(device, "message_sent") == []


def test_an_outgoing_message_survives_json_whole() -> None:
    target = Target(wa_id="3EB0AA", chat=TO, sender=None, from_me=True, message_id="msg_x",
                    type="image", at="2025-06-19T12:00:00.000Z")
    media = mc.MediaInfo("image/png", 3, "ab" * 32, "a.png")
    for message in [
        Outgoing(mc.Image(media, caption="look"), quoted=target, mentions=(TO,)),
        Outgoing(mc.Voice(media, seconds=4)),
        Outgoing(mc.Reaction("msg_x", "👍"), target=target),
        Outgoing(mc.Edit("msg_x", "fixed"), target=target),
        Outgoing(mc.Text("see https://example.com"), link_preview=True),
        *(Outgoing(c) for c in PLAIN),
    ]:
        assert Outgoing.from_json(json.loads(json.dumps(message.to_json()))) == message
    with pytest.raises(TypeError):
        Outgoing.from_json({"content": {"type": "nonsense"}})
    with pytest.raises(TypeError):
        Outgoing.from_json({"content": {"type": "text", "text": "x"}, "quoted": {"wa_id": 1}})


async def test_queued_media_sends_and_a_reply_survive_a_restart_and_go_out_once(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path)
    async with simulated(config) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        incoming = await engine.incoming_message(device, TO, "send me the menu")
        await engine.set_reachable(False)
        await engine.drop(device)
        await wait_status(sup, device, "disconnected")
        await sup.media.put(FILE, pin=True)
        image = await sup.send(device, TO, Outgoing(MEDIA[0]), reply_to=incoming.message_id)
        await sup.media.put(FILE, pin=True)
        document = await sup.send(device, TO, Outgoing(MEDIA[4]))
        assert {image["status"], document["status"]} == {"pending"}
    assert (tmp_path / "media" / "pinned" / SHA).exists()  # the file waits on disk
    async with simulated(config) as (sup, engine, rec):
        await wait_status(sup, device, "connected")
        await trio.sleep(5)
        sent = engine.sent_messages(device)
        assert [(s.content, s.media) for s in sent] == [(MEDIA[0], FILE), (MEDIA[4], FILE)]
        quoted = sent[0].message.quoted
        assert quoted is not None and quoted.wa_id == incoming.message_id
        assert [e.data.message_id for _, e in rec.of(device, "message_sent")] == [
            image["messageId"], document["messageId"]]
        assert not _pinned(sup, SHA)
        await trio.sleep(60)
        assert len(engine.sent_messages(device)) == 2  # once each


async def test_a_stored_send_this_wasup_cannot_read_fails_and_the_queue_goes_on(
    autojump_clock, tmp_path: Path
) -> None:
    config = sim_config(tmp_path)
    async with simulated(config) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        await engine.set_reachable(False)
        await engine.drop(device)
        await wait_status(sup, device, "disconnected")
        bad = await sup.send(device, TO, Outgoing(mc.Text("first")))
        good = await sup.send(device, TO, Outgoing(mc.Text("second")))
    backend_of(config).execute(  # as a later wasup might write it
        "UPDATE sends SET payload = ? WHERE message_id = ?",
        (json.dumps({"content": {"type": "hologram"}}), bad["messageId"]),
    )
    async with simulated(config) as (sup, engine, rec):
        await wait_status(sup, device, "connected")
        await trio.sleep(5)
        assert [m.text for m in engine.sent_messages(device)] == ["second"]
        failed = [(e.data.message_id, e.data.reason) for _, e in rec.of(device, "message_status")
                  if e.data.status == "failed"]
        assert failed == [(bad["messageId"], "invalid_payload")]
        assert good["messageId"] in [e.data.message_id for _, e in rec.of(device, "message_sent")]


async def test_a_reaction_goes_out_on_its_target_and_is_not_counted_as_a_message(
    autojump_clock, tmp_path: Path
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        incoming = await engine.incoming_message(device, TO, "we won!")
        target = await sup.db.run(lambda r: resolve_target(r, device, incoming.message_id))
        assert target is not None
        reaction = Outgoing(mc.Reaction(incoming.message_id, "🎉"), target=target)
        await sup.send(device, TO, reaction)
        await sup.send(device, TO, Outgoing(mc.Text("congratulations")))
        assert engine.sent_messages(device)[0].message == reaction
        assert [to_wire(e.data)["type"] for _, e in rec.of(device, "message_sent")] == [
            "reaction", "text"]
        row = await sup.db.run(lambda r: r.devices.get(device))
        assert row.messages_sent == 1
