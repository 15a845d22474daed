"""The whatsmeow engine's sends at the Go boundary, with neonize's own objects: for each kind the
built ``Message`` protobuf has the fields WhatsApp reads (upload keys, caption, mimetype, PTT,
the reply's contextInfo, mentions, reaction and protocol messages, the poll), reading it back
with ``whatsmeow_messages.content_of`` gives the content it was built from, and the client
uploads the file as its kind and sends the built proto."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import pytest
from neonize.proto.Neonize_pb2 import JID, UploadResponse
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ExtendedTextMessage, ProtocolMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.utils.enum import MediaType

from supervisor import message_content as mc
from supervisor.engine import Sent
from supervisor.engines import whatsmeow_client as wc
from supervisor.engines import whatsmeow_outgoing as wo
from supervisor.engines.whatsmeow_messages import content_of, message_of_ref
from supervisor.jid import Jid
from supervisor.link_preview import LinkCard
from supervisor.outgoing import Outgoing, Target
from supervisor.thumbnails import Thumbnail

ME = "15550000001@s.whatsapp.net"
ALICE = "15557654321@s.whatsapp.net"
GROUP = "120363000000000001@g.us"
FILE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
SHA = hashlib.sha256(FILE).hexdigest()
UPLOAD = UploadResponse(
    url="https://mmg.whatsapp.net/v/t62/x", DirectPath="/v/t62/x", MediaKey=b"k" * 32,
    FileEncSHA256=b"e" * 32, FileSHA256=bytes.fromhex(SHA), FileLength=len(FILE),
)
SECRET = bytes(range(32))


def info(mimetype: str, filename: str | None = None) -> mc.MediaInfo:
    return mc.MediaInfo(mimetype=mimetype, size=len(FILE), sha256=SHA, filename=filename)


def target(kind: str = "text", *, from_me: bool = False, chat: str = ALICE,
           sender: str | None = ALICE, wa_id: str = "3EB0TARGET") -> Target:
    return Target(wa_id=wa_id, chat=chat, sender=None if from_me else sender, from_me=from_me,
                  message_id=wa_id, type=kind, at="2025-06-19T12:00:00.000Z", text="the original")


#: One message of every kind wasup sends (a reaction, edit or revoke on a target whose wasup
#: id is WhatsApp's, so the content reads back the same).
EVERY_KIND: list[Outgoing] = [
    Outgoing(mc.Text("hello")),
    Outgoing(mc.Image(info("image/png"), caption="look")),
    Outgoing(mc.Video(info("video/mp4"), caption="watch")),
    Outgoing(mc.Audio(info("audio/mpeg"), seconds=61)),
    Outgoing(mc.Voice(info("audio/ogg; codecs=opus"), seconds=4)),
    Outgoing(mc.Document(info("application/pdf", "price list.pdf"), caption="prices")),
    Outgoing(mc.Sticker(info("image/webp"), animated=True)),
    Outgoing(mc.Location(52.52, 13.405, name="Brandenburger Tor", address="Pariser Platz")),
    Outgoing(mc.Contact("Ada", ("BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nEND:VCARD",))),
    Outgoing(mc.Contact("2 contacts", ("BEGIN:VCARD\nFN:A\nEND:VCARD",
                                       "BEGIN:VCARD\nFN:B\nEND:VCARD"))),
    Outgoing(mc.Poll("Lunch?", ("pizza", "sushi", "soup"), multiple=False)),
    Outgoing(mc.Poll("Which days?", ("mon", "tue"), multiple=True)),
    Outgoing(mc.Reaction("3EB0TARGET", "👍"), target=target()),
    Outgoing(mc.Reaction("3EB0TARGET", ""), target=target()),
    Outgoing(mc.Edit("3EB0TARGET", "fixed"), target=target(from_me=True)),
    Outgoing(mc.Edit("3EB0TARGET", "new caption"), target=target("image", from_me=True)),
    Outgoing(mc.Revoke("3EB0TARGET"), target=target(from_me=True)),
]


def built(message: Outgoing) -> WAMessage:
    upload = UPLOAD if message.media is not None else None
    return wo.build(message, me=ME, upload=upload, now_ms=1_750_000_000_000, secret=SECRET)


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda m: m.content.type)
def test_every_kind_reads_back_as_the_content_it_was_built_from(message: Outgoing) -> None:
    proto = WAMessage.FromString(built(message).SerializeToString())  # as it crosses to Go
    content, quoted = content_of(proto)
    assert content == message.content
    assert quoted is None


@pytest.mark.parametrize("message", [m for m in EVERY_KIND if m.media is not None],
                         ids=lambda m: m.content.type)
def test_a_media_message_carries_the_upload(message: Outgoing) -> None:
    name = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage",
            "voice": "audioMessage", "document": "documentMessage",
            "sticker": "stickerMessage"}[message.content.type]
    part = getattr(built(message), name)
    assert (part.URL, part.directPath, part.mediaKey, part.fileEncSHA256) == (
        UPLOAD.url, UPLOAD.DirectPath, UPLOAD.MediaKey, UPLOAD.FileEncSHA256)
    assert (part.fileSHA256.hex(), part.fileLength) == (SHA, len(FILE))
    assert message.media is not None and part.mimetype == message.media.mimetype
    if name == "audioMessage":
        assert part.PTT is (message.content.type == "voice")
    if hasattr(message.content, "caption"):
        assert part.caption == message.content.caption
    if name == "documentMessage":
        assert part.fileName == "price list.pdf"


def test_a_media_kind_without_a_mimetype_gets_the_kinds_default() -> None:
    message = Outgoing(mc.Voice(mc.MediaInfo(sha256=SHA)))
    assert built(message).audioMessage.mimetype == "audio/ogg; codecs=opus"
    assert wo.media_type(message) is MediaType.MediaAudio
    assert wo.media_type(Outgoing(mc.Sticker(info("image/webp")))) is MediaType.MediaImage
    assert wo.media_type(Outgoing(mc.Text("x"))) is None


def test_a_reply_quotes_its_target_and_mentions_go_along() -> None:
    reply = Outgoing(mc.Text("@15557654321 yes"), quoted=target(), mentions=(ALICE,))
    proto = built(reply)
    context = proto.extendedTextMessage.contextInfo
    assert (context.stanzaID, context.participant) == ("3EB0TARGET", ALICE)
    assert context.quotedMessage.conversation == "the original"
    assert list(context.mentionedJID) == [ALICE]
    assert content_of(proto) == (mc.Text("@15557654321 yes"),
                                 mc.Quoted("3EB0TARGET", None, ALICE))
    # Quoting the device's own message names the device as the participant; in a group the
    # chat goes along.
    own = built(Outgoing(mc.Image(info("image/png"), "again"), quoted=target(from_me=True)))
    assert own.imageMessage.contextInfo.participant == ME
    in_group = built(Outgoing(mc.Location(1.0, 2.0),
                              quoted=target(chat=GROUP, sender=ALICE)))
    assert (in_group.locationMessage.contextInfo.participant,
            in_group.locationMessage.contextInfo.remoteJID) == (ALICE, GROUP)
    # A plain text stays a plain conversation.
    assert built(Outgoing(mc.Text("plain"))) == WAMessage(conversation="plain")


def test_actions_are_keyed_to_their_target() -> None:
    reaction = built(Outgoing(mc.Reaction("3EB0TARGET", "👍"),
                              target=target(chat=GROUP, sender=ALICE))).reactionMessage
    assert (reaction.key.remoteJID, reaction.key.ID, reaction.key.fromMe,
            reaction.key.participant) == (GROUP, "3EB0TARGET", False, ALICE)
    assert (reaction.text, reaction.senderTimestampMS) == ("👍", 1_750_000_000_000)
    revoke = built(Outgoing(mc.Revoke("3EB0TARGET"), target=target(from_me=True)))
    assert revoke.protocolMessage.type == ProtocolMessage.REVOKE
    assert (revoke.protocolMessage.key.ID, revoke.protocolMessage.key.fromMe) == (
        "3EB0TARGET", True)
    edit = built(Outgoing(mc.Edit("3EB0TARGET", "fixed"), target=target(from_me=True)))
    inner = edit.editedMessage.message.protocolMessage
    assert inner.type == ProtocolMessage.MESSAGE_EDIT
    assert (inner.key.ID, inner.editedMessage.conversation) == ("3EB0TARGET", "fixed")


def test_a_link_preview_carries_its_card() -> None:
    url = "https://shop.example/spring"
    thumb = Thumbnail(b"\xff\xd8\xff\xe0jpeg", 240, 120)
    card = LinkCard(url, "Spring sale", "Half off", thumb)
    text = mc.Text(f"new post: {url} !")
    proto = WAMessage.FromString(
        built(Outgoing(text, link_preview=True, card=card)).SerializeToString())
    ext = proto.extendedTextMessage
    assert (ext.text, ext.matchedText) == (text.text, url)
    assert (ext.title, ext.description) == ("Spring sale", "Half off")
    assert (ext.JPEGThumbnail, ext.thumbnailWidth, ext.thumbnailHeight) == (thumb.data, 240, 120)
    assert ext.previewType == ExtendedTextMessage.PreviewType.NONE
    assert content_of(proto)[0] == text
    # A card without a picture; no card (the page could not be had): the link alone.
    ext = built(Outgoing(text, link_preview=True, card=LinkCard(url, "Spring sale"))
                ).extendedTextMessage
    assert ext.title == "Spring sale" and not ext.HasField("JPEGThumbnail")
    ext = built(Outgoing(text, link_preview=True)).extendedTextMessage
    assert ext.matchedText == url and not ext.HasField("title")


def test_a_poll_has_its_options_count_and_secret() -> None:
    single = built(Outgoing(mc.Poll("Lunch?", ("pizza", "sushi"))))
    assert single.pollCreationMessage.selectableOptionsCount == 1
    assert [o.optionName for o in single.pollCreationMessage.options] == ["pizza", "sushi"]
    assert single.messageContextInfo.messageSecret == SECRET
    multiple = built(Outgoing(mc.Poll("Days?", ("mon", "tue"), multiple=True)))
    assert multiple.pollCreationMessage.selectableOptionsCount == 0


@pytest.mark.parametrize(("message", "reason"), [
    (Outgoing(mc.PollVote("3EB0X")), "unsupported_kind"),
    (Outgoing(mc.Unsupported("liveLocationMessage")), "unsupported_kind"),
    (Outgoing(mc.Reaction("3EB0X", "👍")), "target_missing"),
    (Outgoing(mc.Revoke("3EB0X")), "target_missing"),
])
def test_what_cannot_be_built_is_refused(message: Outgoing, reason: str) -> None:
    with pytest.raises(wo.Unsendable) as refused:
        built(message)
    assert refused.value.reason == reason
    with pytest.raises(wo.Unsendable) as refused:
        wo.build(Outgoing(mc.Image(info("image/png"))), me=ME, upload=None, now_ms=0,
                 secret=SECRET)
    assert refused.value.reason == "media_missing"


@attrs.define
class FakeApi:
    """neonize's NewClient as far as a send uses it: upload, get_me, send_message."""

    uploads: list[tuple[bytes, MediaType]] = attrs.field(factory=list)
    sent: list[tuple[JID, WAMessage]] = attrs.field(factory=list)

    def upload(self, binary: bytes, media_type: MediaType | None = None) -> UploadResponse:
        assert media_type is not None
        self.uploads.append((binary, media_type))
        return UPLOAD

    def get_me(self) -> Any:
        class Me:
            JID = JID(User="15550000001", Server="s.whatsapp.net")

        return Me()

    def send_message(self, to: JID, message: WAMessage) -> Any:
        self.sent.append((to, message))

        class Response:
            ID = "3EB0SENT"

        return Response()


