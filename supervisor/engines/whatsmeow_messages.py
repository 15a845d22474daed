"""An incoming whatsmeow ``Message``, as neonize delivers it, as wasup's ``MessageReceived``.

Two things are read out of neonize's protobuf: the content (:func:`content_of`: one
:mod:`supervisor.message_content` record for every kind, also inside ephemeral, view-once and
other wrappers; a kind wasup does not model is ``Unsupported`` with its field's name, so no
message is dropped) and the addresses. WhatsApp addresses more and more chats by
LID (``…@lid``, a privacy identifier) instead of the phone number; whatsmeow then gives the
phone-number JID, where it knows it, as ``MessageSource.SenderAlt`` (the sender) or
``RecipientAlt`` (the other party of a chat the phone itself wrote in). wasup reports
``sender`` and ``chat`` as phone-number JIDs wherever whatsmeow knows them, and both forms of
the sender as ``sender_lid`` / ``sender_pn``.

A media message also gets a ``media_ref`` (:func:`media_ref`): the media sub-message alone,
inside an otherwise empty ``Message`` under its kind's field, serialized and in base64, without
the parts a download does not need (the quoted message, thumbnails). That is what neonize's
``download_any`` takes back (:func:`message_of_ref`), so a file can be downloaded long after
the message arrived.

Pure functions: no clock, no storage, nothing raises for a malformed message (protobuf's
defaults are read), except :func:`message_of_ref` for a reference it did not make.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf.message import DecodeError
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage as WAProtocolMessage

from supervisor.engine import EngineEvent, MessageReceived
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
    text_of,
)

#: The servers of phone-number JIDs and of LIDs (WhatsApp's privacy identifiers).
PN_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"


def jid_string(jid: nz.JID) -> str:
    """``user@server`` (the device part dropped), or ``""`` for an empty JID."""
    if not jid.User and not jid.Server:
        return ""
    return f"{jid.User}@{jid.Server}" if jid.User else jid.Server


def received(event: nz.Message) -> list[EngineEvent]:
    """``[MessageReceived]`` for every message, whatever it carries (see :func:`content_of`),
    with the ``media_ref`` of a media message."""
    content, quoted = content_of(event.Message)
    return [_message(event.Info, content, quoted, media_ref(event.Message))]


def undecryptable(event: nz.UndecryptableMessage) -> list[EngineEvent]:
    """``[MessageReceived]`` with :class:`Undecryptable` content for whatsmeow's
    ``UndecryptableMessage`` (the reason: ``unavailable`` when WhatsApp withheld the content,
    ``decrypt_failed`` otherwise)."""
    reason = "unavailable" if event.IsUnavailable else "decrypt_failed"
    return [_message(event.Info, Undecryptable(reason), None)]


def _message(info: nz.MessageInfo, content: Content, quoted: Quoted | None,
             ref: str | None = None) -> MessageReceived:
    source = info.MessageSource
    sender_lid, sender_pn = sender_addresses(source)
    chat = chat_address(source)
    ts = float(info.Timestamp)
    if ts > 1e11:  # neonize builds differ: seconds in some, milliseconds in others
        ts /= 1000.0
    return MessageReceived(
        message_id=info.ID,
        chat=chat,
        sender=sender_pn or jid_string(source.Sender) or chat,
        text=text_of(content),
        is_group=source.IsGroup,
        from_me=source.IsFromMe,
        timestamp=ts,
        is_broadcast=source.Chat.Server == "broadcast",
        sender_lid=sender_lid,
        sender_pn=sender_pn,
        content=content,
        quoted=quoted,
        push_name=info.Pushname or None,
        media_ref=ref,
    )


def _on(jid: nz.JID, server: str) -> str | None:
    return jid_string(jid) if jid.User and jid.Server == server else None


def sender_addresses(source: nz.MessageSource) -> tuple[str | None, str | None]:
    """The sender's LID and phone-number JIDs, each None where the message does not say:
    ``Sender`` is one of them, ``SenderAlt`` (when whatsmeow knows it) the other."""
    sender, alt = source.Sender, source.SenderAlt
    lid = _on(sender, LID_SERVER) or _on(alt, LID_SERVER)
    pn = _on(sender, PN_SERVER) or _on(alt, PN_SERVER)
    return lid, pn


def chat_address(source: nz.MessageSource) -> str:
    """The chat's JID, a phone-number JID for a one-to-one chat addressed by LID when
    whatsmeow knows the number (``SenderAlt`` for an incoming message, ``RecipientAlt`` for
    one sent from the phone)."""
    chat = jid_string(source.Chat)
    if source.Chat.Server != LID_SERVER or source.IsGroup:
        return chat
    other = source.RecipientAlt if source.IsFromMe else source.SenderAlt
    return _on(other, PN_SERVER) or chat


#: The wrappers whatsmeow may leave around a message's content (each a ``message`` field).
WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
    "lottieStickerMessage",
    "deviceSentMessage",
)

#: Fields that ride along with a message's content and are not content themselves.
CARRIERS = frozenset(
    {
        "messageContextInfo",
        "senderKeyDistributionMessage",
        "fastRatchetKeySenderKeyDistributionMessage",
    }
)

#: The fields of the poll creation message in its versions (one protobuf type for all).
POLLS = ("pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3",
         "pollCreationMessageV5", "pollCreationMessageV6")

_REVOKE = WAProtocolMessage.Type.REVOKE
_EDIT = WAProtocolMessage.Type.MESSAGE_EDIT
#: How many wrappers deep a message is looked into.
MAX_DEPTH = 4


def unwrap(message: WAMessage, depth: int = 0) -> tuple[WAMessage, int]:
    """The message inside the :data:`WRAPPERS` around ``message`` (itself without one), and
    its depth: at most :data:`MAX_DEPTH` wrappers are looked into."""
    while depth < MAX_DEPTH:
        for wrapper in WRAPPERS:
            inner = getattr(message, wrapper)
            if message.HasField(wrapper) and inner.HasField("message"):
                message, depth = inner.message, depth + 1
                break
        else:
            break
    return message, depth


def content_of(message: WAMessage, depth: int = 0) -> tuple[Content, Quoted | None]:
    """What ``message`` carries and the message it quotes. Never raises and never drops: a
    kind wasup does not model is :class:`Unsupported` with the name of its field (a
    protocol message other than revoke and edit: ``protocolMessage:<TYPE>``)."""
    message, depth = unwrap(message, depth)
    if message.conversation:
        return Text(str(message.conversation)), None
    for name in _present(message):
        part = getattr(message, name)
        return _content(name, part, depth), _quoted(part)
    return Unsupported("empty"), None


#: The media kinds whatsmeow's ``DownloadAny`` fetches, by the field that carries each in a
#: message, and the field it travels under in a ``media_ref`` (a video note is a
#: ``VideoMessage`` too, which ``DownloadAny`` knows only as ``videoMessage``).
DOWNLOADABLE = {
    "imageMessage": "imageMessage",
    "videoMessage": "videoMessage",
    "ptvMessage": "videoMessage",
    "audioMessage": "audioMessage",
    "documentMessage": "documentMessage",
    "stickerMessage": "stickerMessage",
}
#: Parts of a media sub-message a download does not need, left out of a ``media_ref``.
NOT_DOWNLOADED = ("contextInfo", "JPEGThumbnail", "pngThumbnail")


def media_ref(message: WAMessage, depth: int = 0) -> str | None:
    """The reference to download the file of ``message`` by (see the module docstring), or
    None for a message without a downloadable file. Looks inside the same wrappers as
    :func:`content_of`."""
    message, _ = unwrap(message, depth)
    if message.conversation:
        return None
    for name in _present(message):
        target = DOWNLOADABLE.get(name)
        if target is None:
            return None
        ref = WAMessage()
        part = getattr(ref, target)
        part.CopyFrom(getattr(message, name))
        for field in NOT_DOWNLOADED:
            if field in part.DESCRIPTOR.fields_by_name:
                part.ClearField(field)
        return base64.b64encode(ref.SerializeToString()).decode("ascii")
    return None


def message_of_ref(ref: str) -> WAMessage:
    """The message a :func:`media_ref` stands for, as neonize's ``download_any`` takes it.

    Raises ValueError for a string :func:`media_ref` did not make.
    """
    try:
        message = WAMessage.FromString(base64.b64decode(ref, validate=True))
    except (binascii.Error, DecodeError, ValueError) as exc:
        raise ValueError(f"not a media reference: {exc}") from None
    if not any(message.HasField(field) for field in set(DOWNLOADABLE.values())):
        raise ValueError("not a media reference: no media message in it")
    return message


def _present(message: WAMessage) -> list[str]:
    return [field.name for field, _ in message.ListFields() if field.name not in CARRIERS]


def _content(name: str, part: Any, depth: int) -> Content:
    if name == "extendedTextMessage":
        return Text(str(part.text))
    if name == "imageMessage":
        return Image(_media(part), caption=str(part.caption))
    if name in ("videoMessage", "ptvMessage"):
        return Video(_media(part), caption=str(part.caption))
    if name == "audioMessage":
        seconds = int(part.seconds) if part.HasField("seconds") else None
        return (Voice if part.PTT else Audio)(_media(part), seconds=seconds)
    if name == "documentMessage":
        filename = str(part.fileName or part.title) or None
        return Document(_media(part, filename), caption=str(part.caption))
    if name == "stickerMessage":
        return Sticker(_media(part), animated=bool(part.isAnimated))
    if name == "locationMessage":
        return Location(float(part.degreesLatitude), float(part.degreesLongitude),
                        name=str(part.name) or None, address=str(part.address) or None)
    if name == "contactMessage":
        return Contact(str(part.displayName), (str(part.vcard),) if part.vcard else ())
    if name == "contactsArrayMessage":
        return Contact(str(part.displayName), tuple(str(c.vcard) for c in part.contacts))
    if name in POLLS:
        return Poll(str(part.name), tuple(str(o.optionName) for o in part.options),
                    multiple=int(part.selectableOptionsCount) != 1)
    if name == "pollUpdateMessage":
        return PollVote(str(part.pollCreationMessageKey.ID))
    if name == "reactionMessage":
        return Reaction(str(part.key.ID), str(part.text))
    if name == "protocolMessage":
        if part.type == _REVOKE:
            return Revoke(str(part.key.ID))
        if part.type == _EDIT:
            edited, _ = content_of(part.editedMessage, depth + 1)
            return Edit(str(part.key.ID), text_of(edited))
        return Unsupported(f"protocolMessage:{WAProtocolMessage.Type.Name(part.type)}")
    return Unsupported(name)


def _media(part: Any, filename: str | None = None) -> MediaInfo:
    return MediaInfo(
        mimetype=str(part.mimetype) or None,
        size=int(part.fileLength) if part.HasField("fileLength") else None,
        sha256=bytes(part.fileSHA256).hex() or None,
        filename=filename,
    )


def _quoted(part: Any) -> Quoted | None:
    """The message ``part`` replies to (its ``contextInfo.stanzaID``), if any."""
    if not hasattr(part, "contextInfo") or not part.HasField("contextInfo"):
        return None
    context = part.contextInfo
    if not context.stanzaID:
        return None
    return Quoted(str(context.stanzaID), chat=str(context.remoteJID) or None,
                  sender=str(context.participant) or None)
