"""The device state machine: a pure function over frozen values.

``transition(state, event) -> (state, actions)`` is the whole of a device's lifecycle logic.
It performs no I/O and reads no clock; :mod:`supervisor.actor` interprets the actions it
returns (persist, emit, start a login, set a state timeout). The table in DESIGN.md is
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


class Status(StrEnum):
    PENDING = "pending"
    QR_TIMEOUT = "qr_timeout"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"


#: States with a live or wanted session: logout and cancel apply to these.
ACTIVE = frozenset({Status.PENDING, Status.CONNECTING, Status.CONNECTED, Status.DISCONNECTED})

#: Reasons for ``disconnected`` that wasup never retries on its own (an operator's login does).
HOLDING_REASONS = frozenset({"cancelled", "crash_loop"})

#: The legal changes of status, from DESIGN.md's table (``restore`` and ``crash_loop`` included,
#: which only ever move along these same edges).
LEGAL = frozenset(
    {
        (Status.PENDING, Status.QR_TIMEOUT),
        (Status.PENDING, Status.CONNECTING),
        (Status.PENDING, Status.DISCONNECTED),
        (Status.PENDING, Status.LOGGED_OUT),
        (Status.CONNECTING, Status.CONNECTED),
        (Status.CONNECTING, Status.DISCONNECTED),
        (Status.CONNECTING, Status.LOGGED_OUT),
        (Status.CONNECTED, Status.DISCONNECTED),
        (Status.CONNECTED, Status.LOGGED_OUT),
        (Status.DISCONNECTED, Status.CONNECTING),
        (Status.DISCONNECTED, Status.PENDING),
        (Status.DISCONNECTED, Status.LOGGED_OUT),
        (Status.DISCONNECTED, Status.QR_TIMEOUT),
        (Status.QR_TIMEOUT, Status.PENDING),
        (Status.LOGGED_OUT, Status.PENDING),
    }
)


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


# -- events: commands ------------------------------------------------------------------------


@attrs.frozen
class Start:
    """The actor starts: for a new device, or to restore a stored one after a restart."""


@attrs.frozen
class Login:
    pass


@attrs.frozen
class Logout:
    pass


@attrs.frozen
class Cancel:
    pass


@attrs.frozen
class CrashLoop:
    """The supervisor parks the device: it crashed more often than its restart intensity."""


# -- events: from the engine -----------------------------------------------------------------


@attrs.frozen
class QrReady:
    code: str


@attrs.frozen
class Scanned:
    """The phone scanned the QR code or entered the pair code."""


@attrs.frozen
class EngineConnected:
    pass


@attrs.frozen
class ConnectionLost:
    """The connection dropped, a connect or pairing attempt failed, or WhatsApp is unreachable."""

    reason: str


@attrs.frozen
class Unlinked:
    """Final: unlinked from the phone, 401 from WhatsApp, banned, replaced, outdated."""

    reason: str


@attrs.frozen
class Banned:
    """A temporary ban: wait until ``until`` (epoch seconds) before trying again."""

    reason: str
    until: float


# -- events: state timeouts ------------------------------------------------------------------


@attrs.frozen
class QrExpired:
    pass


@attrs.frozen
class BackoffElapsed:
    pass


@attrs.frozen
class HandshakeTimedOut:
    """``connecting`` (or pairing start) took longer than the configured connect timeout."""


Event = (
    Start
    | Login
    | Logout
    | Cancel
    | CrashLoop
    | QrReady
    | Scanned
    | EngineConnected
    | ConnectionLost
    | Unlinked
    | Banned
    | QrExpired
    | BackoffElapsed
    | HandshakeTimedOut
)

# -- actions ---------------------------------------------------------------------------------


@attrs.frozen
class Persist:
    """Store the new state (and a history row when the status changed)."""


@attrs.frozen
class Emit:
    """Publish an event of ``type`` (``qr_code`` events are built by the actor from the QR)."""

    type: str
    data: tuple[tuple[str, object], ...] = ()


@attrs.frozen
class StartPairing:
    pass


@attrs.frozen
class NextQr:
    pass


@attrs.frozen
class ShowQr:
    """A QR code is now on show as attempt ``attempt``; ``restart_timer`` starts its expiry."""

    code: str
    attempt: int
    restart_timer: bool


@attrs.frozen
class Connect:
    pass


@attrs.frozen
class StopEngine:
    pass


@attrs.frozen
class EngineLogout:
    """Log out at WhatsApp (best effort) and wipe the device's credentials."""


