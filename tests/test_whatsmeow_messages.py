"""Every kind of WhatsApp message, as neonize's own protobuf objects, through the whatsmeow
engine's translation: each yields exactly one ``MessageReceived`` with the right content."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage

from supervisor.engine import MessageReceived
from supervisor.engines.whatsmeow_messages import CARRIERS, WRAPPERS
from supervisor.engines.whatsmeow_translate import translate
from supervisor.message_content import (
    Audio,
    Contact,
    Content,
    Document,
    Edit,
    Image,
    Location,
    MediaInfo,
    Poll,
    PollVote,
    Quoted,
    Reaction,
    Revoke,
    Sticker,
    Text,
    Undecryptable,
    Unsupported,
    Video,
    Voice,
)

PEER = nz.JID(User="15557654321", Server="s.whatsapp.net")
SHA = bytes(range(32))


def event(message: WAMessage, *, push_name: str = "Ann") -> nz.Message:
    ev = nz.Message(Info=nz.MessageInfo(
        ID="3EB0KIND", Timestamp=1_750_000_100, Pushname=push_name,
        MessageSource=nz.MessageSource(Chat=PEER, Sender=PEER),
    ))
    ev.Message.CopyFrom(message)
    return ev


def one(message: WAMessage) -> MessageReceived:
    events = translate(event(message), now=0.0)
    assert len(events) == 1
    (ev,) = events
    assert isinstance(ev, MessageReceived)
    assert ev.message_id == "3EB0KIND" and ev.push_name == "Ann"
    return ev


def _image(m: WAMessage) -> None:
    m.imageMessage.mimetype = "image/jpeg"
    m.imageMessage.fileLength = 2048
    m.imageMessage.fileSHA256 = SHA
    m.imageMessage.caption = "a photo"


def _video(m: WAMessage) -> None:
    m.videoMessage.mimetype = "video/mp4"
    m.videoMessage.fileLength = 9000
    m.videoMessage.fileSHA256 = SHA


def _audio(m: WAMessage) -> None:
    m.audioMessage.mimetype = "audio/mpeg"
    m.audioMessage.fileLength = 300
    m.audioMessage.seconds = 12


def _voice(m: WAMessage) -> None:
    m.audioMessage.mimetype = "audio/ogg; codecs=opus"
    m.audioMessage.PTT = True
    m.audioMessage.seconds = 3


def _document(m: WAMessage) -> None:
    m.documentWithCaptionMessage.message.documentMessage.fileName = "report.pdf"
    m.documentWithCaptionMessage.message.documentMessage.mimetype = "application/pdf"
    m.documentWithCaptionMessage.message.documentMessage.caption = "Q3"


def _sticker(m: WAMessage) -> None:
    m.stickerMessage.mimetype = "image/webp"
    m.stickerMessage.isAnimated = True


def _location(m: WAMessage) -> None:
    m.locationMessage.degreesLatitude = 52.52
    m.locationMessage.degreesLongitude = 13.405
    m.locationMessage.name = "Berlin"


def _contact(m: WAMessage) -> None:
    m.contactMessage.displayName = "Bob"
    m.contactMessage.vcard = "BEGIN:VCARD\nFN:Bob\nEND:VCARD"


def _contacts(m: WAMessage) -> None:
    m.contactsArrayMessage.displayName = "2 contacts"
    m.contactsArrayMessage.contacts.add(displayName="A", vcard="V1")
    m.contactsArrayMessage.contacts.add(displayName="B", vcard="V2")


def _poll(field: str) -> Callable[[WAMessage], None]:
    def build(m: WAMessage) -> None:
        poll = getattr(m, field)
        poll.name = "Lunch?"
        poll.options.add(optionName="yes")
        poll.options.add(optionName="no")
        poll.selectableOptionsCount = 1
    return build


def _vote(m: WAMessage) -> None:
    m.pollUpdateMessage.pollCreationMessageKey.ID = "3EB0POLL"


def _reaction(m: WAMessage) -> None:
    m.reactionMessage.key.ID = "3EB0TARGET"
    m.reactionMessage.text = "👍"


def _unreaction(m: WAMessage) -> None:
    m.reactionMessage.key.ID = "3EB0TARGET"


def _edit(m: WAMessage) -> None:
    m.editedMessage.message.protocolMessage.type = ProtocolMessage.MESSAGE_EDIT
    m.editedMessage.message.protocolMessage.key.ID = "3EB0TARGET"
    m.editedMessage.message.protocolMessage.editedMessage.conversation = "fixed"


def _revoke(m: WAMessage) -> None:
    m.protocolMessage.type = ProtocolMessage.REVOKE
    m.protocolMessage.key.ID = "3EB0TARGET"


def _view_once(m: WAMessage) -> None:
    m.viewOnceMessageV2.message.imageMessage.mimetype = "image/png"


def _live(m: WAMessage) -> None:
    m.liveLocationMessage.degreesLatitude = 1.0


def _ephemeral_setting(m: WAMessage) -> None:
    m.protocolMessage.type = ProtocolMessage.EPHEMERAL_SETTING


def _key_only(m: WAMessage) -> None:
    m.senderKeyDistributionMessage.groupID = "g"


def _extended(m: WAMessage) -> None:
    m.extendedTextMessage.text = "see https://example.org"
    m.messageContextInfo.messageSecret = b"x"


def _conversation(m: WAMessage) -> None:
    m.conversation = "hello"


KINDS: list[tuple[str, Callable[[WAMessage], None], Content]] = [
    ("conversation", _conversation, Text("hello")),
    ("extended text", _extended, Text("see https://example.org")),
    ("image", _image, Image(MediaInfo("image/jpeg", 2048, SHA.hex()), caption="a photo")),
    ("video", _video, Video(MediaInfo("video/mp4", 9000, SHA.hex()))),
    ("audio", _audio, Audio(MediaInfo("audio/mpeg", 300), seconds=12)),
    ("voice", _voice, Voice(MediaInfo("audio/ogg; codecs=opus"), seconds=3)),
    ("document with caption", _document,
     Document(MediaInfo("application/pdf", filename="report.pdf"), caption="Q3")),
    ("sticker", _sticker, Sticker(MediaInfo("image/webp"), animated=True)),
    ("location", _location, Location(52.52, 13.405, name="Berlin")),
    ("contact", _contact, Contact("Bob", ("BEGIN:VCARD\nFN:Bob\nEND:VCARD",))),
    ("contacts", _contacts, Contact("2 contacts", ("V1", "V2"))),
    ("poll v1", _poll("pollCreationMessage"), Poll("Lunch?", ("yes", "no"))),
    ("poll v2", _poll("pollCreationMessageV2"), Poll("Lunch?", ("yes", "no"))),
    ("poll v3", _poll("pollCreationMessageV3"), Poll("Lunch?", ("yes", "no"))),
    ("poll vote", _vote, PollVote("3EB0POLL")),
    ("reaction", _reaction, Reaction("3EB0TARGET", "👍")),
    ("reaction removed", _unreaction, Reaction("3EB0TARGET", "")),
    ("edit", _edit, Edit("3EB0TARGET", "fixed")),
    ("revoke", _revoke, Revoke("3EB0TARGET")),
    ("view once", _view_once, Image(MediaInfo("image/png"))),
    ("live location", _live, Unsupported("liveLocationMessage")),
    ("other protocol message", _ephemeral_setting,
     Unsupported("protocolMessage:EPHEMERAL_SETTING")),
    ("sender key only", _key_only, Unsupported("empty")),
    ("empty", lambda m: None, Unsupported("empty")),
]


@pytest.mark.parametrize(("build", "content"), [(b, c) for _, b, c in KINDS],
                         ids=[name for name, _, _ in KINDS])
def test_every_kind_yields_exactly_one_message(
    build: Callable[[WAMessage], None], content: Content
) -> None:
    m = WAMessage()
    build(m)
    ev = one(m)
    assert ev.content == content
    assert ev.text == {"Text": getattr(content, "text", ""), "Edit": "fixed"}.get(
        type(content).__name__, getattr(content, "caption", getattr(content, "question", ""))
    )


def test_every_field_of_a_message_yields_one_event() -> None:
    """Whatever field WhatsApp sets (wasup models it or not), the engine reports it."""
    for field in WAMessage.DESCRIPTOR.fields:
        m = WAMessage()
        if field.message_type is None:
            setattr(m, field.name, "x")
        else:
            getattr(m, field.name).SetInParent()
        ev = one(m)
        if field.name in CARRIERS:
            assert ev.content == Unsupported("empty"), field.name
        elif field.name not in WRAPPERS:  # an empty wrapper is read as its own field
            assert ev.content != Unsupported("empty"), field.name


def test_a_reply_names_the_quoted_message() -> None:
    m = WAMessage()
    m.extendedTextMessage.text = "yes"
    ctx = m.extendedTextMessage.contextInfo
    ctx.stanzaID = "3EB0QUOTED"
    ctx.participant = "15551112222@s.whatsapp.net"
    ev = one(m)
    assert ev.quoted == Quoted("3EB0QUOTED", sender="15551112222@s.whatsapp.net")
    m2 = WAMessage()
    m2.imageMessage.contextInfo.stanzaID = "3EB0Q2"
    assert one(m2).quoted == Quoted("3EB0Q2")
    assert one(WAMessage(conversation="plain")).quoted is None


def test_undecryptable_message() -> None:
    info = nz.MessageInfo(ID="3EB0BAD", Timestamp=1_750_000_100,
                          MessageSource=nz.MessageSource(Chat=PEER, Sender=PEER))
    (ev,) = translate(nz.UndecryptableMessage(Info=info), now=0.0)
    assert isinstance(ev, MessageReceived)
    assert ev.content == Undecryptable("decrypt_failed") and ev.message_id == "3EB0BAD"
    (ev,) = translate(nz.UndecryptableMessage(Info=info, IsUnavailable=True), now=0.0)
    assert isinstance(ev, MessageReceived) and ev.content == Undecryptable("unavailable")
