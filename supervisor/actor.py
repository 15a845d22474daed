"""The device actor: the I/O shell around the pure state machine.

One actor owns one device. Everything that changes the device goes through its mailbox (a
bounded Trio memory channel), so operations on one device never race: API commands, engine
events and the results of engine operations are handled one at a time, in order. The actor
feeds each to :func:`supervisor.state.transition` and carries out the actions it returns.

Resource handling: engine operations that may take long (a login handshake, the start of a
pairing) run as tasks in the supervisor's operations nursery under their own cancel scope, so a
cancel, logout or delete is handled while a handshake is in flight; their outcome comes back
through the mailbox. When the actor ends, for whatever reason, it cancels those tasks and stops
its engine session.

Error handling: a failure the state machine understands (:class:`EngineError`) becomes an
event (connection lost, logged out). Anything else raised by the engine is a crash: the actor
dies with it, and its supervisor restarts it from the persisted state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

import storage
from common.clock import iso, now_epoch, now_iso
from storage.models import DeviceRow

from . import engine as eng
from . import state as sm
from .errors import DeviceConflict, EngineError, MailboxFull, WasupError
from .events import Event
from .qr import QrAttempt

if TYPE_CHECKING:
    from .supervisor import DeviceSupervisor

log = logging.getLogger("wasup.actor")


@attrs.define(eq=False, slots=True)
class Reply:
    """A one-shot answer to a :class:`Call`."""

    _done: trio.Event = attrs.field(factory=trio.Event)
    value: Any = None
    error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._done.is_set():
            self.value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self.error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@attrs.frozen
class Call:
    """A command for the actor, with the reply its caller waits on."""

    op: str
    args: tuple[Any, ...]
    reply: Reply


@attrs.frozen
class OpFailed:
    """A background engine operation ended with an exception."""

    generation: int
    error: BaseException


@attrs.frozen
class Timeout:
    """The state timeout armed with ``token`` is due (see :meth:`DeviceSupervisor.arm_timer`)."""

    token: int


Message = Call | OpFailed | Timeout | eng.EngineEvent


def state_from_row(row: DeviceRow, max_qr_attempts: int) -> sm.DeviceState:
    return sm.DeviceState(
        status=sm.Status(row.status),
        reason=row.status_reason,
        paired=row.paired,
        max_qr_attempts=max_qr_attempts,
        reconnect_attempt=row.reconnect_attempt,
        ban_until=row.ban_until,
    )


def _immediate_backoff(actions: list[sm.Action]) -> sm.SetTimeout | None:
    """The backoff timeout among ``actions`` that is due at once (attempt 0, no ban), if any."""
    for action in actions:
        if (
            isinstance(action, sm.SetTimeout)
            and action.kind == "backoff"
            and action.attempt == 0
            and action.not_before is None
        ):
            return action
    return None


_TIMEOUT_EVENTS: dict[str, sm.Event] = {
    "qr": sm.QrExpired(),
    "backoff": sm.BackoffElapsed(),
    "handshake": sm.HandshakeTimedOut(),
}


@attrs.define(eq=False, slots=True)
class DeviceActor:
    sup: DeviceSupervisor
    row: DeviceRow
    state: sm.DeviceState
    session: eng.EngineSession
    receive: trio.MemoryReceiveChannel[Message]
    deadline: float = math.inf
    timeout_kind: str | None = None
    timer_token: int = 0
    qr: QrAttempt | None = None
    qr_changed: trio.Event | None = None
    generation: int = 0
    op_scopes: list[trio.CancelScope] = attrs.field(factory=list)
    stopped: bool = False
    _fields: dict[str, Any] = attrs.field(factory=dict)

    @property
    def id(self) -> int:
        return self.row.id

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, first: sm.Event) -> None:
        """Run until the device is deleted; raises if the device crashes."""
        try:
            await self._apply(first)
            while not self.stopped:
                message = await self.receive.receive()
                await self._dispatch(message)
                # Not kept while waiting for the next one: an OpFailed's traceback holds the
                # failed operation's frames (its engine client among them).
                del message
        finally:
            self._cancel_ops()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self.session.stop()
                except Exception:
                    log.exception("device %s: engine stop failed", self.row.session_id)

    async def _dispatch(self, message: Message) -> None:
        if isinstance(message, Call):
            try:
                result = await self._command(message.op, *message.args)
            except sm.InvalidCommand as exc:
                message.reply.fail(DeviceConflict(str(exc)))
            except WasupError as exc:
                message.reply.fail(exc)
            except Exception:
                message.reply.fail(MailboxFull("device restarted after an internal error"))
                raise
            else:
                message.reply.set(result)
        elif isinstance(message, Timeout):
            if message.token != self.timer_token or self.timeout_kind is None:
                return  # disarmed since, by a change of state
            kind, self.deadline, self.timeout_kind = self.timeout_kind, math.inf, None
            await self._apply(_TIMEOUT_EVENTS[kind])
        elif isinstance(message, OpFailed):
            if message.generation != self.generation:
                return  # from an operation that was stopped since
            err = message.error
            if isinstance(err, EngineError):
                await self._apply(
                    sm.ConnectionLost(err.reason) if err.recoverable else sm.Unlinked(err.reason)
                )
            else:
                raise err
        else:
            await self._engine_event(message)

    # -- commands ----------------------------------------------------------------------------

    async def _command(self, op: str, *args: Any) -> Any:
        if op == "login":
            await self._apply(sm.Login())
            return self.row, self.current_qr()
        if op == "logout":
            await self._apply(sm.Logout())
            return self.row
        if op == "cancel":
            await self._apply(sm.Cancel())
            return self.row
        if op == "delete":
            self.stopped = True
            self._cancel_ops()
            await self.session.delete()
            await self.sup.db.run(lambda r: r.devices.delete(self.id))
            self.sup._forget(self.id)
            log.info("device %s deleted", self.row.session_id)
            return None
        if op == "update":
            (fields,) = args
            try:
                self.row = await self.sup.db.run(
                    lambda r: r.devices.update(self.id, **fields, updated_at=now_iso())
                )
            except storage.Conflict as exc:
                raise DeviceConflict(f"another device of this user has that {exc.field or 'value'}") from None
            self.sup._remember(self.row)
            return self.row
        if op == "put_settings":
            kind, value = args
            await self.sup.db.run(lambda r: r.settings.put(self.id, kind, value))
            if kind == "webhook":
                self.sup._webhook_devices.add(self.id)
            return value
        if op == "pair_code":
            (phone,) = args
            if self.state.status is not sm.Status.PENDING:
                raise DeviceConflict(f"device is {self.state.status.value}, not pairing")
            code = await self.session.request_pair_code(phone)
            return code, iso(now_epoch() + self._pairing_time_left())
        if op == "send":
            to, text, origin = args
            return await self._send(to, text, origin)
        raise ValueError(f"unknown actor command {op!r}")

    def current_qr(self) -> QrAttempt | None:
        return self.qr if self.state.status is sm.Status.PENDING else None

    def _pairing_time_left(self) -> float:
        cfg = self.sup.config
        now = trio.current_time()
        left = self.deadline - now if self.timeout_kind == "qr" else cfg.qr_first_timeout
        remaining = max(0, self.state.max_qr_attempts - max(self.state.qr_attempt, 1))
        return max(0.0, left) + remaining * cfg.qr_next_timeout

    async def _send(self, to: str, text: str, origin: str) -> dict[str, Any]:
        if self.state.status is not sm.Status.CONNECTED:
            raise DeviceConflict(f"device is {self.state.status.value}, not connected")
        try:
            message_id = await self.session.send_message(to, text)
        except EngineError as exc:
            raise DeviceConflict(f"message not sent: {exc.reason}") from exc
        at = now_iso()
        data = {"messageId": message_id, "to": to, "text": text, "status": "sent", "origin": origin}
        events = [self._event("message_sent", data, at)]

        def job(r: storage.Repositories) -> DeviceRow:
            r.messages.insert(
                self.id, message_id=message_id, chat=to, direction="out", text=text,
                status="sent", at=at,
            )
            row = r.devices.increment_stats(self.id, sent=1, at=at)
            self._enqueue(r, events)
            return row

        self.row = await self.sup.db.run(job)
        self.sup._remember(self.row)
        self._publish(events)
        return {"messageId": message_id, "to": to, "status": "sent", "timestamp": at}

    # -- engine events -----------------------------------------------------------------------

    async def _engine_event(self, ev: eng.EngineEvent) -> None:
        match ev:
            case eng.QrCode(code=code):
                await self._apply(sm.QrReady(code))
            case eng.Paired():
                self._fields.update(
                    jid=ev.jid, phone_number=ev.phone_number, push_name=ev.push_name,
                    platform=ev.platform,
                )
                await self._apply(sm.Scanned())
            case eng.Connected():
                if ev.push_name:
                    self._fields["push_name"] = ev.push_name
                if ev.platform:
                    self._fields["platform"] = ev.platform
                await self._apply(sm.EngineConnected())
            case eng.Disconnected(reason=reason, recoverable=recoverable):
                await self._apply(sm.ConnectionLost(reason) if recoverable else sm.Unlinked(reason))
            case eng.LoggedOut(reason=reason):
                await self._apply(sm.Unlinked(reason))
            case eng.TemporaryBan(reason=reason, until_epoch=until):
                await self._apply(sm.Banned(reason, until))
            case eng.MessageReceived():
                await self._received(ev)
            case eng.MessageStatus(message_id=mid, status=status):
                await self._message_status(mid, status)

    async def _received(self, ev: eng.MessageReceived) -> None:
        at = now_iso()
        data = {
            "messageId": ev.message_id,
            "from": ev.sender,
            "chat": ev.chat,
            "text": ev.text,
            "isGroup": ev.is_group,
            "fromMe": ev.from_me,
            "timestamp": iso(ev.timestamp) if ev.timestamp else at,
        }
        events = [self._event("message_received", data, at)]

        def job(r: storage.Repositories) -> DeviceRow | None:
            try:
                r.messages.insert(
                    self.id, message_id=ev.message_id, sender=ev.sender, chat=ev.chat,
                    direction="out" if ev.from_me else "in", text=ev.text, status="received",
                    at=at,
                )
            except storage.Conflict:
                return None  # WhatsApp delivered this message before: nothing new
            row = r.devices.increment_stats(self.id, received=0 if ev.from_me else 1, at=at)
            self._enqueue(r, events)
            return row

        row = await self.sup.db.run(job)
        if row is None:
            return
        self.row = row
        self.sup._remember(row)
        self._publish(events)

    async def _message_status(self, message_id: str, status: str) -> None:
        at = now_iso()
        events = [self._event("message_status", {"messageId": message_id, "status": status}, at)]

        def job(r: storage.Repositories) -> None:
            r.messages.update_status(self.id, message_id, status)
            self._enqueue(r, events)

        await self.sup.db.run(job)
        self._publish(events)

    # -- the state machine -------------------------------------------------------------------

    async def _apply(self, event: sm.Event) -> None:
        old = self.state
        new, actions = sm.transition(old, event)
        steps = [(old, new, actions)]
        # A reconnect due at once (after a restart) is applied now, so both changes of status
        # are stored in one transaction instead of two.
        while (immediate := _immediate_backoff(steps[-1][2])) is not None:
            before = steps[-1][1]
            rest = [a for a in steps[-1][2] if a is not immediate]
            steps[-1] = (steps[-1][0], before, rest)
            after, more = sm.transition(before, sm.BackoffElapsed())
            steps.append((before, after, more))
        self.state = steps[-1][1]
        if self.state != old:
            self._disarm()
        batch: list[tuple[sm.Action, sm.DeviceState, sm.DeviceState]] = []
        for before, after, step_actions in steps:
            for action in step_actions:
                if isinstance(action, sm.Persist | sm.Emit | sm.ShowQr):
                    batch.append((action, before, after))
                    continue
                if batch:
                    await self._flush(batch)
                    batch = []
                await self._act(action)
        if batch:
            await self._flush(batch)

    async def _act(self, action: sm.Action) -> None:
        cfg = self.sup.config
        now = trio.current_time()
        match action:
            case sm.StartPairing():
                self.qr = None
                self._spawn(self._limited(self.session.start_pairing))
            case sm.Connect():
                self._spawn(self._limited(self.session.connect))
            case sm.NextQr():
                self._spawn(self.session.next_qr)
            case sm.StopEngine():
                self._cancel_ops()
                self.qr = None
                await self.session.stop()
            case sm.EngineLogout():
                self._cancel_ops()
                self.qr = None
                try:
                    await self.session.logout()
                except EngineError as exc:
                    log.warning("device %s: logout at whatsapp failed (%s); credentials wiped",
                                self.row.session_id, exc.reason)
            case sm.SetTimeout(kind="qr"):
                self._arm("qr", now + cfg.qr_next_timeout)
                self.qr = None  # the expired code is off show until the next one comes
            case sm.SetTimeout(kind="backoff", attempt=attempt, not_before=not_before):
                at = now + self.sup.backoff.delay(attempt, self.sup.rng)
                if not_before is not None:
                    at = max(at, now + (not_before - now_epoch()))
                self._arm("backoff", at)
            case sm.SetTimeout(kind="handshake"):
                self._arm("handshake", now + cfg.connect_timeout)
            case _:
                raise AssertionError(f"unhandled action {action!r}")

    def _arm(self, kind: str, deadline: float) -> None:
        """Arm the state timeout: a :class:`Timeout` comes through the mailbox when it is due."""
        self.timeout_kind, self.deadline = kind, deadline
        self.timer_token = self.sup.arm_timer(self.id, deadline)

    def _disarm(self) -> None:
        self.deadline, self.timeout_kind, self.timer_token = math.inf, None, 0

    async def _flush(self, batch: list[tuple[sm.Action, sm.DeviceState, sm.DeviceState]]) -> None:
        """Persist the state changes and their events in one transaction, then publish them.

        ``batch`` holds each action with the states before and after the transition that
        produced it; every change of status gets its history row.
        """
        at = now_iso()
        events: list[Event] = []
        changes: list[tuple[sm.DeviceState, sm.DeviceState]] = []
        persist = False
        for action, before, after in batch:
            if isinstance(action, sm.Persist):
                persist = True
                if before.status is not after.status:
                    changes.append((before, after))
            elif isinstance(action, sm.ShowQr):
                events.append(self._show_qr(action, at))
            elif isinstance(action, sm.Emit):
                events.append(self._event(action.type, dict(action.data), at))
        if self.qr is not None and any(e.type == "qr_code" for e in events):
            if self.sup.bus.wants("qr_code", self.id) or self.id in self.sup._webhook_devices:
                # Somebody will read the PNG: render it in a worker thread now, so that neither
                # the Trio thread nor the database thread pays for it later.
                await self.qr.render()
        if persist:
            final = batch[-1][2]
            fields = self._fields
            self._fields = {}
            fields.update(
                paired=final.paired,
                status_reason=final.reason,
                ban_until=final.ban_until,
                reconnect_attempt=final.reconnect_attempt,
            )
            if any(after.status is sm.Status.CONNECTED for _, after in changes):
                fields.update(last_connection=at, last_seen=at)
            if final.status is sm.Status.LOGGED_OUT:
                fields.update(jid=None)

            def job(r: storage.Repositories) -> DeviceRow:
                row = None
                for before, after in changes:
                    row = r.devices.record_transition(
                        self.id, from_status=before.status.value,
                        to_status=after.status.value, reason=after.reason, at=at, **fields,
                    )
                if row is None:
                    row = r.devices.update(self.id, updated_at=at, **fields)
                self._enqueue(r, events)
                return row

            self.row = await self.sup.db.run(job)
            self.sup._remember(self.row)
            for before, after in changes:
                log.info(
                    "device %s: %s -> %s (%s)", self.row.session_id, before.status.value,
                    after.status.value, after.reason or "-",
                )
        elif events and self.id in self.sup._webhook_devices:
            await self.sup.db.run(lambda r: self._enqueue(r, events))
        self._publish(events)

    def _show_qr(self, action: sm.ShowQr, at: str) -> Event:
        cfg = self.sup.config
        if action.restart_timer:
            self._arm("qr", trio.current_time() + cfg.qr_first_timeout)
        expires = now_epoch() + max(0.0, self.deadline - trio.current_time())
        self.qr = QrAttempt(
            qr_string=action.code,
            attempt=action.attempt,
            max_attempts=self.state.max_qr_attempts,
            expires_at=iso(expires),
            expires_at_epoch=expires,
        )
        if self.qr_changed is not None:
            self.qr_changed.set()
            self.qr_changed = None
        qr = self.qr
        data: dict[str, Any] = {
            "qrCode": lambda: qr.data_url,
            "qrString": qr.qr_string,
            "expiresAt": qr.expires_at,
            "attempt": qr.attempt,
            "maxAttempts": qr.max_attempts,
        }
        return Event("qr_code", self.row.session_id, self.id, data, at)

    def _event(self, type_: str, data: dict[str, Any], at: str) -> Event:
        return Event(type_, self.row.session_id, self.id, data, at)

    def _enqueue(self, repos: storage.Repositories, events: list[Event]) -> None:
        """Write the webhook outbox rows for ``events``, inside the caller's transaction.

        Webhook settings change only through this actor (``put_settings``), so the
        supervisor's set of devices with webhook settings is exact here, and a device without
        them costs no query at all.
        """
        if events and self.id in self.sup._webhook_devices:
            if repos.outbox.enqueue_events(self.id, events):
                self.sup._outbox_written = True

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self.sup.bus.publish(event)
        self.sup._notify_outbox()

    # -- background engine operations ----------------------------------------------------------

    def _limited(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with self.sup.login_limiter:
                await fn()

        return run

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        scope = trio.CancelScope()
        self.op_scopes.append(scope)
        self.sup.ops_nursery.start_soon(self._op, scope, self.generation, fn)

    async def _op(self, scope: trio.CancelScope, generation: int, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            with scope:
                try:
                    await fn()
                except Exception as exc:
                    self.sup.post(self.id, OpFailed(generation, exc))
        finally:
            try:
                self.op_scopes.remove(scope)
            except ValueError:
                pass

    def _cancel_ops(self) -> None:
        self.generation += 1
        for scope in self.op_scopes:
            scope.cancel()
        self.op_scopes.clear()
