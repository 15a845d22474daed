"""wasup's :class:`~supervisor.outgoing.Outgoing` as the whatsmeow ``Message`` protobuf to send.

The counterpart of :mod:`supervisor.engines.whatsmeow_messages`: feeding what :func:`build`
makes back through ``whatsmeow_messages.content_of`` yields the content it was made from. Pure
functions: what comes from the Go side (the upload of a media file, the device's own JID) and
what is random or timed (a poll's secret, a reaction's timestamp) are arguments, so every proto
can be checked offline. Usage (the Go calls in :mod:`supervisor.engines.whatsmeow_client`)::

    kind = media_type(message)                      # None: nothing to upload
    upload = client.upload(data, kind)              # neonize's UploadResponse
    proto = build(message, me="1555@s.whatsapp.net", upload=upload, now_ms=…, secret=…)

- Text: ``conversation``, or ``extendedTextMessage`` when it quotes, mentions or asks for a link
  preview: the link as ``matchedText`` and, with the card the outbound
  queue made of its page (:mod:`supervisor.link_preview`) its ``title``, ``description`` and
  ``JPEGThumbnail`` (with its width and height), ``previewType`` ``NONE`` (a page); without a
  card (the page could not be had) the link alone.
- Media: ``imageMessage``, ``videoMessage``, ``audioMessage`` (``PTT`` for a voice note),
  ``documentMessage``, ``stickerMessage`` with the upload's ``URL``, ``directPath``,
  ``mediaKey``, ``fileEncSHA256``, ``fileSHA256``, ``fileLength``; an image with its
  ``JPEGThumbnail`` when one is given (a video goes without: no decoder for it).
- ``locationMessage``, ``contactMessage`` (``contactsArrayMessage`` for several vCards),
  ``pollCreationMessage`` (``selectableOptionsCount`` 1, or 0 for any number; the message
  secret WhatsApp's votes are encrypted with in ``messageContextInfo``).
- ``reactionMessage``, and ``protocolMessage`` ``MESSAGE_EDIT`` (inside ``editedMessage``)
  and ``REVOKE``, each keyed to the target message.
- A reply: ``contextInfo`` with ``stanzaID``, ``participant`` and a ``quotedMessage`` of the
  quoted message's stored text; mentions as ``mentionedJID``.

Error handling: :class:`Unsendable` (a ``ValueError``) for what cannot be built: a kind that is
not sent (poll vote, unsupported, undecryptable), a reaction, edit or revoke without its target,
a media kind without its upload.
"""

from __future__ import annotations

from neonize.proto.Neonize_pb2 import UploadResponse
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ContactMessage,
    ContactsArrayMessage,
    ContextInfo,
    DocumentMessage,
    ExtendedTextMessage,
    FutureProofMessage,
    ImageMessage,
    LocationMessage,
    MessageContextInfo,
    PollCreationMessage,
    ProtocolMessage,
    ReactionMessage,
    StickerMessage,
    VideoMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.utils.enum import MediaType

from supervisor import message_content as mc
from supervisor.link_preview import first_link
from supervisor.outgoing import Outgoing, Target

#: The mimetype a media kind is sent with when the content does not say.
DEFAULT_MIMETYPES = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "voice": "audio/ogg; codecs=opus",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}

_MEDIA_TYPES = {
    "image": MediaType.MediaImage,
    "sticker": MediaType.MediaImage,
    "video": MediaType.MediaVideo,
    "audio": MediaType.MediaAudio,
    "voice": MediaType.MediaAudio,
    "document": MediaType.MediaDocument,
}

_GROUP_SERVER = "g.us"


