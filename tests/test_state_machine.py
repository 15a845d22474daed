"""The pure device state machine (:mod:`supervisor.state`) against DESIGN.md.

Three layers:

- ``TestStateMachine``: a hypothesis ``RuleBasedStateMachine`` drives ``transition`` with every
  kind of event (commands, engine events, state timeouts, restarts and crash-loop parks) and
  compares each step with :class:`Model`, written from DESIGN.md's table (not from state.py),
  then checks DESIGN.md's invariants after every step.
- ``test_table_row``: one example per row of DESIGN.md's table, with the exact
  :class:`~supervisor.state.Step` expected.
- The documents: docs/state-machine.md is what docs/gen_state_diagram.py draws from the code
  now; docs/events.md and docs/configuration.md cover every event type and Config field.

Everything here is pure and synchronous; the module runs in a few seconds.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from supervisor import state as sm
from supervisor.config import Config
from supervisor.payloads import (
    EVENT_TYPES,
    DeviceConnected,
    DeviceDisconnected,
    DeviceLoggedOut,
    QrTimedOut,
    to_wire,
)
from supervisor.state import (
    Banned,
    Cancel,
    Connect,
    ConnectionLost,
    CrashLoop,
    DeviceState,
    Emit,
    EngineConnected,
    EngineLogout,
    HandshakeTimedOut,
    Login,
    Logout,
    NextQr,
    PairCodeExpired,
    PairCodeIssued,
    PairingFailed,
    QrExpired,
    QrReady,
    Scanned,
    ShowQr,
    Start,
    StartPairing,
    StateTimeout,
    Status,
    StatusChange,
    Step,
    StopEngine,
    TimeoutKind,
    Unlinked,
)

from .docs_support import DOCS, load_generator

P, Q, C, K, D, L = (
    Status.PENDING,
    Status.QR_TIMEOUT,
    Status.CONNECTING,
    Status.CONNECTED,
    Status.DISCONNECTED,
    Status.LOGGED_OUT,
)
REPO = Path(__file__).resolve().parent.parent

# -- the model, from DESIGN.md's table ------------------------------------------------------------

#: Statuses with a session (DESIGN.md: logout and cancel apply to these).
SESSION = frozenset({P, C, K, D})
#: Reasons after which wasup waits for an operator's login (DESIGN.md: "no automatic
#: reconnect until login"; the crash-loop park of the supervisor section; "replaced waits for
#: login").
HOLD = frozenset({"cancelled", "crash_loop", "stream_replaced"})
#: Reasons retried on the slow schedule and at every start ("outdated retries on a slow
#: schedule and at start"; the reason table of the engine interface).
SLOW = frozenset({"client_outdated", "bad_user_agent", "unsupported_event", "connect_failure"})


@attrs.frozen
class Expect:
    """What one step should do, in a form both the model and the real actions reduce to."""

    emits: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    connect: bool = False
    start_pairing: bool = False
    next_qr: bool = False
    engine_logout: bool = False
    stop_engine: bool = False
    show_qr: tuple[int, bool] | None = None  # (attempt, restart_timer)
    timeout: tuple[str, int, float | None] | None = None  # (kind, attempt, not_before)


#: The model's name for each kind of state timeout (both QR expiries are "qr").
KIND_NAMES = {
    TimeoutKind.QR_FIRST: "qr",
    TimeoutKind.QR_NEXT: "qr",
    TimeoutKind.BACKOFF: "backoff",
    TimeoutKind.SLOW: "slow",
    TimeoutKind.HANDSHAKE: "handshake",
    TimeoutKind.PAIR_CODE: "pair_code",
}


def summarize(step: Step) -> Expect:
    """Reduce a real :class:`Step` to an :class:`Expect` (persist is checked by the invariants).

    A first QR code's expiry is part of ``show_qr``; an inserted ``BackoffElapsed`` (``then``)
    is the model's backoff of attempt 0, due at once.
    """
    emits: list[tuple[str, Any]] = []
    if (c := step.change) is not None:
        emits.append(_status_event(c.before, c.after, c.reason))
    shows = []
    for spec in step.events:
        match spec:
            case Emit(payload=payload):
                emits.append((payload.type, tuple(to_wire(payload).items())))
            case ShowQr(attempt=attempt):
                first = step.timeout is not None and step.timeout.kind is TimeoutKind.QR_FIRST
                shows.append((attempt, first))
    fields: dict[str, Any] = {}
    if step.engine is not None:
        fields[_FLAG[type(step.engine)]] = True
    timeout: tuple[str, int, float | None] | None = None
    if (t := step.timeout) is not None and t.kind is not TimeoutKind.QR_FIRST:
        # `attempt` only means something for qr and backoff timers.
        attempt = t.attempt if t.kind is not TimeoutKind.HANDSHAKE else 0
        timeout = (KIND_NAMES[t.kind], attempt, t.not_before)
    if step.then is not None:
        assert step.then == sm.BackoffElapsed() and timeout is None, step
        timeout = ("backoff", 0, None)
    assert len(shows) <= 1, step
    return Expect(
        emits=tuple(emits),
        show_qr=shows[0] if shows else None,
        timeout=timeout,
        **fields,
    )


_FLAG: dict[type, str] = {
    Connect: "connect",
    StartPairing: "start_pairing",
    NextQr: "next_qr",
    EngineLogout: "engine_logout",
    StopEngine: "stop_engine",
}


def _status_event(old: Status, new: Status, reason: str | None) -> tuple[str, Any]:
    return ("device_status", (("from", old.value), ("to", new.value), ("reason", reason)))


@attrs.define
class Model:
    """A device as DESIGN.md describes it.

    ``failures`` counts reconnect attempts since the last success (the backoff exponent);
    ``ban`` is the end of a temporary ban WhatsApp announced. Both survive a restart, with
    status, reason and whether credentials are stored; the QR attempt does not. ``retry`` is
    when a disconnected device reconnects ("hold", "slow", "backoff"); ``pair_code`` whether
    a pair code was handed out in this pairing.
    """

    max_qr: int
    status: Status = P
    reason: str | None = None
    paired: bool = False
    qr: int = 0
    failures: int = 0
    ban: float | None = None
    retry: str = "backoff"
    pair_code: bool = False

    def as_state(self) -> DeviceState:
        return DeviceState(
            status=self.status,
            reason=self.reason,
            paired=self.paired,
            qr_attempt=self.qr,
            max_qr_attempts=self.max_qr,
            reconnect_attempt=self.failures,
            ban_until=self.ban,
            retry=sm.Retry(self.retry),
            pair_code=self.pair_code,
        )

    def restart(self) -> None:
        """What a restart forgets: the QR attempt, a pair code; the retry class of a
        disconnected device comes back from its reason alone."""
        self.qr = 0
        self.pair_code = False
        self.retry = _retry_of(self.reason) if self.status is D else "backoff"

    # The step helpers move the model and say what should be done.

    def _move(self, status: Status, reason: str | None, *extra: Any) -> list[Any]:
        old = self.status
        self.status, self.reason = status, reason
        if status is not D:
            self.retry = "backoff"
        if status is not P:
            self.pair_code = False
        return [_status_event(old, status, reason), *extra] if old is not status else list(extra)

    def _login(self) -> Expect:
        """Row "disconnected | login": connect if paired, else pair again (QR cycle restarts)."""
        self.qr, self.pair_code = 0, False
        if self.paired:
            emits = self._move(C, None)
            return Expect(emits=tuple(emits), connect=True, timeout=("handshake", 0, None))
        emits = self._move(P, None)
        return Expect(emits=tuple(emits), start_pairing=True, timeout=("handshake", 0, None))

    def _lost(self, reason: str, retry: str = "backoff") -> Expect:
        """Row "connection lost (recoverable)": disconnected, then reconnect with backoff; the
        held and slow rows: credentials kept, reconnect after a login or on the slow
        schedule."""
        self.failures += 1
        self.qr = 0
        emits = self._move(D, reason, ("device_disconnected", (("reason", reason),)))
        self.retry = _retry_of(reason, retry)
        return Expect(emits=tuple(emits), stop_engine=True, timeout=self._wait())

    def _wait(self) -> tuple[str, int, float | None] | None:
        """The timer of disconnected: none when held."""
        if self.retry == "hold":
            return None
        return (self.retry, self.failures, self.ban)

    def _qr_timeout(self) -> Expect:
        self.qr = 0
        emits = self._move(Q, "qr_expired", ("qr_timeout", ()))
        return Expect(emits=tuple(emits), stop_engine=True)

    def _logged_out(self, reason: str, wipe: bool = True) -> Expect:
        """Row "logout or unlinked": logged_out, credentials wiped, never retried (``wipe``
        False: they were found missing, nothing to wipe)."""
        self.paired, self.qr, self.failures, self.ban = False, 0, 0, None
        emits = self._move(L, reason, ("device_logged_out", (("reason", reason),)))
        return Expect(emits=tuple(emits), engine_logout=wipe, stop_engine=not wipe)

    def step(self, event: sm.Event) -> Expect | None:
        """Apply ``event``; None when the command must be refused (the model is unchanged)."""
        s = self.status
        match event:
            case Login():
                if s in (Q, L):
                    self.paired, self.failures = False, 0
                    return self._login()
                if s is D:
                    if self.reason == "temporary_ban" and self.ban is not None:
                        return None  # wasup's choice: no login while WhatsApp bans the account
                    self.failures = 0
                    return self._login()
                return Expect()  # idempotent
            case Logout():
                return self._logged_out("logout") if s in SESSION else None
            case Cancel():
                if s not in SESSION:
                    return None
                target = D if self.paired else Q
                self.qr, self.failures = 0, 0
                emits = self._move(target, "cancelled")
                self.retry = "hold" if target is D else "backoff"
                if target is D and s is not D:
                    emits.append(("device_disconnected", (("reason", "cancelled"),)))
                return Expect(emits=tuple(emits), stop_engine=True)
            case Start(credentials=credentials):  # an actor starts on a (restored) state
                # Restore reconciles "paired" with the engine's credentials (issue: a kill
                # between the engine's store and wasup's must not split them).
                if credentials is False and self.paired:
                    return self._logged_out("credentials_missing", wipe=False)
                if credentials and not self.paired and s is P:
                    self.paired, self.qr = True, 0
                    emits = self._move(C, None)
                    return Expect(emits=tuple(emits), connect=True, timeout=("handshake", 0, None))
                if credentials and not self.paired and s is D:
                    self.paired = True
                if s is P:
                    self.qr = 0
                    return Expect(start_pairing=True, timeout=("handshake", 0, None))
                if s is C and self.paired:
                    return Expect(connect=True, timeout=("handshake", 0, None))
                if s is C:
                    return self._lost("restart")
                if s is K:
                    emits = self._move(D, "restart", ("device_disconnected", (("reason", "restart"),)))
                    return Expect(emits=tuple(emits), timeout=("backoff", 0, None))
                if s is D and self.retry == "slow" and self.ban is None:
                    return Expect(timeout=("backoff", 0, None))  # at once: an upgrade may help
                if s is D:
                    return Expect(timeout=self._wait())
                return Expect()
            case CrashLoop():
                self.qr = 0
                if s in (P, C, K):
                    emits = self._move(
                        D, "crash_loop", ("device_disconnected", (("reason", "crash_loop"),))
                    )
                    self.retry = "hold"
                    return Expect(emits=tuple(emits), stop_engine=True)
                if s is D:
                    self.reason, self.retry = "crash_loop", "hold"
                    return Expect(
                        emits=(("device_disconnected", (("reason", "crash_loop"),)),),
                        stop_engine=True,
                    )
                return Expect(stop_engine=True)
            case QrReady():
                if s is not P:
                    return Expect()
                # A new QR code ends a pairing failure shown before: said at once.
                cleared = () if self.reason is None else (_status_event(P, P, None),)
                self.reason = None
                if self.qr == 0:
                    self.qr = 1
                    return Expect(emits=cleared, show_qr=(1, True))
                return Expect(emits=cleared, show_qr=(self.qr, False))
            case QrExpired():
                if s is not P:
                    return Expect()
                if self.qr >= self.max_qr and self.pair_code:
                    return Expect(timeout=("pair_code", 0, None))  # the code is still good
                if self.qr >= self.max_qr:
                    return self._qr_timeout()
                self.qr += 1
                return Expect(next_qr=True, timeout=("qr", self.qr, None))
            case PairCodeIssued():
                if s is P:
                    self.pair_code = True
                return Expect()
            case PairCodeExpired():
                if s is P and self.pair_code and self.qr >= self.max_qr:
                    return self._qr_timeout()
                return Expect()
            case PairingFailed(reason=reason, restart=restart):
                if s is not P:
                    return Expect()
                self.reason = reason
                if restart:  # pairing starts again: an old pair code is void
                    self.pair_code = False
                return Expect(emits=(_status_event(P, P, reason),), start_pairing=restart)
            case Scanned():
                if s is not P:
                    return Expect()
                self.paired, self.qr = True, 0
                emits = self._move(C, None)
                return Expect(emits=tuple(emits), connect=True, timeout=("handshake", 0, None))
            case EngineConnected():
                if s is not C:
                    return Expect()
                self.failures, self.ban = 0, None
                emits = self._move(K, None, ("device_connected", ()))
                return Expect(emits=tuple(emits))
            case ConnectionLost(reason=reason, retry=retry):
                return self._lost(reason, retry.value) if s in (P, C, K) else Expect()
            case HandshakeTimedOut():
                if s is C or (s is P and self.qr == 0):
                    return self._lost("handshake_timeout")
                return Expect()
            case Banned(until=until):
                if s not in SESSION:
                    return Expect()
                self.ban = until
                if s is not D:
                    return self._lost("temporary_ban")
                return Expect(timeout=self._wait())
            case Unlinked(reason=reason):
                return self._logged_out(reason) if s in SESSION else Expect()
            case sm.BackoffElapsed():
                if s is not D or self.retry == "hold":
                    return Expect()
                self.ban = None
                return self._login()
        raise AssertionError(f"model has no rule for {event!r}")


def _retry_of(reason: str | None, reported: str = "backoff") -> str:
    """The retry class of a disconnected device: by its reason where the reason says."""
    return "hold" if reason in HOLD else "slow" if reason in SLOW else reported


# -- the rule-based state machine -----------------------------------------------------------------

CONNECTION_LOST_REASONS = (
    "connection_lost",
    "network_unreachable: simulated",
    "stopped",
    "not_connected",
    "temporary_ban",
)
UNLINK_REASONS = (
    "unlinked_from_phone", "no_credentials", "invalid_credentials", "banned", "unlinked",
    "account_locked",
)
TIMEOUT_EVENT: dict[str, sm.Event] = {
    "qr": QrExpired(),
    "backoff": sm.BackoffElapsed(),
    "slow": sm.BackoffElapsed(),
    "handshake": HandshakeTimedOut(),
    "pair_code": PairCodeExpired(),
}
ENGINE_EVENTS = st.one_of(
    st.sampled_from([
        QrReady("https://wa.me/settings/linked_devices#2@abc,def,ghi,jkl,1"),
        QrReady("https://wa.me/settings/linked_devices#2@xyz,uvw,rst,opq,1"),
    ]),
    st.just(Scanned()),
    st.just(EngineConnected()),
    st.sampled_from(CONNECTION_LOST_REASONS).map(ConnectionLost),
    st.sampled_from([
        ConnectionLost("stream_replaced", sm.Retry.HOLD),
        ConnectionLost("client_outdated", sm.Retry.SLOW),
        ConnectionLost("bad_user_agent", sm.Retry.SLOW),
        ConnectionLost("unsupported_event", sm.Retry.SLOW),
        ConnectionLost("connect_failure", sm.Retry.SLOW),
    ]),
    st.sampled_from([
        PairingFailed("pair_error", restart=True),
        PairingFailed("scanned_without_multidevice"),
        PairingFailed("passkey_required"),
    ]),
    st.just(PairCodeIssued()),
    st.sampled_from(UNLINK_REASONS).map(Unlinked),
    st.sampled_from([1_750_000_000.0, 1_750_003_600.0]).map(lambda t: Banned("temporary_ban", t)),
)
#: Where each kind of state timeout may be armed (DESIGN.md, and STYLE.md's gen_statem note).
TIMEOUT_STATUSES = {"qr": {P}, "backoff": {D}, "slow": {D}, "handshake": {P, C}, "pair_code": {P}}


class DeviceMachine(RuleBasedStateMachine):
    """One device's state, driven by any sequence of events, checked against :class:`Model`.

    ``persisted`` is what the database holds (updated when a step persists), ``timer`` the state timeout
    the actor has armed (disarmed by any change of state, as the actor does). Timeouts come
    two ways: ``fire_timer`` delivers the armed one (what the actor does), the plain rules
    deliver any timeout at any moment (stale timeouts must be harmless).
    """

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(max_qr=3)
        self.state = DeviceState(P)
        self.persisted: tuple[Status, str | None, bool, int, float | None] = (P, None, False, 0, None)
        self.timer: str | None = None

    @initialize(max_qr=st.integers(1, 4))
    def new_device(self, max_qr: int) -> None:
        """Row "(new) | create": a pending device whose actor starts."""
        self.model = Model(max_qr=max_qr)
        self.state = DeviceState(P, max_qr_attempts=max_qr)
        self._step(Start())

    # -- helpers ---------------------------------------------------------------------------

    def _restart(self) -> None:
        """The actor is rebuilt from the database (supervisor restart or boot)."""
        status, reason, paired, failures, ban = self.persisted
        self.state = DeviceState.restore(status, reason, paired, failures, ban, self.model.max_qr)
        self.model.status, self.model.reason, self.model.paired = status, reason, paired
        self.model.failures, self.model.ban = failures, ban
        self.model.restart()
        self.timer = None

    def _step(self, event: sm.Event) -> None:
        old = self.state
        model_before = attrs.evolve(self.model)
        expected = self.model.step(event)
        try:
            step = sm.transition(old, event)
        except sm.InvalidCommand as exc:
            assert expected is None, f"{event!r} refused in {old!r}: {exc}"
            assert self.model == model_before
            assert str(exc) and str(exc) == str(exc).lower(), "error messages are lower-case"
            return
        assert expected is not None, f"{event!r} should be refused in {old!r}"
        expected_timer = expected.timeout[0] if expected.timeout else None
        if expected.show_qr is not None and expected.show_qr[1]:
            expected_timer = "qr"
        assert summarize(step) == expected, (old, event, step)
        new = step.state
        assert new == self.model.as_state(), (old, event, new, self.model)
        self._check_step(old, event, step)
        self.state = new
        if step.persist:
            self.persisted = _persisted(new)
        if new != old and not step.keep_timeout:
            self.timer = None
        if expected_timer is not None:
            self.timer = expected_timer

    def _check_step(self, old: DeviceState, event: sm.Event, step: Step) -> None:
        """DESIGN.md's invariants about one transition."""
        new = step.state
        changed = old.status is not new.status
        if changed:
            assert (old.status, new.status) in sm.LEGAL, (old, event, new)
            assert step.change == StatusChange(old.status, new.status, new.reason), step
        else:
            assert step.change is None, ("device_status iff status changes", step)
        if _persisted(old) != _persisted(new) or changed:
            assert step.persist, ("not persisted", old, new)
        assert all(e.type in EVENT_TYPES for e in step.events if isinstance(e, Emit))
        engine = type(step.engine)
        if old.status in (Q, L) and not isinstance(event, Login):
            assert engine not in (Connect, StartPairing), "no login from qr_timeout/logged_out"
        if engine is Connect:
            assert new.status is C and new.paired
        if engine is StartPairing:
            assert new.status is P and not new.paired
        if engine is NextQr or any(isinstance(e, ShowQr) for e in step.events):
            assert new.status is P
        if step.timeout is not None:
            assert new.status in TIMEOUT_STATUSES[KIND_NAMES[step.timeout.kind]], (step, new)
        if new.status is D and new.reason in HOLD:
            assert step.timeout is None and step.then is None, "held: no backoff"
        if new.status is L:
            assert engine is EngineLogout or old.status is L or new.reason == "credentials_missing"
        # Credentials are wiped only on the logged_out rows; only there is "paired" lost.
        if engine is EngineLogout:
            assert new.status is L, ("credentials wiped outside logged_out", old, event, new)
        if old.paired and not new.paired:
            assert new.status is L, ("credentials forgotten outside logged_out", old, event, new)

    # -- the happy path (so that connected and later QR attempts are reached often) -----------

    @rule(steps=st.integers(1, 4), wait=st.booleans())
    def progress(self, steps: int, wait: bool) -> None:
        """Take up to ``steps`` steps towards ``connected``: what an operator and a phone do
        (when disconnected: ``wait`` for the backoff, or log in at once)."""
        for _ in range(steps):
            s = self.state
            if s.status is P:
                event: sm.Event = QrReady("2@next") if s.qr_attempt == 0 else Scanned()
            elif s.status is C:
                event = EngineConnected()
            elif s.status is D and self.timer == "backoff" and wait:
                self.timer = None
                event = sm.BackoffElapsed()
            elif s.status is K:
                return
            else:
                event = Login()
            self._step(event)

    # -- commands (rules are few and broad, so that each kind of step comes up often) ---------

    @rule(command=st.sampled_from([Login(), Logout(), Cancel()]))
    def command(self, command: sm.Event) -> None:
        self._step(command)

    @rule(parked=st.booleans(), credentials=st.sampled_from(["stored", "stored", "lost", "extra"]))
    def restart(self, parked: bool, credentials: str) -> None:
        """The actor is rebuilt from the database: ``Start`` after a restart (boot or crash),
        ``CrashLoop`` when the supervisor parks a device that crashed too often. The engine's
        credentials are as stored, or were ``lost``, or are there for a pairing that was not
        stored (``extra``: a kill right after a scan)."""
        self._restart()
        if parked:
            self._step(CrashLoop())
            return
        paired = self.state.paired
        has = {"stored": paired, "lost": False, "extra": True}[credentials]
        self._step(Start(credentials=has))

    # -- engine events -----------------------------------------------------------------------

    @rule(event=ENGINE_EVENTS)
    def engine_event(self, event: sm.Event) -> None:
        self._step(event)

    # -- state timeouts ----------------------------------------------------------------------

    @precondition(lambda self: self.timer is not None)
    @rule()
    def fire_timer(self) -> None:
        """The armed state timeout fires (the actor consumes it first)."""
        assert self.timer is not None
        kind, self.timer = self.timer, None
        self._step(TIMEOUT_EVENT[kind])

    @rule(kind=st.sampled_from(sorted(TIMEOUT_EVENT)))
    def stale_timeout(self, kind: str) -> None:
        """A timeout at any moment, armed or not: it must be harmless where it does not fit."""
        self._step(TIMEOUT_EVENT[kind])

    # -- invariants (DESIGN.md) ----------------------------------------------------------------

    @invariant()
    def status_is_one_of_six(self) -> None:
        assert isinstance(self.state.status, Status)
        assert self.state.status.value in {
            "pending", "qr_timeout", "connecting", "connected", "disconnected", "logged_out"
        }

    @invariant()
    def credentials_match_status(self) -> None:
        if self.state.status is K:
            assert self.state.paired, "connected implies stored credentials"
        if self.state.status is L:
            assert not self.state.paired, "logged_out implies none are stored"
        if self.state.status is C:
            assert self.state.paired

    @invariant()
    def qr_attempts_bounded(self) -> None:
        assert 0 <= self.state.qr_attempt <= self.state.max_qr_attempts
        if self.state.status is not P:
            assert self.state.qr_attempt == 0

    @invariant()
    def persisted_equals_live(self) -> None:
        """After a crash the actor comes back in the state it had (DESIGN.md)."""
        assert self.persisted == _persisted(self.state)

    @invariant()
    def timer_fits_status(self) -> None:
        """A state timeout is armed exactly where the state needs one to move on by itself."""
        s = self.state
        if s.status is P:
            assert self.timer in ("qr", "handshake", "pair_code")
        elif s.status is C:
            assert self.timer == "handshake"
        elif s.status is D:
            # A slow reason reconnects at once at a start: then the backoff of attempt 0.
            expected = {"hold": (None,), "slow": ("slow", "backoff"), "backoff": ("backoff",)}
            assert self.timer in expected[_retry_of(s.reason, s.retry.value)], (s, self.timer)
        else:
            assert self.timer is None, (s, self.timer)


