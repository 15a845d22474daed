"""The simulator engine: an in-process WhatsApp stand-in for tests, demos and benchmarks.

It speaks the engine interface (:mod:`supervisor.engine`) like the real engine does, and adds
controls with which a test or a person plays the phone and the WhatsApp server::

    engine = SimulatorEngine(MemoryCredentialStore(), seed=7, handshake_latency=0.5)
    session = engine.session(1, "user_u_device_a", sink)
    await session.start_pairing()          # 0.5 s later: sink(QrCode("2@...,...,...,..."))
    await engine.scan(1)                   # the phone scans: credentials stored, sink(Paired(...))
    await session.connect()                # 0.5 s later: sink(Connected(...))
    await engine.incoming_message(1, "+15551234567", "hi")   # sink(MessageReceived(...))
    await engine.drop(1)                   # sink(Disconnected("connection_lost", True))

Determinism: every value that looks random (QR refs and keys, pair codes, message ids,
default phone numbers) is derived from ``(seed, device_id, n)``, where ``n`` counts the draws
that device has made. So a device's values depend only on the seed and on what happened to
that device, never on how many other devices exist or in which order they were created. The
derivation is a keyed BLAKE2b rather than a ``random.Random`` per device because a Mersenne
Twister carries 2.5 KB of state, and the benchmark runs 10,000 sessions.

Resource handling: sessions are passive (no tasks, no threads); they only act when the actor
or a control calls them, and they call ``sink`` on the calling Trio task. A session the
actor replaced (by asking :meth:`SimulatorEngine.session` again for the same device) is
stopped.

Error handling: session methods raise :class:`EngineError` for what the state machine
understands (``no_credentials``, ``not_connected``, ``network_unreachable: simulated``...), and
:class:`SimulatedCrash`, deliberately not an EngineError, when a fault was injected. Controls
raise :class:`DeviceNotFound` when the engine has no session for the device,
:class:`DeviceConflict` when the device's state does not allow the action (scan while not
pairing) and :class:`InvalidRequest` for a malformed argument (a wrong pair code).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from common.clock import now_epoch
from supervisor.engine import (
    Connected,
    Disconnected,
    Engine,
    EngineSession,
    LoggedOut,
    MessageReceived,
    MessageStatus,
    Paired,
    QrCode,
    Sink,
    TemporaryBan,
)
from supervisor.errors import DeviceConflict, DeviceNotFound, EngineError, InvalidRequest
from supervisor.jid import InvalidJid, Jid, JidKind

#: whatsmeow's pair-code alphabet: no 0/O, no I, no U (32 characters, so 5 bits each).
PAIR_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
#: Session operations a fault can be injected into; ``"any"`` means any of them.
FAULT_OPS = frozenset(
    {"start_pairing", "next_qr", "request_pair_code", "connect", "send_message", "logout"}
)
#: Receipt statuses :meth:`SimulatorEngine.ack` accepts.
ACK_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
PLATFORM = "android"


class SimulatedCrash(RuntimeError):
    """An injected fault: the engine "crashed". Not an EngineError, so the actor dies."""


class CredentialStore(Protocol):
    """Where the simulator keeps each device's credentials (an opaque blob per device)."""

    async def get(self, device_id: int) -> bytes | None: ...

    async def put(self, device_id: int, data: bytes) -> None: ...

    async def delete(self, device_id: int) -> None:
        """Remove the device's credentials; no error if there are none."""


@attrs.define(eq=False)
class MemoryCredentialStore:
    """A :class:`CredentialStore` in a dict, for tests and benchmarks."""

    data: dict[int, bytes] = attrs.field(factory=dict)

    async def get(self, device_id: int) -> bytes | None:
        return self.data.get(device_id)

    async def put(self, device_id: int, data: bytes) -> None:
        self.data[device_id] = data

    async def delete(self, device_id: int) -> None:
        self.data.pop(device_id, None)


@attrs.frozen
class SentMessage:
    """A message a session sent, as :meth:`SimulatorEngine.sent_messages` reports it."""

    message_id: str
    to_jid: str
    text: str
    timestamp: float


