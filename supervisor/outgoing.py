"""What a device sends: one :class:`Outgoing` message, and the :class:`Target` it may act on.

An :class:`Outgoing` is a :mod:`supervisor.message_content` record (text, media, location,
contact, poll, reaction, edit, revoke) with what goes around it: the message it quotes, the
message a reaction, edit or revoke acts on, the users it mentions. It is what the outbound
queue stores with a send (``sends.payload``, :meth:`Outgoing.to_json`) and hands to the engine
(:meth:`supervisor.engine.EngineSession.send`). A media record holds the file's metadata only;
the bytes are in the :class:`~supervisor.media.MediaStore` under their sha256. Usage::

    target = await db.run(lambda r: resolve_target(r, device_id, "msg_…"))
    message = Outgoing(Text("yes"), quoted=target, mentions=("15551234567@s.whatsapp.net",))
    Outgoing.from_json(message.to_json()) == message      # True

How a send keeps its message: :func:`message_of` reads it back from the stored send, and
:func:`stored_content` gives the content fields its ``messages`` row keeps (the shape of
``message_sent``'s, as :func:`supervisor.incoming.stored_content` gives ``message_received``'s).

Error handling: :meth:`Outgoing.from_json` raises ``TypeError`` for anything it did not write.
"""

from __future__ import annotations

from typing import Any

import attrs
import cattrs

import storage
from storage.models import SendRow

from . import message_content as mc
from .link_preview import LinkCard
from .payloads import content_wire, converter


@attrs.frozen
class Target:
    """A message as WhatsApp knows it, for a reply (quoted) or an action (reaction, edit,
    revoke) on it."""

    wa_id: str  # WhatsApp's id of the message
    chat: str  # its chat JID
    sender: str | None  # its sender's JID; None when the device itself sent it
    from_me: bool
    message_id: str  # wasup's id of it (msg_… for the device's own sends, else == wa_id)
    type: str  # its kind (text, image, …) as stored
    at: str  # when it was stored (ISO)
    text: str = ""  # its text or caption as stored (the preview WhatsApp shows of a quote)

    def quoted(self) -> mc.Quoted:
        """The target as the ``quoted`` of an event (wasup's id, its chat and sender)."""
        return mc.Quoted(self.message_id, self.chat, self.sender)


_plain = cattrs.Converter()


@attrs.frozen
class Outgoing:
    """One message to send. ``content`` is a :mod:`supervisor.message_content` record: Text,
    Image, Video, Audio, Voice, Document, Sticker, Location, Contact, Poll, Reaction, Edit or
    Revoke. A media record's MediaInfo has mimetype, size, sha256 (hex of the bytes, the key in
    the MediaStore) and filename; the bytes are in the MediaStore, never in this record."""

    content: mc.Content
    quoted: Target | None = None  # set by the outbound queue from Send.reply_to
    target: Target | None = None  # required for Reaction / Edit / Revoke
    mentions: tuple[str, ...] = ()  # user JIDs mentioned in a text or caption
    link_preview: bool = False
    #: The card of a text's link (``link_preview``), made by the outbound queue as the text
    #: leaves; never stored with the send (:meth:`to_json` leaves it out).
    card: LinkCard | None = None

    @property
    def media(self) -> mc.MediaInfo | None:
        """The media file's metadata, None for a message without one."""
        return mc.media_of(self.content)

    def to_json(self) -> dict[str, Any]:
        """The message as a JSON object (kept in ``sends.payload``)."""
        return {
            "content": mc.to_json(self.content),
            "quoted": None if self.quoted is None else _plain.unstructure(self.quoted),
            "target": None if self.target is None else _plain.unstructure(self.target),
            "mentions": list(self.mentions),
            "linkPreview": self.link_preview,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outgoing:
        """The message :meth:`to_json` wrote.

        Error handling: ``TypeError`` when ``data`` is not such an object.
        """
        if not isinstance(data, dict):
            raise TypeError(f"not an outgoing message: {data!r}")
        content = data.get("content")
        if not isinstance(content, dict):
            raise TypeError(f"not an outgoing message: {data!r}")
        try:
            quoted, target = (
                None if data.get(key) is None else _plain.structure(data[key], Target)
                for key in ("quoted", "target")
            )
            mentions = _plain.structure(data.get("mentions", []), tuple[str, ...])
        except (cattrs.BaseValidationError, ValueError, KeyError) as exc:
            raise TypeError(f"not an outgoing message: {data!r}") from exc
        return cls(mc.from_json(content), quoted=quoted, target=target, mentions=mentions,
                   link_preview=bool(data.get("linkPreview", False)))


def resolve_target(r: storage.Repositories, device_id: int, message_id: str) -> Target | None:
    """The device's message ``message_id`` (wasup's ``msg_…`` id of an own send, or the
    WhatsApp id of any stored message) as a Target; None if the device has no such message (or
    an own send that never left: no WhatsApp id yet). Runs inside ``Database.run``."""
    sent = r.sends.get(device_id, message_id) or r.sends.by_wa_id(device_id, message_id)
    if sent is not None:
        if sent.wa_id is None:
            return None
        row = r.messages.get(device_id, sent.message_id)
        kind = "text" if row is None else row.type
        at = sent.created_at if row is None else row.at
        return Target(wa_id=sent.wa_id, chat=sent.chat, sender=None, from_me=True,
                      message_id=sent.message_id, type=kind, at=at, text=sent.text)
    row = r.messages.get(device_id, message_id)
    if row is None:
        return None
    from_me = row.direction == "out"
    return Target(wa_id=row.message_id, chat=row.chat, sender=None if from_me else row.sender,
                  from_me=from_me, message_id=row.message_id, type=row.type, at=row.at,
                  text=row.text or "")


def message_of(row: SendRow) -> Outgoing | None:
    """The message a stored send carries (a row stored before payloads: its text); None for a
    payload this wasup cannot read (the send fails with ``invalid_payload``)."""
    if row.payload is None:
        return Outgoing(mc.Text(row.text))
    try:
        return Outgoing.from_json(row.payload)
    except TypeError:
        return None


def stored_content(message: Outgoing) -> storage.JsonObject:
    """The content fields kept with an outgoing message in ``messages`` (the shape of
    ``message_sent``'s, as incoming messages keep ``message_received``'s)."""
    fields: storage.JsonObject = content_wire(converter, message.content)
    fields["quoted"] = None if message.quoted is None else converter.unstructure(
        message.quoted.quoted())
    return fields
