"""An incoming whatsmeow ``Message``, as neonize delivers it, as wasup's ``MessageReceived``.

Two things are read out of neonize's protobuf: the text (a caption for media, also inside
ephemeral and view-once wrappers) and the addresses. WhatsApp addresses more and more chats by
LID (``…@lid``, a privacy identifier) instead of the phone number; whatsmeow then gives the
phone-number JID, where it knows it, as ``MessageSource.SenderAlt`` (the sender) or
``RecipientAlt`` (the other party of a chat the phone itself wrote in). wasup reports
``sender`` and ``chat`` as phone-number JIDs wherever whatsmeow knows them, and both forms of
the sender as ``sender_lid`` / ``sender_pn``.

Pure functions: no clock, no storage, nothing raises for a malformed message (protobuf's
defaults are read).
"""

from __future__ import annotations

from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from supervisor.engine import EngineEvent, MessageReceived

#: The servers of phone-number JIDs and of LIDs (WhatsApp's privacy identifiers).
PN_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"


def jid_string(jid: nz.JID) -> str:
    """``user@server`` (the device part dropped), or ``""`` for an empty JID."""
    if not jid.User and not jid.Server:
        return ""
    return f"{jid.User}@{jid.Server}" if jid.User else jid.Server


def received(event: nz.Message) -> list[EngineEvent]:
    """``[MessageReceived]`` for a message with text, ``[]`` for one without (reactions,
    protocol messages, media without a caption)."""
    text = message_text(event.Message)
    if text is None:
        return []  # reactions, receipts of history, protocol and media-only messages
    info = event.Info
    source = info.MessageSource
    sender_lid, sender_pn = sender_addresses(source)
    chat = chat_address(source)
    ts = float(info.Timestamp)
    if ts > 1e11:  # neonize builds differ: seconds in some, milliseconds in others
        ts /= 1000.0
    return [
        MessageReceived(
            message_id=info.ID,
            chat=chat,
            sender=sender_pn or jid_string(source.Sender) or chat,
            text=text,
            is_group=source.IsGroup,
            from_me=source.IsFromMe,
            timestamp=ts,
            is_broadcast=source.Chat.Server == "broadcast",
            sender_lid=sender_lid,
            sender_pn=sender_pn,
        )
    ]


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


def message_text(message: WAMessage, depth: int = 0) -> str | None:
    """The text of a WhatsApp message (its caption for media), or None if it carries none."""
    if depth > 3:
        return None
    if message.conversation:
        return str(message.conversation)
    if message.HasField("extendedTextMessage"):
        return str(message.extendedTextMessage.text)
    if message.HasField("imageMessage"):
        return str(message.imageMessage.caption)
    if message.HasField("videoMessage"):
        return str(message.videoMessage.caption)
    if message.HasField("documentMessage"):
        return str(message.documentMessage.caption)
    for wrapper in (
        message.ephemeralMessage,
        message.viewOnceMessage,
        message.viewOnceMessageV2,
        message.documentWithCaptionMessage,
    ):
        if wrapper.HasField("message"):
            return message_text(wrapper.message, depth + 1)
    return None
