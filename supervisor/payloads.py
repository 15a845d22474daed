"""Event payloads: one frozen record per event type, and the one converter to their wire JSON.

Every event wasup publishes carries one of these records as its ``data``; the record knows
its wire ``type`` (a class constant). :data:`Payload` is the tagged union of them all, and
:data:`Catalogued` the part of it that docs/events.md catalogues (what WebSocket filters and
webhook settings choose among): :data:`EVENT_TYPES` is derived from it. Usage::

    payload = DeviceDisconnected(reason="connection_lost")
    payload.type                       # "device_disconnected"
    to_wire(payload)                   # {"reason": "connection_lost"}

Only :data:`converter` knows the wire shapes: camelCase keys (a field's ``wire`` metadata
when the name differs otherwise, e.g. ``sender`` is ``from``), in the fields' order. Nothing
is encoded until somebody reads an event; a :class:`QrShown` renders its PNG data URL on
first use, from the :class:`~supervisor.qr.QrAttempt` it holds, and keeps it.
"""

from __future__ import annotations

import functools
from typing import ClassVar, get_args

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from . import message_content as mc
from .qr import QrAttempt
from .status import Status

#: Metadata key of a field whose wire name is not its name in camelCase.
WIRE = "wire"


def _wire(name: str) -> dict[str, str]:
    return {WIRE: name}


@attrs.frozen
class QrShown:
    """A new QR code is on show (``qrCode`` is its PNG, rendered when first read)."""

    type: ClassVar[str] = "qr_code"
    qr: QrAttempt

    @functools.cached_property
    def qr_code(self) -> str:
        """The PNG data URL of :attr:`qr`, rendered on first use and then kept."""
        return self.qr.data_url


@attrs.frozen
class QrTimedOut:
    """The last QR code of the cycle expired without a scan."""

    type: ClassVar[str] = "qr_timeout"


@attrs.frozen
class DeviceConnected:
    """The device is connected: linked and online."""

    type: ClassVar[str] = "device_connected"


@attrs.frozen
class DeviceDisconnected:
    """The device went to ``disconnected``, for ``reason`` (its new status reason)."""

    type: ClassVar[str] = "device_disconnected"
    reason: str


@attrs.frozen
class DeviceLoggedOut:
    """The device is logged out (final), for ``reason``."""

    type: ClassVar[str] = "device_logged_out"
    reason: str


@attrs.frozen
class StatusChanged:
    """The status changed from ``before`` to ``after``; ``reason`` is the new status reason."""

    type: ClassVar[str] = "device_status"
    before: Status = attrs.field(metadata=_wire("from"))
    after: Status = attrs.field(metadata=_wire("to"))
    reason: str | None


@attrs.frozen
class MessageReceived:
    """A message arrived in one of the device's chats (``from_me``: the account sent it).

    ``content`` is what it carries, on the wire as its ``type``, ``text``, ``hasMedia``,
    ``media`` and one object named after the type (see :func:`content_wire`); ``quoted`` the
    message it replies to. ``sender_lid`` is the sender's LID JID when the message was
    LID-addressed, ``sender_pn`` the sender's phone-number JID when known (each None
    otherwise).
    """

    type: ClassVar[str] = "message_received"
    message_id: str
    sender: str = attrs.field(metadata=_wire("from"))
    chat: str
    text: str
    is_group: bool
    from_me: bool
    timestamp: str
    sender_lid: str | None = None
    sender_pn: str | None = None
    content: mc.Content | None = None
    quoted: mc.Quoted | None = None
    push_name: str | None = None


@attrs.frozen
class MessageUndecryptable:
    """A message arrived that the device could not decrypt (``reason``: ``decrypt_failed``
    or ``unavailable``); WhatsApp may deliver it again decrypted, as ``message_received``
    with the same ``messageId``."""

    type: ClassVar[str] = "message_undecryptable"
    message_id: str
    sender: str = attrs.field(metadata=_wire("from"))
    chat: str
    is_group: bool
    from_me: bool
    timestamp: str
    reason: str
    sender_lid: str | None = None
    sender_pn: str | None = None
    push_name: str | None = None


