"""The DeviceSupervisor: one supervised actor per device, restarted after a crash.

Usage::

    sup = DeviceSupervisor(ctx, engine, nursery)
    child = await sup.start_child(row)        # returns once the device's actor is running
    child.inbox.put_command(call)             # what the devices facade does
    sup.deliver(device_id, Timeout(token))    # an event for the device's actor, never blocks

Modelled on OTP's ``simple_one_for_one`` supervisor: every device is a child with a
:class:`~supervisor.policy.ChildSpec`; a child that crashes is restarted from its persisted
state after a backoff. One that crashes more than its spec allows within the period is parked
as ``disconnected`` with ``statusReason: "crash_loop"``; every other device goes on untouched.
The supervisor knows children, specs, restart intensity and nothing else: rows live in the
directory, requests come through the facade.

Resource handling: a child outlives its actor across restarts, with its inbox and view; when
the device is deleted the child ends, its inbox is closed and waiting commands fail with
:class:`DeviceNotFound`.

In a cluster (:mod:`supervisor.cluster`) a child runs only while this node holds the device's
lease: it is started with the actor's fenced view of the database (``db``), and
:meth:`DeviceSupervisor.stop_child` ends it when the lease is lost or handed over; an actor
whose write was fenced (:class:`~supervisor.cluster.fence.LeaseLost`) ends at once, its engine
stopped, and is not restarted. Commands waiting for a stopped child, and the one its actor
was handling, fail with :class:`Restarting` (the device is moving to another node).
"""

from __future__ import annotations

import logging

import attrs
import trio

import storage
from storage.models import DeviceRow

from . import engine as eng
from . import state as sm
from .actor import EVENTS_PER_COMMAND, DeviceActor
from .cluster.fence import LeaseLost
from .context import ActorContext
from .errors import DeviceNotFound, Restarting
from .inbox import Event, Inbox, InboxSink
from .policy import ChildSpec, RestartIntensity, RestartType
from .view import DeviceShown, DeviceView

log = logging.getLogger("wasup.supervisor")


def state_from_row(row: DeviceRow, max_qr_attempts: int) -> sm.DeviceState:
    """The state a device's actor starts from: :meth:`DeviceState.restore` of its row."""
    return sm.DeviceState.restore(
        status=sm.Status(row.status),
        reason=row.status_reason,
        paired=row.paired,
        reconnect_attempt=row.reconnect_attempt,
        ban_until=row.ban_until,
        max_qr_attempts=max_qr_attempts,
    )


@attrs.define(eq=False, slots=True)
class Child:
    """The supervisor's handle on one device; outlives the actor across restarts."""

    id: int
    spec: ChildSpec
    inbox: Inbox
    view: DeviceView
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    actor: DeviceActor | None = None  # None while a crashed actor waits for its restart
    restarts: int = 0
    #: The actor's database (a cluster's fenced view of it), or None: the shared one.
    db: storage.Store | None = None
    #: Set when the child's task ended.
    done: trio.Event = attrs.field(factory=trio.Event)
    #: Stopped (its lease lost or handed over) rather than deleted.
    stopped: bool = False


