"""The simulator engine: an in-process WhatsApp stand-in for tests, demos and benchmarks.

It speaks the engine interface (:mod:`supervisor.engine`) like the real engine does, and adds
controls with which a test or a person plays the phone and the WhatsApp server::

    engine = SimulatorEngine(MemoryCredentialStore(), seed=7, handshake_latency=0.5)
    session = engine.session(1, "user_u_device_a", sink)
    await session.start_pairing()          # 0.5 s later: sink(QrCode(
                                           #   "https://wa.me/settings/linked_devices#2@…,…,…,…,1"))
    await engine.scan(1)                   # the phone scans: credentials stored, sink(Paired(...))
    await session.connect()                # 0.5 s later: sink(Connected(...))
    await engine.incoming_message(1, "+15551234567", "hi")   # sink.deliver(MessageReceived(...))
    await engine.drop(1)                   # sink(Disconnected("connection_lost", True))
    await engine.fail(1, FailReason.STREAM_REPLACED)  # as WhatsApp reports each failure

This module is the engine and its controls. A session is
:mod:`supervisor.engines.simulator_session`; what the simulated WhatsApp remembers
(credentials, bans, faults, sent messages, read receipts: :meth:`SimulatorEngine.reads`) and
how its values are derived from the seed is
:mod:`supervisor.engines.simulator_server`; the offline queue, which holds a linked device's
incoming messages until wasup committed them, is :mod:`supervisor.engines.simulator_queue`.

A scan and an incoming message are handed over with ``sink.deliver``: the control returns only
once wasup committed the pairing or the message, as WhatsApp learns of them only through the
device's acknowledgement.

Resource handling: sessions are passive (no tasks, no threads). A session the actor replaced
(by asking :meth:`SimulatorEngine.session` again for the same device) is stopped.

Error handling: controls raise :class:`DeviceNotFound` when the engine has no session for the
device, :class:`DeviceConflict` when the device's state does not allow the action (scan while
not pairing) and :class:`InvalidRequest` for a malformed argument (a wrong pair code).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

import attrs

from common.clock import now_epoch
from supervisor.engine import (
    Disconnected,
    Engine,
    EngineEvent,
    EngineSession,
    LoggedOut,
    MessageStatus,
    Paired,
    PairingFailed,
    Retry,
    Sink,
    TemporaryBan,
)
from supervisor.errors import DeliveryFailed, DeviceConflict, DeviceNotFound, InvalidRequest
from supervisor.jid import InvalidJid, Jid, JidKind
from supervisor.message_content import Content, Poll, PollVote

from .simulator_queue import MemoryQueueStore, OfflineQueue, QueuedMessage, QueueStore
from .simulator_server import (
    FAULT_OPS,
    Credentials,
    CredentialStore,
    MemoryCredentialStore,
    ReadReceipt,
    SentMessage,
    SimulatedCrash,
    SimulatedServer,
)
from .simulator_session import PAIR_CODE_ALPHABET, SessionState, SimulatorSession

__all__ = [
    "ACK_STATUSES",
    "FAULT_OPS",
    "PAIR_CODE_ALPHABET",
    "PLATFORM",
    "CredentialStore",
    "Credentials",
    "FailReason",
    "Incoming",
    "MemoryCredentialStore",
    "MemoryQueueStore",
    "QueueStore",
    "QueuedMessage",
    "ReadReceipt",
    "SentMessage",
    "SessionState",
    "SimulatedCrash",
    "SimulatorEngine",
    "SimulatorSession",
]

#: Receipt statuses :meth:`SimulatorEngine.ack` accepts.
ACK_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
PLATFORM = "android"
#: How long a temporary ban lasts when :meth:`SimulatorEngine.fail` is given no ``seconds``.
DEFAULT_BAN_SECONDS = 3600.0


class FailReason(StrEnum):
    """A failure the simulated WhatsApp reports (:meth:`SimulatorEngine.fail`), named by the
    ``statusReason`` it leads to."""

    CLIENT_OUTDATED = "client_outdated"  # 405: Disconnected, slow retry, credentials kept
    STREAM_REPLACED = "stream_replaced"  # another client took over: held until a login
    PAIR_ERROR = "pair_error"  # the phone's scan failed: PairingFailed(restart=True)
    ACCOUNT_LOCKED = "account_locked"  # 403: logged out, credentials wiped
    BANNED = "banned"  # 406: logged out, credentials wiped
    TEMPORARY_BAN = "temporary_ban"  # TemporaryBan for ``seconds``


@attrs.frozen
class Incoming:
    """What became of an incoming message (:meth:`SimulatorEngine.incoming_message`):
    ``delivered`` once wasup committed it, else it waits in the offline queue."""

    message_id: str
    delivered: bool


@attrs.define(eq=False)
class SimulatorEngine:
    """The simulated WhatsApp: makes sessions and exposes the test/demo controls.

    ``handshake_latency`` (seconds of Trio time) is what start_pairing, request_pair_code and
    connect take. ``reachable`` is flipped by :meth:`set_reachable`.
    """

    credentials: CredentialStore
    #: Where the offline queue is kept (in memory unless given).
    queue: QueueStore = attrs.field(factory=MemoryQueueStore, kw_only=True)
    seed: int = attrs.field(default=0, kw_only=True)
    handshake_latency: float = attrs.field(default=0.5, kw_only=True)
    #: Mixed into message ids: a process gives its engine a fresh one, so message ids stay
    #: unique across restarts (tests keep the default and get the same ids every run).
    instance: str = attrs.field(default="", kw_only=True)
    name: str = attrs.field(default="simulator", init=False)
    server: SimulatedServer = attrs.field(init=False)
    _sessions: dict[int, SimulatorSession] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.server = SimulatedServer(
            self.credentials, OfflineQueue(self.queue), self.seed, self.handshake_latency,
            self.instance,
        )

    @property
    def reachable(self) -> bool:
        """Whether the simulated WhatsApp answers (see :meth:`set_reachable`)."""
        return self.server.reachable

    # -- the engine interface ------------------------------------------------------------

    def session(self, device_id: int, session_id: str, sink: Sink) -> SimulatorSession:
        """A new session for the device. An earlier session of the same device is stopped
        and replaced; the per-device draw counter carries over, so a restarted actor gets
        fresh QR codes rather than the ones it showed before."""
        old = self._sessions.get(device_id)
        session = SimulatorSession(self.server, self._sessions, device_id, session_id, sink)
        if old is not None:
            old.reset()
            session.draws = old.draws
        self._sessions[device_id] = session
        return session

    async def aclose(self) -> None:
        """Stop every session and forget them (credentials stay in the store)."""
        for session in self._sessions.values():
            session.reset()
        self._sessions.clear()

    # -- inspection ----------------------------------------------------------------------

    def get_session(self, device_id: int) -> SimulatorSession:
        """Error handling: :class:`DeviceNotFound` if the engine has no session for it."""
        session = self._sessions.get(device_id)
        if session is None:
            raise DeviceNotFound(device_id)
        return session

    def sent_messages(self, device_id: int) -> list[SentMessage]:
        """Messages the device sent, oldest first (a copy; empty if none)."""
        return list(self.server.sent.get(device_id, ()))

    def reads(self, device_id: int) -> list[ReadReceipt]:
        """Read receipts the device sent, oldest first (a copy; empty if none)."""
        return list(self.server.reads.get(device_id, ()))

    def current_qr(self, device_id: int) -> str | None:
        """The device's QR string on display, or None if it is not pairing."""
        return self.get_session(device_id).current_qr()

    def __len__(self) -> int:
        return len(self._sessions)

    # -- controls: the phone and the server ----------------------------------------------

    async def scan(
        self,
        device_id: int,
        phone_number: str | None = None,
        push_name: str | None = None,
        code: str | None = None,
    ) -> Paired:
        """The phone scans the QR code on display, or (with ``code``) enters the pair code
        issued by ``request_pair_code``. Stores credentials, then delivers :class:`Paired`
        and returns it once wasup committed it. The session goes idle: the actor connects
        next.

        Defaults: with a pair code, the number it was issued for; else a number and push name
        derived from the seed. Error handling: :class:`DeviceConflict` when not pairing (or no
        pair code was issued), or when wasup did not commit the pairing (the credentials stay:
        the phone shows the device linked, and the device's restore finds them);
        :class:`InvalidRequest` for a wrong code, a malformed number or a number other than the
        pair code's.
        """
        session = self.get_session(device_id)
        if session.state is not SessionState.PAIRING:
            raise DeviceConflict(
                f"device {device_id} is not pairing (engine state: {session.state.value})"
            )
        digits = None
        if phone_number is not None:
            try:
                digits = Jid.phone(phone_number).user
            except InvalidJid:
                raise InvalidRequest(
                    f"invalid phone number: {phone_number!r}", "phoneNumber"
                ) from None
        if code is not None:
            if session.pair_code is None:
                raise DeviceConflict(f"device {device_id} has no pair code issued")
            if _normalize_code(code) != session.pair_code:
                raise InvalidRequest("wrong pair code", "code")
            if digits is not None and digits != session.pair_phone:
                raise InvalidRequest("phone number does not match the pair code's", "phoneNumber")
            digits = session.pair_phone
        if digits is None:
            n = int.from_bytes(session.random_bytes("phone", 8), "big") % 10**7
            digits = f"1555{n:07d}"
        if push_name is None:
            push_name = f"Sim {digits[-4:]}"
        noise, identity, adv = session.keys()
        creds = Credentials(
            jid=f"{digits}@s.whatsapp.net",
            phone_number="+" + digits,
            push_name=push_name,
            platform=PLATFORM,
            noise_key=noise,
            identity_key=identity,
            adv_secret=adv,
        )
        epoch = session.epoch
        await self.credentials.put(device_id, creds.to_bytes())
        if session.epoch != epoch or self._sessions.get(device_id) is not session:
            # Stopped while storing: nobody listens for Paired any more, so undo the link
            # rather than leave credentials the device's record knows nothing about.
            await self.credentials.delete(device_id)
            raise DeviceConflict(f"device {device_id} stopped while pairing")
        session.reset()
        event = Paired(
            jid=creds.jid,
            phone_number=creds.phone_number,
            push_name=creds.push_name,
            platform=creds.platform,
        )
        try:
            await session.sink.deliver(event)
        except DeliveryFailed as exc:
            raise DeviceConflict(
                f"device {device_id} did not store the pairing ({exc.reason})"
            ) from exc
        return event

    async def drop(self, device_id: int) -> None:
        """The network drops: reports ``Disconnected("connection_lost", recoverable=True)``.

        Error handling: :class:`DeviceConflict` unless connected or pairing.
        """
        session = self.get_session(device_id)
        if session.state is SessionState.IDLE:
            raise DeviceConflict(f"device {device_id} has no connection to drop")
        session.reset()
        session.sink(Disconnected("connection_lost", recoverable=True))

    async def unlink(self, device_id: int) -> None:
        """The phone removes this linked device: credentials are wiped and
        ``LoggedOut("unlinked")`` reported (as whatsmeow's 401).

        Error handling: :class:`DeviceConflict` if the device is not linked (no credentials).
        """
        session = self.get_session(device_id)
        if await self.credentials.get(device_id) is None:
            raise DeviceConflict(f"device {device_id} is not linked")
        session.reset()
        await self.credentials.delete(device_id)
        await self.server.queue.clear(device_id)
        session.sink(LoggedOut("unlinked"))

    async def temporary_ban(
        self, device_id: int, duration: float, reason: str = "temporary_ban"
    ) -> float:
        """WhatsApp bans the account for ``duration`` seconds: the connection drops with
        :class:`TemporaryBan`, and connect fails with ``EngineError("temporary_ban")`` until
        then. Returns the ban's end (epoch seconds).

        Error handling: :class:`DeviceConflict` unless connected.
        """
        session = self.get_session(device_id)
        if session.state is not SessionState.CONNECTED:
            raise DeviceConflict(f"device {device_id} is not connected")
        until = now_epoch() + duration
        self.server.bans[device_id] = until
        session.reset()
        session.sink(TemporaryBan(reason, until))
        return until

    async def incoming_message(
        self,
        device_id: int,
        sender: str,
        text: str,
        *,
        chat: str | None = None,
        is_group: bool = False,
        content: Content | None = None,
        quoted: str | None = None,
        push_name: str | None = None,
        media: bytes | None = None,
    ) -> Incoming:
        """Someone writes to the device. The message joins the device's offline queue and,
        when the device is connected, is delivered at once: the call returns after wasup
        committed it (``delivered``). Otherwise it waits in the queue (``delivered`` false)
        and arrives, in order, when the device next connects.

        ``sender`` is a phone number or a JID; ``chat`` defaults to the sender's JID (a
        group message needs a ``...@g.us`` chat). ``content`` is what the message carries (a
        text of ``text`` when not given), ``quoted`` the id of the message it replies to;
        ``media``, the file of a media message, is kept (:meth:`media`); a poll is kept for
        the votes on it, and a :class:`PollVote` naming its ``options`` arrives as WhatsApp
        carries it, by their hashes (:mod:`.simulator_polls`). Error handling:
        :class:`DeviceConflict` when the device is not linked (no credentials, not connected);
        :class:`InvalidRequest` for a malformed sender or chat, or a choice the poll does not
        allow (``options``).
        """
        session = self.get_session(device_id)
        try:
            sender_jid = Jid.parse(sender).canonical
        except InvalidJid:
            raise InvalidRequest(f"invalid sender: {sender!r}", "from") from None
        if is_group:
            if chat is None or not _is_group(chat):
                raise InvalidRequest("a group message needs a chat ending in @g.us", "chat")
        elif chat is None:
            chat = sender_jid
        if session.state is not SessionState.CONNECTED and not await self.credentials.has(
            device_id
        ):
            raise DeviceConflict(f"device {device_id} is not linked (not connected)")
        if isinstance(content, PollVote):  # by option name: WhatsApp carries their hashes
            content = self.server.polls.ballot(device_id, content)
        message_id = "3A" + session.random_bytes("incoming_id" + self.instance, 9).hex().upper()
        if isinstance(content, Poll):
            self.server.polls.keep(device_id, message_id, content)
        message = QueuedMessage(message_id, chat, sender_jid, text, is_group, now_epoch(),
                                content, quoted, push_name)
        if media is not None:
            self.server.keep_media(device_id, message_id, media)
        await self.server.queue.push(device_id, message)
        if session.state is SessionState.CONNECTED:
            epoch = session.epoch
            await self.server.queue.flush(device_id, session.sink, lambda: session.online(epoch))
        delivered = all(m.message_id != message_id for m in self.server.queue.pending(device_id))
        return Incoming(message_id, delivered)

    def media(self, device_id: int, message_id: str) -> bytes | None:
        """The file of a media message the simulated WhatsApp holds (None once evicted)."""
        return self.server.media.get((device_id, message_id))

    def downloads(self, device_id: int) -> int:
        """How many downloads of media files the device asked for."""
        return self.server.downloads.get(device_id, 0)

    def queued(self, device_id: int) -> list[QueuedMessage]:
        """The device's messages waiting in the offline queue, oldest first."""
        return self.server.queue.pending(device_id)

    async def ack(self, device_id: int, message_id: str, status: str) -> None:
        """A receipt for a message the device sent: reports :class:`MessageStatus`.

        Error handling: :class:`DeviceConflict` unless connected; :class:`InvalidRequest` for
        a status other than sent/delivered/read/failed or a message id this device never sent.
        """
        session = self.get_session(device_id)
        if status not in ACK_STATUSES:
            raise InvalidRequest(f"invalid receipt status: {status!r}", "status")
        if session.state is not SessionState.CONNECTED:
            raise DeviceConflict(f"device {device_id} is not connected")
        if not any(m.message_id == message_id for m in self.server.sent.get(device_id, ())):
            raise InvalidRequest(f"unknown message id: {message_id!r}", "messageId")
        session.sink(MessageStatus(message_id, status))

    async def fail(
        self, device_id: int, reason: FailReason, seconds: float | None = None
    ) -> None:
        """WhatsApp reports a failure, as the real engine reports it (see :class:`FailReason`).

        * ``client_outdated``: while connected or pairing, the connection ends with
          ``Disconnected("client_outdated", retry=Retry.SLOW)``; credentials kept. The next
          connect succeeds (as after an upgrade of wasup): the simulated WhatsApp does not keep
          refusing, so a login or the slow retry shows the recovery.
        * ``stream_replaced``: while connected, ``Disconnected("stream_replaced",
          retry=Retry.HOLD)``; credentials kept, the device waits for a login.
        * ``pair_error``: while pairing, the pairing connection ends with
          ``PairingFailed("pair_error", restart=True)``.
        * ``account_locked``, ``banned``: while connected, credentials (and the offline queue)
          are wiped and ``LoggedOut(reason)`` reported.
        * ``temporary_ban``: while connected, as :meth:`temporary_ban` for ``seconds``
          (default :data:`DEFAULT_BAN_SECONDS`).

        Error handling: :class:`DeviceNotFound` without a session; :class:`DeviceConflict`
        when the device's connection does not allow the failure; :class:`InvalidRequest` for
        ``seconds`` with another reason than ``temporary_ban``, or not positive.
        """
        session = self.get_session(device_id)
        if seconds is not None and (reason is not FailReason.TEMPORARY_BAN or seconds <= 0):
            raise InvalidRequest("seconds: a positive duration, for temporary_ban only", "seconds")
        allowed = {SessionState.CONNECTED}
        if reason is FailReason.CLIENT_OUTDATED:
            allowed.add(SessionState.PAIRING)
        elif reason is FailReason.PAIR_ERROR:
            allowed = {SessionState.PAIRING}
        if session.state not in allowed:
            raise DeviceConflict(
                f"device {device_id} cannot fail with {reason.value} "
                f"(engine state: {session.state.value})"
            )
        match reason:
            case FailReason.TEMPORARY_BAN:
                await self.temporary_ban(device_id, seconds or DEFAULT_BAN_SECONDS)
                return
            case FailReason.CLIENT_OUTDATED:
                event: EngineEvent = Disconnected(reason.value, retry=Retry.SLOW)
            case FailReason.STREAM_REPLACED:
                event = Disconnected(reason.value, retry=Retry.HOLD)
            case FailReason.PAIR_ERROR:
                event = PairingFailed(reason.value, restart=True)
            case FailReason.ACCOUNT_LOCKED | FailReason.BANNED:
                session.reset()
                await self.credentials.delete(device_id)
                await self.server.queue.clear(device_id)
                event = LoggedOut(reason.value)
        session.reset()
        session.sink(event)

    async def inject_fault(self, device_id: int, op: str = "connect", times: int = 1) -> None:
        """Make the next ``times`` calls of session operation ``op`` (or of any operation,
        with ``"any"``) raise :class:`SimulatedCrash`. Faults survive the session being
        replaced (an actor restart) and are cleared by ``delete``; stop and delete never crash.

        Error handling: :class:`DeviceNotFound` without a session; :class:`InvalidRequest` for
        an unknown op or ``times`` < 1.
        """
        self.get_session(device_id)
        if op != "any" and op not in FAULT_OPS:
            raise InvalidRequest(f"unknown operation: {op!r}", "op")
        if times < 1:
            raise InvalidRequest("times must be at least 1", "times")
        self.server.add_fault(device_id, op, times)

    async def set_reachable(self, reachable: bool) -> None:
        """While unreachable, start_pairing, request_pair_code and connect fail after the
        latency with ``EngineError("network_unreachable: simulated", recoverable=True)``.
        Established connections are not dropped (use :meth:`drop`)."""
        self.server.reachable = reachable

def _is_group(chat: str) -> bool:
    try:
        return Jid.parse(chat).kind is JidKind.GROUP
    except InvalidJid:
        return False


def _normalize_code(code: str) -> str:
    return re.sub(r"[\s\-]", "", code).upper()


if TYPE_CHECKING:
    # The simulator must satisfy the engine interface; mypy checks it here.
    def _check_engine(engine: SimulatorEngine) -> Engine:
        return engine

    def _check_session(engine: SimulatorEngine, sink: Sink) -> EngineSession:
        return engine.session(1, "s", sink)
