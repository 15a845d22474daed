"""The pure device state machine (:mod:`supervisor.state`) against DESIGN.md.

Three layers:

- ``TestStateMachine``: a hypothesis ``RuleBasedStateMachine`` drives ``transition`` with every
  kind of event (commands, engine events, state timeouts, restarts and crash-loop parks) and
  compares each step with :class:`Model`, written from DESIGN.md's table (not from state.py),
  then checks DESIGN.md's invariants after every step.
- ``test_table_row``: one example per row of DESIGN.md's table, with the exact state and
  action list expected.
- The documents: docs/state-machine.md is what docs/gen_state_diagram.py draws from the code
  now; docs/events.md and docs/configuration.md cover every event type and Config field.

Everything here is pure and synchronous; the module runs in a few seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
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
from supervisor.events import EVENT_TYPES
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
    Persist,
    QrExpired,
    QrReady,
    Scanned,
    SetTimeout,
    ShowQr,
    Start,
    StartPairing,
    Status,
    StopEngine,
    Unlinked,
)

P, Q, C, K, D, L = (
    Status.PENDING,
    Status.QR_TIMEOUT,
    Status.CONNECTING,
    Status.CONNECTED,
    Status.DISCONNECTED,
    Status.LOGGED_OUT,
)
REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"

# -- the model, from DESIGN.md's table ------------------------------------------------------------

#: Statuses with a session (DESIGN.md: logout and cancel apply to these).
SESSION = frozenset({P, C, K, D})
#: Reasons after which wasup waits for an operator's login (DESIGN.md: "no automatic
#: reconnect until login"; the crash-loop park of the supervisor section).
HOLD = frozenset({"cancelled", "crash_loop"})


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


def summarize(actions: list[sm.Action]) -> Expect:
    """Reduce real actions to an :class:`Expect` (Persist is checked by the invariants)."""
    emits = []
    fields: dict[str, Any] = {}
    timeouts = []
    shows = []
    for action in actions:
        match action:
            case Emit(type=kind, data=data):
                emits.append((kind, data))
            case Connect():
                fields["connect"] = True
            case StartPairing():
                fields["start_pairing"] = True
            case NextQr():
                fields["next_qr"] = True
            case EngineLogout():
                fields["engine_logout"] = True
            case StopEngine():
                fields["stop_engine"] = True
            case ShowQr(attempt=attempt, restart_timer=restart):
                shows.append((attempt, restart))
            case SetTimeout(kind=kind, attempt=attempt, not_before=not_before):
                # `attempt` only means something for qr and backoff timers.
                timeouts.append((kind, attempt if kind != "handshake" else 0, not_before))
    for flag in ("connect", "start_pairing", "next_qr", "engine_logout", "stop_engine"):
        assert [type(a).__name__ for a in actions].count(_CLASS[flag]) <= 1, actions
    assert len(timeouts) <= 1 and len(shows) <= 1, actions
    return Expect(
        emits=tuple(emits),
        show_qr=shows[0] if shows else None,
        timeout=timeouts[0] if timeouts else None,
        **fields,
    )


_CLASS = {
    "connect": "Connect",
    "start_pairing": "StartPairing",
    "next_qr": "NextQr",
    "engine_logout": "EngineLogout",
    "stop_engine": "StopEngine",
}


def _status_event(old: Status, new: Status, reason: str | None) -> tuple[str, Any]:
    return ("device_status", (("from", old.value), ("to", new.value), ("reason", reason)))


@attrs.define
class Model:
    """A device as DESIGN.md describes it.

    ``failures`` counts reconnect attempts since the last success (the backoff exponent);
    ``ban`` is the end of a temporary ban WhatsApp announced. Neither survives a restart (the
    database keeps status, reason and whether credentials are stored).
    """

    max_qr: int
    status: Status = P
    reason: str | None = None
    paired: bool = False
    qr: int = 0
    failures: int = 0
    ban: float | None = None

    def as_state(self) -> DeviceState:
        return DeviceState(
            status=self.status,
            reason=self.reason,
            paired=self.paired,
            qr_attempt=self.qr,
            max_qr_attempts=self.max_qr,
            reconnect_attempt=self.failures,
            ban_until=self.ban,
        )

    def restart(self) -> None:
        self.qr, self.failures, self.ban = 0, 0, None

    # The step helpers move the model and say what should be done.

    def _move(self, status: Status, reason: str | None, *extra: Any) -> list[Any]:
        old = self.status
        self.status, self.reason = status, reason
        return [_status_event(old, status, reason), *extra] if old is not status else list(extra)

    def _login(self) -> Expect:
        """Row "disconnected | login": connect if paired, else pair again (QR cycle restarts)."""
        self.qr = 0
        if self.paired:
            emits = self._move(C, None)
            return Expect(emits=tuple(emits), connect=True, timeout=("handshake", 0, None))
        emits = self._move(P, None)
        return Expect(emits=tuple(emits), start_pairing=True, timeout=("handshake", 0, None))

    def _lost(self, reason: str) -> Expect:
        """Row "connection lost (recoverable)": disconnected, then reconnect with backoff."""
        self.failures += 1
        self.qr = 0
        emits = self._move(D, reason, ("device_disconnected", (("reason", reason),)))
        return Expect(
            emits=tuple(emits), stop_engine=True, timeout=("backoff", self.failures, self.ban)
        )

    def _logged_out(self, reason: str) -> Expect:
        """Row "logout or unlinked": logged_out, credentials wiped, never retried."""
        self.paired, self.qr, self.failures, self.ban = False, 0, 0, None
        emits = self._move(L, reason, ("device_logged_out", (("reason", reason),)))
        return Expect(emits=tuple(emits), engine_logout=True)

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
                if target is D and s is not D:
                    emits.append(("device_disconnected", (("reason", "cancelled"),)))
                return Expect(emits=tuple(emits), stop_engine=True)
            case Start():  # an actor starts on a (restored) state
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
                if s is D and self.reason not in HOLD:
                    return Expect(timeout=("backoff", self.failures, self.ban))
                return Expect()
            case CrashLoop():
                self.qr = 0
                if s in (P, C, K):
                    emits = self._move(
                        D, "crash_loop", ("device_disconnected", (("reason", "crash_loop"),))
                    )
                    return Expect(emits=tuple(emits), stop_engine=True)
                if s is D:
                    self.reason = "crash_loop"
                    return Expect(
                        emits=(("device_disconnected", (("reason", "crash_loop"),)),),
                        stop_engine=True,
                    )
                return Expect(stop_engine=True)
            case QrReady():
                if s is not P:
                    return Expect()
                if self.qr == 0:
                    self.qr = 1
                    return Expect(show_qr=(1, True))
                return Expect(show_qr=(self.qr, False))
            case QrExpired():
                if s is not P:
                    return Expect()
                if self.qr >= self.max_qr:
                    self.qr = 0
                    emits = self._move(Q, "qr_expired", ("qr_timeout", ()))
                    return Expect(emits=tuple(emits), stop_engine=True)
                self.qr += 1
                return Expect(next_qr=True, timeout=("qr", self.qr, None))
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
            case ConnectionLost(reason=reason):
                return self._lost(reason) if s in (P, C, K) else Expect()
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
                if self.reason in HOLD:
                    return Expect()
                return Expect(timeout=("backoff", self.failures, until))
            case Unlinked(reason=reason):
                return self._logged_out(reason) if s in SESSION else Expect()
            case sm.BackoffElapsed():
                if s is not D or self.reason in HOLD:
                    return Expect()
                self.ban = None
                return self._login()
        raise AssertionError(f"model has no rule for {event!r}")


# -- the rule-based state machine -----------------------------------------------------------------

CONNECTION_LOST_REASONS = (
    "connection_lost",
    "network_unreachable: simulated",
    "stopped",
    "not_connected",
    "temporary_ban",
)
UNLINK_REASONS = ("unlinked_from_phone", "no_credentials", "invalid_credentials", "banned")
TIMEOUT_EVENT: dict[str, sm.Event] = {
    "qr": QrExpired(),
    "backoff": sm.BackoffElapsed(),
    "handshake": HandshakeTimedOut(),
}
ENGINE_EVENTS = st.one_of(
    st.sampled_from([QrReady("2@abc,def,ghi,jkl"), QrReady("2@xyz,uvw,rst,opq")]),
    st.just(Scanned()),
    st.just(EngineConnected()),
    st.sampled_from(CONNECTION_LOST_REASONS).map(ConnectionLost),
    st.sampled_from(UNLINK_REASONS).map(Unlinked),
    st.sampled_from([1_750_000_000.0, 1_750_003_600.0]).map(lambda t: Banned("temporary_ban", t)),
)
#: Where each kind of state timeout may be armed (DESIGN.md, and STYLE.md's gen_statem note).
TIMEOUT_STATUSES = {"qr": {P}, "backoff": {D}, "handshake": {P, C}}


class DeviceMachine(RuleBasedStateMachine):
    """One device's state, driven by any sequence of events, checked against :class:`Model`.

    ``persisted`` is what the database holds (updated on Persist), ``timer`` the state timeout
    the actor has armed (disarmed by any change of state, as the actor does). Timeouts come
    two ways: ``fire_timer`` delivers the armed one (what the actor does), the plain rules
    deliver any timeout at any moment (stale timeouts must be harmless).
    """

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(max_qr=3)
        self.state = DeviceState(P)
        self.persisted: tuple[Status, str | None, bool] = (P, None, False)
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
        status, reason, paired = self.persisted
        self.state = DeviceState(
            status, reason=reason, paired=paired, max_qr_attempts=self.model.max_qr
        )
        self.model.status, self.model.reason, self.model.paired = status, reason, paired
        self.model.restart()
        self.timer = None

    def _step(self, event: sm.Event) -> None:
        old = self.state
        model_before = attrs.evolve(self.model)
        expected = self.model.step(event)
        try:
            new, actions = sm.transition(old, event)
        except sm.InvalidCommand as exc:
            assert expected is None, f"{event!r} refused in {old!r}: {exc}"
            assert self.model == model_before
            assert str(exc) and str(exc) == str(exc).lower(), "error messages are lower-case"
            return
        assert expected is not None, f"{event!r} should be refused in {old!r}"
        assert summarize(actions) == expected, (old, event, actions)
        assert new == self.model.as_state(), (old, event, new, self.model)
        self._check_step(old, event, new, actions)
        self.state = new
        if any(isinstance(a, Persist) for a in actions):
            self.persisted = (new.status, new.reason, new.paired)
        if new != old:
            self.timer = None
        for action in actions:
            if isinstance(action, SetTimeout):
                self.timer = action.kind
            elif isinstance(action, ShowQr) and action.restart_timer:
                self.timer = "qr"

    def _check_step(
        self, old: DeviceState, event: sm.Event, new: DeviceState, actions: list[sm.Action]
    ) -> None:
        """DESIGN.md's invariants about one transition."""
        changed = old.status is not new.status
        if changed:
            assert (old.status, new.status) in sm.LEGAL, (old, event, new)
        statuses = [a for a in actions if isinstance(a, Emit) and a.type == "device_status"]
        assert len(statuses) == (1 if changed else 0), ("device_status iff status changes", actions)
        if changed:
            assert dict(statuses[0].data) == {
                "from": old.status.value,
                "to": new.status.value,
                "reason": new.reason,
            }
        persisted_fields_changed = (old.status, old.reason, old.paired) != (
            new.status,
            new.reason,
            new.paired,
        )
        if persisted_fields_changed or changed:
            assert any(isinstance(a, Persist) for a in actions), ("not persisted", old, new)
        assert all(e.type in EVENT_TYPES for e in actions if isinstance(e, Emit))
        kinds = {type(a) for a in actions}
        if old.status in (Q, L) and not isinstance(event, Login):
            assert not kinds & {Connect, StartPairing}, "no login from qr_timeout/logged_out"
        if Connect in kinds:
            assert new.status is C and new.paired
        if StartPairing in kinds:
            assert new.status is P and not new.paired
        if ShowQr in kinds or NextQr in kinds:
            assert new.status is P
        for action in actions:
            if isinstance(action, SetTimeout):
                assert new.status in TIMEOUT_STATUSES[action.kind], (action, new)
        if new.status is D and new.reason in HOLD:
            assert not any(isinstance(a, SetTimeout) for a in actions), "held: no backoff"
        if new.status is L:
            assert EngineLogout in kinds or old.status is L

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

    @rule(parked=st.booleans())
    def restart(self, parked: bool) -> None:
        """The actor is rebuilt from the database: ``Start`` after a restart (boot or crash),
        ``CrashLoop`` when the supervisor parks a device that crashed too often."""
        self._restart()
        self._step(CrashLoop() if parked else Start())

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
        s = self.state
        assert self.persisted == (s.status, s.reason, s.paired)

    @invariant()
    def timer_fits_status(self) -> None:
        """A state timeout is armed exactly where the state needs one to move on by itself."""
        s = self.state
        if s.status is P:
            assert self.timer in ("qr", "handshake")
        elif s.status is C:
            assert self.timer == "handshake"
        elif s.status is D:
            assert self.timer == (None if s.reason in HOLD else "backoff"), (s, self.timer)
        else:
            assert self.timer is None, (s, self.timer)


