"""What a WhatsApp message carries: one frozen record per kind of content.

An engine reports each incoming message with one :data:`Content` record (see
:class:`supervisor.engine.MessageReceived`); the record's ``type`` is the kind's wire name
(``text``, ``image``, ... ``unsupported``), the ``type`` of the ``message_received`` event.
Media records carry metadata only (the bytes stay at WhatsApp until downloaded); a record
never holds more than what a webhook may carry. Usage::

    content = Image(MediaInfo(mimetype="image/jpeg", size=1024, sha256="ab..."), caption="hi")
    content.type          # "image"
    text_of(content)      # "hi": the text, or the caption of media ("" for the others)

A reaction, an edit, a revoke and a poll vote name the message they act on
(``target_id``); an empty reaction ``emoji`` removes the sender's reaction, an empty vote the
voter's vote. A message wasup
does not know is :class:`Unsupported` with WhatsApp's name of its kind, never dropped; one
WhatsApp could not decrypt for the device is :class:`Undecryptable` (the
``message_undecryptable`` event).
"""

from __future__ import annotations

from typing import Any, ClassVar, get_args

import attrs
import cattrs


@attrs.frozen
class MediaInfo:
    """A media file's metadata as WhatsApp describes it (``sha256`` in hex of the plain file,
    ``size`` in bytes; each None where the message does not say)."""

    mimetype: str | None = None
    size: int | None = None
    sha256: str | None = None
    filename: str | None = None


@attrs.frozen
class Quoted:
    """The message a message replies to: its id, and its chat and sender when given."""

    message_id: str
    chat: str | None = None
    sender: str | None = None


@attrs.frozen
class Text:
    type: ClassVar[str] = "text"
    text: str


@attrs.frozen
class Image:
    type: ClassVar[str] = "image"
    media: MediaInfo
    caption: str = ""


@attrs.frozen
class Video:
    type: ClassVar[str] = "video"
    media: MediaInfo
    caption: str = ""


@attrs.frozen
class Audio:
    type: ClassVar[str] = "audio"
    media: MediaInfo
    seconds: int | None = None


@attrs.frozen
class Voice:
    """A voice note (an audio message recorded as push-to-talk)."""

    type: ClassVar[str] = "voice"
    media: MediaInfo
    seconds: int | None = None


@attrs.frozen
class Document:
    type: ClassVar[str] = "document"
    media: MediaInfo
    caption: str = ""


@attrs.frozen
class Sticker:
    type: ClassVar[str] = "sticker"
    media: MediaInfo
    animated: bool = False


@attrs.frozen
class Location:
    type: ClassVar[str] = "location"
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


@attrs.frozen
class Contact:
    """One or more shared contacts: ``name`` as shown, ``vcards`` one per contact."""

    type: ClassVar[str] = "contact"
    name: str
    vcards: tuple[str, ...] = ()


@attrs.frozen
class Poll:
    """A new poll; ``multiple``: more than one option may be chosen."""

    type: ClassVar[str] = "poll"
    question: str
    options: tuple[str, ...]
    multiple: bool = False


@attrs.frozen
class PollVote:
    """A vote on the poll ``target_id``: the voter's whole choice, replacing any earlier one.

    WhatsApp carries the choice encrypted, as the SHA-256 of each chosen option's name; an
    engine reports those hashes (hex) as ``option_hashes`` (None: the vote could not be
    decrypted). ``options`` are the chosen options' names, matched against the poll wasup
    stored (:mod:`supervisor.polls`); ``()`` withdraws the voter's vote; None when not known:
    not decrypted, or ``unknown_poll`` (wasup has no such poll)."""

    type: ClassVar[str] = "poll_vote"
    target_id: str
    options: tuple[str, ...] | None = None
    option_hashes: tuple[str, ...] | None = None
    unknown_poll: bool = False


@attrs.frozen
class Reaction:
    """A reaction to ``target_id``; ``emoji == ""`` removes the sender's reaction."""

    type: ClassVar[str] = "reaction"
    target_id: str
    emoji: str


@attrs.frozen
class Edit:
    """The sender edited ``target_id``; ``text`` is its new text (or caption)."""

    type: ClassVar[str] = "edit"
    target_id: str
    text: str


@attrs.frozen
class Revoke:
    """The sender deleted ``target_id`` for everyone."""

    type: ClassVar[str] = "revoke"
    target_id: str


@attrs.frozen
class Unsupported:
    """A kind of message wasup does not model; ``kind`` is WhatsApp's name for it."""

    type: ClassVar[str] = "unsupported"
    kind: str


@attrs.frozen
class Undecryptable:
    """WhatsApp delivered a message the device could not decrypt (it may arrive again,
    decrypted, under the same id); ``reason`` says why where known."""

    type: ClassVar[str] = "undecryptable"
    reason: str = ""


#: Contents with a media file.
MediaContent = Image | Video | Audio | Voice | Document | Sticker

#: Everything a message can carry.
Content = (
    Text
    | Image
    | Video
    | Audio
    | Voice
    | Document
    | Sticker
    | Location
    | Contact
    | Poll
    | PollVote
    | Reaction
    | Edit
    | Revoke
    | Unsupported
    | Undecryptable
)

#: The wire types of :data:`Content`, in the order of docs/events.md.
CONTENT_TYPES: tuple[str, ...] = (
    "text", "image", "video", "audio", "voice", "document", "sticker", "location", "contact",
    "poll", "poll_vote", "reaction", "edit", "revoke", "unsupported", "undecryptable",
)

#: Kinds that act on another message rather than being one: not counted as received messages.
ACTIONS = frozenset({"poll_vote", "reaction", "edit", "revoke", "undecryptable"})


def text_of(content: Content) -> str:
    """The text of a message: its text, its media's caption, an edit's new text, a poll's
    question; ``""`` for the others."""
    match content:
        case Text(text=text) | Edit(text=text):
            return text
        case Image(caption=caption) | Video(caption=caption) | Document(caption=caption):
            return caption
        case Poll(question=question):
            return question
    return ""


def media_of(content: Content) -> MediaInfo | None:
    """The media metadata of a media message, None for the others."""
    if isinstance(content, Image | Video | Audio | Voice | Document | Sticker):
        return content.media
    return None


def counted(content: Content) -> bool:
    """Whether an incoming message of this content counts in ``messagesReceived``."""
    return content.type not in ACTIONS


_BY_TYPE: dict[str, type[Content]] = {record.type: record for record in get_args(Content)}
_plain = cattrs.Converter()


def to_json(content: Content) -> dict[str, Any]:
    """``content`` as a JSON object with its ``type`` (to keep it, e.g. in a queue)."""
    data: dict[str, Any] = _plain.unstructure(content)
    return {"type": content.type, **data}


def from_json(data: dict[str, Any]) -> Content:
    """The content :func:`to_json` wrote.

    Error handling: ``TypeError`` when ``data`` is not such an object.
    """
    fields = dict(data)
    record = _BY_TYPE.get(fields.pop("type", None))
    if record is None:
        raise TypeError(f"not a message content: {data!r}")
    try:
        content: Content = _plain.structure(fields, record)
    except (cattrs.BaseValidationError, ValueError, KeyError) as exc:
        raise TypeError(f"not a message content: {data!r}") from exc
    return content
