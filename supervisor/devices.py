"""The Devices facade: what the API calls to create, find, command and watch devices.

Usage::

    async with open_supervisor(Config(engine="simulator")) as devices:
        row, api_key = await devices.create_device("user123", "Business Account 1")
        qr = await devices.wait_qr(row.id, within=2.0)
        row = await devices.logout(row.session_id)

Each method resolves the device reference once (a numeric id in ASCII digits, or a sessionId),
then reads the directory or sends the device's actor a typed command and waits for its reply.
Engine reasons become domain errors here, so routes map exceptions only through
``api.errors``.

Error handling: every method that takes a reference raises :class:`DeviceNotFound` for one
that names no device. A command raises :class:`Busy` when the device's command inbox is full,
:class:`Restarting` when its actor crashed while handling it, and :class:`Unresponsive` when
the actor did not answer within ``call_timeout``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
import trio

import storage
from common.clock import now_iso
from storage.models import DeviceRow

from . import commands as cmd
from . import engine as eng
from . import state as sm
from .children import Child, DeviceSupervisor
from .cluster.node import ClusterNode
from .config import Config
from .context import OutboxSignal
from .directory import DeviceDirectory, hash_key, session_id_for
from .errors import (
    DeviceConflict,
    DeviceNotFound,
    EngineError,
    EngineRefused,
    InvalidRequest,
    Unresponsive,
)
from .events import EventBus
from .media import MediaStore
from .media_files import MediaFile, MediaFiles
from .message_content import Text
from .outgoing import Outgoing
from .qr import QrAttempt
from .view import DeviceShown

log = logging.getLogger("wasup.devices")

R = TypeVar("R")

ACTIVE_STATUSES = frozenset(s.value for s in sm.ACTIVE)

#: Engine reasons for a pair-code request made while the device cannot take one.
_NOT_PAIRING = frozenset({"not_pairing", "pairing_not_ready"})


@attrs.frozen
class DevicesStatistics:
    """``Devices.statistics()``: devices per status, crash restarts, logins in flight."""

    devices: int
    by_status: Mapping[str, int]
    crashes: int
    logins_in_flight: int


def _qr_settled(shown: DeviceShown) -> bool:
    return shown.live and (shown.qr is not None or shown.status is not sm.Status.PENDING)


@attrs.define(eq=False)
class Devices:
    """The facade over the directory and the supervised actors; see the module docstring."""

    config: Config
    db: storage.Store
    engine: eng.Engine
    bus: EventBus
    directory: DeviceDirectory
    supervisor: DeviceSupervisor
    login_limiter: trio.CapacityLimiter
    outbox: OutboxSignal
    media: MediaStore
    #: This node in a cluster (None: a single node; see supervisor.cluster).
    cluster: ClusterNode | None = None
    media_files: MediaFiles = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.media_files = MediaFiles(self.db, self.media, self._call, self.config.media)

    @property
    def outbox_listeners(self) -> list[Callable[[], None]]:
        """Functions called after events with webhook outbox rows were published."""
        return self.outbox.listeners

    @property
    def rows(self) -> Mapping[int, DeviceRow]:
        """Every device's current row by id (read-only)."""
        return self.directory.mapping()

    @property
    def crashes(self) -> int:
        """Actor crashes since start."""
        return self.supervisor.crashes

    # -- helpers -----------------------------------------------------------------------------

    def _child(self, ref: str | int) -> Child:
        device_id = self.directory.resolve(ref)
        child = self.supervisor.child(device_id)
        if child is None:
            raise DeviceNotFound(ref)
        return child

    async def _call(
        self, ref: str | int, command: cmd.Command[R], within: float | None = None
    ) -> R:
        """Send ``command`` and wait for the reply, ``within`` seconds (default: call_timeout)."""
        child = self._child(ref)
        call: cmd.Call[R] = cmd.Call(command, cmd.Reply())
        child.inbox.put_command(call)
        timeout = self.config.call_timeout if within is None else within
        with trio.move_on_after(timeout):
            return await call.reply.wait()
        outage = self.db.outage
        if outage is not None:  # the actor waits for the database: say so (503), not 504
            raise storage.StorageUnavailable(outage.reason)
        raise Unresponsive(f"device {ref} did not answer within {timeout:g} s")

    # -- the facade --------------------------------------------------------------------------

    def resolve(self, ref: str | int) -> int:
        """The numeric id for a sessionId or numeric id.

        Raises: DeviceNotFound.
        """
        return self.directory.resolve(ref)

    def get(self, ref: str | int) -> DeviceRow:
        """The device's current row.

        Raises: DeviceNotFound.
        """
        row = self.directory.get(self.directory.resolve(ref))
        if row is None:
            raise DeviceNotFound(ref)
        return row

    async def find(self, ref: str | int) -> DeviceRow:
        """The device's current row, as :meth:`get` answers it; in a cluster, a device the
        directory does not know yet (created on another node a moment ago, its announcement
        still on the way) is read from the database, one indexed read, and entered in the
        directory. A single node answers from the directory alone.

        Raises: DeviceNotFound; StorageUnavailable (in a cluster).
        """
        try:
            return self.get(ref)
        except DeviceNotFound:
            wanted = self.directory.reference(ref)
            if self.cluster is None or wanted is None:
                raise
        row = await self._read_missing(lambda r: r.devices.get(wanted))
        if row is None:
            raise DeviceNotFound(ref)
        return row

    async def _read_missing(
        self, read: Callable[[storage.Repositories], DeviceRow | None]
    ) -> DeviceRow | None:
        """A device the directory missed, read from the database and learnt by it."""
        drops = self.directory.drops
        row = await self.db.run(read)
        return None if row is None else self.directory.learned(row, drops)

    async def create_device(
        self,
        user_id: str,
        alias: str,
        business_type: str | None = None,
        phone_number: str | None = None,
        description: str | None = None,
    ) -> tuple[DeviceRow, str]:
        """Store a new device and start its actor (pairing begins); returns it and its API key.
        In a cluster the actor starts here if this node has room (else another node claims
        the device at its next scan).

        Raises: DeviceConflict (the sessionId exists).
        """
        session_id = session_id_for(user_id, alias)
        if self.directory.session_taken(session_id):
            raise DeviceConflict(f"device {session_id} already exists")
        api_key = "dev_" + secrets.token_hex(16)
        now = now_iso()

        def insert(r: storage.Repositories) -> DeviceRow:
            return r.devices.insert(
                user_id=user_id, alias=alias, session_id=session_id,
                business_type=business_type, phone_number=phone_number,
                description=description, api_key_hash=hash_key(api_key),
                status=sm.Status.PENDING.value, now=now,
            )

        try:
            if self.cluster is None:
                row = await self.db.run(insert)
            else:
                row, here = await self.cluster.create(insert)
        except storage.Conflict:
            raise DeviceConflict(f"device {session_id} already exists") from None
        self.directory.put(row)
        if self.cluster is None:
            await self.supervisor.start_child(row.id, sm.Status(row.status))
        elif not here:
            log.info("device %s: no room on this node; another node takes it", session_id)
        log.info("device %s created", session_id)
        return row, api_key

    async def wait_qr(self, ref: str | int, within: float) -> QrAttempt | None:
        """The QR code on show, waiting up to ``within`` seconds for the first one; None if
        there is none by then (or the device left ``pending``).

        Raises: DeviceNotFound.
        """
        view = self._child(ref).view
        if _qr_settled(view.value):  # the common case needs no cancel scope
            await trio.lowlevel.checkpoint()
            return view.value.qr
        with trio.move_on_after(within):
            return (await view.wait_value(_qr_settled)).qr
        return None

    def current_qr(self, ref: str | int) -> QrAttempt:
        """The QR code on show.

        Raises: DeviceNotFound; DeviceConflict (not pairing, or no QR code yet).
        """
        child = self._child(ref)
        shown = child.view.value
        if not shown.live or shown.status is not sm.Status.PENDING:
            raise DeviceConflict(f"device is {self.get(child.id).status}, not pairing: no QR code")
        if shown.qr is None:
            raise DeviceConflict("the QR code is not ready yet, try again shortly")
        return shown.qr

    async def update_device(self, ref: str | int, **fields: Any) -> DeviceRow:
        """Set descriptive fields of the device.

        Raises: DeviceNotFound; DeviceConflict (the alias is taken); Busy, Restarting,
        Unresponsive.
        """
        row = self.get(ref)
        if "alias" in fields and fields["alias"] != row.alias:
            new_session = session_id_for(row.user_id, fields["alias"])
            if new_session != row.session_id and self.directory.session_taken(new_session):
                raise DeviceConflict(f"alias maps to existing device {new_session}")
        return await self._call(row.id, cmd.UpdateDevice(fields))

    async def delete_device(self, ref: str | int) -> None:
        """Delete the device, its session, credentials and rows.

        Raises: DeviceNotFound; Busy, Restarting, Unresponsive.
        """
        await self._call(ref, cmd.Delete())

    async def login(self, ref: str | int) -> tuple[DeviceRow, QrAttempt | None]:
        """Start a login; returns the row and the QR code on show.

        Raises: DeviceNotFound; DeviceConflict (temporarily banned); Busy, Restarting,
        Unresponsive.
        """
        return await self._call(ref, cmd.Login())

    async def logout(self, ref: str | int) -> DeviceRow:
        """Log out at WhatsApp and wipe the credentials.

        Raises: DeviceNotFound; DeviceConflict (not logged in); Busy, Restarting, Unresponsive.
        """
        return await self._call(ref, cmd.Logout())

    async def cancel(self, ref: str | int) -> DeviceRow:
        """Stop the device's session.

        Raises: DeviceNotFound; DeviceConflict (no session); Busy, Restarting, Unresponsive.
        """
        return await self._call(ref, cmd.Cancel())

    async def list_devices(
        self, user_id: str | None, status: str | None, page: int, limit: int
    ) -> tuple[list[DeviceRow], int]:
        """One page of the devices (of ``user_id``, in ``status``) by id, and the total.

        Raises: nothing.
        """
        rows = [
            r for r in self.directory.rows()
            if (user_id is None or r.user_id == user_id) and (status is None or r.status == status)
        ]
        rows.sort(key=lambda r: r.id)
        start = (page - 1) * limit
        return rows[start : start + limit], len(rows)

    def sessions(self) -> list[DeviceRow]:
        """The devices with a live or wanted session, by id.

        Raises: nothing.
        """
        return sorted(
            (r for r in self.directory.rows() if r.status in ACTIVE_STATUSES), key=lambda r: r.id
        )

    async def get_settings(self, ref: str | int, kind: str) -> dict[str, Any] | None:
        """The device's settings document of ``kind``, or None.

        Raises: DeviceNotFound.
        """
        device_id = self.resolve(ref)
        result: dict[str, Any] | None = await self.db.run(
            lambda r: r.settings.get(device_id, kind)
        )
        return result

    async def put_settings(self, ref: str | int, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        """Store the device's settings document of ``kind``.

        Raises: DeviceNotFound; Busy, Restarting, Unresponsive.
        """
        return await self._call(ref, cmd.PutSettings(kind, value))

    async def device_for_key(self, api_key: str) -> DeviceRow | None:
        """The device whose API key this is, or None; compares the hashes in constant time. In a
        cluster, a key the directory does not know is looked up in the database (one indexed
        read, as :meth:`find`).

        Raises: StorageUnavailable (in a cluster).
        """
        digest = hash_key(api_key)
        row = self.directory.by_key_hash(digest)
        if row is None and self.cluster is not None:  # a device another node just created?
            row = await self._read_missing(lambda r: r.devices.get_by_key_hash(digest))
        if row is None or not hmac.compare_digest(row.api_key_hash, digest):
            return None
        return row

    async def request_pair_code(self, ref: str | int, phone_number: str) -> tuple[str, str]:
        """A code to pair by phone number, and when pairing ends (ISO).

        Raises: DeviceNotFound; DeviceConflict (not pairing, or not ready to pair);
        InvalidRequest (the engine refused the number); EngineRefused; Busy, Restarting,
        Unresponsive.
        """
        try:
            return await self._call(ref, cmd.RequestPairCode(phone_number))
        except EngineError as exc:
            if exc.reason in _NOT_PAIRING:
                raise DeviceConflict(
                    "device is not ready to pair: wait until it shows a qr code, then ask again"
                ) from exc
            if exc.reason == "invalid_phone_number":
                raise InvalidRequest(f"phoneNumber: {exc}", field="phoneNumber") from exc
            raise EngineRefused(exc.reason, exc.recoverable, str(exc)) from exc

    async def send(
        self,
        ref: str | int,
        to: str,
        message: Outgoing,
        origin: str = "api",
        *,
        ttl: float | None = None,
        idempotency_key: str | None = None,
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        """Send ``message`` (any kind) through the device's outbound queue; returns
        ``messageId``, ``to``, ``status`` (``sent`` or ``pending``) and ``timestamp``.
        ``reply_to``: the id of one of the device's messages to quote.

        Raises: DeviceNotFound; DeviceConflict (the device does not take sends); QueueFull;
        InvalidRequest (``field="replyTo"``: the device has no such message); Busy,
        Restarting, Unresponsive.
        """
        sent = await self._call(
            ref, cmd.Send(to, message, origin, ttl, idempotency_key, reply_to)
        )
        return {"messageId": sent.message_id, "to": sent.to, "status": sent.status,
                "timestamp": sent.timestamp}

    async def send_message(
        self,
        ref: str | int,
        to: str,
        text: str,
        origin: str = "api",
        *,
        ttl: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send a text message: :meth:`send` of a :class:`~supervisor.message_content.Text`.

        Raises: as :meth:`send`.
        """
        return await self.send(ref, to, Outgoing(Text(text)), origin, ttl=ttl,
                               idempotency_key=idempotency_key)

    async def ask(
        self,
        ref: str | int,
        op: Callable[[eng.EngineSession], Awaitable[R]],
        what: str,
        within: float | None = None,
    ) -> R:
        """Run ``op`` on the device's connected engine session (:mod:`supervisor.asks`) and
        return its result; ``what`` names it in logs, ``within`` bounds the wait (default:
        call_timeout).

        Raises: DeviceNotFound; DeviceConflict (the device is not connected); WhatsAppRefused,
        WhatsAppForbidden (WhatsApp's refusal); EngineRefused; InvalidRequest (the engine found
        an argument malformed); Busy, Restarting, Unresponsive.
        """
        return await self._call(ref, cmd.Ask(op, what), within)

    async def mark_read(self, ref: str | int, chat: str) -> int:
        """Mark the chat (a canonical JID) read: read receipts for its incoming messages after
        its read mark, then the mark; how many messages were marked.

        Raises: DeviceNotFound; DeviceConflict (the device is not connected); EngineRefused
        (WhatsApp refused the receipts); Busy, Restarting, Unresponsive.
        """
        try:
            return await self._call(ref, cmd.MarkRead(chat))
        except EngineError as exc:
            if exc.recoverable:
                raise DeviceConflict(f"device is not connected: {exc.reason}") from exc
            raise EngineRefused(exc.reason, exc.recoverable, str(exc)) from exc

    def outbound_counts(self, ref: str | int) -> tuple[int, int]:
        """``(pending, stuck)``: the device's sends not sent yet, and those of them that raised
        ``message_stuck``, as its actor shows them (no I/O).

        Raises: DeviceNotFound.
        """
        shown = self._child(ref).view.value
        return shown.pending_sends, shown.stuck_sends

    async def media_file(self, ref: str | int, message_id: str) -> MediaFile:
        """The media file of the device's message, open for reading: from the media store, or
        downloaded by the device (:mod:`supervisor.media_files`).

        Raises: DeviceNotFound; NotFound (no such message, or no media); DeviceConflict (not
        kept and not connected); MediaExpired; EngineError; Busy, Restarting, Unresponsive.
        """
        return await self.media_files.get(self.resolve(ref), message_id)

    async def whatsapp_id(self, device_id: int, message_id: str) -> str:
        """The id WhatsApp knows a sent message by: the WhatsApp id of wasup's ``message_id``
        once it was sent, else ``message_id`` as given.

        Raises: nothing.
        """

        def job(r: storage.Repositories) -> str:
            sent = r.sends.get(device_id, message_id)
            return message_id if sent is None or sent.wa_id is None else sent.wa_id

        result: str = await self.db.run(job)
        return result

    async def recent_messages(self, device_id: int, chat: str, limit: int = 20) -> list[Any]:
        """The last ``limit`` messages of a chat, oldest first.

        Raises: nothing.
        """
        result: list[Any] = await self.db.run(
            lambda r: r.messages.recent(device_id, chat, limit)
        )
        return result

    async def history(self, ref: str | int) -> list[Any]:
        """The device's status history.

        Raises: DeviceNotFound.
        """
        device_id = self.resolve(ref)
        result: list[Any] = await self.db.run(lambda r: r.history.of(device_id))
        return result

    def statistics(self) -> DevicesStatistics:
        """Devices per status, crash restarts and logins in flight.

        Raises: nothing.
        """
        counts: dict[str, int] = {}
        for r in self.directory.rows():
            counts[r.status] = counts.get(r.status, 0) + 1
        return DevicesStatistics(
            devices=len(self.directory),
            by_status=MappingProxyType(counts),
            crashes=self.supervisor.crashes,
            logins_in_flight=self.login_limiter.borrowed_tokens,
        )
