"""The simulated WhatsApp server's memory: what it keeps per device for the simulator engine.

Credentials (through a :class:`CredentialStore`), the offline queue
(:mod:`supervisor.engines.simulator_queue`), temporary bans, the messages each device
sent and the read receipts it sent, the files of incoming media messages (:class:`MediaStore`, in memory and bounded),
the polls it carried (:mod:`.simulator_polls`), injected faults, and whether the server is reachable. Sessions
(:mod:`supervisor.engines.simulator_session`) act on it; the engine's controls
(:mod:`supervisor.engines.simulator`) change it the way the phone or WhatsApp would.

Determinism: every value that looks random (QR refs and keys, pair codes, message ids,
default phone numbers) is derived (:meth:`SimulatedServer.derive`) from ``(seed, device_id,
label, n)``, where ``n`` counts the draws that device has made. So a device's values depend only on
the seed and on what happened to that device, never on how many other devices exist or in
which order they were created. The derivation is a keyed BLAKE2b rather than a
``random.Random`` per device because a Mersenne Twister carries 2.5 KB of state, and the
benchmark runs 10,000 sessions.

Error handling: :meth:`SimulatedServer.load_credentials` raises
``EngineError("invalid_credentials")`` for a blob that is not the simulator's;
:meth:`SimulatedServer.take_fault` raises :class:`SimulatedCrash`, deliberately not an
EngineError, when a fault was injected.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from typing import Protocol

import attrs

from supervisor.errors import EngineError
from supervisor.message_content import Content, text_of
from supervisor.outgoing import Outgoing

from .simulator_account import AccountWorld
from .simulator_contacts import ContactWorld
from .simulator_groups import GroupWorld
from .simulator_polls import SimulatedPolls
from .simulator_queue import OfflineQueue

#: Session operations a fault can be injected into; ``"any"`` means any of them.
FAULT_OPS = frozenset(
    {"start_pairing", "next_qr", "request_pair_code", "connect", "send", "mark_read", "logout",
     "download"}
)


class SimulatedCrash(RuntimeError):
    """An injected fault: the engine "crashed". Not an EngineError, so the actor dies."""


class CredentialStore(Protocol):
    """Where the simulator keeps each device's credentials (an opaque blob per device)."""

    async def get(self, device_id: int) -> bytes | None: ...

    async def has(self, device_id: int) -> bool:
        """Whether the device has credentials (read-only: leaves any cache as it is)."""
        ...

    async def put(self, device_id: int, data: bytes) -> None: ...

    async def delete(self, device_id: int) -> None:
        """Remove the device's credentials; no error if there are none."""


@attrs.define(eq=False)
class MemoryCredentialStore:
    """A :class:`CredentialStore` in a dict, for tests and benchmarks."""

    data: dict[int, bytes] = attrs.field(factory=dict)

    async def get(self, device_id: int) -> bytes | None:
        return self.data.get(device_id)

    async def has(self, device_id: int) -> bool:
        return device_id in self.data

    async def put(self, device_id: int, data: bytes) -> None:
        self.data[device_id] = data

    async def delete(self, device_id: int) -> None:
        self.data.pop(device_id, None)


@attrs.frozen
class SentMessage:
    """A message a session sent, as :meth:`SimulatorEngine.sent_messages` reports it:
    ``message`` as the engine was given it, ``media`` its file byte for byte (None for a kind
    without one), ``text`` its text or caption."""

    message_id: str
    to_jid: str
    message: Outgoing
    timestamp: float
    media: bytes | None = None

    @property
    def text(self) -> str:
        return text_of(self.message.content)

    @property
    def content(self) -> Content:
        return self.message.content


@attrs.frozen
class ReadReceipt:
    """Read receipts a session sent, as :meth:`SimulatorEngine.reads` reports them: the chat,
    and each message's WhatsApp id with its sender (None in a one-to-one chat)."""

    chat: str
    messages: tuple[tuple[str, str | None], ...]
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


#: How many bytes of media files the simulated WhatsApp keeps, all devices together.
MEDIA_CAP = 64 * 1024 * 1024


@attrs.define(eq=False)
class MediaStore:
    """The files of incoming media messages, by ``(device_id, message_id)``, at most ``cap``
    bytes in all: the least recently used go first (as WhatsApp's media servers expire
    files, a download after that finds nothing). A file larger than ``cap`` is not kept."""

    cap: int = MEDIA_CAP
    _files: OrderedDict[tuple[int, str], bytes] = attrs.field(factory=OrderedDict)
    _size: int = 0

    def put(self, key: tuple[int, str], data: bytes) -> None:
        self.discard(key)
        if len(data) > self.cap:
            return
        self._files[key] = data
        self._size += len(data)
        while self._size > self.cap:
            _, evicted = self._files.popitem(last=False)
            self._size -= len(evicted)

    def get(self, key: tuple[int, str]) -> bytes | None:
        data = self._files.get(key)
        if data is not None:
            self._files.move_to_end(key)
        return data

    def discard(self, key: tuple[int, str]) -> None:
        old = self._files.pop(key, None)
        if old is not None:
            self._size -= len(old)

    def forget(self, device_id: int) -> None:
        """Drop every file of the device."""
        for key in [k for k in self._files if k[0] == device_id]:
            self.discard(key)

    @property
    def size(self) -> int:
        """Bytes kept."""
        return self._size