@attrs.frozen
class Credentials:
    """What the simulator stores for a paired device (JSON in the credential store)."""

    jid: str
    phone_number: str
    push_name: str | None
    platform: str
    noise_key: str
    identity_key: str
    adv_secret: str

    def to_bytes(self) -> bytes:
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Credentials:
        """Error handling: raises ``ValueError``/``KeyError``/``TypeError`` on a foreign blob."""
        return cls(**json.loads(data))


class SessionState(enum.Enum):
    IDLE = "idle"  # no connection (new, stopped, dropped, logged out)
    PAIRING = "pairing"  # connected without credentials, showing QR codes
    CONNECTED = "connected"  # logged in


@attrs.define(eq=False)
class SimulatorSession:
    """One device's simulated connection. Passive: it acts only when called.

    ``epoch`` increases on every :meth:`stop`; a handshake that was sleeping when it changed
    gives up with ``EngineError("stopped")`` instead of reporting success.
    """

    engine: SimulatorEngine
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

    # -- the engine interface ------------------------------------------------------------

    async def start_pairing(self) -> None:
        """Open a pairing connection; after the handshake latency a :class:`QrCode` follows.

        Error handling: ``EngineError("network_unreachable: simulated")`` (recoverable) when the
        engine is unreachable, ``EngineError("stopped")`` if :meth:`stop` came first.
        """
        self._maybe_crash("start_pairing")
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
        self._maybe_crash("next_qr")
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
        self._maybe_crash("request_pair_code")
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
        raw = self._random_bytes("pair_code", 8)
        code = "".join(PAIR_CODE_ALPHABET[b % 32] for b in raw)
        self.pair_code, self.pair_phone = code, digits
        return f"{code[:4]}-{code[4:]}"

    async def connect(self) -> None:
        """Log in with the stored credentials; returns after the handshake latency, having
        reported :class:`Connected`.

        Error handling: ``EngineError("no_credentials", recoverable=False)`` at once when none
        are stored (``"invalid_credentials"`` when they are not the simulator's); ``EngineError("temporary_ban")`` during a simulated ban;
        ``EngineError("network_unreachable: simulated")`` after the latency when unreachable;
        ``EngineError("stopped")`` if :meth:`stop` came first.
        """
        self._maybe_crash("connect")
        epoch = self.epoch
        self.state = SessionState.IDLE
        creds = await self.engine._credentials(self.device_id)
        if creds is None:
            raise EngineError("no_credentials", recoverable=False)
        ban_until = self.engine._bans.get(self.device_id)
        if ban_until is not None:
            if now_epoch() < ban_until:
                raise EngineError("temporary_ban", recoverable=True)
            del self.engine._bans[self.device_id]
        await self._handshake(epoch)
        self.state = SessionState.CONNECTED
        self.sink(Connected(push_name=creds.push_name, platform=creds.platform))

    async def send_message(self, to_jid: str, text: str) -> str:
        """Send ``text`` to ``to_jid``; returns the message id (``3EB0`` + 16 hex digits).

        No receipt is reported on its own: use :meth:`SimulatorEngine.ack`.
        Error handling: ``EngineError("not_connected")`` (recoverable) when not connected.
        """
        self._maybe_crash("send_message")
        if self.state is not SessionState.CONNECTED:
            raise EngineError("not_connected", recoverable=True)
        message_id = "3EB0" + self._random_bytes("message_id" + self.engine.instance, 8).hex().upper()
        sent = SentMessage(message_id, to_jid, text, now_epoch())
        self.engine._sent.setdefault(self.device_id, []).append(sent)
        return message_id

    async def logout(self) -> None:
        """Log out and wipe the credentials (nothing is reported: the caller asked for it)."""
        self._maybe_crash("logout")
        self._reset()
        await self.engine.credentials.delete(self.device_id)

    async def stop(self) -> None:
        """Drop the connection; a handshake under way gives up. Idempotent, never fails."""
        self._reset()

    async def delete(self) -> None:
        """Stop, wipe credentials and forget the device (faults, sent messages, bans)."""
        self._reset()
        self.engine._forget(self)
        await self.engine.credentials.delete(self.device_id)

    # -- helpers -------------------------------------------------------------------------

    def current_qr(self) -> str | None:
        """The QR string on display (``ref,noiseKey,identityKey,advSecret``), if pairing."""
        if self.state is not SessionState.PAIRING or not self.ref_draw:
            return None
        return self._qr_string()

    def _qr_string(self) -> str:
        ref = "2@" + _b64(self._derive("ref", self.ref_draw, 48))
        return ",".join([ref, *self._keys()])

    def _keys(self) -> tuple[str, str, str]:
        return (
            _b64(self._derive("noise_key", self.keys_draw, 32)),
            _b64(self._derive("identity_key", self.keys_draw, 32)),
            _b64(self._derive("adv_secret", self.keys_draw, 32)),
        )

    def _reset(self) -> None:
        self.epoch += 1
        self.state = SessionState.IDLE
        self.ref_draw = 0
        self.pair_code = self.pair_phone = None

    async def _handshake(self, epoch: int) -> None:
        await trio.sleep(self.engine.handshake_latency)
        if self.epoch != epoch:
            raise EngineError("stopped", recoverable=True)
        if not self.engine.reachable:
            raise EngineError("network_unreachable: simulated", recoverable=True)

    def _maybe_crash(self, op: str) -> None:
        faults = self.engine._faults.get(self.device_id)
        if not faults:
            return
        for key in (op, "any"):
            left = faults.get(key, 0)
            if left > 0:
                if left == 1:
                    del faults[key]
                else:
                    faults[key] = left - 1
                if not faults:
                    del self.engine._faults[self.device_id]
                raise SimulatedCrash(f"simulated crash in {op} (device {self.device_id})")

    def _draw(self) -> int:
        self.draws += 1
        return self.draws

    def _derive(self, label: str, draw: int, size: int) -> bytes:
        return _derive(self.engine.seed, self.device_id, label, draw, size)

    def _random_bytes(self, label: str, size: int) -> bytes:
        return self._derive(label, self._draw(), size)