def _persisted(s: DeviceState) -> tuple[Status, str | None, bool, int, float | None]:
    """What the database keeps of a state (what :meth:`DeviceState.restore` takes)."""
    return (s.status, s.reason, s.paired, s.reconnect_attempt, s.ban_until)


TestStateMachine = DeviceMachine.TestCase
TestStateMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- DESIGN.md's table, row by row -----------------------------------------------------------------


def dev(status: Status, **kw: Any) -> DeviceState:
    """A state; a disconnected one has the retry class of its reason unless given."""
    if status is D and "retry" not in kw:
        kw["retry"] = sm.Retry(_retry_of(kw.get("reason")))
    return DeviceState(status, **kw)


def moved(
    before: DeviceState, after: DeviceState, *events: sm.EventSpec,
    engine: sm.EngineOp | None = None, timeout: StateTimeout | None = None,
    then: sm.Event | None = None,
) -> Step:
    """A step that changes the status (stored, with its history row and device_status)."""
    change = StatusChange(before.status, after.status, after.reason)
    return Step(after, change, True, events, engine, timeout, then)


def stays(
    after: DeviceState, *events: sm.EventSpec, persist: bool = False,
    engine: sm.EngineOp | None = None, timeout: StateTimeout | None = None,
) -> Step:
    """A step that keeps the status."""
    return Step(after, None, persist, events, engine, timeout)