TestStateMachine = DeviceMachine.TestCase
TestStateMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- DESIGN.md's table, row by row -----------------------------------------------------------------


def dev(status: Status, **kw: Any) -> DeviceState:
    return DeviceState(status, **kw)


def changed(old: Status, new: Status, reason: str | None = None) -> list[sm.Action]:
    return [
        Persist(),
        Emit("device_status", (("from", old.value), ("to", new.value), ("reason", reason))),
    ]


def disc(reason: str) -> Emit:
    return Emit("device_disconnected", (("reason", reason),))


def gone(reason: str) -> Emit:
    return Emit("device_logged_out", (("reason", reason),))


HANDSHAKE = SetTimeout("handshake")
Row = tuple[str, DeviceState, sm.Event, DeviceState, list[sm.Action]]

TABLE: list[Row] = [
    # (new) | create | pending (pairing starts; QR attempt 1 of maxAttempts)
    ("create: actor starts pairing", dev(P), Start(), dev(P), [StartPairing(), HANDSHAKE]),
    ("create: first QR is attempt 1", dev(P), QrReady("q1"), dev(P, qr_attempt=1),
     [ShowQr("q1", 1, restart_timer=True)]),
    # pending | QR expired, attempts left | pending (next QR, attempt+1, qr_code event)
    ("qr expired, attempts left", dev(P, qr_attempt=1), QrExpired(), dev(P, qr_attempt=2),
     [NextQr(), SetTimeout("qr", attempt=2)]),
    ("qr expired: next QR shown", dev(P, qr_attempt=2), QrReady("q2"), dev(P, qr_attempt=2),
     [ShowQr("q2", 2, restart_timer=False)]),
    # pending | QR expired, no attempts left | qr_timeout (qr_timeout event)
    ("qr expired, none left", dev(P, qr_attempt=3), QrExpired(), dev(Q, reason="qr_expired"),
     [StopEngine(), *changed(P, Q, "qr_expired"), Emit("qr_timeout")]),
    # pending | scanned / pair code accepted | connecting
    ("scanned", dev(P, qr_attempt=2), Scanned(), dev(C, paired=True),
     [*changed(P, C), Connect(), HANDSHAKE]),
    # pending | WhatsApp unreachable before pairing | disconnected, then backoff -> pending
    ("unreachable before pairing", dev(P), ConnectionLost("network_unreachable"),
     dev(D, reason="network_unreachable", reconnect_attempt=1),
     [StopEngine(), *changed(P, D, "network_unreachable"), disc("network_unreachable"),
      SetTimeout("backoff", attempt=1)]),
    ("unreachable: backoff starts pairing over",
     dev(D, reason="network_unreachable", reconnect_attempt=1), sm.BackoffElapsed(),
     dev(P, reconnect_attempt=1), [*changed(D, P), StartPairing(), HANDSHAKE]),
    # connecting | engine connected | connected (device_connected)
    ("engine connected", dev(C, paired=True, reconnect_attempt=2), EngineConnected(),
     dev(K, paired=True), [*changed(C, K), Emit("device_connected")]),
    # connecting, connected | connection lost | disconnected, then backoff -> connecting
    ("connection lost while connecting", dev(C, paired=True, reconnect_attempt=1),
     ConnectionLost("connection_lost"),
     dev(D, reason="connection_lost", paired=True, reconnect_attempt=2),
     [StopEngine(), *changed(C, D, "connection_lost"), disc("connection_lost"),
      SetTimeout("backoff", attempt=2)]),
    ("connection lost while connected", dev(K, paired=True), ConnectionLost("connection_lost"),
     dev(D, reason="connection_lost", paired=True, reconnect_attempt=1),
     [StopEngine(), *changed(K, D, "connection_lost"), disc("connection_lost"),
      SetTimeout("backoff", attempt=1)]),
    ("connection lost: backoff reconnects",
     dev(D, reason="connection_lost", paired=True, reconnect_attempt=1), sm.BackoffElapsed(),
     dev(C, paired=True, reconnect_attempt=1), [*changed(D, C), Connect(), HANDSHAKE]),
    # pending, connecting, connected, disconnected | logout / unlinked | logged_out
    *[
        (f"logout from {s.value}", dev(s, paired=s in (C, K, D), qr_attempt=1 if s is P else 0),
         Logout(), dev(L, reason="logout"), [EngineLogout(), *changed(s, L, "logout"), gone("logout")])
        for s in (P, C, K, D)
    ],
    *[
        (f"unlinked from {s.value}", dev(s, paired=s is not P, reconnect_attempt=1),
         Unlinked("unlinked_from_phone"), dev(L, reason="unlinked_from_phone"),
         [EngineLogout(), *changed(s, L, "unlinked_from_phone"), gone("unlinked_from_phone")])
        for s in (P, C, K, D)
    ],
    # qr_timeout, logged_out | login | pending (new QR cycle)
    *[
        (f"login from {s.value}", dev(s, reason="x"), Login(), dev(P),
         [*changed(s, P), StartPairing(), HANDSHAKE])
        for s in (Q, L)
    ],
    # disconnected | login | connecting if paired, else pending (now; backoff reset)
    ("login disconnected, paired", dev(D, reason="cancelled", paired=True, reconnect_attempt=4),
     Login(), dev(C, paired=True), [*changed(D, C), Connect(), HANDSHAKE]),
    ("login disconnected, not paired", dev(D, reason="stopped", reconnect_attempt=4), Login(),
     dev(P), [*changed(D, P), StartPairing(), HANDSHAKE]),
    # pending, connecting, connected | login | unchanged (idempotent)
    ("login while pending", dev(P, qr_attempt=2), Login(), dev(P, qr_attempt=2), []),
    ("login while connecting", dev(C, paired=True), Login(), dev(C, paired=True), []),
    ("login while connected", dev(K, paired=True), Login(), dev(K, paired=True), []),
    # pending, connecting, connected, disconnected | cancel | qr_timeout if never paired,
    # else disconnected (reason cancelled, no automatic reconnect until login)
    ("cancel pending", dev(P, qr_attempt=2), Cancel(), dev(Q, reason="cancelled"),
     [StopEngine(), *changed(P, Q, "cancelled")]),
    ("cancel connecting", dev(C, paired=True), Cancel(), dev(D, reason="cancelled", paired=True),
     [StopEngine(), *changed(C, D, "cancelled"), disc("cancelled")]),
    ("cancel connected", dev(K, paired=True), Cancel(), dev(D, reason="cancelled", paired=True),
     [StopEngine(), *changed(K, D, "cancelled"), disc("cancelled")]),
    ("cancel disconnected, paired", dev(D, reason="connection_lost", paired=True,
                                         reconnect_attempt=3),
     Cancel(), dev(D, reason="cancelled", paired=True), [StopEngine(), Persist()]),
    ("cancel disconnected, never paired", dev(D, reason="stopped", reconnect_attempt=1), Cancel(),
     dev(Q, reason="cancelled"), [StopEngine(), *changed(D, Q, "cancelled")]),
    ("cancelled: backoff does nothing", dev(D, reason="cancelled", paired=True),
     sm.BackoffElapsed(), dev(D, reason="cancelled", paired=True), []),
    # any | delete: the actor stops; not a transition of the state machine.
]


