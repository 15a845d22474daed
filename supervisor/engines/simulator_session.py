"""One simulated device connection: the simulator's :class:`~supervisor.engine.EngineSession`.

A session is passive (no tasks, no threads): it acts only when the actor or one of the
engine's controls calls it, and it calls ``sink`` on the calling Trio task. Its state is
:class:`SessionState`; ``epoch`` increases on every :meth:`SimulatorSession.stop`, so a
handshake that was sleeping when it changed gives up instead of reporting success. Everything
the simulated WhatsApp remembers (credentials, bans, faults, sent messages, read receipts,
media files) is in the :class:`~supervisor.engines.simulator_server.SimulatedServer` the session
shares with its engine.

Error handling: session methods raise :class:`EngineError` for what the state machine
understands (``credentials_missing``, ``not_connected``, ``network_unreachable: simulated``...), and
:class:`~supervisor.engines.simulator_server.SimulatedCrash` when a fault was injected.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence

import attrs
import trio

from common.clock import now_epoch
from supervisor.engine import Connected, QrCode, Sent, Sink
from supervisor.engine_account import AccountApi
from supervisor.errors import EngineError
from supervisor.jid import InvalidJid, Jid
from supervisor.message_content import (
    Edit,
    Poll,
    PollVote,
    Reaction,
    Revoke,
    Undecryptable,
    Unsupported,
    media_of,
)
from supervisor.outgoing import Outgoing

from .simulator_account import SimulatorAccount
from .simulator_contacts import SimulatorContacts
from .simulator_groups import SimulatorGroups
from .simulator_server import ReadReceipt, SentMessage, SimulatedServer, b64

#: What a QR string starts with: whatsmeow's (neonize 0.5.2's) link for the phone's camera.
QR_PREFIX = "https://wa.me/settings/linked_devices#"
#: The QR string's last field: the linked device's platform type (1: Chrome, as whatsmeow's).
QR_PLATFORM = "1"

#: whatsmeow's pair-code alphabet: no 0/O, no I, no U (32 characters, so 5 bits each).
PAIR_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"


def check_sendable(to_jid: str, message: Outgoing, media: bytes | None) -> None:
    """Refuse what WhatsApp would refuse to send, as the real engine does.

    Error handling: raises the final :class:`EngineError` of :meth:`SimulatorSession.send`.
    """
    try:
        Jid.parse(to_jid)
    except InvalidJid:
        raise EngineError("invalid_recipient", recoverable=False) from None
    content = message.content
    if isinstance(content, PollVote | Unsupported | Undecryptable):
        raise EngineError("unsupported_kind", recoverable=False,
                          message=f"cannot send a {content.type} message")
    if isinstance(content, Reaction | Edit | Revoke) and message.target is None:
        raise EngineError("target_missing", recoverable=False,
                          message=f"a {content.type} needs the message it acts on")
    info = media_of(content)
    if info is not None:
        if media is None:
            raise EngineError("media_missing", recoverable=False,
                              message=f"a {content.type} message needs its file")
        if info.sha256 is not None and hashlib.sha256(media).hexdigest() != info.sha256:
            raise EngineError("media_mismatch", recoverable=False,
                              message="the file is not the one the message describes")


class SessionState(enum.Enum):
    IDLE = "idle"  # no connection (new, stopped, dropped, logged out)
    PAIRING = "pairing"  # connected without credentials, showing QR codes
    CONNECTED = "connected"  # logged in


@attrs.define(eq=False)
class SimulatorSession:
    """One device's simulated connection. Passive: it acts only when called.

    ``registry`` is the engine's sessions by device; :meth:`delete` takes this one out of it.
    """

    server: SimulatedServer
    registry: dict[int, SimulatorSession]
    device_id: int
    session_id: str
    sink: Sink
    state: SessionState = SessionState.IDLE
    epoch: int = 0
    draws: int = 0  # random values drawn so far (the per-device counter of the derivation)
    keys_draw: int = 0  # the draw the current pairing's keys derive from (0: none yet)
    ref_draw: int = 0  # the draw the current QR ref derives from (0: no QR shown)
    pair_code: str | None = None  # the pair code issued, normalized ("ABCDEFGH")
    pair_phone: str | None = None  # the digits it was issued for
    contacts: SimulatorContacts = attrs.field(init=False, default=attrs.Factory(
        lambda s: SimulatorContacts(s.server.contacts, s), takes_self=True))
    groups: SimulatorGroups = attrs.field(init=False,
                                          default=attrs.Factory(SimulatorGroups, takes_self=True))
    account: AccountApi = attrs.field(
        init=False, default=attrs.Factory(SimulatorAccount, takes_self=True))

    # -- the engine interface ------------------------------------------------------------

    async def start_pairing(self) -> None:
        """Open a pairing connection; after the handshake latency a :class:`QrCode` follows.

        Error handling: ``EngineError("network_unreachable: simulated")`` (recoverable) when the
        engine is unreachable, ``EngineError("stopped")`` if :meth:`stop` came first.
        """
        self.server.take_fault(self.device_id, "start_pairing")
        epoch = self.epoch
        self.state = SessionState.IDLE
        await self._handshake(epoch)
        self.keys_draw = self._draw()
        self.ref_draw = self._draw()
        self.pair_code = self.pair_phone = None
        self.state = SessionState.PAIRING
        self.sink(QrCode(self._qr_string()))

    async def next_qr(self) -> None:
        """Report the next QR code: a new ref, the same keys.

        Error handling: ``EngineError("not_pairing")`` if no pairing is under way.
        """
        self.server.take_fault(self.device_id, "next_qr")
        if self.state is not SessionState.PAIRING:
            raise EngineError("not_pairing", recoverable=True)
        self.ref_draw = self._draw()
        self.sink(QrCode(self._qr_string()))

    async def request_pair_code(self, phone_number: str) -> str:
        """Issue a pair code for ``phone_number`` (``ABCD-EFGH``) after one round trip.

        A later request replaces the earlier code. Error handling: ``EngineError("not_pairing")``
        when no pairing is under way, ``EngineError("invalid_phone_number")`` for a number
        that is not 7-15 digits.
        """
        self.server.take_fault(self.device_id, "request_pair_code")
        if self.state is not SessionState.PAIRING:
            raise EngineError("not_pairing", recoverable=True)
        try:
            digits = Jid.phone(phone_number).user
        except InvalidJid:
            raise EngineError("invalid_phone_number", recoverable=True) from None
        epoch = self.epoch
        await self._handshake(epoch)
        if self.state is not SessionState.PAIRING:
            raise EngineError("not_pairing", recoverable=True)
        raw = self.random_bytes("pair_code", 8)
        code = "".join(PAIR_CODE_ALPHABET[b % 32] for b in raw)
        self.pair_code, self.pair_phone = code, digits
        return f"{code[:4]}-{code[4:]}"

    async def connect(self) -> None:
        """Log in with the stored credentials; returns after the handshake latency, having
        reported :class:`Connected` and delivered the offline queue (see
        :mod:`supervisor.engines.simulator_queue`) as far as the connection lasts.

        Error handling: ``EngineError("credentials_missing", recoverable=False)`` at once when none
        are stored (``"invalid_credentials"`` when they are not the simulator's);
        ``EngineError("temporary_ban")`` during a simulated ban;
        ``EngineError("network_unreachable: simulated")`` after the latency when unreachable;
        ``EngineError("stopped")`` if :meth:`stop` came first.
        """
        self.server.take_fault(self.device_id, "connect")
        epoch = self.epoch
        self.state = SessionState.IDLE
        creds = await self.server.load_credentials(self.device_id)
        if creds is None:
            raise EngineError("credentials_missing", recoverable=False)
        ban_until = self.server.bans.get(self.device_id)
        if ban_until is not None:
            if now_epoch() < ban_until:
                raise EngineError("temporary_ban", recoverable=True)
            del self.server.bans[self.device_id]
        await self._handshake(epoch)
        self.state = SessionState.CONNECTED
        self.sink(Connected(push_name=creds.push_name, platform=creds.platform))
        # Right after the login WhatsApp hands over what waited in the offline queue.
        await self.server.queue.flush(self.device_id, self.sink, lambda: self.online(epoch))

    async def send(self, to_jid: str, message: Outgoing, media: bytes | None) -> Sent:
        """Send ``message`` to ``to_jid``; returns the message id (``3EB0`` + 16 hex digits),
        also the ``media_ref`` of its file, kept to be downloaded like a received one. The sent
        record keeps the message and its media file (see ``SimulatorEngine.sent_messages``). No receipt is reported on its own: use
        ``SimulatorEngine.ack``.

        Error handling: ``EngineError("not_connected")`` (recoverable) when not connected;
        final ones for what WhatsApp would refuse: ``invalid_recipient``, ``unsupported_kind``
        (a poll vote, an unsupported or undecryptable content), ``target_missing`` (a
        reaction, edit or revoke without its target), ``media_missing`` (a media kind without
        its file), ``media_mismatch`` (a file whose sha256 is not the content's).
        """
        self.server.take_fault(self.device_id, "send")
        if self.state is not SessionState.CONNECTED:
            raise EngineError("not_connected", recoverable=True)
        check_sendable(to_jid, message, media)
        label = "message_id" + self.server.instance
        message_id = "3EB0" + self.random_bytes(label, 8).hex().upper()
        sent = SentMessage(message_id, to_jid, message, now_epoch(), media)
        self.server.sent.setdefault(self.device_id, []).append(sent)
        if isinstance(message.content, Poll):  # votes on it name it by this id
            self.server.polls.keep(self.device_id, message_id, message.content)
        if media is None:
            return Sent(message_id)
        self.server.keep_media(self.device_id, message_id, media)  # as WhatsApp keeps it
        return Sent(message_id, media_ref=message_id)

    async def download(self, ref: str) -> bytes:
        """The file of a media message the device received (``ref``: its message id), as the
        simulated WhatsApp keeps it; counted (``SimulatorEngine.downloads``), after
        ``download_latency`` seconds.

        Error handling: ``EngineError("not_connected")`` (recoverable) when not connected;
        ``EngineError("media_expired", recoverable=False)`` when the file is not kept (any more).
        """
        self.server.take_fault(self.device_id, "download")
        if self.state is not SessionState.CONNECTED:
            raise EngineError("not_connected", recoverable=True)
        self.server.downloads[self.device_id] = self.server.downloads.get(self.device_id, 0) + 1
        if self.server.download_latency > 0:
            await trio.sleep(self.server.download_latency)
        data = self.server.media.get((self.device_id, ref))
        if data is None:
            raise EngineError("media_expired", recoverable=False,
                              message="the simulated whatsapp no longer has this file")
        return data

    async def mark_read(self, chat: str, messages: Sequence[tuple[str, str | None]]) -> None:
        """Send read receipts for ``messages`` (WhatsApp id, sender) of ``chat``: the
        simulated WhatsApp records them (``SimulatorEngine.reads``).

        Error handling: ``EngineError("not_connected")`` (recoverable) when not connected.
        """
        self.server.take_fault(self.device_id, "mark_read")
        if self.state is not SessionState.CONNECTED:
            raise EngineError("not_connected", recoverable=True)
        receipt = ReadReceipt(chat, tuple(messages), now_epoch())
        self.server.reads.setdefault(self.device_id, []).append(receipt)

    async def logout(self) -> None:
        """Log out and wipe the credentials (nothing is reported: the caller asked for it)."""
        self.server.take_fault(self.device_id, "logout")
        self.reset()
        await self.server.credentials.delete(self.device_id)
        await self.server.queue.clear(self.device_id)

    async def stop(self) -> None:
        """Drop the connection; a handshake under way gives up. Idempotent, never fails."""
        self.reset()

    async def delete(self) -> None:
        """Stop, wipe credentials and forget the device (faults, sent messages, bans, the
        offline queue)."""
        self.reset()
        if self.registry.get(self.device_id) is self:
            del self.registry[self.device_id]
        self.server.forget(self.device_id)
        await self.server.credentials.delete(self.device_id)
        await self.server.queue.clear(self.device_id)

    async def has_credentials(self) -> bool:
        """Whether the credential store holds this device's credentials (read-only)."""
        return await self.server.credentials.has(self.device_id)

    # -- for the engine's controls -------------------------------------------------------

    def current_qr(self) -> str | None:
        """The QR string on display (``https://wa.me/settings/linked_devices#ref,noiseKey,
        identityKey,advSecret,1``), if pairing."""
        if self.state is not SessionState.PAIRING or not self.ref_draw:
            return None
        return self._qr_string()

    def keys(self) -> tuple[str, str, str]:
        """The current pairing's noise key, identity key and adv secret (base64)."""
        return (
            b64(self._derive("noise_key", self.keys_draw, 32)),
            b64(self._derive("identity_key", self.keys_draw, 32)),
            b64(self._derive("adv_secret", self.keys_draw, 32)),
        )

    def online(self, epoch: int) -> bool:
        """Whether the connection made in ``epoch`` is still up."""
        return self.epoch == epoch and self.state is SessionState.CONNECTED

    def reset(self) -> None:
        """Back to idle: no connection, no QR, no pair code; a handshake under way gives up."""
        self.epoch += 1
        self.state = SessionState.IDLE
        self.ref_draw = 0
        self.pair_code = self.pair_phone = None

    def random_bytes(self, label: str, size: int) -> bytes:
        """The device's next deterministic random value (see ``simulator_server``)."""
        return self._derive(label, self._draw(), size)

    # -- internals -----------------------------------------------------------------------

    def _qr_string(self) -> str:
        ref = "2@" + b64(self._derive("ref", self.ref_draw, 48))
        return QR_PREFIX + ",".join([ref, *self.keys(), QR_PLATFORM])

    async def _handshake(self, epoch: int) -> None:
        await trio.sleep(self.server.handshake_latency)
        if self.epoch != epoch:
            raise EngineError("stopped", recoverable=True)
        if not self.server.reachable:
            raise EngineError("network_unreachable: simulated", recoverable=True)

    def _draw(self) -> int:
        self.draws += 1
        return self.draws

    def _derive(self, label: str, draw: int, size: int) -> bytes:
        return self.server.derive(self.device_id, label, draw, size)