def disc(reason: str) -> Emit:
    return Emit(DeviceDisconnected(reason))


def gone(reason: str) -> Emit:
    return Emit(DeviceLoggedOut(reason))


def backoff(attempt: int, not_before: float | None = None) -> StateTimeout:
    return StateTimeout(TimeoutKind.BACKOFF, attempt, not_before)


HANDSHAKE = StateTimeout(TimeoutKind.HANDSHAKE)
QR_FIRST = StateTimeout(TimeoutKind.QR_FIRST)
Row = tuple[str, DeviceState, sm.Event, Step]


def _logout_row(s: Status) -> Row:
    before = dev(s, paired=s in (C, K, D), qr_attempt=1 if s is P else 0)
    after = dev(L, reason="logout")
    return (f"logout from {s.value}", before, Logout(),
            moved(before, after, gone("logout"), engine=EngineLogout()))


def _unlinked_row(s: Status) -> Row:
    before = dev(s, paired=s is not P, reconnect_attempt=1)
    after = dev(L, reason="unlinked_from_phone")
    return (f"unlinked from {s.value}", before, Unlinked("unlinked_from_phone"),
            moved(before, after, gone("unlinked_from_phone"), engine=EngineLogout()))


def _login_row(s: Status) -> Row:
    before = dev(s, reason="x")
    return (f"login from {s.value}", before, Login(),
            moved(before, dev(P), engine=StartPairing(), timeout=HANDSHAKE))