@attrs.define(eq=False)
class SimulatorEngine:
    """The simulated WhatsApp: makes sessions and exposes the test/demo controls.

    ``handshake_latency`` (seconds of Trio time) is what start_pairing, request_pair_code and
    connect take. ``reachable`` is flipped by :meth:`set_reachable`.
    """

    credentials: CredentialStore
    seed: int = attrs.field(default=0, kw_only=True)
    handshake_latency: float = attrs.field(default=0.5, kw_only=True)
    #: Mixed into message ids: a process gives its engine a fresh one, so message ids stay
    #: unique across restarts (tests keep the default and get the same ids every run).
    instance: str = attrs.field(default="", kw_only=True)
    name: str = attrs.field(default="simulator", init=False)
    reachable: bool = attrs.field(default=True, init=False)
    _sessions: dict[int, SimulatorSession] = attrs.field(factory=dict, init=False)
    _faults: dict[int, dict[str, int]] = attrs.field(factory=dict, init=False)
    _sent: dict[int, list[SentMessage]] = attrs.field(factory=dict, init=False)
    _bans: dict[int, float] = attrs.field(factory=dict, init=False)

    # -- the engine interface ------------------------------------------------------------

    def session(self, device_id: int, session_id: str, sink: Sink) -> SimulatorSession:
        """A new session for the device. An earlier session of the same device is stopped
        and replaced; the per-device draw counter carries over, so a restarted actor gets
        fresh QR codes rather than the ones it showed before."""
        old = self._sessions.get(device_id)
        session = SimulatorSession(self, device_id, session_id, sink)
        if old is not None:
            old._reset()
            session.draws = old.draws
        self._sessions[device_id] = session
        return session

    async def aclose(self) -> None:
        """Stop every session and forget them (credentials stay in the store)."""
        for session in self._sessions.values():
            session._reset()
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
        return list(self._sent.get(device_id, ()))

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
        issued by ``request_pair_code``. Stores credentials, then reports and returns
        :class:`Paired`. The session goes idle: the actor connects next.

        Defaults: with a pair code, the number it was issued for; else a number and push name
        derived from the seed. Error handling: :class:`DeviceConflict` when not pairing (or no
        pair code was issued); :class:`InvalidRequest` for a wrong code, a malformed number or
        a number other than the pair code's.
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
            n = int.from_bytes(session._random_bytes("phone", 8), "big") % 10**7
            digits = f"1555{n:07d}"
        if push_name is None:
            push_name = f"Sim {digits[-4:]}"
        noise, identity, adv = session._keys()
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
        session._reset()
        event = Paired(
            jid=creds.jid,
            phone_number=creds.phone_number,
            push_name=creds.push_name,
            platform=creds.platform,
        )
        session.sink(event)
        return event

    async def drop(self, device_id: int) -> None:
        """The network drops: reports ``Disconnected("connection_lost", recoverable=True)``.

        Error handling: :class:`DeviceConflict` unless connected or pairing.
        """
        session = self.get_session(device_id)
        if session.state is SessionState.IDLE:
            raise DeviceConflict(f"device {device_id} has no connection to drop")
        session._reset()
        session.sink(Disconnected("connection_lost", recoverable=True))

    async def unlink(self, device_id: int) -> None:
        """The phone removes this linked device: credentials are wiped and
        ``LoggedOut("unlinked_from_phone")`` reported.

        Error handling: :class:`DeviceConflict` if the device is not linked (no credentials).
        """
        session = self.get_session(device_id)
        if await self.credentials.get(device_id) is None:
            raise DeviceConflict(f"device {device_id} is not linked")
        session._reset()
        await self.credentials.delete(device_id)
        session.sink(LoggedOut("unlinked_from_phone"))

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
        self._bans[device_id] = until
        session._reset()
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
    ) -> str:
        """Someone writes to the device: reports :class:`MessageReceived` and returns its id.

        ``sender`` is a phone number or a JID; ``chat`` defaults to the sender's JID (a
        group message needs a ``...@g.us`` chat). Error handling: :class:`DeviceConflict`
        unless connected; :class:`InvalidRequest` for a malformed sender or chat.
        """
        session = self.get_session(device_id)
        if session.state is not SessionState.CONNECTED:
            raise DeviceConflict(f"device {device_id} is not connected")
        try:
            sender_jid = Jid.parse(sender).canonical
        except InvalidJid:
            raise InvalidRequest(f"invalid sender: {sender!r}", "from") from None
        if is_group:
            if chat is None or not _is_group(chat):
                raise InvalidRequest("a group message needs a chat ending in @g.us", "chat")
        elif chat is None:
            chat = sender_jid
        message_id = "3A" + session._random_bytes("incoming_id" + self.instance, 9).hex().upper()
        session.sink(
            MessageReceived(
                message_id=message_id,
                chat=chat,
                sender=sender_jid,
                text=text,
                is_group=is_group,
                from_me=False,
                timestamp=now_epoch(),
            )
        )
        return message_id

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
        if not any(m.message_id == message_id for m in self._sent.get(device_id, ())):
            raise InvalidRequest(f"unknown message id: {message_id!r}", "messageId")
        session.sink(MessageStatus(message_id, status))

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
        faults = self._faults.setdefault(device_id, {})
        faults[op] = faults.get(op, 0) + times

    async def set_reachable(self, reachable: bool) -> None:
        """While unreachable, start_pairing, request_pair_code and connect fail after the
        latency with ``EngineError("network_unreachable: simulated", recoverable=True)``.
        Established connections are not dropped (use :meth:`drop`)."""
        self.reachable = reachable

    # -- internals -----------------------------------------------------------------------

    async def _credentials(self, device_id: int) -> Credentials | None:
        data = await self.credentials.get(device_id)
        if data is None:
            return None
        try:
            return Credentials.from_bytes(data)
        except (ValueError, KeyError, TypeError):
            raise EngineError("invalid_credentials", recoverable=False) from None

    def _forget(self, session: SimulatorSession) -> None:
        if self._sessions.get(session.device_id) is session:
            del self._sessions[session.device_id]
        self._faults.pop(session.device_id, None)
        self._sent.pop(session.device_id, None)
        self._bans.pop(session.device_id, None)


def _derive(seed: int, device_id: int, label: str, draw: int, size: int) -> bytes:
    # A hash as a counter-mode PRF: the same (seed, device, label, draw) always gives the
    # same bytes, independent of every other device.
    data = f"wasup-sim:{seed}:{device_id}:{label}:{draw}".encode()
    return hashlib.blake2b(data, digest_size=size).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