@pytest.mark.parametrize(
    ("before", "event", "after", "actions"),
    [pytest.param(b, e, a, acts, id=name) for name, b, e, a, acts in TABLE],
)
def test_table_row(
    before: DeviceState, event: sm.Event, after: DeviceState, actions: list[sm.Action]
) -> None:
    assert sm.transition(before, event) == (after, actions)


BEYOND_TABLE: list[Row] = [
    # Restore after a restart (issue 2, "Boot restore").
    ("restore connected", dev(K, paired=True), Start(), dev(D, reason="restart", paired=True),
     [*changed(K, D, "restart"), disc("restart"), SetTimeout("backoff", attempt=0)]),
    ("restore connecting", dev(C, paired=True), Start(), dev(C, paired=True), [Connect(), HANDSHAKE]),
    ("restore disconnected by network", dev(D, reason="connection_lost", paired=True), Start(),
     dev(D, reason="connection_lost", paired=True), [SetTimeout("backoff", attempt=0)]),
    ("restore cancelled stays", dev(D, reason="cancelled", paired=True), Start(),
     dev(D, reason="cancelled", paired=True), []),
    ("restore qr_timeout stays", dev(Q, reason="qr_expired"), Start(), dev(Q, reason="qr_expired"), []),
    ("restore logged_out stays", dev(L, reason="logout"), Start(), dev(L, reason="logout"), []),
    # Crash loop: parked as disconnected, never retried by itself.
    ("crash loop while connected", dev(K, paired=True), CrashLoop(),
     dev(D, reason="crash_loop", paired=True),
     [StopEngine(), *changed(K, D, "crash_loop"), disc("crash_loop")]),
    ("crash loop while disconnected", dev(D, reason="connection_lost", paired=True), CrashLoop(),
     dev(D, reason="crash_loop", paired=True), [StopEngine(), Persist(), disc("crash_loop")]),
    # Timeouts of a handshake.
    ("handshake timeout", dev(C, paired=True), HandshakeTimedOut(),
     dev(D, reason="handshake_timeout", paired=True, reconnect_attempt=1),
     [StopEngine(), *changed(C, D, "handshake_timeout"), disc("handshake_timeout"),
      SetTimeout("backoff", attempt=1)]),
    ("handshake timeout after first QR is stale", dev(P, qr_attempt=1), HandshakeTimedOut(),
     dev(P, qr_attempt=1), []),
    # A temporary ban: the backoff waits for the ban's end.
    ("temporary ban", dev(K, paired=True), Banned("temporary_ban", 99.0),
     dev(D, reason="temporary_ban", paired=True, reconnect_attempt=1, ban_until=99.0),
     [StopEngine(), *changed(K, D, "temporary_ban"), disc("temporary_ban"),
      SetTimeout("backoff", attempt=1, not_before=99.0)]),
    ("ban while cancelled arms nothing", dev(D, reason="cancelled", paired=True),
     Banned("temporary_ban", 99.0), dev(D, reason="cancelled", paired=True, ban_until=99.0),
     [Persist()]),
    # Stale engine events are ignored.
    ("late qr after pairing", dev(C, paired=True), QrReady("q"), dev(C, paired=True), []),
    ("late unlink after logout", dev(L, reason="logout"), Unlinked("x"), dev(L, reason="logout"), []),
    ("late connect after cancel", dev(D, reason="cancelled", paired=True), EngineConnected(),
     dev(D, reason="cancelled", paired=True), []),
]