def _row(name: str, before: DeviceState, event: sm.Event, make: Any) -> Row:
    return (name, before, event, make(before))


TABLE: list[Row] = [
    # (new) | create | pending (pairing starts; QR attempt 1 of maxAttempts)
    ("create: actor starts pairing", dev(P), Start(),
     stays(dev(P), engine=StartPairing(), timeout=HANDSHAKE)),
    ("create: first QR is attempt 1", dev(P), QrReady("q1"),
     stays(dev(P, qr_attempt=1), ShowQr("q1", 1), timeout=QR_FIRST)),
    # pending | QR expired, attempts left | pending (next QR, attempt+1, qr_code event)
    ("qr expired, attempts left", dev(P, qr_attempt=1), QrExpired(),
     stays(dev(P, qr_attempt=2), engine=NextQr(), timeout=StateTimeout(TimeoutKind.QR_NEXT, 2))),
    ("qr expired: next QR shown", dev(P, qr_attempt=2), QrReady("q2"),
     stays(dev(P, qr_attempt=2), ShowQr("q2", 2))),
    # pending | QR expired, no attempts left | qr_timeout (qr_timeout event)
    _row("qr expired, none left", dev(P, qr_attempt=3), QrExpired(),
         lambda b: moved(b, dev(Q, reason="qr_expired"), Emit(QrTimedOut()), engine=StopEngine())),
    # pending | scanned / pair code accepted | connecting
    ("scanned", dev(P, qr_attempt=2), Scanned("1555@s.whatsapp.net", "1555", "Ann", "android"),
     attrs.evolve(
         moved(dev(P, qr_attempt=2), dev(C, paired=True), engine=Connect(), timeout=HANDSHAKE),
         reported=sm.Reported("1555@s.whatsapp.net", "1555", "Ann", "android", pairing=True),
     )),
    # pending | WhatsApp unreachable before pairing | disconnected, then backoff -> pending
    _row("unreachable before pairing", dev(P), ConnectionLost("network_unreachable"),
         lambda b: moved(b, dev(D, reason="network_unreachable", reconnect_attempt=1),
                         disc("network_unreachable"), engine=StopEngine(), timeout=backoff(1))),
    _row("unreachable: backoff starts pairing over",
         dev(D, reason="network_unreachable", reconnect_attempt=1), sm.BackoffElapsed(),
         lambda b: moved(b, dev(P, reconnect_attempt=1), engine=StartPairing(), timeout=HANDSHAKE)),
    # connecting | engine connected | connected (device_connected)
    _row("engine connected", dev(C, paired=True, reconnect_attempt=2), EngineConnected(),
         lambda b: moved(b, dev(K, paired=True), Emit(DeviceConnected()))),
    # connecting, connected | connection lost | disconnected, then backoff -> connecting
    _row("connection lost while connecting", dev(C, paired=True, reconnect_attempt=1),
         ConnectionLost("connection_lost"),
         lambda b: moved(b, dev(D, reason="connection_lost", paired=True, reconnect_attempt=2),
                         disc("connection_lost"), engine=StopEngine(), timeout=backoff(2))),
    _row("connection lost while connected", dev(K, paired=True), ConnectionLost("connection_lost"),
         lambda b: moved(b, dev(D, reason="connection_lost", paired=True, reconnect_attempt=1),
                         disc("connection_lost"), engine=StopEngine(), timeout=backoff(1))),
    _row("connection lost: backoff reconnects",
         dev(D, reason="connection_lost", paired=True, reconnect_attempt=1), sm.BackoffElapsed(),
         lambda b: moved(b, dev(C, paired=True, reconnect_attempt=1), engine=Connect(),
                         timeout=HANDSHAKE)),
    # pending, connecting, connected, disconnected | logout / unlinked | logged_out
    *[_logout_row(s) for s in (P, C, K, D)],
    *[_unlinked_row(s) for s in (P, C, K, D)],
    # qr_timeout, logged_out | login | pending (new QR cycle)
    *[_login_row(s) for s in (Q, L)],
    # disconnected | login | connecting if paired, else pending (now; backoff reset)
    _row("login disconnected, paired", dev(D, reason="cancelled", paired=True, reconnect_attempt=4),
         Login(), lambda b: moved(b, dev(C, paired=True), engine=Connect(), timeout=HANDSHAKE)),
    _row("login disconnected, not paired", dev(D, reason="stopped", reconnect_attempt=4), Login(),
         lambda b: moved(b, dev(P), engine=StartPairing(), timeout=HANDSHAKE)),
    # pending, connecting, connected | login | unchanged (idempotent)
    ("login while pending", dev(P, qr_attempt=2), Login(), stays(dev(P, qr_attempt=2))),
    ("login while connecting", dev(C, paired=True), Login(), stays(dev(C, paired=True))),
    ("login while connected", dev(K, paired=True), Login(), stays(dev(K, paired=True))),
    # pending, connecting, connected, disconnected | cancel | qr_timeout if never paired,
    # else disconnected (reason cancelled, no automatic reconnect until login)
    _row("cancel pending", dev(P, qr_attempt=2), Cancel(),
         lambda b: moved(b, dev(Q, reason="cancelled"), engine=StopEngine())),
    _row("cancel connecting", dev(C, paired=True), Cancel(),
         lambda b: moved(b, dev(D, reason="cancelled", paired=True), disc("cancelled"),
                         engine=StopEngine())),
    _row("cancel connected", dev(K, paired=True), Cancel(),
         lambda b: moved(b, dev(D, reason="cancelled", paired=True), disc("cancelled"),
                         engine=StopEngine())),
    ("cancel disconnected, paired",
     dev(D, reason="connection_lost", paired=True, reconnect_attempt=3), Cancel(),
     stays(dev(D, reason="cancelled", paired=True), persist=True, engine=StopEngine())),
    _row("cancel disconnected, never paired", dev(D, reason="stopped", reconnect_attempt=1),
         Cancel(), lambda b: moved(b, dev(Q, reason="cancelled"), engine=StopEngine())),
    ("cancelled: backoff does nothing", dev(D, reason="cancelled", paired=True),
     sm.BackoffElapsed(), stays(dev(D, reason="cancelled", paired=True))),
    # pending | the phone's scan failed (pair error) | pending with reason pair_error and an
    # event at once; the QR cycle goes on (its deadline unchanged)
    ("failed scan", dev(P, qr_attempt=2), PairingFailed("pair_error", restart=True),
     Step(dev(P, qr_attempt=2, reason="pair_error"), None, True,
          (Emit(sm.StatusChanged(P, P, "pair_error")),), StartPairing(), keep_timeout=True)),
    ("failed scan voids a pair code", dev(P, qr_attempt=2, pair_code=True),
     PairingFailed("pair_error", restart=True),
     Step(dev(P, qr_attempt=2, reason="pair_error"), None, True,
          (Emit(sm.StatusChanged(P, P, "pair_error")),), StartPairing(), keep_timeout=True)),
    ("scan without multidevice", dev(P, qr_attempt=1), PairingFailed("scanned_without_multidevice"),
     Step(dev(P, qr_attempt=1, reason="scanned_without_multidevice"), None, True,
          (Emit(sm.StatusChanged(P, P, "scanned_without_multidevice")),), keep_timeout=True)),
    ("next QR code clears a failed scan", dev(P, qr_attempt=2, reason="pair_error"), QrReady("q3"),
     Step(dev(P, qr_attempt=2), None, True,
          (Emit(sm.StatusChanged(P, P, None)), ShowQr("q3", 2)), keep_timeout=True)),
    # pending (outdated only), connecting, connected | client outdated, stream replaced |
    # disconnected, held: credentials kept; outdated retries slowly; replaced waits for login
    _row("outdated while pairing", dev(P, qr_attempt=1),
         ConnectionLost("client_outdated", sm.Retry.SLOW),
         lambda b: moved(b, dev(D, reason="client_outdated", reconnect_attempt=1),
                         disc("client_outdated"), engine=StopEngine(),
                         timeout=StateTimeout(TimeoutKind.SLOW, 1))),
    _row("outdated while connected", dev(K, paired=True),
         ConnectionLost("client_outdated", sm.Retry.SLOW),
         lambda b: moved(b, dev(D, reason="client_outdated", paired=True, reconnect_attempt=1),
                         disc("client_outdated"), engine=StopEngine(),
                         timeout=StateTimeout(TimeoutKind.SLOW, 1))),
    _row("replaced while connected", dev(K, paired=True),
         ConnectionLost("stream_replaced", sm.Retry.HOLD),
         lambda b: moved(b, dev(D, reason="stream_replaced", paired=True, reconnect_attempt=1),
                         disc("stream_replaced"), engine=StopEngine())),
    ("replaced: backoff does nothing", dev(D, reason="stream_replaced", paired=True),
     sm.BackoffElapsed(), stays(dev(D, reason="stream_replaced", paired=True))),
    _row("replaced: login reconnects with the stored credentials",
         dev(D, reason="stream_replaced", paired=True, reconnect_attempt=1), Login(),
         lambda b: moved(b, dev(C, paired=True), engine=Connect(), timeout=HANDSHAKE)),
    ("outdated: restore reconnects at once", dev(D, reason="client_outdated", paired=True,
                                                 reconnect_attempt=3), Start(credentials=True),
     Step(dev(D, reason="client_outdated", paired=True, reconnect_attempt=3),
          then=sm.BackoffElapsed())),
    ("replaced: restore waits for login", dev(D, reason="stream_replaced", paired=True),
     Start(credentials=True), stays(dev(D, reason="stream_replaced", paired=True))),
    # pending | QR expired, no attempts left, a pair code outstanding | stays pending until
    # the pair code's window ends
    ("pair code issued", dev(P, qr_attempt=1), PairCodeIssued(),
     Step(dev(P, qr_attempt=1, pair_code=True), keep_timeout=True)),
    ("last QR expired, pair code still good", dev(P, qr_attempt=3, pair_code=True), QrExpired(),
     stays(dev(P, qr_attempt=3, pair_code=True), timeout=StateTimeout(TimeoutKind.PAIR_CODE))),
    _row("pair code window over", dev(P, qr_attempt=3, pair_code=True), PairCodeExpired(),
         lambda b: moved(b, dev(Q, reason="qr_expired"), Emit(QrTimedOut()), engine=StopEngine())),
    # Restore reconciles paired with the engine's credentials.
    _row("restore: scanned but not stored", dev(P), Start(credentials=True),
         lambda b: moved(b, dev(C, paired=True), engine=Connect(), timeout=HANDSHAKE)),
    _row("restore: paired without credentials", dev(D, reason="connection_lost", paired=True,
                                                    reconnect_attempt=2), Start(credentials=False),
         lambda b: moved(b, dev(L, reason="credentials_missing"), gone("credentials_missing"),
                         engine=StopEngine())),
    # any | delete: the actor stops; not a transition of the state machine.
]