@attrs.frozen
class SetTimeout:
    """Arm the state timeout (any change of state disarms the previous one).

    kind ``qr``: first or next QR expiry; ``backoff``: reconnect delay for ``attempt``
    (``attempt == 0`` means at once), not before ``not_before``; ``handshake``: connect timeout.
    """

    kind: str
    attempt: int = 0
    first: bool = False
    not_before: float | None = None


Action = (
    Persist | Emit | StartPairing | NextQr | ShowQr | Connect | StopEngine | EngineLogout | SetTimeout
)


def _status_changed(old: DeviceState, new: DeviceState) -> list[Action]:
    data: tuple[tuple[str, object], ...] = (
        ("from", old.status.value),
        ("to", new.status.value),
        ("reason", new.reason),
    )
    return [Persist(), Emit("device_status", data)]


def _to_disconnected(state: DeviceState, reason: str) -> tuple[DeviceState, list[Action]]:
    attempt = state.reconnect_attempt + 1
    new = attrs.evolve(
        state, status=Status.DISCONNECTED, reason=reason, qr_attempt=0, reconnect_attempt=attempt
    )
    return new, [
        StopEngine(),
        *_status_changed(state, new),
        Emit("device_disconnected", (("reason", reason),)),
        SetTimeout("backoff", attempt=attempt, not_before=state.ban_until),
    ]


def _begin(state: DeviceState, reason: str | None = None) -> tuple[DeviceState, list[Action]]:
    """Start a login: connect with credentials when paired, else start pairing."""
    if state.paired:
        new = attrs.evolve(state, status=Status.CONNECTING, reason=reason, qr_attempt=0)
        return new, [*_status_changed(state, new), Connect(), SetTimeout("handshake")]
    new = attrs.evolve(state, status=Status.PENDING, reason=reason, qr_attempt=0)
    acts: list[Action] = [StartPairing(), SetTimeout("handshake")]
    if new.status != state.status:
        acts[:0] = _status_changed(state, new)
    return new, acts


def _logged_out(state: DeviceState, reason: str) -> tuple[DeviceState, list[Action]]:
    new = attrs.evolve(
        state,
        status=Status.LOGGED_OUT,
        reason=reason,
        paired=False,
        qr_attempt=0,
        reconnect_attempt=0,
        ban_until=None,
    )
    return new, [
        EngineLogout(),
        *_status_changed(state, new),
        Emit("device_logged_out", (("reason", reason),)),
    ]


