"""The device state machine: a pure function over frozen values.

``transition(state, event) -> Step`` is the whole of a device's lifecycle logic. It performs
no I/O and reads no clock; :mod:`supervisor.actor` carries out the :class:`Step` it returns
(an engine operation, one database job, the events to publish, a state timeout; the parts are
in :mod:`supervisor.machine_steps`, the events in :mod:`supervisor.machine_events`).
:meth:`DeviceState.restore` is the one definition of what a restart keeps. The table in DESIGN.md is
implemented here row by row and nowhere else; the tests drive this function against a model.

Error handling: a *command* that makes no sense in the current state (logout of a device that
is not logged in, cancel with no session) raises :class:`InvalidCommand`, which the API turns
into 409. An *engine event* that no longer fits the state (a late QR code after pairing, a
connection report from an operation that was cancelled) is stale and ignored: it returns the
state unchanged with no actions.
"""

from __future__ import annotations

import attrs

from .engine import Retry
from .machine_events import (
    BackoffElapsed,
    Banned,
    Cancel,
    ConnectionLost,
    CrashLoop,
    EngineConnected,
    Event,
    HandshakeTimedOut,
    Login,
    Logout,
    PairCodeExpired,
    PairCodeIssued,
    PairingFailed,
    QrExpired,
    QrReady,
    Scanned,
    Start,
    Unlinked,
    connection_ended,
    from_engine,
)
from .machine_steps import (
    Connect,
    Emit,
    EngineLogout,
    EngineOp,
    EventSpec,
    NextQr,
    Reported,
    ShowQr,
    StartPairing,
    StateTimeout,
    StatusChange,
    StopEngine,
    TimeoutKind,
)
from .payloads import (
    DeviceConnected,
    DeviceDisconnected,
    DeviceLoggedOut,
    QrTimedOut,
    StatusChanged,
)
from .status import ACTIVE, HOLDING_REASONS, LEGAL, SLOW_REASONS, Status, retry_for

#: Re-exported: the events, the statuses and the retry classes come with the machine.
__all__ = [
    "ACTIVE",
    "HOLDING_REASONS",
    "LEGAL",
    "SLOW_REASONS",
    "BackoffElapsed",
    "Banned",
    "Cancel",
    "Connect",
    "ConnectionLost",
    "CrashLoop",
    "Emit",
    "EngineConnected",
    "EngineLogout",
    "EngineOp",
    "Event",
    "EventSpec",
    "HandshakeTimedOut",
    "Login",
    "Logout",
    "NextQr",
    "PairCodeExpired",
    "PairCodeIssued",
    "PairingFailed",
    "QrExpired",
    "QrReady",
    "Reported",
    "Retry",
    "Scanned",
    "ShowQr",
    "Start",
    "StartPairing",
    "StateTimeout",
    "Status",
    "StatusChange",
    "StopEngine",
    "TimeoutKind",
    "Unlinked",
    "connection_ended",
    "from_engine",
    "retry_for",
]


class InvalidCommand(Exception):
    """The command does not apply to the device's current state."""


@attrs.frozen
class DeviceState:
    """Everything the transition function needs to know about one device.

    ``qr_attempt`` is the number of the QR code on show (0 before the first one);
    ``reconnect_attempt`` counts consecutive failed connects, for the backoff schedule;
    ``ban_until`` is the epoch before which WhatsApp refuses the account; ``retry`` says when
    a ``disconnected`` device reconnects (BACKOFF in every other status); ``pair_code`` is
    set while a pair code handed out in this pairing may still be entered (``pending`` only).
    """

    status: Status
    reason: str | None = None
    paired: bool = False
    qr_attempt: int = 0
    max_qr_attempts: int = 3
    reconnect_attempt: int = 0
    ban_until: float | None = None
    retry: Retry = Retry.BACKOFF
    pair_code: bool = False

    @classmethod
    def restore(
        cls,
        status: Status,
        reason: str | None,
        paired: bool,
        reconnect_attempt: int,
        ban_until: float | None,
        max_qr_attempts: int,
    ) -> DeviceState:
        """The state an actor starts from after a restart: what the database keeps.

        Status, reason, whether credentials are stored, the backoff position and a temporary
        ban survive; the QR attempt and a pair code do not (pairing starts over). The retry
        class of ``disconnected`` comes from the reason (:func:`retry_for`).
        """
        return cls(
            status=status,
            reason=reason,
            paired=paired,
            max_qr_attempts=max_qr_attempts,
            reconnect_attempt=reconnect_attempt,
            ban_until=ban_until,
            retry=retry_for(reason) if status is Status.DISCONNECTED else Retry.BACKOFF,
        )