@pytest.mark.parametrize(
    ("before", "event", "expected"),
    [pytest.param(b, e, x, id=name) for name, b, e, x in TABLE],
)
def test_table_row(before: DeviceState, event: sm.Event, expected: Step) -> None:
    assert sm.transition(before, event) == expected


BEYOND_TABLE: list[Row] = [
    # Restore after a restart (issue 2, "Boot restore"): reconnect at once, in the same step.
    _row("restore connected", dev(K, paired=True), Start(),
         lambda b: moved(b, dev(D, reason="restart", paired=True), disc("restart"),
                         then=sm.BackoffElapsed())),
    ("restore connecting", dev(C, paired=True), Start(),
     stays(dev(C, paired=True), engine=Connect(), timeout=HANDSHAKE)),
    ("restore disconnected by network", dev(D, reason="connection_lost", paired=True), Start(),
     Step(dev(D, reason="connection_lost", paired=True), then=sm.BackoffElapsed())),
    ("restore disconnected, backoff kept", dev(D, reason="connection_lost", paired=True,
                                               reconnect_attempt=3), Start(),
     stays(dev(D, reason="connection_lost", paired=True, reconnect_attempt=3),
           timeout=backoff(3))),
    ("restore cancelled stays", dev(D, reason="cancelled", paired=True), Start(),
     stays(dev(D, reason="cancelled", paired=True))),
    ("restore qr_timeout stays", dev(Q, reason="qr_expired"), Start(),
     stays(dev(Q, reason="qr_expired"))),
    ("restore logged_out stays", dev(L, reason="logout"), Start(), stays(dev(L, reason="logout"))),
    # Crash loop: parked as disconnected, never retried by itself.
    _row("crash loop while connected", dev(K, paired=True), CrashLoop(),
         lambda b: moved(b, dev(D, reason="crash_loop", paired=True), disc("crash_loop"),
                         engine=StopEngine())),
    ("crash loop while disconnected", dev(D, reason="connection_lost", paired=True), CrashLoop(),
     stays(dev(D, reason="crash_loop", paired=True), disc("crash_loop"), persist=True,
           engine=StopEngine())),
    # Timeouts of a handshake.
    _row("handshake timeout", dev(C, paired=True), HandshakeTimedOut(),
         lambda b: moved(b, dev(D, reason="handshake_timeout", paired=True, reconnect_attempt=1),
                         disc("handshake_timeout"), engine=StopEngine(), timeout=backoff(1))),
    ("handshake timeout after first QR is stale", dev(P, qr_attempt=1), HandshakeTimedOut(),
     stays(dev(P, qr_attempt=1))),
    # A temporary ban: the backoff waits for the ban's end.
    _row("temporary ban", dev(K, paired=True), Banned("temporary_ban", 99.0),
         lambda b: moved(b, dev(D, reason="temporary_ban", paired=True, reconnect_attempt=1,
                                ban_until=99.0),
                         disc("temporary_ban"), engine=StopEngine(), timeout=backoff(1, 99.0))),
    ("ban while cancelled arms nothing", dev(D, reason="cancelled", paired=True),
     Banned("temporary_ban", 99.0),
     stays(dev(D, reason="cancelled", paired=True, ban_until=99.0), persist=True)),
    # The engine's account fields of a connect ride in the step.
    _row("connected reports push name", dev(C, paired=True), EngineConnected("Ann", None),
         lambda b: attrs.evolve(moved(b, dev(K, paired=True), Emit(DeviceConnected())),
                                reported=sm.Reported(push_name="Ann"))),
    # Stale engine events are ignored.
    ("late qr after pairing", dev(C, paired=True), QrReady("q"), stays(dev(C, paired=True))),
    ("late unlink after logout", dev(L, reason="logout"), Unlinked("x"),
     stays(dev(L, reason="logout"))),
    ("late connect after cancel", dev(D, reason="cancelled", paired=True), EngineConnected(),
     stays(dev(D, reason="cancelled", paired=True))),
]