@attrs.frozen
class MessageSent:
    """wasup sent a message from the device; ``origin`` is ``api`` or ``autoreply``.

    ``content`` is what it carries, on the wire as ``message_received``'s content fields
    (``type``, ``text``, ``hasMedia``, ``media``, the kind's object; see :func:`content_wire`),
    ``quoted`` the message it replies to (wasup's id of it).
    """

    type: ClassVar[str] = "message_sent"
    message_id: str
    to: str
    text: str
    status: str = attrs.field(default="sent", kw_only=True)
    origin: str
    content: mc.Content | None = attrs.field(default=None, kw_only=True)
    quoted: mc.Quoted | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class MessageStatusChanged:
    """A message the device sent has a new ``status``: ``sent`` (WhatsApp took it),
    ``delivered``, ``read``, or ``failed`` with a ``reason`` (``expired``, ``engine_error``...)."""

    type: ClassVar[str] = "message_status"
    message_id: str
    status: str
    reason: str | None = None


@attrs.frozen
class MessageStuck:
    """A send was not acknowledged within ``send_stuck_after`` seconds of being accepted
    (raised once per send); ``status`` is where it stands (``pending``)."""

    type: ClassVar[str] = "message_stuck"
    message_id: str
    to: str
    status: str
    since: str


@attrs.frozen
class GroupJoined:
    """The device is in a new group: it created it, was added, or joined with a link; ``by``
    is who added it (None when the device did it itself)."""

    type: ClassVar[str] = "group_joined"
    group_id: str
    subject: str
    participants: list[str]
    by: str | None = None


@attrs.frozen
class GroupUpdated:
    """A group's subject, topic or settings changed; only what changed is set (the rest None).
    ``announce``: only admins send; ``locked``: only admins edit the group's info."""

    type: ClassVar[str] = "group_updated"
    group_id: str
    by: str | None
    subject: str | None = None
    topic: str | None = None
    announce: bool | None = None
    locked: bool | None = None


@attrs.frozen
class GroupParticipants:
    """Participants of a group were added, removed (or left), promoted to admin or demoted."""

    type: ClassVar[str] = "group_participants"
    group_id: str
    action: str  # add, remove, promote, demote
    participants: list[str]
    by: str | None = None


@attrs.frozen
class PresenceChanged:
    """A contact the device subscribed to came online or went offline (``available``,
    ``unavailable``, with ``last_seen`` when WhatsApp tells it), or is ``typing``,
    ``recording`` or ``paused`` in ``chat``."""

    type: ClassVar[str] = "presence"
    sender: str = attrs.field(metadata=_wire("from"))
    state: str
    chat: str | None = None
    last_seen: str | None = None


@attrs.frozen
class CallReceived:
    """Someone is calling the device; ``rejected`` when wasup rejected the call at once (the
    device's ``calls`` settings)."""

    type: ClassVar[str] = "call_received"
    call_id: str
    sender: str = attrs.field(metadata=_wire("from"))
    video: bool = False
    is_group: bool = False
    rejected: bool = False


@attrs.frozen
class WebhookDisabled:
    """wasup disabled the device's webhook at ``url`` (a notice, outside the catalogue)."""

    type: ClassVar[str] = "webhook_disabled"
    url: str
    reason: str


#: The catalogued events (docs/events.md), which WebSocket filters and webhook settings take.
Catalogued = (
    QrShown
    | QrTimedOut
    | DeviceConnected
    | DeviceDisconnected
    | DeviceLoggedOut
    | StatusChanged
    | MessageReceived
    | MessageUndecryptable
    | MessageSent
    | MessageStatusChanged
    | MessageStuck
    | GroupJoined
    | GroupUpdated
    | GroupParticipants
    | PresenceChanged
    | CallReceived
)

#: Everything published as an event: the catalogue and the ``webhook_disabled`` notice.
Payload = Catalogued | WebhookDisabled

#: Every event type of the catalogue (the WebSocket and webhook event names).
EVENT_TYPES: frozenset[str] = frozenset(record.type for record in get_args(Catalogued))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


