"""The device state machine: a pure function over frozen values.

``transition(state, event) -> Step`` is the whole of a device's lifecycle logic. It performs
no I/O and reads no clock; :mod:`supervisor.actor` carries out the :class:`Step` it returns
(an engine operation, one database job, the events to publish, a state timeout).
:meth:`DeviceState.restore` is the one definition of what a restart keeps. The table in DESIGN.md is
implemented here row by row and nowhere else; the tests drive this function against a model.

Error handling: a *command* that makes no sense in the current state (logout of a device that
is not logged in, cancel with no session) raises :class:`InvalidCommand`, which the API turns
into 409. An *engine event* that no longer fits the state (a late QR code after pairing, a
connection report from an operation that was cancelled) is stale and ignored: it returns the
state unchanged with no actions.
"""

from __future__ import annotations

from enum import StrEnum

import attrs

from .machine_events import (
    BackoffElapsed as BackoffElapsed,
)
from .machine_events import (
    Banned as Banned,
)
from .machine_events import (
    Cancel as Cancel,
)
from .machine_events import (
    ConnectionLost as ConnectionLost,
)
from .machine_events import (
    CrashLoop as CrashLoop,
)
from .machine_events import (
    EngineConnected as EngineConnected,
)
from .machine_events import (
    Event as Event,
)
from .machine_events import (
    HandshakeTimedOut as HandshakeTimedOut,
)
from .machine_events import (
    Login as Login,
)
from .machine_events import (
    Logout as Logout,
)
from .machine_events import (
    QrExpired as QrExpired,
)
from .machine_events import (
    QrReady as QrReady,
)
from .machine_events import (
    Scanned as Scanned,
)
from .machine_events import (
    Start as Start,
)
from .machine_events import (
    Unlinked as Unlinked,
)
from .machine_events import (
    connection_ended as connection_ended,
)
from .payloads import DeviceConnected, DeviceDisconnected, DeviceLoggedOut, QrTimedOut
from .status import ACTIVE as ACTIVE
from .status import HOLDING_REASONS as HOLDING_REASONS
from .status import LEGAL as LEGAL
from .status import Status as Status


class InvalidCommand(Exception):
    """The command does not apply to the device's current state."""


@attrs.frozen
class DeviceState:
    """Everything the transition function needs to know about one device.

    ``qr_attempt`` is the number of the QR code on show (0 before the first one);
    ``reconnect_attempt`` counts consecutive failed connects, for the backoff schedule;
    ``ban_until`` is the epoch before which WhatsApp refuses the account.
    """

    status: Status
    reason: str | None = None
    paired: bool = False
    qr_attempt: int = 0
    max_qr_attempts: int = 3
    reconnect_attempt: int = 0
    ban_until: float | None = None

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
        ban survive; the QR attempt does not (pairing starts over).
        """
        return cls(
            status=status,
            reason=reason,
            paired=paired,
            max_qr_attempts=max_qr_attempts,
            reconnect_attempt=reconnect_attempt,
            ban_until=ban_until,
        )


# -- what a transition does: the Step -------------------------------------------------------


@attrs.frozen
class StatusChange:
    """The status changed: a history row and a ``device_status`` event."""

    before: Status
    after: Status
    reason: str | None


@attrs.frozen
class Emit:
    """Publish an event with this payload."""

    payload: DeviceConnected | DeviceDisconnected | DeviceLoggedOut | QrTimedOut

    @property
    def type(self) -> str:
        return self.payload.type


@attrs.frozen
class ShowQr:
    """A QR code is now on show as attempt ``attempt`` (the actor builds the ``qr_code`` event)."""

    code: str
    attempt: int


#: An event to publish (besides ``device_status``, which comes from the ``StatusChange``).
EventSpec = Emit | ShowQr


@attrs.frozen
class StartPairing:
    """Connect without credentials: QR codes follow."""


@attrs.frozen
class NextQr:
    """Ask the engine for the next QR code."""


@attrs.frozen
class Connect:
    """Connect with the stored credentials."""


@attrs.frozen
class StopEngine:
    """Drop the connection."""


@attrs.frozen
class EngineLogout:
    """Log out at WhatsApp (best effort) and wipe the device's credentials."""