@pytest.mark.parametrize(
    ("before", "event", "expected"),
    [pytest.param(b, e, x, id=name) for name, b, e, x in BEYOND_TABLE],
)
def test_beyond_table(before: DeviceState, event: sm.Event, expected: Step) -> None:
    assert sm.transition(before, event) == expected


def test_restore_keeps_what_the_database_keeps() -> None:
    """A restart keeps status, reason, credentials, the backoff position and a ban; not the
    QR attempt."""
    state = DeviceState.restore(D, "temporary_ban", True, 3, 99.0, max_qr_attempts=4)
    assert state == dev(D, reason="temporary_ban", paired=True, reconnect_attempt=3,
                        ban_until=99.0, max_qr_attempts=4)
    assert state.qr_attempt == 0


ENGINE_AND_TIMEOUTS: list[sm.Event] = [
    QrReady("q"),
    Scanned(),
    EngineConnected(),
    ConnectionLost("connection_lost"),
    Unlinked("unlinked_from_phone"),
    Banned("temporary_ban", 99.0),
    QrExpired(),
    sm.BackoffElapsed(),
    HandshakeTimedOut(),
]
#: Events no row of the table applies to, per status: they are stale and change nothing.
STALE: dict[Status, set[type]] = {
    P: {EngineConnected, sm.BackoffElapsed, HandshakeTimedOut},  # a QR code is on show
    Q: {type(e) for e in ENGINE_AND_TIMEOUTS},
    C: {QrReady, Scanned, QrExpired, sm.BackoffElapsed},
    K: {QrReady, Scanned, EngineConnected, QrExpired, sm.BackoffElapsed, HandshakeTimedOut},
    D: {QrReady, Scanned, EngineConnected, ConnectionLost, QrExpired, HandshakeTimedOut},
    L: {type(e) for e in ENGINE_AND_TIMEOUTS},
}
SAMPLE_STATES = {
    P: dev(P, qr_attempt=1),
    Q: dev(Q, reason="qr_expired"),
    C: dev(C, paired=True),
    K: dev(K, paired=True),
    D: dev(D, reason="connection_lost", paired=True, reconnect_attempt=1),
    L: dev(L, reason="logout"),
}