#: Content fields whose wire name is not their name in camelCase.
_CONTENT_WIRE = {"target_id": "messageId", "sender": "from"}


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(Status, lambda status: status.value)
    for content in (*get_args(mc.Content), mc.MediaInfo, mc.Quoted):
        renames = {
            field.name: override(rename=_CONTENT_WIRE.get(field.name, _camel(field.name)))
            for field in attrs.fields(content)
        }
        if content is not mc.MediaInfo:
            renames.pop("media", None)
            if any(field.name == "media" for field in attrs.fields(content)):
                renames["media"] = override(omit=True)
        hook = make_dict_unstructure_fn(content, converter, **renames)  # type: ignore[arg-type]
        converter.register_unstructure_hook(content, hook)
    for record in get_args(Payload):
        if record is QrShown:
            continue
        renames = {
            field.name: override(rename=field.metadata.get(WIRE, _camel(field.name)))
            for field in attrs.fields(record)
        }
        # cattrs types **overrides as its keyword flags' type, hence the ignore.
        hook = make_dict_unstructure_fn(record, converter, **renames)  # type: ignore[arg-type]
        converter.register_unstructure_hook(record, hook)
    received_renames = {
        field.name: override(rename=field.metadata.get(WIRE, _camel(field.name)))
        for field in attrs.fields(MessageReceived)
    }
    received_renames.update(text=override(omit=True), content=override(omit=True),
                            quoted=override(omit=True))
    received = make_dict_unstructure_fn(
        MessageReceived, converter, **received_renames  # type: ignore[arg-type]
    )
    converter.register_unstructure_hook(
        MessageReceived,
        lambda payload: _content_after(converter, received(payload), payload, "chat"),
    )
    sent_renames = {field.name: override(rename=_camel(field.name))
                    for field in attrs.fields(MessageSent)}
    sent_renames.update(text=override(omit=True), content=override(omit=True),
                        quoted=override(omit=True))
    sent = make_dict_unstructure_fn(MessageSent, converter, **sent_renames)  # type: ignore[arg-type]
    converter.register_unstructure_hook(
        MessageSent, lambda payload: _content_after(converter, sent(payload), payload, "to")
    )
    # The QR JSON has one definition (QrAttempt.to_json, also GET /qr); the PNG is read here.
    converter.register_unstructure_hook(QrShown, lambda shown: shown.qr.to_json(shown.qr_code))
    return converter


def _content_after(
    converter: cattrs.Converter,
    base: dict[str, object],
    payload: MessageReceived | MessageSent,
    after: str,
) -> dict[str, object]:
    """``base`` with the content fields and ``quoted`` of ``payload`` after its key ``after``."""
    content = payload.content or mc.Text(payload.text)
    wire: dict[str, object] = {}
    for key, value in base.items():
        wire[key] = value
        if key == after:
            wire.update(content_wire(converter, content))
            wire["quoted"] = None if payload.quoted is None else converter.unstructure(
                payload.quoted)
    return wire


def content_wire(converter: cattrs.Converter, content: mc.Content) -> dict[str, object]:
    """``content`` as the wire fields of ``message_received``: ``type``, ``text``
    (the text or caption), ``hasMedia``, ``media`` (its metadata and the media kind's own
    fields, or null) and, for the other kinds but text, one object named after the type in
    camelCase (``location``, ``pollVote``, ``reaction``...)."""
    media = mc.media_of(content)
    fields: dict[str, object] = converter.unstructure(content)
    wire: dict[str, object] = {
        "type": content.type,
        "text": mc.text_of(content),
        "hasMedia": media is not None,
        "media": None,
    }
    if media is not None:
        wire["media"] = {**converter.unstructure(media), **fields}
    elif not isinstance(content, mc.Text):
        wire[_camel(content.type)] = fields
    return wire


#: The one converter from a payload to its wire JSON (the ``data`` of an event envelope).
converter = _make_converter()


def to_wire(payload: Payload) -> dict[str, object]:
    """The wire JSON object of ``payload`` (a :class:`QrShown` renders its PNG if not yet)."""
    wire: dict[str, object] = converter.unstructure(payload)
    return wire


def to_log(payload: Payload) -> dict[str, object]:
    """The wire JSON object of ``payload`` as the event log keeps it: :func:`to_wire`, but a
    QR code's image (``qrCode``) is null. The code has expired long before anyone reads it
    back, ``qrString`` is the code itself, and rendering every code of every pairing only
    for the log would cost more than the pairing."""
    if isinstance(payload, QrShown):
        return {**payload.qr.to_json(""), "qrCode": None}
    return to_wire(payload)