def client(api: FakeApi) -> wc.GoClient:
    go = wc.GoClient(1, "/nonexistent", False, print, print, print, print)
    go._api = api  # type: ignore[assignment]  # the Go-backed client, replaced
    return go


def test_the_client_uploads_the_file_as_its_kind_and_sends_the_built_proto() -> None:
    api = FakeApi()
    go = client(api)
    to = wc.neonize_jid(Jid.parse(ALICE))
    voice = Outgoing(mc.Voice(info("audio/ogg; codecs=opus"), seconds=3),
                     quoted=target(from_me=True))
    sent = go.send(to, voice, FILE)
    assert api.uploads == [(FILE, MediaType.MediaAudio)]
    [(jid, proto)] = api.sent
    # The own send's media_ref: the sent media part, downloadable as a received one is.
    assert sent.message_id == "3EB0SENT" and sent.media_ref is not None
    again = message_of_ref(sent.media_ref).audioMessage
    assert (again.URL, again.directPath, again.mediaKey, again.fileSHA256) == (
        UPLOAD.url, UPLOAD.DirectPath, UPLOAD.MediaKey, UPLOAD.FileSHA256)
    assert (jid.User, jid.Server) == ("15557654321", "s.whatsapp.net")
    assert proto.audioMessage.PTT and proto.audioMessage.contextInfo.participant == ME
    assert proto.audioMessage.mediaKey == UPLOAD.MediaKey
    # Nothing to upload for a text; a media kind without its file is refused before Go.
    assert go.send(to, Outgoing(mc.Text("hi")), None) == Sent("3EB0SENT")
    assert len(api.uploads) == 1 and api.sent[-1][1].conversation == "hi"
    with pytest.raises(wo.Unsendable):
        go.send(to, Outgoing(mc.Image(info("image/png"))), None)
    assert len(api.sent) == 2


def test_an_image_goes_with_a_jpeg_thumbnail_and_a_video_without() -> None:
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (960, 480), (10, 160, 90)).save(picture, "PNG")
    api = FakeApi()
    go = client(api)
    to = wc.neonize_jid(Jid.parse(ALICE))
    go.send(to, Outgoing(mc.Image(info("image/png"), caption="a chart")), picture.getvalue())
    image = api.sent[-1][1].imageMessage
    thumb = Image.open(io.BytesIO(image.JPEGThumbnail))
    assert (thumb.format, thumb.size) == ("JPEG", (240, 120))
    assert image.caption == "a chart" and image.mediaKey == UPLOAD.MediaKey
    # A file Pillow cannot read goes without one, as a video does.
    go.send(to, Outgoing(mc.Image(info("image/png"))), FILE)
    assert not api.sent[-1][1].imageMessage.HasField("JPEGThumbnail")
    go.send(to, Outgoing(mc.Video(info("video/mp4"))), FILE)
    assert not api.sent[-1][1].videoMessage.HasField("JPEGThumbnail")