@pytest.mark.parametrize(
    ("status", "event"),
    [
        pytest.param(s, e, id=f"{s.value}-{type(e).__name__}")
        for s in Status
        for e in ENGINE_AND_TIMEOUTS
        if type(e) in STALE[s]
    ],
)
def test_stale_events_change_nothing(status: Status, event: sm.Event) -> None:
    state = SAMPLE_STATES[status]
    assert sm.transition(state, event) == Step(state)


@pytest.mark.parametrize(
    ("before", "event"),
    [
        (dev(Q, reason="qr_expired"), Logout()),
        (dev(L, reason="logout"), Logout()),
        (dev(Q, reason="qr_expired"), Cancel()),
        (dev(L, reason="logout"), Cancel()),
        (dev(D, reason="temporary_ban", paired=True, ban_until=99.0), Login()),
    ],
)
def test_refused_commands(before: DeviceState, event: sm.Event) -> None:
    with pytest.raises(sm.InvalidCommand):
        sm.transition(before, event)


def test_qr_cycle_counts_attempts_exactly() -> None:
    """With maxAttempts 3: QR 1, 2, 3 are shown, the third expiry ends in qr_timeout."""
    state = sm.transition(dev(P, max_qr_attempts=3), Start()).state
    shown = []
    for n in range(1, 4):
        step = sm.transition(state, QrReady(f"q{n}"))
        shown += [e.attempt for e in step.events if isinstance(e, ShowQr)]
        step = sm.transition(step.state, QrExpired())
        state = step.state
    assert shown == [1, 2, 3]
    assert state == dev(Q, reason="qr_expired", max_qr_attempts=3)
    assert Emit(QrTimedOut()) in step.events