# -- what a transition does: the Step -------------------------------------------------------


@attrs.frozen
class Step:
    """What one transition does, in a fixed shape.

    The actor carries it out in one order: the ``engine`` operation, then one database job
    (the state when ``persist``, the history row of ``change``, the outbox rows), then the
    events are published (``device_status`` of ``change`` first, then ``events``); the
    ``timeout`` is armed and ``then`` is applied at once, as the next event, into the same
    database job. A change of state disarms the armed state timeout unless ``keep_timeout``
    (a reason-only change of ``pending``: the QR cycle's deadline stays).
    """

    state: DeviceState
    change: StatusChange | None = None
    persist: bool = False
    events: tuple[EventSpec, ...] = ()
    engine: EngineOp | None = None
    timeout: StateTimeout | None = None
    then: Event | None = None
    reported: Reported | None = None
    keep_timeout: bool = False


def _changed(
    old: DeviceState, new: DeviceState, *events: EventSpec, engine: EngineOp | None = None,
    timeout: StateTimeout | None = None, then: Event | None = None,
) -> Step:
    """A step that stores ``new``, with a history row and ``device_status`` if the status moved."""
    change = StatusChange(old.status, new.status, new.reason) if old.status is not new.status else None
    return Step(new, change, True, events, engine, timeout, then)


def _wait(state: DeviceState, attempt: int) -> StateTimeout | None:
    """The state timeout of ``disconnected`` for reconnect ``attempt``: none when held, and
    none for attempt 0 of the backoff schedule without a ban (reconnect at once)."""
    match state.retry:
        case Retry.HOLD:
            return None
        case Retry.SLOW:
            return StateTimeout(TimeoutKind.SLOW, attempt, state.ban_until)
    if attempt == 0 and state.ban_until is None:
        return None
    return StateTimeout(TimeoutKind.BACKOFF, attempt, state.ban_until)


def _reconnect(state: DeviceState) -> Step:
    """Restore of ``disconnected``: held stays, a slow reason reconnects at once (an upgrade
    may have fixed it), otherwise wait for the backoff (attempt 0 and no ban: at once)."""
    if state.retry is Retry.HOLD:
        return Step(state)
    timeout = None if state.retry is Retry.SLOW and state.ban_until is None else _wait(
        state, state.reconnect_attempt
    )
    then = BackoffElapsed() if timeout is None else None
    return Step(state, None, False, (), None, timeout, then)


_HANDSHAKE = StateTimeout(TimeoutKind.HANDSHAKE)


def _to_disconnected(state: DeviceState, reason: str, retry: Retry = Retry.BACKOFF) -> Step:
    attempt = state.reconnect_attempt + 1
    new = attrs.evolve(
        state, status=Status.DISCONNECTED, reason=reason, qr_attempt=0, reconnect_attempt=attempt,
        retry=retry_for(reason, retry),
    )
    return _changed(
        state, new, Emit(DeviceDisconnected(reason)), engine=StopEngine(),
        timeout=_wait(new, attempt),
    )


def _held(state: DeviceState, reason: str) -> DeviceState:
    """``disconnected`` with a holding reason (cancelled, crash_loop): no reconnect by itself."""
    return attrs.evolve(
        state, status=Status.DISCONNECTED, reason=reason, qr_attempt=0, retry=Retry.HOLD
    )


def _pending_reason(state: DeviceState, reason: str, engine: EngineOp | None) -> Step:
    """``pending`` with a new statusReason: stored, and a ``device_status`` event at once (from
    and to ``pending``; no history row, which records changes of status only). The state
    timeout armed stays: the QR cycle's deadline does not move."""
    new = attrs.evolve(state, reason=reason)
    event = Emit(StatusChanged(Status.PENDING, Status.PENDING, reason))
    return Step(new, None, True, (event,), engine, keep_timeout=True)


def _begin(state: DeviceState, reason: str | None = None) -> Step:
    """Start a login: connect with credentials when paired, else start pairing."""
    if state.paired:
        new = attrs.evolve(state, status=Status.CONNECTING, reason=reason, qr_attempt=0)
        return _changed(state, new, engine=Connect(), timeout=_HANDSHAKE)
    new = attrs.evolve(state, status=Status.PENDING, reason=reason, qr_attempt=0, pair_code=False)
    if new.status is state.status:
        return Step(new, engine=StartPairing(), timeout=_HANDSHAKE)
    return _changed(state, new, engine=StartPairing(), timeout=_HANDSHAKE)