@attrs.frozen
class Reported:
    """Account fields the engine reported, to store with the step.

    From a pairing (``pairing=True``) every field is stored, an unknown one as None; from a
    connect only those reported (not None) are.
    """

    jid: str | None = None
    phone_number: str | None = None
    push_name: str | None = None
    platform: str | None = None
    pairing: bool = False

    def columns(self) -> dict[str, str | None]:
        """The device columns to store: all four from a pairing, the non-empty reported ones otherwise."""
        columns = {"jid": self.jid, "phone_number": self.phone_number,
                   "push_name": self.push_name, "platform": self.platform}
        return columns if self.pairing else {k: v for k, v in columns.items() if v}


#: The one engine operation a step may ask for.
EngineOp = StartPairing | NextQr | Connect | StopEngine | EngineLogout


class TimeoutKind(StrEnum):
    """Which state timeout to arm: each fires its own event."""

    QR_FIRST = "qr_first"  # the first QR code's expiry: QrExpired
    QR_NEXT = "qr_next"  # a later QR code's expiry: QrExpired
    BACKOFF = "backoff"  # the reconnect delay of ``disconnected``: BackoffElapsed
    HANDSHAKE = "handshake"  # connecting, or pairing until the first QR: HandshakeTimedOut


@attrs.frozen
class StateTimeout:
    """Arm the state timeout (any change of state disarms the previous one).

    For ``BACKOFF``: the delay for reconnect ``attempt``, not before the epoch ``not_before``.
    """

    kind: TimeoutKind
    attempt: int = 0
    not_before: float | None = None


@attrs.frozen
class Step:
    """What one transition does, in a fixed shape.

    The actor carries it out in one order: the ``engine`` operation, then one database job
    (the state when ``persist``, the history row of ``change``, the outbox rows), then the
    events are published (``device_status`` of ``change`` first, then ``events``); the
    ``timeout`` is armed and ``then`` is applied at once, as the next event, into the same
    database job.
    """

    state: DeviceState
    change: StatusChange | None = None
    persist: bool = False
    events: tuple[EventSpec, ...] = ()
    engine: EngineOp | None = None
    timeout: StateTimeout | None = None
    then: Event | None = None
    reported: Reported | None = None


def _changed(
    old: DeviceState, new: DeviceState, *events: EventSpec, engine: EngineOp | None = None,
    timeout: StateTimeout | None = None, then: Event | None = None,
) -> Step:
    """A step that stores ``new``, with a history row and ``device_status`` if the status moved."""
    change = StatusChange(old.status, new.status, new.reason) if old.status is not new.status else None
    return Step(new, change, True, events, engine, timeout, then)


def _backoff(attempt: int, not_before: float | None) -> StateTimeout | None:
    return None if attempt == 0 and not_before is None else StateTimeout(
        TimeoutKind.BACKOFF, attempt, not_before
    )


def _reconnect(state: DeviceState, *events: EventSpec, engine: EngineOp | None = None) -> Step:
    """Wait for the backoff of ``state``; attempt 0 (no ban) reconnects at once (``then``)."""
    timeout = _backoff(state.reconnect_attempt, state.ban_until)
    then = BackoffElapsed() if timeout is None else None
    return Step(state, None, False, events, engine, timeout, then)


_HANDSHAKE = StateTimeout(TimeoutKind.HANDSHAKE)


def _to_disconnected(state: DeviceState, reason: str) -> Step:
    attempt = state.reconnect_attempt + 1
    new = attrs.evolve(
        state, status=Status.DISCONNECTED, reason=reason, qr_attempt=0, reconnect_attempt=attempt
    )
    return _changed(
        state, new, Emit(DeviceDisconnected(reason)), engine=StopEngine(),
        timeout=StateTimeout(TimeoutKind.BACKOFF, attempt, state.ban_until),
    )


def _begin(state: DeviceState, reason: str | None = None) -> Step:
    """Start a login: connect with credentials when paired, else start pairing."""
    if state.paired:
        new = attrs.evolve(state, status=Status.CONNECTING, reason=reason, qr_attempt=0)
        return _changed(state, new, engine=Connect(), timeout=_HANDSHAKE)
    new = attrs.evolve(state, status=Status.PENDING, reason=reason, qr_attempt=0)
    if new.status is state.status:
        return Step(new, engine=StartPairing(), timeout=_HANDSHAKE)
    return _changed(state, new, engine=StartPairing(), timeout=_HANDSHAKE)


def _logged_out(state: DeviceState, reason: str) -> Step:
    new = attrs.evolve(
        state,
        status=Status.LOGGED_OUT,
        reason=reason,
        paired=False,
        qr_attempt=0,
        reconnect_attempt=0,
        ban_until=None,
    )
    return _changed(
        state, new, Emit(DeviceLoggedOut(reason)), engine=EngineLogout()
    )


