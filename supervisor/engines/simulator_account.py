"""The simulated WhatsApp's accounts: presence, profiles and calls.

:class:`AccountWorld` (held by :class:`~supervisor.engines.simulator_server.SimulatedServer`)
keeps, per device: its profile (push name, about, picture), the presences it sent, the contacts
it subscribed to, the calls offered to it and the calls it rejected. :class:`SimulatorAccount`
is a session's :class:`~supervisor.engine_account.AccountApi` over it.

The controls play the device's contacts (:meth:`AccountWorld.contact_presence`,
:meth:`AccountWorld.incoming_call`). As WhatsApp does, a contact's presence reaches the device
only when it subscribed to that contact and showed itself ``available`` (WhatsApp sends
presences to online clients only), both in the current connection (a reconnect forgets them,
as WhatsApp does); it comes as a :class:`~supervisor.engine.Notice`. Call ids
derive from the server's seed, so a run is repeatable.

Error handling: the account methods raise ``EngineError("not_connected")`` (recoverable) when
the session is not connected; the controls raise :class:`DeviceConflict` when the device is not
connected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import attrs

from common.clock import iso, now_epoch
from supervisor.engine import Notice, Sink
from supervisor.engine_account import ChatState, PresenceState, Profile
from supervisor.errors import DeviceConflict, EngineError
from supervisor.payloads import CallReceived, PresenceChanged

#: Where the simulated WhatsApp serves profile pictures (``<base><device>/<picture id>.jpg``).
PICTURE_BASE = "https://pps.whatsapp.net/sim/"

Derive = Callable[[int, str, int, int], bytes]


class SimCredentials(Protocol):
    """What the account reads of a device's stored credentials."""

    @property
    def jid(self) -> str: ...

    @property
    def push_name(self) -> str | None: ...


class SimServer(Protocol):
    """What the account uses of the simulated server."""

    @property
    def account(self) -> AccountWorld: ...

    async def load_credentials(self, device_id: int) -> SimCredentials | None: ...


class SimulatorSession(Protocol):
    """What the account uses of a simulated session
    (:class:`~supervisor.engines.simulator_session.SimulatorSession`)."""

    @property
    def device_id(self) -> int: ...

    @property
    def epoch(self) -> int: ...

    @property
    def sink(self) -> Sink: ...

    @property
    def server(self) -> SimServer: ...

    def online(self, epoch: int) -> bool: ...


@attrs.frozen
class SentPresence:
    """A presence the device sent: its own (``chat`` None) or in a chat."""

    state: str
    chat: str | None
    at: float


@attrs.frozen
class Offer:
    """A call offered to the device."""

    call_id: str
    caller: str
    video: bool
    is_group: bool


@attrs.frozen
class Rejection:
    """A call the device rejected."""

    call_id: str
    caller: str
    at: float


@attrs.define
class AccountState:
    """One device's account as the simulated WhatsApp keeps it (``name`` None: the push name
    given when the phone scanned)."""

    name: str | None = None
    about: str | None = None
    picture: bytes | None = None
    picture_id: str | None = None
    #: The connection (session epoch) in which the device showed itself available, if any.
    available_in: int | None = None
    presences: list[SentPresence] = attrs.field(factory=list)
    #: The contacts subscribed to, with the connection (session epoch) each subscription is of.
    subscriptions: dict[str, int] = attrs.field(factory=dict)
    offers: dict[str, Offer] = attrs.field(factory=dict)
    rejections: list[Rejection] = attrs.field(factory=list)


@attrs.define
class AccountWorld:
    """Every device's account (see the module docstring); ``derive`` is the server's."""

    derive: Derive
    devices: dict[int, AccountState] = attrs.field(factory=dict)
    draws: int = 0

    def of(self, device_id: int) -> AccountState:
        return self.devices.setdefault(device_id, AccountState())

    def forget(self, device_id: int) -> None:
        self.devices.pop(device_id, None)

    def _id(self, device_id: int, label: str, size: int) -> str:
        self.draws += 1
        return self.derive(device_id, label, self.draws, size).hex().upper()

    # -- controls: the device's contacts -------------------------------------------------

    def contact_presence(self, session: SimulatorSession, contact: str, state: str,
                         chat: str | None = None, last_seen: float | None = None) -> bool:
        """``contact`` (a canonical JID) comes online, goes offline (seen ``last_seen``, epoch
        seconds), or types, records or pauses in ``chat`` (default: the chat with the device).
        Returns whether the device was told (subscribed, and itself available).

        Error handling: :class:`DeviceConflict` when the device is not connected.
        """
        _connected(session)
        account = self.of(session.device_id)
        epoch = session.epoch  # both last as long as the connection they were made in
        if account.subscriptions.get(contact) != epoch or account.available_in != epoch:
            return False
        if state in ("available", "unavailable"):
            seen = iso(last_seen) if last_seen is not None and state == "unavailable" else None
            payload = PresenceChanged(contact, state, last_seen=seen)
        else:
            payload = PresenceChanged(contact, state, chat=chat or contact)
        session.sink(Notice(payload))
        return True

    def incoming_call(self, session: SimulatorSession, caller: str, video: bool = False,
                      is_group: bool = False) -> str:
        """``caller`` (a canonical JID) calls the device; returns the call's id. The device is
        told (a :class:`CallReceived` notice) before this returns.

        Error handling: :class:`DeviceConflict` when the device is not connected.
        """
        _connected(session)
        call_id = self._id(session.device_id, "call_id", 8)
        self.of(session.device_id).offers[call_id] = Offer(call_id, caller, video, is_group)
        session.sink(Notice(CallReceived(call_id, caller, video=video, is_group=is_group)))
        return call_id


def _connected(session: SimulatorSession) -> None:
    if not session.online(session.epoch):
        raise DeviceConflict(f"device {session.device_id} is not connected")


@attrs.define(eq=False)
class SimulatorAccount:
    """A simulated session's :class:`~supervisor.engine_account.AccountApi`."""

    session: SimulatorSession

    @property
    def _account(self) -> AccountState:
        if not self.session.online(self.session.epoch):
            raise EngineError("not_connected", recoverable=True)
        return self.session.server.account.of(self.session.device_id)

    async def set_presence(self, state: PresenceState) -> None:
        account = self._account
        account.available_in = self.session.epoch if state == "available" else None
        account.presences.append(SentPresence(state, None, now_epoch()))

    async def set_chat_presence(self, chat: str, state: ChatState) -> None:
        self._account.presences.append(SentPresence(state, chat, now_epoch()))

    async def subscribe_presence(self, contact: str) -> None:
        self._account.subscriptions[contact] = self.session.epoch

    async def profile(self) -> Profile:
        account = self._account
        creds = await self.session.server.load_credentials(self.session.device_id)
        if creds is None:
            raise EngineError("not_connected", recoverable=True)
        name = account.name if account.name is not None else creds.push_name
        url = None
        if account.picture_id is not None:
            url = f"{PICTURE_BASE}{self.session.device_id}/{account.picture_id}.jpg"
        return Profile(jid=creds.jid, name=name or None, about=account.about,
                       picture_url=url, picture_id=account.picture_id)

    async def set_name(self, name: str) -> None:
        self._account.name = name

    async def set_about(self, about: str) -> None:
        self._account.about = about

    async def set_picture(self, jpeg: bytes) -> str:
        account = self._account
        account.picture = jpeg
        account.picture_id = str(int.from_bytes(hashlib.sha256(jpeg).digest()[:6], "big"))
        return account.picture_id

    async def reject_call(self, call_id: str, caller: str) -> None:
        self._account.rejections.append(Rejection(call_id, caller, now_epoch()))