def transition(state: DeviceState, event: Event) -> tuple[DeviceState, list[Action]]:
    """Apply ``event`` to ``state``; return the new state and the actions to carry out."""
    s = state.status
    match event:
        case Start():
            if s is Status.PENDING:
                return attrs.evolve(state, qr_attempt=0), [StartPairing(), SetTimeout("handshake")]
            if s is Status.CONNECTING:
                if state.paired:
                    return state, [Connect(), SetTimeout("handshake")]
                return _to_disconnected(state, "restart")
            if s is Status.CONNECTED:
                # The process that held this connection is gone: report it, reconnect at once.
                new = attrs.evolve(state, status=Status.DISCONNECTED, reason="restart")
                return new, [
                    *_status_changed(state, new),
                    Emit("device_disconnected", (("reason", "restart"),)),
                    SetTimeout("backoff", attempt=0),
                ]
            if s is Status.DISCONNECTED and state.reason not in HOLDING_REASONS:
                return state, [
                    SetTimeout("backoff", attempt=state.reconnect_attempt, not_before=state.ban_until)
                ]
            return state, []

        case Login():
            if s in (Status.QR_TIMEOUT, Status.LOGGED_OUT):
                return _begin(attrs.evolve(state, paired=False, reconnect_attempt=0))
            if s is Status.DISCONNECTED:
                if state.reason == "temporary_ban" and state.ban_until is not None:
                    raise InvalidCommand("device is temporarily banned by whatsapp")
                return _begin(attrs.evolve(state, reconnect_attempt=0))
            return state, []  # pending, connecting, connected: idempotent

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
            acts: list[Action] = [StopEngine()]
            if new.status != s:
                acts += _status_changed(state, new)
                if target is Status.DISCONNECTED:
                    acts.append(Emit("device_disconnected", (("reason", "cancelled"),)))
            else:
                acts.append(Persist())
            return new, acts

        case CrashLoop():
            if s in (Status.PENDING, Status.CONNECTING, Status.CONNECTED):
                new = attrs.evolve(state, status=Status.DISCONNECTED, reason="crash_loop", qr_attempt=0)
                return new, [
                    StopEngine(),
                    *_status_changed(state, new),
                    Emit("device_disconnected", (("reason", "crash_loop"),)),
                ]
            if s is Status.DISCONNECTED:
                # Parked while waiting to reconnect: say so, it will not reconnect on its own.
                new = attrs.evolve(state, reason="crash_loop", qr_attempt=0)
                return new, [
                    StopEngine(),
                    Persist(),
                    Emit("device_disconnected", (("reason", "crash_loop"),)),
                ]
            # qr_timeout, logged_out: no session to park; the device stays as it is.
            return state, [StopEngine()]

        case QrReady(code=code):
            if s is not Status.PENDING:
                return state, []
            if state.qr_attempt == 0:
                new = attrs.evolve(state, qr_attempt=1)
                return new, [ShowQr(code, 1, restart_timer=True)]
            return state, [ShowQr(code, state.qr_attempt, restart_timer=False)]

        case QrExpired():
            if s is not Status.PENDING:
                return state, []
            if state.qr_attempt >= state.max_qr_attempts:
                new = attrs.evolve(state, status=Status.QR_TIMEOUT, reason="qr_expired", qr_attempt=0)
                return new, [StopEngine(), *_status_changed(state, new), Emit("qr_timeout")]
            new = attrs.evolve(state, qr_attempt=state.qr_attempt + 1)
            return new, [NextQr(), SetTimeout("qr", attempt=new.qr_attempt)]

        case Scanned():
            if s is not Status.PENDING:
                return state, []
            new = attrs.evolve(
                state, status=Status.CONNECTING, reason=None, paired=True, qr_attempt=0
            )
            return new, [*_status_changed(state, new), Connect(), SetTimeout("handshake")]

        case EngineConnected():
            if s is not Status.CONNECTING:
                return state, []
            new = attrs.evolve(
                state, status=Status.CONNECTED, reason=None, reconnect_attempt=0, ban_until=None
            )
            return new, [*_status_changed(state, new), Emit("device_connected")]

        case ConnectionLost(reason=reason):
            if s not in (Status.PENDING, Status.CONNECTING, Status.CONNECTED):
                return state, []
            return _to_disconnected(state, reason)

        case HandshakeTimedOut():
            if s is Status.CONNECTING or (s is Status.PENDING and state.qr_attempt == 0):
                return _to_disconnected(state, "handshake_timeout")
            return state, []

        case Banned(reason=reason, until=until):
            if s not in ACTIVE:
                return state, []
            banned = attrs.evolve(state, ban_until=until)
            if s is Status.DISCONNECTED:
                if state.reason in HOLDING_REASONS:  # cancelled or parked: no reconnect by itself
                    return banned, [Persist()]
                return banned, [Persist(), SetTimeout("backoff", attempt=state.reconnect_attempt, not_before=until)]
            return _to_disconnected(banned, "temporary_ban")

        case Unlinked(reason=reason):
            if s not in ACTIVE:
                return state, []
            return _logged_out(state, reason)

        case BackoffElapsed():
            if s is not Status.DISCONNECTED or state.reason in HOLDING_REASONS:
                return state, []
            return _begin(attrs.evolve(state, ban_until=None))

    raise InvalidCommand(f"unknown event {event!r}")