@attrs.define(eq=False)
class DeviceSupervisor:
    """Children, their specs and restart intensity; see the module docstring."""

    ctx: ActorContext
    engine: eng.Engine
    nursery: trio.Nursery
    children: dict[int, Child] = attrs.field(factory=dict)
    crashes: int = 0

    def spec(self, device_id: int) -> ChildSpec:
        """How the device's actor is restarted, from the configuration."""
        cfg = self.ctx.config
        return ChildSpec(
            id=device_id,
            restart=RestartType.TRANSIENT,
            intensity=cfg.restart_intensity,
            period=cfg.restart_period,
            backoff=cfg.restart_backoff,
        )

    def child(self, device_id: int) -> Child | None:
        """The device's child, or None."""
        return self.children.get(device_id)

    def _child_for(
        self, device_id: int, status: sm.Status, db: storage.Store | None = None
    ) -> Child:
        size = self.ctx.config.mailbox_size
        child = Child(
            device_id, self.spec(device_id), Inbox(size, size * EVENTS_PER_COMMAND),
            DeviceView(DeviceShown(status)), db=db,
        )
        self.children[device_id] = child
        return child

    async def start_child(
        self, device_id: int, status: sm.Status, db: storage.Store | None = None
    ) -> Child:
        """Start the device's actor (on ``db``: its fenced view in a cluster); returns once it
        runs (its first step may be under way)."""
        child = self._child_for(device_id, status, db)
        await self.nursery.start(self._run_child, child, name=f"device-{device_id}")
        return child

    def stop_child(self, device_id: int) -> Child | None:
        """Stop the device's actor at once (its engine session is stopped as it ends) and
        forget the child; the device stays in the directory. Await ``child.done`` for the end.
        None if the device had no child."""
        child = self.children.pop(device_id, None)
        if child is not None:
            child.stopped = True
            child.scope.cancel()
        return child

    def restore_children(self, devices: list[tuple[int, sm.Status]]) -> None:
        """Start the actors of stored devices all at once (boot restore): their first steps
        then share database commits instead of waiting for each other."""
        for device_id, status in devices:
            child = self._child_for(device_id, status)
            self.nursery.start_soon(self._run_child, child, name=f"device-{device_id}")

    def deliver(self, device_id: int, event: Event) -> None:
        """Hand an event to the device's actor; never blocks (see :class:`Inbox`)."""
        child = self.children.get(device_id)
        if child is not None:
            child.inbox.put_event(event)

    async def _run_child(
        self, child: Child, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one device's actor, restarting it after a crash as its child spec says."""
        intensity: RestartIntensity | None = None  # made at the first crash, if ever
        first: sm.Event = sm.Start()
        directory = self.ctx.directory
        ctx = self.ctx if child.db is None else attrs.evolve(self.ctx, db=child.db)
        try:
            with child.scope:
                while True:
                    row = directory.get(child.id)
                    if row is None:
                        return
                    actor = DeviceActor(
                        ctx=ctx,
                        row=row,
                        state=state_from_row(row, self.ctx.config.qr_max_attempts),
                        session=self.engine.session(row.id, row.session_id, InboxSink(child.inbox)),
                        inbox=child.inbox,
                        view=child.view,
                    )
                    del row  # the actor keeps the current row; this one goes stale
                    child.actor = actor
                    task_status.started()
                    task_status = trio.TASK_STATUS_IGNORED
                    try:
                        await actor.run(first)
                        if child.spec.restart is not RestartType.PERMANENT or child.id not in directory:
                            return  # a normal exit: the device was deleted
                        first = sm.Start()
                        continue
                    except LeaseLost:
                        log.warning("device %s: lease lost, engine stopped", actor.row.session_id)
                        child.stopped = True
                        return
                    except Exception:
                        child.actor = None
                        self.crashes += 1
                        child.restarts += 1
                        child.view.value = attrs.evolve(child.view.value, qr=None, live=False)
                        log.exception("device %s: actor crashed", actor.row.session_id)
                    if child.spec.restart is RestartType.TEMPORARY:
                        return
                    if intensity is None:
                        intensity = RestartIntensity(child.spec.intensity, child.spec.period)
                    if intensity.record(trio.current_time()):
                        await trio.sleep(child.spec.backoff.delay(intensity.recent, self.ctx.rng))
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
            task_status.started()  # a device deleted before its actor ran
            if child.id not in directory or child.stopped:
                if self.children.get(child.id) is child:
                    del self.children[child.id]
                deleted = child.id not in directory
                for call in child.inbox.close():
                    call.reply.fail(
                        DeviceNotFound(child.id) if deleted
                        else Restarting("the device is moving to another node")
                    )
            child.done.set()

    def aclose(self) -> None:
        """Stop every actor, newest first."""
        for child in reversed(list(self.children.values())):
            child.scope.cancel()
