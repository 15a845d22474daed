"""The device actor: the I/O shell around the pure state machine.

One actor owns one device. Everything that changes the device goes through its inbox, so
operations on one device never race: commands, engine events, state timeouts and the outcomes
of engine operations are handled one at a time, in order. The actor feeds each event to
:func:`supervisor.state.transition` and carries out the :class:`~supervisor.state.Step` it
returns, always in the same order: the engine operation, then one database job (state, history
rows, webhook outbox rows), then the events are published.

Resource handling: the inbox (:class:`supervisor.inbox.Inbox`) has two bounds, one policy each.
Commands: at most ``mailbox_size`` wait; one more is refused at once with :class:`Busy` (503
with Retry-After), so a stuck device pushes back on its callers instead of growing a queue.
Engine events (with state timeouts and engine-operation outcomes): at most ``mailbox_size *
EVENTS_PER_COMMAND`` wait. An incoming message or a completed pairing handed over with
``sink.deliver`` waits for room, and its sender learns only once it is committed (or that it
was not: :class:`DeliveryFailed`), so the engine acknowledges to WhatsApp only what is stored.
A lifecycle event never blocks: one beyond the bound is refused, counted and logged as an
error, and the actor resynchronises the device: it is disconnected (``statusReason:
"event_backlog"``) and reconnects after the backoff, and WhatsApp sends again what the device
had not acknowledged. Nothing is dropped silently and no queue is unbounded.

Engine operations that may take long (a login handshake, the start of a pairing) run as tasks
in the operations nursery under their own cancel scope (:mod:`supervisor.operations`); the one
state timeout is :mod:`supervisor.state_timer`'s. So a cancel, logout or delete is
handled while a handshake is in flight; their outcome comes back through the inbox. A media
download (:class:`~supervisor.commands.Download`) also runs as a task there, answering its
caller itself (:func:`supervisor.media_files.download`). When the actor ends, for whatever
reason, it cancels the handshakes and stops its engine session (which ends a download too).

Error handling: a failure the state machine understands (:class:`EngineError`) becomes an
event (connection lost, logged out). A storage outage (:class:`storage.StorageUnavailable`, a
full disk) is no crash: the command is answered with it (503), and a step the database could not
take is kept and stored with the next one, or on its own ``retry_after`` seconds later.
Anything else raised by the engine is a crash: the actor replies :class:`Restarting` to the
command it was handling and dies with the exception, and its supervisor restarts it from the
persisted state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Mapping

import attrs
import trio

import storage
from common.clock import iso, now_epoch, now_iso
from storage.models import DeviceRow

from . import actions, asks, calls, event_log, incoming, outbound, pacing, polls, reads, step_writes
from . import commands as cmd
from . import engine as eng
from . import state as sm
from .context import ActorContext
from .errors import DeviceConflict, EngineError, Restarting, WasupError
from .events import Event
from .inbox import AnyCall, Delivery, Inbox, OpFailed, Timeout
from .link_preview import LinkPreviews
from .media_files import download
from .operations import Operations
from .payloads import (
    Payload,
    QrShown,
    StatusChanged,
)
from .qr import QrAttempt
from .state_timer import StateTimer
from .view import DeviceShown, DeviceView
from .webhooks import settings as webhook_settings

log = logging.getLogger("wasup.actor")

#: The event inbox holds this many times as many messages as the command inbox.
EVENTS_PER_COMMAND = 16

@attrs.define(eq=False, slots=True)
class DeviceActor:
    """One device's actor; made by the supervisor, run until the device is deleted or crashes."""

    ctx: ActorContext
    row: DeviceRow
    state: sm.DeviceState
    session: eng.EngineSession
    inbox: Inbox
    view: DeviceView
    qr: QrAttempt | None = None
    timer: StateTimer = attrs.field(init=False)
    ops: Operations = attrs.field(init=False)
    outbound: outbound.Outbound = attrs.field(init=False)
    stopped: bool = False
    # The steps (and their events) a storage outage refused, and when to try them again.
    unsaved: tuple[list[sm.Step], list[Event]] = attrs.field(factory=lambda: ([], []))
    resave_at: float = math.inf

    def __attrs_post_init__(self) -> None:
        self.timer = StateTimer(self.ctx, self.inbox)
        self.ops = Operations(self.ctx, self.inbox)
        self.outbound = outbound.Outbound(
            self, self.ctx.db, self.session, self.ctx.config.sending, self.ctx.rng,
            self.ctx.media, previews=LinkPreviews(allow=self.ctx.config.allow_networks),
        )

    @property
    def id(self) -> int:
        return self.row.id

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, first: sm.Event) -> None:
        """Run until the device is deleted; raises if the device crashes."""
        try:
            self._show()
            if isinstance(first, sm.Start):
                first = sm.Start(await self._has_credentials())
            await self._unless_storage_out(self._apply(first))
            while not self.stopped:
                if self.inbox.take_overflow():
                    await self._unless_storage_out(self._resync())
                    continue
                if trio.current_time() >= self.resave_at:
                    await self._unless_storage_out(self._persist([], [], now_iso()))
                    continue
                send_at = self.outbound.wake_at(self.state)
                if trio.current_time() >= send_at:
                    await self._unless_storage_out(self.outbound.tick(self.state))
                    self._show()
                    continue
                message = None
                with trio.move_on_at(min(self.resave_at, send_at)):
                    message = await self.inbox.get()
                if message is None:
                    continue
                await self._unless_storage_out(self._dispatch(message))
                self._show()
                # Not kept while waiting for the next one: an OpFailed's traceback holds the
                # failed operation's frames (its engine client among them).
                del message
        finally:
            self.ops.cancel()
            self.inbox.fail_deliveries("device_stopped")
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self.session.stop()
                except Exception:
                    log.exception("device %s: engine stop failed", self.row.session_id)

    async def _has_credentials(self) -> bool | None:
        """Whether the engine holds credentials for the device; None when it cannot tell."""
        try:
            return await self.session.has_credentials()
        except Exception:
            log.exception("device %s: could not check the stored credentials", self.row.session_id)
            return None

    async def _unless_storage_out(self, work: Awaitable[None]) -> None:
        """Do ``work``; a storage outage leaves the step to :meth:`_persist`'s retry."""
        try:
            await work
        except storage.StorageUnavailable:
            self._show()

    async def _dispatch(
        self, message: AnyCall | OpFailed | Timeout | Delivery | eng.EngineEvent
    ) -> None:
        match message:
            case cmd.Call():
                await self._call(message)
            case Delivery(event=event):
                try:
                    await self._engine_event(event)
                except BaseException:
                    message.fail("not_stored")
                    raise
                message.succeed()
            case Timeout(token=token):
                due = self.timer.fired(token)
                if due is not None:  # else disarmed since, by a change of state
                    await self._apply(due)
            case OpFailed(generation=generation, error=err):
                if not self.ops.current(generation):
                    return  # from an operation that was stopped since
                if not isinstance(err, EngineError):
                    raise err
                await self._apply(sm.connection_ended(err.reason, err.recoverable))
            case _:
                await self._engine_event(message)

    async def _resync(self) -> None:
        log.error(
            "device %s: %d engine events found the inbox full; reconnecting to resynchronise",
            self.row.session_id, self.inbox.lost,
        )
        await self._apply(sm.ConnectionLost("event_backlog"))

    # -- commands ----------------------------------------------------------------------------

    async def _call(self, call: AnyCall) -> None:
        reply = call.reply
        try:
            self.ctx.db.raise_if_unavailable()  # moments into an outage: refused, nothing done
            match call.command:
                case cmd.Login():
                    await self._apply(sm.Login())
                    reply.set((self.row, self.current_qr()))
                case cmd.Logout():
                    await self._apply(sm.Logout())
                    reply.set(self.row)
                case cmd.Cancel():
                    await self._apply(sm.Cancel())
                    reply.set(self.row)
                case cmd.Delete():
                    await self._delete()
                    reply.set(None)
                case cmd.UpdateDevice(fields=fields):
                    reply.set(await self._update(fields))
                case cmd.PutSettings(kind=kind, value=value):
                    await self.ctx.db.run(lambda r: r.settings.put(self.id, kind, value))
                    if kind == "webhook":
                        self.ctx.directory.set_webhook(self.id)
                    if kind == pacing.SETTINGS_KIND:
                        self.outbound.set_pacing(value)
                    reply.set(value)
                case cmd.RequestPairCode(phone=phone):
                    if self.state.status is not sm.Status.PENDING:
                        raise DeviceConflict(f"device is {self.state.status.value}, not pairing")
                    code = await self.session.request_pair_code(phone)
                    await self._apply(sm.PairCodeIssued())
                    reply.set((code, iso(now_epoch() + self.timer.pair_code_left())))
                case cmd.Send():
                    reply.set(await self.outbound.accept(call.command, self.state))
                case cmd.Download(ref=ref):
                    if self.state.status is not sm.Status.CONNECTED:
                        raise DeviceConflict(
                            f"device is {self.state.status.value}, not connected: connect it"
                            " to download this file"
                        )
                    # Downloads take a while: the actor goes on while the engine fetches.
                    self.ctx.ops_nursery.start_soon(download, self.session, ref, reply)
                case cmd.Ask() as ask:
                    if self.state.status is not sm.Status.CONNECTED:
                        raise DeviceConflict(f"device is {self.state.status.value}, not connected")
                    self.ctx.ops_nursery.start_soon(asks.run, self.session, ask, reply)
                case cmd.MarkRead(chat=chat):
                    if self.state.status is not sm.Status.CONNECTED:
                        raise DeviceConflict(f"device is {self.state.status.value}, not connected")
                    reply.set(await reads.mark_chat_read(self.ctx.db, self.session, self.id, chat))
                case other:
                    raise AssertionError(f"unhandled command {other!r}")
        except sm.InvalidCommand as exc:
            reply.fail(DeviceConflict(str(exc)))
        except WasupError as exc:
            reply.fail(exc)
        except storage.StorageUnavailable as exc:
            reply.fail(exc)
            raise
        except Exception:
            reply.fail(Restarting())
            raise
        except trio.Cancelled:  # the actor is stopped (a lease lost or handed over, shutdown)
            reply.fail(Restarting("the device's actor stopped; try again"))
            raise

    async def _delete(self) -> None:
        self.stopped = True
        self.ops.cancel()
        await self.session.delete()
        await self.ctx.db.run(lambda r: r.devices.delete(self.id))
        self.ctx.directory.drop(self.id)
        log.info("device %s deleted", self.row.session_id)

    async def _update(self, fields: Mapping[str, storage.ColumnValue]) -> DeviceRow:
        try:
            self.stored(await self.ctx.db.run(
                lambda r: r.devices.update(self.id, **fields, updated_at=now_iso())
            ))
        except storage.Conflict as exc:
            raise DeviceConflict(f"another device of this user has that {exc.field or 'value'}") from None
        return self.row

    def current_qr(self) -> QrAttempt | None:
        return self.qr if self.state.status is sm.Status.PENDING else None

    # -- engine events -----------------------------------------------------------------------

    async def _engine_event(self, ev: eng.EngineEvent) -> None:
        match ev:
            case eng.MessageReceived():
                await self._received(ev)
            case eng.MessageStatus(message_id=mid, status=status):
                await self.outbound.receipt(mid, status)
            case eng.Notice(payload=payload):  # a group change, a presence, a call
                payload = await calls.screen(self, payload)  # auto-reject: calls.py
                await self._log_and_publish([self.event(payload, now_iso())])
            case _:  # the engine's reports on the session: the state machine's to handle
                await self._apply(sm.from_engine(ev))

    async def _log_and_publish(self, events: list[Event]) -> None:
        """Log ``events`` (and queue their webhook deliveries) in a job of their own, then
        publish them. Events a storage outage refused wait with the unsaved steps, and go
        before these ones."""
        if self.unsaved[0] or self.unsaved[1]:
            await self._persist([], events, events[0].timestamp)
            return
        try:
            await self.ctx.db.run(lambda r: self.enqueue(r, events))
        except storage.StorageUnavailable as exc:
            self.unsaved, self.resave_at = ([], events), trio.current_time() + exc.retry_after
            raise
        self.publish(events)

    async def _received(self, ev: eng.MessageReceived) -> None:
        """Store an incoming message of any kind and publish it (see :mod:`.incoming`)."""
        at = now_iso()
        events: list[Event] = []

        def job(r: storage.Repositories) -> DeviceRow | None:
            # a vote's options named after the stored poll (supervisor/polls.py)
            message = polls.name_vote(r.message_actions, self.id, ev)
            received = incoming.store(r.messages, self.id, message, at)
            if received is None:
                return None  # WhatsApp delivered this message before: nothing new
            actions.apply_incoming(r, self.id, message, at)
            row = r.devices.increment_stats(self.id, received=received, at=at)
            events[:] = [self.event(incoming.payload(message, at), at)]
            self.enqueue(r, events)
            return row

        row = await self.ctx.db.run(job)
        if row is None:
            return
        self.stored(row)
        self.publish(events)

    # -- the state machine -------------------------------------------------------------------

    async def _apply(self, event: sm.Event) -> None:
        """Carry out the step for ``event`` (and any step it inserts): engine operation, one
        database job, publish."""
        old = self.state
        step = sm.transition(old, event)
        steps = [step]
        while step.then is not None:  # applied now, so that it is stored in the same job
            step = sm.transition(step.state, step.then)
            steps.append(step)
        self.state = step.state
        if self.state != old and not steps[0].keep_timeout:
            self.timer.disarm()
        for s in steps:
            if s.engine is not None:
                await self._engine_op(s.engine)
            if s.timeout is not None:
                self._arm(s.timeout)
        at = now_iso()
        events: list[Event] = []
        for s in steps:
            if s.change is not None:
                change = StatusChanged(s.change.before, s.change.after, s.change.reason)
                events.append(self.event(change, at))
            for spec in s.events:
                match spec:
                    case sm.ShowQr():
                        events.append(await self._show_qr(spec, at))
                    case sm.Emit(payload=payload):
                        events.append(self.event(payload, at))
        if any(s.persist for s in steps):
            await self._persist(steps, events, at)
        elif events:
            await self._log_and_publish(events)
        self._show()

    async def _persist(self, steps: list[sm.Step], events: list[Event], at: str) -> None:
        """The one database job of a step: its state, history rows, logged events and outbox
        rows (and those of the steps a storage outage refused, kept until they are stored);
        then the events are published."""
        steps, events = self.unsaved[0] + steps, self.unsaved[1] + events
        final = self.state
        changes = [s.change for s in steps if s.change is not None]

        def job(r: storage.Repositories) -> DeviceRow:
            row = step_writes.write(r, self.id, steps, final, at)
            self.enqueue(r, events)
            return row

        try:
            self.stored(await self.ctx.db.run(job))
        except storage.StorageUnavailable as exc:
            self.unsaved, self.resave_at = (steps, events), trio.current_time() + exc.retry_after
            raise
        self.unsaved, self.resave_at = ([], []), math.inf
        self.publish(events)
        for change in changes:
            log.info(
                "device %s: %s -> %s (%s)", self.row.session_id, change.before.value,
                change.after.value, change.reason or "-",
                extra={"device": self.row.session_id, "event": "device_status",
                       "reason": change.reason},
            )

    async def _engine_op(self, op: sm.EngineOp) -> None:
        match op:
            case sm.StartPairing():
                self.qr = None
                self.ops.spawn(self.session.start_pairing, login=True)
            case sm.Connect():
                self.ops.spawn(self.session.connect, login=True)
            case sm.NextQr():
                self.ops.spawn(self.session.next_qr)
            case sm.StopEngine():
                self.ops.cancel()
                self.qr = None
                await self.session.stop()
            case sm.EngineLogout():
                self.ops.cancel()
                self.qr = None
                try:
                    await self.session.logout()
                except EngineError as exc:
                    log.warning("device %s: logout at whatsapp failed (%s); credentials wiped",
                                self.row.session_id, exc.reason)

    def _arm(self, timeout: sm.StateTimeout) -> None:
        """Arm the state timeout: a :class:`Timeout` comes through the inbox when it is due."""
        self.timer.arm(timeout)
        if timeout.kind in (sm.TimeoutKind.QR_NEXT, sm.TimeoutKind.PAIR_CODE):
            self.qr = None  # the expired code is off show until the next one comes, if any

    async def _show_qr(self, spec: sm.ShowQr, at: str) -> Event:
        expires = now_epoch() + self.timer.left()
        self.qr = qr = QrAttempt.expiring(
            spec.code, attempt=spec.attempt, max_attempts=self.state.max_qr_attempts,
            expires_at_epoch=expires,
        )
        if self.ctx.bus.wants(QrShown.type, self.id) or self.ctx.directory.has_webhook(self.id):
            # Somebody will read the PNG (the event log keeps none): render it in a worker
            # thread now, so that neither the Trio thread nor the database thread pays for it.
            await qr.render()
        return self.event(QrShown(qr), at)  # the PNG is taken when the event is read

    def _show(self) -> None:
        """Update the view if the status, the QR code on show or the outbound queue changed."""
        shown = self.view.value
        qr = self.current_qr()
        # Until the queue is loaded, the counts shown before (by the previous actor) stand.
        pending, stuck = self.outbound.counts() or (shown.pending_sends, shown.stuck_sends)
        if (not shown.live or shown.status is not self.state.status or shown.qr is not qr
                or (shown.pending_sends, shown.stuck_sends) != (pending, stuck)):
            if shown.qr is not qr:
                for listener in self.ctx.qr_listeners:
                    listener(self.id, qr)
            self.view.value = DeviceShown(self.state.status, qr, True, pending, stuck)

    def event(self, payload: Payload, at: str) -> Event:
        return Event(self.row.session_id, self.id, payload, at)

    # What follows is also the outbound queue's view of the actor
    # (supervisor.outbound.OutboundHost).
    @property
    def jid(self) -> str | None:
        return self.row.jid

    def stored(self, row: DeviceRow) -> None:
        self.row = row
        self.ctx.directory.put(row)

    def enqueue(self, repos: storage.Repositories, events: list[Event]) -> None:
        """Log ``events`` (each item then carries its id: :mod:`.event_log`) and write their
        webhook outbox rows, inside the caller's transaction. Webhook settings change only
        through this actor, so the directory knows exactly which devices have them."""
        event_log.append(repos, events)
        if events and self.ctx.directory.has_webhook(self.id):
            if webhook_settings.enqueue(repos, self.id, events):
                self.ctx.outbox.written = True

    def publish(self, events: list[Event]) -> None:
        for event in events:
            self.ctx.bus.publish(event)
        self.ctx.outbox.notify()