# -- every edge in LEGAL is taken by some event ----------------------------------------------------

#: For each legal edge, a path of events from a new device whose last event takes the edge.
PATHS: dict[tuple[Status, Status], list[sm.Event]] = {
    (P, Q): [Start(), QrReady("q"), QrExpired(), QrExpired(), QrExpired()],
    (P, C): [Start(), QrReady("q"), Scanned()],
    (P, D): [Start(), ConnectionLost("network_unreachable")],
    (P, L): [Start(), Logout()],
    (C, K): [Start(), Scanned(), EngineConnected()],
    (C, D): [Start(), Scanned(), HandshakeTimedOut()],
    (C, L): [Start(), Scanned(), Unlinked("unlinked_from_phone")],
    (K, D): [Start(), Scanned(), EngineConnected(), ConnectionLost("connection_lost")],
    (K, L): [Start(), Scanned(), EngineConnected(), Logout()],
    (D, C): [Start(), Scanned(), EngineConnected(), Cancel(), Login()],
    (D, P): [Start(), ConnectionLost("stopped"), sm.BackoffElapsed()],
    (D, L): [Start(), ConnectionLost("stopped"), Unlinked("no_credentials")],
    (D, Q): [Start(), ConnectionLost("stopped"), Cancel()],
    (Q, P): [Start(), Cancel(), Login()],
    (L, P): [Start(), Logout(), Login()],
}


def test_every_legal_edge_is_reachable() -> None:
    assert set(PATHS) == set(sm.LEGAL)
    for (source, target), events in PATHS.items():
        state = dev(P, max_qr_attempts=3)
        for event in events[:-1]:
            state = sm.transition(state, event).state
        assert state.status is source, (source, target)
        state = sm.transition(state, events[-1]).state
        assert state.status is target, (source, target)


# -- docs ------------------------------------------------------------------------------------------


def test_state_diagram_doc_is_current() -> None:
    """docs/state-machine.md shows what the code does (run docs/gen_state_diagram.py if not)."""
    gen = load_generator("gen_state_diagram.py")
    document = (DOCS / "state-machine.md").read_text(encoding="utf-8")
    assert gen.splice(document, gen.render()) == document, "run docs/gen_state_diagram.py"


def test_generator_finds_exactly_the_legal_edges() -> None:
    gen = load_generator("gen_state_diagram.py")
    taken = {(e.source, e.target) for e in gen.edges()}
    assert taken == set(sm.LEGAL)


def test_every_status_reason_is_explained() -> None:
    """Each statusReason the state machine or an engine produces is in the doc."""
    document = (DOCS / "state-machine.md").read_text(encoding="utf-8")
    source = (REPO / "supervisor" / "state.py").read_text(encoding="utf-8")
    reasons = set(re.findall(r'reason="([a-z_]+)"', source))
    reasons |= set(re.findall(r'_(?:to_disconnected|logged_out|held)\(\w+, "([a-z_]+)"', source))
    engines = REPO / "supervisor" / "engines"
    for name in ("simulator.py", "whatsmeow.py", "whatsmeow_translate.py"):
        path = engines / name
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        reasons |= set(
            re.findall(r'(?:EngineError|Disconnected|LoggedOut|TemporaryBan)\(f?"([a-z_]+)', text)
        )
        reasons |= set(re.findall(r'return f"([a-z_]+): ', text))
        reasons |= set(re.findall(r'nz\.[A-Z_]+: "([a-z_]+)"', text))
    assert {
        "cancelled", "crash_loop", "restart", "qr_expired", "logout", "credentials_missing"
    } <= reasons
    missing = sorted(r for r in reasons if f"`{r}" not in document)
    assert not missing, f"statusReason values not explained in docs/state-machine.md: {missing}"


def test_every_event_type_is_documented() -> None:
    document = (DOCS / "events.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `([a-z_]+)`", document, flags=re.M))
    assert EVENT_TYPES <= headings, sorted(EVENT_TYPES - headings)
    for kind in EVENT_TYPES:
        section = document.split(f"### `{kind}`", 1)[1].split("\n### ", 1)[0]
        assert f'"type": "{kind}"' in section, f"no example for {kind}"


def _config_rows() -> dict[str, list[str]]:
    document = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows: dict[str, list[str]] = {}
    for line in document.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and (m := re.fullmatch(r"`([a-z_.]+)`", cells[0])):
            rows[m.group(1)] = cells
    return rows


def _config_leaves(cls: type, prefix: str = "") -> dict[str, object]:
    """Every field of Config with its default; a sub-record's fields as ``record.field``."""
    leaves: dict[str, object] = {}
    for field in attrs.fields(cls):
        default = field.default
        if isinstance(default, attrs.Factory) and attrs.has(record := type(default.factory())):
            leaves.update(_config_leaves(record, f"{prefix}{field.name}."))
        else:
            leaves[prefix + field.name] = default
    return leaves


def test_every_config_field_is_documented() -> None:
    rows = _config_rows()
    leaves = _config_leaves(Config)
    missing = sorted(name for name in leaves if name not in rows)
    assert not missing, f"Config fields missing from docs/configuration.md: {missing}"
    for name, default in leaves.items():
        shown = rows[name][1]
        assert shown == f"`{_show_default(default)}`", (name, shown, default)


def _show_default(value: object) -> str:
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return repr(value)


def test_every_cli_option_is_documented() -> None:
    try:
        from api.cli import build_parser
    except ImportError:  # the CLI is optional for this module's subject
        pytest.skip("api.cli not importable")
    document = (DOCS / "configuration.md").read_text(encoding="utf-8")
    parser = build_parser({})
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {
        option
        for action in commands.choices["serve"]._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    missing = sorted(f for f in flags if f"`{f}" not in document)
    assert not missing, f"CLI options missing from docs/configuration.md: {missing}"
    cli_source = "".join(
        path.read_text(encoding="utf-8") for path in sorted((REPO / "api").glob("cli*.py"))
    )
    env_vars = set(re.findall(r"WASUP_[A-Z_]+", cli_source))
    missing_env = sorted(v for v in env_vars if f"`{v}`" not in document)
    assert not missing_env, f"environment variables missing from docs/configuration.md: {missing_env}"