def _logged_out(state: DeviceState, reason: str, engine: EngineOp | None = None) -> Step:
    """``logged_out``: the credentials wiped (``EngineLogout``), or found missing already."""
    new = attrs.evolve(
        state,
        status=Status.LOGGED_OUT,
        reason=reason,
        paired=False,
        qr_attempt=0,
        reconnect_attempt=0,
        ban_until=None,
    )
    return _changed(state, new, Emit(DeviceLoggedOut(reason)), engine=engine or EngineLogout())


def _start(state: DeviceState) -> Step:
    """The actor starts on ``state`` (restored as the database keeps it)."""
    s = state.status
    if s is Status.PENDING:
        new = attrs.evolve(state, qr_attempt=0, pair_code=False)
        return Step(new, engine=StartPairing(), timeout=_HANDSHAKE)
    if s is Status.CONNECTING:
        if state.paired:
            return Step(state, engine=Connect(), timeout=_HANDSHAKE)
        return _to_disconnected(state, "restart")
    if s is Status.CONNECTED:
        # The process that held this connection is gone: report it, reconnect at once.
        new = attrs.evolve(state, status=Status.DISCONNECTED, reason="restart")
        return _changed(state, new, Emit(DeviceDisconnected("restart")), then=BackoffElapsed())
    if s is Status.DISCONNECTED:
        return _reconnect(state)
    return Step(state)


def _reconcile(state: DeviceState, credentials: bool | None) -> Step:
    """Start, with ``paired`` reconciled with the engine's ``credentials``: paired without
    credentials is ``logged_out`` (``credentials_missing``); credentials of a pairing that was
    not stored (a crash right after the scan) make the device paired, and a pending one goes
    on to connect with them."""
    if credentials is False and state.paired:
        return _logged_out(state, "credentials_missing", StopEngine())
    if credentials and not state.paired:
        if state.status is Status.PENDING:
            new = attrs.evolve(state, status=Status.CONNECTING, reason=None, paired=True, qr_attempt=0)
            return _changed(state, new, engine=Connect(), timeout=_HANDSHAKE)
        if state.status is Status.DISCONNECTED:
            return attrs.evolve(_start(attrs.evolve(state, paired=True)), persist=True)
    return _start(state)


def transition(state: DeviceState, event: Event) -> Step:
    """Apply ``event`` to ``state``; return the new state and what to do, as a :class:`Step`.

    A retry class belongs to ``disconnected`` and a pair code to ``pending``: both end with
    their status.
    """
    step = _transition(state, event)
    new = fixed = step.state
    if new.status is not Status.DISCONNECTED and new.retry is not Retry.BACKOFF:
        fixed = attrs.evolve(fixed, retry=Retry.BACKOFF)
    if new.status is not Status.PENDING and new.pair_code:
        fixed = attrs.evolve(fixed, pair_code=False)
    return step if fixed is new else attrs.evolve(step, state=fixed)


