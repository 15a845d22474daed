"""The DeviceSupervisor: one supervised actor per device, and the facade the API calls.

Usage::

    async with open_supervisor(Config(engine="simulator")) as sup:
        row, api_key = await sup.create_device("user123", "Business Account 1")
        ...

The supervisor starts an actor for every stored device when it opens (boot restore), one for
each device created later, and restarts an actor that crashes, from the device's persisted
state, after a backoff. A device that crashes more than its child spec allows within the
period is parked as ``disconnected`` with ``statusReason: "crash_loop"``; every other device
goes on untouched. Login handshakes share one ``trio.CapacityLimiter(max_concurrent_logins)``.

Error handling: calls into an actor raise :class:`MailboxFull` when its mailbox is full (503)
and :class:`ActorTimeout` when it does not answer within ``call_timeout`` (504).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import logging
import math
import random
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

import storage
from common.clock import now_iso
from storage.models import DeviceRow

from . import engine as eng
from . import state as sm
from .actor import Call, DeviceActor, Message, Reply, Timeout, state_from_row
from .config import Config
from .errors import ActorTimeout, DeviceConflict, DeviceNotFound, MailboxFull
from .events import EventBus
from .policy import Backoff, ChildSpec, RestartIntensity, RestartType
from .qr import QrAttempt

log = logging.getLogger("wasup.supervisor")

ACTIVE_STATUSES = frozenset(s.value for s in sm.ACTIVE)


def slugify(alias: str) -> str:
    """``"Business Account 1"`` -> ``"business-account-1"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", alias.lower()).strip("-")
    return slug or "device"


def session_id_for(user_id: str, alias: str) -> str:
    return f"user_{user_id}_device_{slugify(alias)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@attrs.define(eq=False)
class DbCredentialStore:
    """Engine credentials in the ``credentials`` table (used by the simulator engine).

    Credentials just written, or preloaded at boot, are kept in memory until they are read
    once: the connect that follows a scan or a restore then needs no query of its own, and
    nothing stays in memory after it.
    """

    db: storage.Store
    _fresh: dict[int, bytes] = attrs.field(factory=dict)

    async def preload(self) -> None:
        self._fresh.update(await self.db.run(lambda r: r.credentials.all()))

    async def get(self, device_id: int) -> bytes | None:
        data = self._fresh.pop(device_id, None)
        if data is not None:
            return data
        return await self.db.run(lambda r: r.credentials.get(device_id))

    async def put(self, device_id: int, data: bytes) -> None:
        await self.db.run(lambda r: r.credentials.put(device_id, data))
        self._fresh[device_id] = data

    async def delete(self, device_id: int) -> None:
        self._fresh.pop(device_id, None)
        await self.db.run(lambda r: r.credentials.delete(device_id))


def make_engine(config: Config, db: storage.Store) -> eng.Engine:
    if config.engine == "simulator":
        from .engines.simulator import SimulatorEngine

        return SimulatorEngine(
            DbCredentialStore(db), seed=config.simulator_seed,
            handshake_latency=config.simulator_latency, instance=secrets.token_hex(4),
        )
    if config.engine == "whatsmeow":
        from .engines.whatsmeow import WhatsmeowEngine

        return WhatsmeowEngine(config.data_dir)
    raise ValueError(f"unknown engine {config.engine!r} (use whatsmeow or simulator)")


@attrs.define(eq=False, slots=True)
class Child:
    """The supervisor's handle on one device's actor; outlives the actor across restarts."""

    id: int
    spec: ChildSpec
    send: trio.MemorySendChannel[Message]
    receive: trio.MemoryReceiveChannel[Message]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    actor: DeviceActor | None = None
    restarts: int = 0
    overflow: deque[Message] | None = None  # engine events waiting for room in the mailbox