@pytest.mark.parametrize(
    ("before", "event", "after", "actions"),
    [pytest.param(b, e, a, acts, id=name) for name, b, e, a, acts in BEYOND_TABLE],
)
def test_beyond_table(
    before: DeviceState, event: sm.Event, after: DeviceState, actions: list[sm.Action]
) -> None:
    assert sm.transition(before, event) == (after, actions)


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
    assert sm.transition(state, event) == (state, [])


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
    state, _ = sm.transition(dev(P, max_qr_attempts=3), Start())
    shown = []
    for n in range(1, 4):
        state, actions = sm.transition(state, QrReady(f"q{n}"))
        shown += [a.attempt for a in actions if isinstance(a, ShowQr)]
        state, actions = sm.transition(state, QrExpired())
    assert shown == [1, 2, 3]
    assert state == dev(Q, reason="qr_expired", max_qr_attempts=3)
    assert Emit("qr_timeout") in actions


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
            state, _ = sm.transition(state, event)
        assert state.status is source, (source, target)
        state, _ = sm.transition(state, events[-1])
        assert state.status is target, (source, target)


# -- docs ------------------------------------------------------------------------------------------


def _load_generator() -> ModuleType:
    name = "wasup_docs_gen_state_diagram"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCS / "gen_state_diagram.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_state_diagram_doc_is_current() -> None:
    """docs/state-machine.md shows what the code does (run docs/gen_state_diagram.py if not)."""
    gen = _load_generator()
    document = (DOCS / "state-machine.md").read_text(encoding="utf-8")
    assert gen.splice(document, gen.render()) == document, "run docs/gen_state_diagram.py"