def _transition(state: DeviceState, event: Event) -> Step:
    s = state.status
    match event:
        case Start(credentials=credentials):
            return _reconcile(state, credentials)

        case Login():
            if s in (Status.QR_TIMEOUT, Status.LOGGED_OUT):
                return _begin(attrs.evolve(state, paired=False, reconnect_attempt=0))
            if s is Status.DISCONNECTED:
                if state.reason == "temporary_ban" and state.ban_until is not None:
                    raise InvalidCommand("device is temporarily banned by whatsapp")
                return _begin(attrs.evolve(state, reconnect_attempt=0))
            return Step(state)  # pending, connecting, connected: idempotent

        case Logout():
            if s not in ACTIVE:
                raise InvalidCommand(f"device is {s.value}, not logged in")
            return _logged_out(state, "logout")

        case Cancel():
            if s not in ACTIVE:
                raise InvalidCommand(f"device is {s.value}: there is no session to cancel")
            if not state.paired:
                new = attrs.evolve(
                    state, status=Status.QR_TIMEOUT, reason="cancelled", qr_attempt=0,
                    reconnect_attempt=0,
                )
                return _changed(state, new, engine=StopEngine())
            new = attrs.evolve(_held(state, "cancelled"), reconnect_attempt=0)
            if s is not Status.DISCONNECTED:
                return _changed(state, new, Emit(DeviceDisconnected("cancelled")), engine=StopEngine())
            return _changed(state, new, engine=StopEngine())

        case CrashLoop():
            if s in ACTIVE:
                # Parked (also while waiting to reconnect): it will not reconnect on its own.
                new = _held(state, "crash_loop")
                return _changed(state, new, Emit(DeviceDisconnected("crash_loop")), engine=StopEngine())
            # qr_timeout, logged_out: no session to park; the device stays as it is.
            return Step(state, engine=StopEngine())

        case QrReady(code=code):
            if s is not Status.PENDING:
                return Step(state)
            if state.qr_attempt == 0:
                new = attrs.evolve(state, qr_attempt=1, reason=None)
                step = Step(new, events=(ShowQr(code, 1),), timeout=StateTimeout(TimeoutKind.QR_FIRST))
            else:
                new = attrs.evolve(state, reason=None)
                step = Step(new, events=(ShowQr(code, state.qr_attempt),))
            if state.reason is None:
                return step
            # A new QR code after a failed scan: the failure is over.
            cleared = Emit(StatusChanged(Status.PENDING, Status.PENDING, None))
            return attrs.evolve(
                step, persist=True, events=(cleared, *step.events),
                keep_timeout=step.timeout is None,
            )

        case QrExpired():
            if s is not Status.PENDING:
                return Step(state)
            if state.qr_attempt >= state.max_qr_attempts:
                if state.pair_code:  # the pair code may still be entered: wait for its end
                    return Step(state, timeout=StateTimeout(TimeoutKind.PAIR_CODE))
                return _qr_timeout(state)
            new = attrs.evolve(state, qr_attempt=state.qr_attempt + 1)
            return Step(
                new, engine=NextQr(), timeout=StateTimeout(TimeoutKind.QR_NEXT, new.qr_attempt)
            )

        case PairCodeIssued():
            if s is not Status.PENDING or state.pair_code:
                return Step(state)
            return Step(attrs.evolve(state, pair_code=True), keep_timeout=True)

        case PairCodeExpired():
            if s is Status.PENDING and state.pair_code and state.qr_attempt >= state.max_qr_attempts:
                return _qr_timeout(state)
            return Step(state)

        case PairingFailed(reason=reason, restart=restart):
            if s is not Status.PENDING:
                return Step(state)
            if not restart:
                return _pending_reason(state, reason, None)
            # A new pairing connection: a pair code of the old one is no longer valid.
            return _pending_reason(attrs.evolve(state, pair_code=False), reason, StartPairing())

        case Scanned(jid=jid, phone_number=phone, push_name=push_name, platform=platform):
            if s is not Status.PENDING:
                return Step(state)
            new = attrs.evolve(
                state, status=Status.CONNECTING, reason=None, paired=True, qr_attempt=0
            )
            step = _changed(state, new, engine=Connect(), timeout=_HANDSHAKE)
            return attrs.evolve(step, reported=Reported(jid, phone, push_name, platform, pairing=True))

        case EngineConnected(push_name=push_name, platform=platform):
            if s is not Status.CONNECTING:
                return Step(state)
            new = attrs.evolve(
                state, status=Status.CONNECTED, reason=None, reconnect_attempt=0, ban_until=None
            )
            step = _changed(state, new, Emit(DeviceConnected()))
            if push_name is None and platform is None:
                return step
            return attrs.evolve(step, reported=Reported(push_name=push_name, platform=platform))

        case ConnectionLost(reason=reason, retry=retry):
            if s not in (Status.PENDING, Status.CONNECTING, Status.CONNECTED):
                return Step(state)
            return _to_disconnected(state, reason, retry)

        case HandshakeTimedOut():
            if s is Status.CONNECTING or (s is Status.PENDING and state.qr_attempt == 0):
                return _to_disconnected(state, "handshake_timeout")
            return Step(state)

        case Banned(reason=reason, until=until):
            if s not in ACTIVE:
                return Step(state)
            banned = attrs.evolve(state, ban_until=until)
            if s is Status.DISCONNECTED:
                # Cancelled or parked: no reconnect by itself; else wait for the ban's end.
                return Step(banned, persist=True, timeout=_wait(banned, state.reconnect_attempt))
            return _to_disconnected(banned, "temporary_ban")

        case Unlinked(reason=reason):
            if s not in ACTIVE:
                return Step(state)
            return _logged_out(state, reason)

        case BackoffElapsed():
            if s is not Status.DISCONNECTED or state.retry is Retry.HOLD:
                return Step(state)
            return _begin(attrs.evolve(state, ban_until=None))

    raise InvalidCommand(f"unknown event {event!r}")


def _qr_timeout(state: DeviceState) -> Step:
    """The QR codes (and any pair code) ran out: ``qr_timeout``."""
    new = attrs.evolve(state, status=Status.QR_TIMEOUT, reason="qr_expired", qr_attempt=0)
    return _changed(state, new, Emit(QrTimedOut()), engine=StopEngine())