@attrs.define(eq=False)
class DeviceSupervisor:
    config: Config
    db: storage.Store
    engine: eng.Engine
    bus: EventBus
    nursery: trio.Nursery
    ops_nursery: trio.Nursery
    login_limiter: trio.CapacityLimiter
    rng: random.Random
    backoff: Backoff
    rows: dict[int, DeviceRow] = attrs.field(factory=dict)
    children: dict[int, Child] = attrs.field(factory=dict)
    outbox_listeners: list[Callable[[], None]] = attrs.field(factory=list)
    crashes: int = 0
    _by_session: dict[str, int] = attrs.field(factory=dict)
    _by_key_hash: dict[str, int] = attrs.field(factory=dict)
    _webhook_devices: set[int] = attrs.field(factory=set)
    _timers: list[tuple[float, int, int]] = attrs.field(factory=list)  # (deadline, token, device)
    _timer_tokens: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    _timer_scope: trio.CancelScope | None = None
    _outbox_written: bool = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _remember(self, row: DeviceRow) -> None:
        self.rows[row.id] = row
        self._by_session[row.session_id] = row.id
        self._by_key_hash[row.api_key_hash] = row.id

    def _forget(self, device_id: int) -> None:
        row = self.rows.pop(device_id, None)
        if row is not None:
            self._by_session.pop(row.session_id, None)
            self._by_key_hash.pop(row.api_key_hash, None)
        self._webhook_devices.discard(device_id)
        self.children.pop(device_id, None)

    def _spec(self, device_id: int) -> ChildSpec:
        cfg = self.config
        return ChildSpec(
            id=device_id,
            restart=RestartType.TRANSIENT,
            intensity=cfg.restart_intensity,
            period=cfg.restart_period,
            backoff=cfg.restart_backoff,
        )

    def _start_child(self, row: DeviceRow) -> Child:
        self._remember(row)
        send, receive = trio.open_memory_channel[Message](self.config.mailbox_size * 4)
        child = Child(row.id, self._spec(row.id), send, receive)
        self.children[row.id] = child
        self.nursery.start_soon(self._run_child, child, name=f"device-{row.id}")
        return child

    async def _run_child(self, child: Child) -> None:
        """Run one device's actor, restarting it after a crash as its child spec says."""
        intensity: RestartIntensity | None = None  # made at the first crash, if ever
        first: sm.Event = sm.Start()
        try:
            with child.scope:
                while True:
                    row = self.rows.get(child.id)
                    if row is None:
                        return
                    actor = DeviceActor(
                        sup=self,
                        row=row,
                        state=state_from_row(row, self.config.qr_max_attempts),
                        session=self.engine.session(row.id, row.session_id, self._sink(child.id)),
                        receive=child.receive,
                    )
                    del row  # the actor keeps the current row; this one goes stale
                    child.actor = actor
                    try:
                        await actor.run(first)
                        if child.spec.restart is not RestartType.PERMANENT or child.id not in self.rows:
                            return  # a normal exit: the device was deleted
                        first = sm.Start()
                        continue
                    except Exception:
                        child.actor = None
                        self.crashes += 1
                        child.restarts += 1
                        log.exception("device %s: actor crashed", actor.row.session_id)
                    if child.spec.restart is RestartType.TEMPORARY:
                        return
                    if intensity is None:
                        intensity = RestartIntensity(child.spec.intensity, child.spec.period)
                    if intensity.record(trio.current_time()):
                        await trio.sleep(child.spec.backoff.delay(intensity.recent, self.rng))
                        first = sm.Start()
                    else:
                        log.error(
                            "device %s: %d crashes within %.0f s, parked as crash_loop",
                            actor.row.session_id, intensity.recent, child.spec.period,
                        )
                        intensity.reset()
                        first = sm.CrashLoop()
        finally:
            child.actor = None

    def _sink(self, device_id: int) -> eng.Sink:
        def sink(event: eng.EngineEvent) -> None:
            self.post(device_id, event)

        return sink

    def post(self, device_id: int, message: Message) -> None:
        """Hand an engine event or operation result to a device's actor; never blocks."""
        child = self.children.get(device_id)
        if child is None:
            return
        if child.overflow is not None:
            child.overflow.append(message)  # behind the ones already waiting, in order
            return
        try:
            child.send.send_nowait(message)
        except trio.WouldBlock:
            # The mailbox is full of commands and events: keep the engine event anyway, in order
            # behind what is queued, rather than lose a message.
            child.overflow = deque([message])
            self.ops_nursery.start_soon(self._drain_overflow, child)
        except trio.ClosedResourceError:
            pass

    async def _drain_overflow(self, child: Child) -> None:
        """Feed a child's overflowed engine events into its mailbox as room appears, in order."""
        overflow = child.overflow
        assert overflow is not None
        try:
            while overflow:
                with trio.move_on_after(self.config.call_timeout * 6) as scope:
                    await child.send.send(overflow[0])
                if scope.cancelled_caught:
                    log.error("device %d: mailbox stuck, %d engine events dropped", child.id, len(overflow))
                    return
                overflow.popleft()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the device is gone
        finally:
            child.overflow = None

    def arm_timer(self, device_id: int, deadline: float) -> int:
        """Post ``Timeout(token)`` to the device's actor at ``deadline``; returns the token.

        One task keeps every device's state timeout in a heap, so an actor waits on its mailbox
        alone. A timeout is never taken back: an actor that changed state since ignores it.
        """
        token = next(self._timer_tokens)
        heapq.heappush(self._timers, (deadline, token, device_id))
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline
        return token

    async def _run_timers(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        timers = self._timers
        while True:
            now = trio.current_time()
            while timers and timers[0][0] <= now:
                _, token, device_id = heapq.heappop(timers)
                self.post(device_id, Timeout(token))
            with trio.CancelScope(deadline=timers[0][0] if timers else math.inf) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None

    def _notify_outbox(self) -> None:
        if self._outbox_written:
            self._outbox_written = False
            for fn in self.outbox_listeners:
                fn()

    async def _restore(self) -> int:
        rows = await self.db.run(lambda r: r.devices.all())
        hooks = await self.db.run(lambda r: r.settings.devices_with("webhook"))
        self._webhook_devices.update(hooks)
        for row in rows:
            self._start_child(row)
        log.info("restored %d devices", len(rows))
        return len(rows)

    async def aclose(self) -> None:
        """Stop every actor, newest first."""
        for child in reversed(list(self.children.values())):
            child.scope.cancel()

    # -- calls into actors -------------------------------------------------------------------

    def _child(self, ref: str | int) -> Child:
        device_id = self.resolve(ref)
        child = self.children.get(device_id)
        if child is None:
            raise DeviceNotFound(ref)
        return child

    async def _call(self, ref: str | int, op: str, *args: Any) -> Any:
        child = self._child(ref)
        if child.send.statistics().current_buffer_used >= self.config.mailbox_size:
            raise MailboxFull(retry_after=1.0)
        reply = Reply()
        try:
            child.send.send_nowait(Call(op, args, reply))
        except (trio.WouldBlock, trio.ClosedResourceError):
            raise MailboxFull(retry_after=1.0) from None
        with trio.move_on_after(self.config.call_timeout):
            return await reply.wait()
        raise ActorTimeout(f"device {ref} did not answer within {self.config.call_timeout:g} s")

    # -- the facade --------------------------------------------------------------------------

    def resolve(self, ref: str | int) -> int:
        """The numeric id for a sessionId or numeric id; raises DeviceNotFound."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            device_id = int(ref)
            if device_id in self.rows:
                return device_id
        elif ref in self._by_session:
            return self._by_session[ref]
        raise DeviceNotFound(ref)

    def get(self, ref: str | int) -> DeviceRow:
        return self.rows[self.resolve(ref)]

    async def create_device(
        self,
        user_id: str,
        alias: str,
        business_type: str | None = None,
        phone_number: str | None = None,
        description: str | None = None,
    ) -> tuple[DeviceRow, str]:
        """Store a new device and start its actor (pairing begins); returns it and its API key."""
        session_id = session_id_for(user_id, alias)
        if session_id in self._by_session:
            raise DeviceConflict(f"device {session_id} already exists")
        api_key = "dev_" + secrets.token_hex(16)
        now = now_iso()
        try:
            row = await self.db.run(
                lambda r: r.devices.insert(
                    user_id=user_id, alias=alias, session_id=session_id,
                    business_type=business_type, phone_number=phone_number,
                    description=description, api_key_hash=hash_key(api_key),
                    status=sm.Status.PENDING.value, now=now,
                )
            )
        except storage.Conflict:
            raise DeviceConflict(f"device {session_id} already exists") from None
        self._start_child(row)
        log.info("device %s created", session_id)
        return row, api_key

    async def wait_qr(self, ref: str | int, within: float) -> QrAttempt | None:
        """The device's QR code, waiting up to ``within`` seconds for the first one to be ready;
        None if there is none by then (or the device left ``pending``)."""
        done, qr = self._qr_settled(ref)
        if done:  # the common case needs no cancel scope
            await trio.lowlevel.checkpoint()
            return qr
        with trio.move_on_after(within):
            while not done:
                actor = self._child(ref).actor
                if actor is None:  # restarting after a crash
                    await trio.sleep(0.05)
                else:
                    if actor.qr_changed is None:
                        actor.qr_changed = trio.Event()
                    await actor.qr_changed.wait()
                done, qr = self._qr_settled(ref)
            return qr
        return None

    def _qr_settled(self, ref: str | int) -> tuple[bool, QrAttempt | None]:
        """(True, the QR) once a QR is on show or the device left ``pending``; else (False, None)."""
        actor = self._child(ref).actor
        if actor is None:
            return False, None
        qr = actor.current_qr()
        return qr is not None or actor.state.status is not sm.Status.PENDING, qr

    def current_qr(self, ref: str | int) -> QrAttempt:
        child = self._child(ref)
        actor = child.actor
        if actor is None or actor.state.status is not sm.Status.PENDING:
            status = self.rows[child.id].status
            raise DeviceConflict(f"device is {status}, not pairing: no QR code")
        qr = actor.current_qr()
        if qr is None:
            raise DeviceConflict("the QR code is not ready yet, try again shortly")
        return qr

    async def update_device(self, ref: str | int, **fields: Any) -> DeviceRow:
        row = self.get(ref)
        if "alias" in fields and fields["alias"] != row.alias:
            new_session = session_id_for(row.user_id, fields["alias"])
            if new_session != row.session_id and new_session in self._by_session:
                raise DeviceConflict(f"alias maps to existing device {new_session}")
        result: DeviceRow = await self._call(ref, "update", fields)
        return result

    async def delete_device(self, ref: str | int) -> None:
        child = self._child(ref)
        await self._call(ref, "delete")
        self._forget(child.id)

    async def login(self, ref: str | int) -> tuple[DeviceRow, QrAttempt | None]:
        result: tuple[DeviceRow, QrAttempt | None] = await self._call(ref, "login")
        return result

    async def logout(self, ref: str | int) -> DeviceRow:
        result: DeviceRow = await self._call(ref, "logout")
        return result

    async def cancel(self, ref: str | int) -> DeviceRow:
        result: DeviceRow = await self._call(ref, "cancel")
        return result

    async def list_devices(
        self, user_id: str | None, status: str | None, page: int, limit: int
    ) -> tuple[list[DeviceRow], int]:
        rows = [
            r for r in self.rows.values()
            if (user_id is None or r.user_id == user_id) and (status is None or r.status == status)
        ]
        rows.sort(key=lambda r: r.id)
        start = (page - 1) * limit
        return rows[start : start + limit], len(rows)

    def sessions(self) -> list[DeviceRow]:
        return sorted(
            (r for r in self.rows.values() if r.status in ACTIVE_STATUSES), key=lambda r: r.id
        )

    async def get_settings(self, ref: str | int, kind: str) -> dict[str, Any] | None:
        device_id = self.resolve(ref)
        result: dict[str, Any] | None = await self.db.run(
            lambda r: r.settings.get(device_id, kind)
        )
        return result

    async def put_settings(self, ref: str | int, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(ref, "put_settings", kind, value)
        return result

    async def device_for_key(self, api_key: str) -> DeviceRow | None:
        """The device whose API key this is, or None; compares the hashes in constant time."""
        digest = hash_key(api_key)
        device_id = self._by_key_hash.get(digest)
        if device_id is None:
            return None
        row = self.rows.get(device_id)
        if row is None or not hmac.compare_digest(row.api_key_hash, digest):
            return None
        return row

    async def request_pair_code(self, ref: str | int, phone_number: str) -> tuple[str, str]:
        result: tuple[str, str] = await self._call(ref, "pair_code", phone_number)
        return result

    async def send_message(
        self, ref: str | int, to: str, text: str, origin: str = "api"
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(ref, "send", to, text, origin)
        return result

    async def recent_messages(self, device_id: int, chat: str, limit: int = 20) -> list[Any]:
        result: list[Any] = await self.db.run(
            lambda r: r.messages.recent(device_id, chat, limit)
        )
        return result

    async def history(self, ref: str | int) -> list[Any]:
        device_id = self.resolve(ref)
        result: list[Any] = await self.db.run(lambda r: r.history.of(device_id))
        return result

    def statistics(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.rows.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "devices": len(self.rows),
            "by_status": counts,
            "crashes": self.crashes,
            "logins_in_flight": self.login_limiter.borrowed_tokens,
        }


@asynccontextmanager
async def open_supervisor(
    config: Config, *, engine: eng.Engine | None = None, bus: EventBus | None = None
) -> AsyncIterator[DeviceSupervisor]:
    """Open the database and the engine, restore every stored device, and yield the supervisor.

    On exit every actor is stopped (newest first), then the engine and the database are closed;
    every acknowledged write is committed by then.
    """
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    async with storage.open_database(config.database_path) as db:
        the_engine = engine if engine is not None else make_engine(config, db)
        try:
            async with trio.open_nursery() as ops_nursery, trio.open_nursery() as nursery:
                sup = DeviceSupervisor(
                    config=config,
                    db=db,
                    engine=the_engine,
                    bus=bus if bus is not None else EventBus(config.event_queue_size),
                    nursery=nursery,
                    ops_nursery=ops_nursery,
                    login_limiter=trio.CapacityLimiter(config.max_concurrent_logins),
                    rng=random.Random(config.seed),
                    backoff=config.backoff,
                )
                credentials = getattr(the_engine, "credentials", None)
                if isinstance(credentials, DbCredentialStore):
                    await credentials.preload()
                await ops_nursery.start(sup._run_timers)
                await sup._restore()
                try:
                    yield sup
                finally:
                    await sup.aclose()
                    ops_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await the_engine.aclose()
