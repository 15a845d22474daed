"""Every kind of message goes out through a device (Devices.send, simulator engine, MockClock):
the simulated WhatsApp receives the content as given, ``message_sent`` carries its type and
content, the history shows the outgoing message's type; a reply quotes its target, an unknown
``replyTo`` is refused naming the field; a stored send survives as JSON of any kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor import message_content as mc
from supervisor.errors import InvalidRequest
from supervisor.outgoing import Outgoing, Target
from supervisor.payloads import to_wire

from .lifecycle_support import sim_config, simulated, wait_status

TO = "15557654321@s.whatsapp.net"

#: One message of each kind without a media file.
PLAIN: list[mc.Content] = [
    mc.Text("hello"),
    mc.Location(52.52, 13.405, name="Brandenburger Tor", address="Pariser Platz"),
    mc.Contact("Ada", ("BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL:+15550001111\nEND:VCARD",)),
    mc.Poll("Lunch?", ("pizza", "sushi"), multiple=True),
]


async def _connected_device(sup: Any, engine: Any) -> int:
    row, _ = await sup.create_device("u1", "Shop")
    await sup.wait_qr(row.id, 5)
    await engine.scan(row.id)
    await wait_status(sup, row.id, "connected")
    return int(row.id)


@pytest.mark.parametrize("content", PLAIN, ids=lambda c: c.type)
async def test_a_message_of_each_kind_goes_out_whole(
    autojump_clock, tmp_path: Path, content: mc.Content
) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await _connected_device(sup, engine)
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
        assert json.loads(stored.content)["type"] == content.type


async def test_a_reply_quotes_its_target(autojump_clock, tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await _connected_device(sup, engine)
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
        device = await _connected_device(sup, engine)
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