class Unsendable(ValueError):
    """The message cannot be built (see the module doc); ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def media_type(message: Outgoing) -> MediaType | None:
    """What whatsmeow uploads the message's file as (its encryption keys depend on it); None
    for a message without a file."""
    return _MEDIA_TYPES.get(message.content.type) if message.media is not None else None


def build(
    message: Outgoing,
    *,
    me: str,
    upload: UploadResponse | None,
    now_ms: int,
    secret: bytes,
    thumbnail: bytes | None = None,
) -> WAMessage:
    """The protobuf to send for ``message``; ``me`` is the device's own JID (the participant of
    a quoted own message), ``upload`` the upload of its file (media kinds), ``now_ms`` the time
    (milliseconds) of a reaction or edit, ``secret`` 32 random bytes (a poll's message secret),
    ``thumbnail`` an image's JPEG thumbnail (:func:`supervisor.thumbnails.jpeg_thumbnail`).

    Error handling: raises :class:`Unsendable`.
    """
    content = message.content
    context = _context(message, me)
    match content:
        case mc.Text(text=text):
            if context is None and not message.link_preview:
                return WAMessage(conversation=text)
            extended = ExtendedTextMessage(text=text, contextInfo=context)
            link = first_link(text) if message.link_preview else None
            if link is not None:
                extended.matchedText = link
                extended.previewType = ExtendedTextMessage.PreviewType.NONE
            card = message.card
            if link is not None and card is not None:
                extended.title = card.title
                extended.description = card.description
                if card.thumbnail is not None:
                    extended.JPEGThumbnail = card.thumbnail.data
                    extended.thumbnailWidth = card.thumbnail.width
                    extended.thumbnailHeight = card.thumbnail.height
            return WAMessage(extendedTextMessage=extended)
        case mc.Image() | mc.Video() | mc.Audio() | mc.Voice() | mc.Document() | mc.Sticker():
            return _media(content, upload, context, thumbnail)
        case mc.Location(latitude=lat, longitude=lng, name=name, address=address):
            return WAMessage(locationMessage=LocationMessage(
                degreesLatitude=lat, degreesLongitude=lng, name=name, address=address,
                contextInfo=context))
        case mc.Contact(name=name, vcards=vcards):
            if len(vcards) == 1:
                return WAMessage(contactMessage=ContactMessage(
                    displayName=name, vcard=vcards[0], contextInfo=context))
            return WAMessage(contactsArrayMessage=ContactsArrayMessage(
                displayName=name,
                contacts=[ContactMessage(displayName=name, vcard=v) for v in vcards],
                contextInfo=context))
        case mc.Poll(question=question, options=options, multiple=multiple):
            return WAMessage(
                pollCreationMessage=PollCreationMessage(
                    name=question,
                    options=[PollCreationMessage.Option(optionName=o) for o in options],
                    selectableOptionsCount=0 if multiple else 1,
                    contextInfo=context,
                ),
                messageContextInfo=MessageContextInfo(messageSecret=secret),
            )
        case mc.Reaction(emoji=emoji):
            target = _target(message)
            return WAMessage(reactionMessage=ReactionMessage(
                key=_key(target), text=emoji, senderTimestampMS=now_ms))
        case mc.Edit(text=text):
            target = _target(message)
            return WAMessage(editedMessage=FutureProofMessage(message=WAMessage(
                protocolMessage=ProtocolMessage(
                    key=_key(target), type=ProtocolMessage.MESSAGE_EDIT,
                    editedMessage=_edited(target, text), timestampMS=now_ms))))
        case mc.Revoke():
            target = _target(message)
            return WAMessage(protocolMessage=ProtocolMessage(
                key=_key(target), type=ProtocolMessage.REVOKE))
    raise Unsendable("unsupported_kind", f"cannot send a {content.type} message")


def _context(message: Outgoing, me: str) -> ContextInfo | None:
    """The reply and mentions of ``message`` as ``contextInfo`` (None when it has neither)."""
    quoted = message.quoted
    if quoted is None and not message.mentions:
        return None
    context = ContextInfo(mentionedJID=list(message.mentions))
    if quoted is not None:
        context.stanzaID = quoted.wa_id
        context.participant = me if quoted.from_me or quoted.sender is None else quoted.sender
        context.quotedMessage.CopyFrom(WAMessage(conversation=quoted.text))
        if quoted.chat.endswith("@" + _GROUP_SERVER):
            context.remoteJID = quoted.chat
    return context


def _media(content: mc.MediaContent, upload: UploadResponse | None,
           context: ContextInfo | None, thumbnail: bytes | None) -> WAMessage:
    if upload is None:
        raise Unsendable("media_missing", f"a {content.type} message needs its uploaded file")
    info = content.media
    common = dict(
        URL=upload.url, directPath=upload.DirectPath, mediaKey=upload.MediaKey,
        fileEncSHA256=upload.FileEncSHA256, fileSHA256=upload.FileSHA256,
        fileLength=upload.FileLength,
        mimetype=info.mimetype or DEFAULT_MIMETYPES[content.type], contextInfo=context,
    )
    match content:
        case mc.Image(caption=caption):
            return WAMessage(imageMessage=ImageMessage(caption=caption, JPEGThumbnail=thumbnail,
                                                       **common))
        case mc.Video(caption=caption):
            return WAMessage(videoMessage=VideoMessage(caption=caption, **common))
        case mc.Audio(seconds=seconds) | mc.Voice(seconds=seconds):
            return WAMessage(audioMessage=AudioMessage(
                PTT=isinstance(content, mc.Voice), seconds=seconds, **common))
        case mc.Document(caption=caption):
            filename = info.filename or "file"
            return WAMessage(documentMessage=DocumentMessage(
                caption=caption, fileName=filename, title=filename, **common))
        case mc.Sticker(animated=animated):
            return WAMessage(stickerMessage=StickerMessage(isAnimated=animated, **common))
    raise Unsendable("unsupported_kind", f"cannot send a {content.type} message")


def _target(message: Outgoing) -> Target:
    if message.target is None:
        raise Unsendable("target_missing",
                         f"a {message.content.type} needs the message it acts on")
    return message.target


def _key(target: Target) -> MessageKey:
    """The key WhatsApp knows ``target`` by (its sender as participant in a group)."""
    key = MessageKey(remoteJID=target.chat, fromMe=target.from_me, ID=target.wa_id)
    if not target.from_me and target.sender and target.chat.endswith("@" + _GROUP_SERVER):
        key.participant = target.sender
    return key


def _edited(target: Target, text: str) -> WAMessage:
    """The new content of an edited message: its text, or the caption of its media kind."""
    if target.type == "image":
        return WAMessage(imageMessage=ImageMessage(caption=text))
    if target.type == "video":
        return WAMessage(videoMessage=VideoMessage(caption=text))
    if target.type == "document":
        return WAMessage(documentMessage=DocumentMessage(caption=text))
    return WAMessage(conversation=text)