def test_generator_finds_exactly_the_legal_edges() -> None:
    gen = _load_generator()
    taken = {(e.source, e.target) for e in gen.edges()}
    assert taken == set(sm.LEGAL)


def test_every_status_reason_is_explained() -> None:
    """Each statusReason the state machine or an engine produces is in the doc."""
    document = (DOCS / "state-machine.md").read_text(encoding="utf-8")
    source = (REPO / "supervisor" / "state.py").read_text(encoding="utf-8")
    reasons = set(re.findall(r'reason="([a-z_]+)"', source))
    reasons |= set(re.findall(r'_(?:to_disconnected|logged_out)\(\w+, "([a-z_]+)"\)', source))
    engines = REPO / "supervisor" / "engines"
    for name in ("simulator.py", "whatsmeow.py", "whatsmeow_translate.py"):
        path = engines / name
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        reasons |= set(
            re.findall(r'(?:EngineError|Disconnected|LoggedOut|TemporaryBan)\(f?"([a-z_]+)', text)
        )
        reasons |= set(re.findall(r'return f"([a-z_]+): ', text))
        reasons |= set(re.findall(r'nz\.[A-Z_]+: "([a-z_]+)"', text))
    assert {"cancelled", "crash_loop", "restart", "qr_expired", "logout"} <= reasons
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
    cli_source = (REPO / "api" / "cli.py").read_text(encoding="utf-8")
    env_vars = set(re.findall(r"WASUP_[A-Z_]+", cli_source))
    missing_env = sorted(v for v in env_vars if f"`{v}`" not in document)
    assert not missing_env, f"environment variables missing from docs/configuration.md: {missing_env}"
