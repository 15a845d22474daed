"""The engine interface: how one device actor talks to WhatsApp.

An engine makes one :class:`EngineSession` per device. The session's methods are called only
by that device's actor, one at a time except :meth:`EngineSession.stop`, which may interrupt
another call. What the engine learns on its own (a QR code, a scan, a dropped connection, a
message) it reports through the :class:`Sink` it was given, on the Trio thread. A lifecycle
event is reported by calling the sink, which never blocks: it puts the event into the device's
bounded event inbox, and when that is full the device is disconnected and reconnects to
resynchronise (see :mod:`supervisor.actor`). An incoming message or a completed pairing is
handed over with :meth:`Sink.deliver`, which returns only once the device committed it, so
the engine acknowledges to WhatsApp only what wasup has stored.

Error handling: a session method raises :class:`supervisor.errors.EngineError` for failures the
state machine understands (unreachable, refused, logged out). Any other exception is a crash:
the actor dies and its supervisor restarts it from the persisted state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from .engine_account import AccountApi
from .engine_contacts import ContactsApi
from .engine_groups import GroupsApi
from .message_content import Content, Quoted, Text
from .outgoing import Outgoing
from .payloads import Payload
from .retry import Retry as Retry  # part of the engine interface (Disconnected.retry)


@attrs.frozen
class QrCode:
    """A new QR string is ready to be shown (the device is pairing)."""

    code: str


@attrs.frozen
class Paired:
    """The phone scanned the QR code or accepted the pair code; credentials are stored."""

    jid: str
    phone_number: str
    push_name: str | None = None
    platform: str | None = None


@attrs.frozen
class Connected:
    """The login handshake finished: the device is online."""

    push_name: str | None = None
    platform: str | None = None


@attrs.frozen
class Disconnected:
    """The connection was lost, or WhatsApp could not be reached.

    ``recoverable=False`` means final, as :class:`LoggedOut`; ``retry`` says when a
    recoverable one reconnects.
    """

    reason: str
    recoverable: bool = True
    retry: Retry = Retry.BACKOFF


@attrs.frozen
class LoggedOut:
    """The session is over for good (unlinked from the phone, 401, banned, replaced...)."""

    reason: str


@attrs.frozen
class TemporaryBan:
    """WhatsApp refuses this account until ``until_epoch``; retry no earlier."""

    reason: str
    until_epoch: float


@attrs.frozen
class PairingFailed:
    """A pairing attempt failed in a way the user should see at once.

    The device stays ``pending`` with ``reason`` as its statusReason. ``restart``: the engine's
    pairing connection is gone (a failed scan), so the device asks the engine to start pairing
    again; the QR cycle's deadline is unchanged.
    """

    reason: str
    restart: bool = False


@attrs.frozen
class MessageReceived:
    """An incoming (or own, ``from_me``) message of any kind.

    ``sender`` and ``chat`` are phone-number JIDs wherever the engine knows the mapping;
    ``sender_lid`` is the sender's LID JID (``…@lid``) when the message was LID-addressed,
    ``sender_pn`` the sender's phone-number JID when known. ``content`` is what it carries
    (:mod:`supervisor.message_content`; a :class:`Text` of ``text`` when not given), ``text``
    its text or caption (``message_content.text_of``), ``quoted`` the message it replies to,
    ``push_name`` the sender's WhatsApp display name. An undecryptable message is one with
    :class:`~supervisor.message_content.Undecryptable` content. ``media_ref`` is set for a
    media message: an opaque, engine-made string from which :meth:`EngineSession.download`
    fetches its file (kept with the message, never in an event or webhook payload).
    """

    message_id: str
    chat: str
    sender: str
    text: str
    is_group: bool = False
    from_me: bool = False
    timestamp: float = 0.0
    is_broadcast: bool = False
    sender_lid: str | None = None
    sender_pn: str | None = None
    content: Content = attrs.field(
        default=attrs.Factory(lambda self: Text(self.text), takes_self=True)
    )
    quoted: Quoted | None = None
    push_name: str | None = None
    media_ref: str | None = None


@attrs.frozen
class Sent:
    """What WhatsApp made of a send: its id of the message and, for a media kind, the engine's
    reference to the uploaded file (as :attr:`MessageReceived.media_ref`: what
    :meth:`EngineSession.download` fetches it again by once wasup's copy is evicted)."""

    message_id: str
    media_ref: str | None = None


@attrs.frozen
class MessageStatus:
    """A receipt for an outgoing message: sent, delivered, read or failed."""

    message_id: str
    status: str


@attrs.frozen
class Notice:
    """Something WhatsApp told the device that wasup only passes on (a group change, a
    presence, an incoming call): the actor publishes ``payload`` as an event, to the WebSocket
    and the device's webhook, and changes nothing else."""

    payload: Payload


EngineEvent = (
    QrCode
    | Paired
    | Connected
    | Disconnected
    | LoggedOut
    | TemporaryBan
    | MessageReceived
    | MessageStatus
    | PairingFailed
    | Notice
)


class Sink(Protocol):
    """Where a session reports what it learns; called on the Trio thread."""

    def __call__(self, event: EngineEvent) -> None:
        """Report a lifecycle event; never blocks."""

    async def deliver(self, event: MessageReceived | Paired) -> None:
        """Hand over an incoming message or a completed pairing; return once it is committed.

        Committed means the message stored with its webhook outbox rows, or ``paired`` stored
        with the account fields. Waits while the device's event inbox is full (backpressure,
        never an unbounded queue). From a foreign thread:
        ``trio.from_thread.run(sink.deliver, event, trio_token=token)``.

        Error handling: raises :class:`supervisor.errors.DeliveryFailed` when the device's
        actor stopped or could not store the event; the engine must then not acknowledge it
        (WhatsApp delivers it again later).
        """


class EngineSession(Protocol):
    @property
    def contacts(self) -> ContactsApi: ...  # people at WhatsApp (supervisor/engine_contacts.py)

    @property
    def groups(self) -> GroupsApi: ...  # the groups it is in (supervisor/engine_groups.py)
    @property
    def account(self) -> AccountApi: ...  # presence, profile, calls (engine_account.py)

    async def start_pairing(self) -> None:
        """Connect without credentials; :class:`QrCode` events follow."""

    async def next_qr(self) -> None:
        """The current QR code expired: report the next one."""

    async def request_pair_code(self, phone_number: str) -> str:
        """Ask to pair by phone number instead of QR; returns the code (``ABCD-EFGH``)."""
        ...

    async def connect(self) -> None:
        """Connect with stored credentials; returns once connected (a :class:`Connected` event
        is reported too) or raises :class:`EngineError`."""

    async def send(self, to_jid: str, message: Outgoing, media: bytes | None) -> Sent:
        """Send ``message`` (any kind) to ``to_jid``; ``media`` is the file of a media content
        (its bytes as stored in the MediaStore), else None. Returns WhatsApp's message id and
        the uploaded file's ``media_ref``.

        Raises :class:`EngineError` (recoverable) when not connected; ``EngineError(reason,
        recoverable=False)`` when WhatsApp refuses it (an upload failed, a kind the engine
        cannot send...).
        """
        ...

    async def download(self, ref: str) -> bytes:
        """The decrypted bytes of an incoming message's media; ``ref`` is
        :attr:`MessageReceived.media_ref`. May run while the actor makes other calls (a large
        file takes a while); :meth:`stop` ends it.

        Raises ``EngineError("media_expired", recoverable=False)`` when WhatsApp no longer has
        the file, ``EngineError(recoverable=True)`` when not connected, and
        ``EngineError(reason, recoverable=False)`` when the download fails otherwise.
        """
        ...

    async def mark_read(self, chat: str, messages: Sequence[tuple[str, str | None]]) -> None:
        """Send read receipts for these ``(WhatsApp message id, sender JID)`` messages of
        ``chat``; the sender is None in a one-to-one chat (a group's receipts name it).
        :class:`EngineError` (recoverable) when not connected."""

    async def logout(self) -> None:
        """Log out at WhatsApp and wipe this device's credentials."""

    async def stop(self) -> None:
        """Drop the connection and release every resource; idempotent."""

    async def delete(self) -> None:
        """Stop and wipe credentials: the device is being deleted."""

    async def has_credentials(self) -> bool:
        """Whether credentials for this device are stored (read-only, cheap)."""
        ...


class Engine(Protocol):
    name: str

    def session(self, device_id: int, session_id: str, sink: Sink) -> EngineSession: ...

    async def aclose(self) -> None: ...
