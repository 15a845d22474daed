"""What a transition of the device state machine asks the actor to do, besides the new state.

The parts of a :class:`supervisor.state.Step`: the status change, the events to publish, the
one engine operation and the state timeout, each a frozen record.
"""

from __future__ import annotations

from enum import StrEnum

import attrs

from .payloads import (
    DeviceConnected,
    DeviceDisconnected,
    DeviceLoggedOut,
    QrTimedOut,
    StatusChanged,
)
from .status import Status


@attrs.frozen
class StatusChange:
    """The status changed: a history row and a ``device_status`` event."""

    before: Status
    after: Status
    reason: str | None


@attrs.frozen
class Emit:
    """Publish an event with this payload."""

    payload: DeviceConnected | DeviceDisconnected | DeviceLoggedOut | QrTimedOut | StatusChanged

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
    SLOW = "slow"  # the slow reconnect delay of ``disconnected`` (Retry.SLOW): BackoffElapsed
    HANDSHAKE = "handshake"  # connecting, or pairing until the first QR: HandshakeTimedOut
    PAIR_CODE = "pair_code"  # the end of a pair code's window, from the first QR: PairCodeExpired


@attrs.frozen
class StateTimeout:
    """Arm the state timeout (any change of state disarms the previous one).

    For ``BACKOFF``: the delay for reconnect ``attempt``; ``BACKOFF`` and ``SLOW`` wait not
    before the epoch ``not_before``.
    """

    kind: TimeoutKind
    attempt: int = 0
    not_before: float | None = None
