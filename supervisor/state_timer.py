"""A device's one state timeout, as OTP's ``gen_statem`` has it.

A step of the state machine may arm it (:class:`~supervisor.machine_steps.StateTimeout`); any
change of state disarms it. When it is due, a :class:`~supervisor.inbox.Timeout` comes through
the device's inbox and :meth:`StateTimer.fired` turns it into the state machine's event, or
into nothing when the timeout was disarmed since.
"""

from __future__ import annotations

import math

import attrs
import trio

from common.clock import now_epoch

from . import state as sm
from .context import ActorContext
from .inbox import Inbox

#: The event each kind of state timeout fires.
EVENTS: dict[sm.TimeoutKind, sm.Event] = {
    sm.TimeoutKind.QR_FIRST: sm.QrExpired(),
    sm.TimeoutKind.QR_NEXT: sm.QrExpired(),
    sm.TimeoutKind.BACKOFF: sm.BackoffElapsed(),
    sm.TimeoutKind.SLOW: sm.BackoffElapsed(),
    sm.TimeoutKind.HANDSHAKE: sm.HandshakeTimedOut(),
    sm.TimeoutKind.PAIR_CODE: sm.PairCodeExpired(),
}


@attrs.define(eq=False, slots=True)
class StateTimer:
    """The armed state timeout of one device (trio time), and when its pairing's first QR
    code came (a pair code's window starts there)."""

    ctx: ActorContext
    inbox: Inbox
    deadline: float = math.inf
    kind: sm.TimeoutKind | None = None
    token: int = 0
    first_qr_at: float | None = None

    def arm(self, timeout: sm.StateTimeout) -> None:
        """Arm ``timeout`` in place of the one armed (its Timeout, if any, is now stale)."""
        cfg = self.ctx.config
        now = trio.current_time()
        match timeout.kind:
            case sm.TimeoutKind.QR_FIRST:
                deadline = now + cfg.qr_first_timeout
                self.first_qr_at = now
            case sm.TimeoutKind.QR_NEXT:
                deadline = now + cfg.qr_next_timeout
            case sm.TimeoutKind.BACKOFF:
                deadline = now + self.ctx.backoff.delay(timeout.attempt, self.ctx.rng)
            case sm.TimeoutKind.SLOW:
                deadline = now + cfg.slow_backoff.delay(1, self.ctx.rng)
            case sm.TimeoutKind.HANDSHAKE:
                deadline = now + cfg.connect_timeout
            case sm.TimeoutKind.PAIR_CODE:
                first = now if self.first_qr_at is None else self.first_qr_at
                deadline = max(now, first + cfg.pair_code_window)
        if timeout.not_before is not None:
            deadline = max(deadline, now + (timeout.not_before - now_epoch()))
        self.kind, self.deadline = timeout.kind, deadline
        self.token = self.ctx.timers.arm(self.inbox, deadline)

    def disarm(self) -> None:
        self.deadline, self.kind, self.token = math.inf, None, 0

    def fired(self, token: int) -> sm.Event | None:
        """The event for the Timeout armed with ``token``; None when disarmed since."""
        if token != self.token or self.kind is None:
            return None
        kind, self.deadline, self.kind = self.kind, math.inf, None
        return EVENTS[kind]

    def left(self) -> float:
        """Seconds until the armed timeout is due (0 when none is armed)."""
        return max(0.0, self.deadline - trio.current_time()) if self.kind is not None else 0.0

    def pair_code_left(self) -> float:
        """Seconds a pair code handed out now may be entered: until the first QR code of this
        pairing plus ``pair_code_window`` (whatsmeow's limit)."""
        window = self.ctx.config.pair_code_window
        if self.first_qr_at is None:
            return window
        return max(0.0, self.first_qr_at + window - trio.current_time())