def transition(state: DeviceState, event: Event) -> Step:
    """Apply ``event`` to ``state``; return the new state and what to do, as a :class:`Step`."""
    s = state.status
    match event:
        case Start():
            if s is Status.PENDING:
                return Step(attrs.evolve(state, qr_attempt=0), engine=StartPairing(), timeout=_HANDSHAKE)
            if s is Status.CONNECTING:
                if state.paired:
                    return Step(state, engine=Connect(), timeout=_HANDSHAKE)
                return _to_disconnected(state, "restart")
            if s is Status.CONNECTED:
                # The process that held this connection is gone: report it, reconnect at once.
                new = attrs.evolve(state, status=Status.DISCONNECTED, reason="restart")
                return _changed(
                    state, new, Emit(DeviceDisconnected("restart")),
                    then=BackoffElapsed(),
                )
            if s is Status.DISCONNECTED and state.reason not in HOLDING_REASONS:
                return _reconnect(state)
            return Step(state)

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
            target = Status.DISCONNECTED if state.paired else Status.QR_TIMEOUT
            new = attrs.evolve(
                state, status=target, reason="cancelled", qr_attempt=0, reconnect_attempt=0
            )
            if new.status != s and target is Status.DISCONNECTED:
                return _changed(
                    state, new, Emit(DeviceDisconnected("cancelled")),
                    engine=StopEngine(),
                )
            return _changed(state, new, engine=StopEngine())

        case CrashLoop():
            if s in (Status.PENDING, Status.CONNECTING, Status.CONNECTED):
                new = attrs.evolve(state, status=Status.DISCONNECTED, reason="crash_loop", qr_attempt=0)
                return _changed(
                    state, new, Emit(DeviceDisconnected("crash_loop")),
                    engine=StopEngine(),
                )
            if s is Status.DISCONNECTED:
                # Parked while waiting to reconnect: say so, it will not reconnect on its own.
                new = attrs.evolve(state, reason="crash_loop", qr_attempt=0)
                return _changed(
                    state, new, Emit(DeviceDisconnected("crash_loop")),
                    engine=StopEngine(),
                )
            # qr_timeout, logged_out: no session to park; the device stays as it is.
            return Step(state, engine=StopEngine())

        case QrReady(code=code):
            if s is not Status.PENDING:
                return Step(state)
            if state.qr_attempt == 0:
                new = attrs.evolve(state, qr_attempt=1)
                return Step(new, events=(ShowQr(code, 1),), timeout=StateTimeout(TimeoutKind.QR_FIRST))
            return Step(state, events=(ShowQr(code, state.qr_attempt),))

        case QrExpired():
            if s is not Status.PENDING:
                return Step(state)
            if state.qr_attempt >= state.max_qr_attempts:
                new = attrs.evolve(state, status=Status.QR_TIMEOUT, reason="qr_expired", qr_attempt=0)
                return _changed(state, new, Emit(QrTimedOut()), engine=StopEngine())
            new = attrs.evolve(state, qr_attempt=state.qr_attempt + 1)
            return Step(
                new, engine=NextQr(), timeout=StateTimeout(TimeoutKind.QR_NEXT, new.qr_attempt)
            )

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

        case ConnectionLost(reason=reason):
            if s not in (Status.PENDING, Status.CONNECTING, Status.CONNECTED):
                return Step(state)
            return _to_disconnected(state, reason)

        case HandshakeTimedOut():
            if s is Status.CONNECTING or (s is Status.PENDING and state.qr_attempt == 0):
                return _to_disconnected(state, "handshake_timeout")
            return Step(state)

        case Banned(reason=reason, until=until):
            if s not in ACTIVE:
                return Step(state)
            banned = attrs.evolve(state, ban_until=until)
            if s is Status.DISCONNECTED:
                if state.reason in HOLDING_REASONS:  # cancelled or parked: no reconnect by itself
                    return Step(banned, persist=True)
                return Step(
                    banned, persist=True,
                    timeout=StateTimeout(TimeoutKind.BACKOFF, state.reconnect_attempt, until),
                )
            return _to_disconnected(banned, "temporary_ban")

        case Unlinked(reason=reason):
            if s not in ACTIVE:
                return Step(state)
            return _logged_out(state, reason)

        case BackoffElapsed():
            if s is not Status.DISCONNECTED or state.reason in HOLDING_REASONS:
                return Step(state)
            return _begin(attrs.evolve(state, ban_until=None))

    raise InvalidCommand(f"unknown event {event!r}")