@attrs.define(eq=False)
class SimulatedServer:
    """What the simulated WhatsApp remembers, shared by the engine and its sessions.

    ``handshake_latency`` (seconds of Trio time) is what start_pairing, request_pair_code and
    connect take; ``instance`` is mixed into message ids (see ``SimulatorEngine``).
    """

    credentials: CredentialStore
    queue: OfflineQueue
    seed: int
    handshake_latency: float
    instance: str
    reachable: bool = True
    faults: dict[int, dict[str, int]] = attrs.field(factory=dict)
    sent: dict[int, list[SentMessage]] = attrs.field(factory=dict)
    reads: dict[int, list[ReadReceipt]] = attrs.field(factory=dict)
    bans: dict[int, float] = attrs.field(factory=dict)
    media: MediaStore = attrs.field(factory=MediaStore)
    #: Downloads of media files asked of the simulated WhatsApp, per device.
    downloads: dict[int, int] = attrs.field(factory=dict)
    #: Seconds (Trio time) each download takes.
    download_latency: float = 0.0
    #: Who is on WhatsApp, and each device's contacts (:mod:`.simulator_contacts`).
    contacts: ContactWorld = attrs.field(
        default=attrs.Factory(lambda s: ContactWorld(s.derive), takes_self=True))
    #: Every device's groups (:mod:`supervisor.engines.simulator_groups`).
    groups: GroupWorld = attrs.field(
        default=attrs.Factory(lambda s: GroupWorld(s.derive), takes_self=True))
    #: Every device's presence, profile and calls (:mod:`.simulator_account`).
    account: AccountWorld = attrs.field(
        default=attrs.Factory(lambda s: AccountWorld(s.derive), takes_self=True))
    #: The polls each device sent or received (:mod:`.simulator_polls`).
    polls: SimulatedPolls = attrs.field(factory=SimulatedPolls)

    def keep_media(self, device_id: int, message_id: str, data: bytes) -> None:
        """Keep the file of a media message the device sent or received, under its message
        id (WhatsApp's): a download of it finds it while it is kept."""
        self.media.put((device_id, message_id), data)

    async def load_credentials(self, device_id: int) -> Credentials | None:
        """The device's stored credentials, None if it has none.

        Error handling: ``EngineError("invalid_credentials", recoverable=False)`` for a blob
        that is not the simulator's.
        """
        data = await self.credentials.get(device_id)
        if data is None:
            return None
        try:
            return Credentials.from_bytes(data)
        except (ValueError, KeyError, TypeError):
            raise EngineError("invalid_credentials", recoverable=False) from None

    def add_fault(self, device_id: int, op: str, times: int) -> None:
        """Make the next ``times`` calls of ``op`` (or of any operation: ``"any"``) crash."""
        faults = self.faults.setdefault(device_id, {})
        faults[op] = faults.get(op, 0) + times

    def take_fault(self, device_id: int, op: str) -> None:
        """Spend one injected fault for ``op`` (or ``"any"``), raising :class:`SimulatedCrash`;
        nothing when none is left."""
        faults = self.faults.get(device_id)
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
                    del self.faults[device_id]
                raise SimulatedCrash(f"simulated crash in {op} (device {device_id})")

    def forget(self, device_id: int) -> None:
        """Forget the device's faults, sent messages, read receipts, bans, media files and
        polls (credentials are the caller's to delete)."""
        self.media.forget(device_id)
        self.polls.forget(device_id)
        self.contacts.forget(device_id)
        self.groups.forget(device_id)
        self.account.forget(device_id)
        self.downloads.pop(device_id, None)
        self.faults.pop(device_id, None)
        self.sent.pop(device_id, None)
        self.reads.pop(device_id, None)
        self.bans.pop(device_id, None)

    def derive(self, device_id: int, label: str, draw: int, size: int) -> bytes:
        """``size`` bytes that depend only on (seed, device, label, draw)."""
        # A hash as a counter-mode PRF: the same inputs always give the same bytes,
        # independent of every other device.
        data = f"wasup-sim:{self.seed}:{device_id}:{label}:{draw}".encode()
        return hashlib.blake2b(data, digest_size=size).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
