"""When a device reconnects after its connection ended with credentials kept."""

from __future__ import annotations

from enum import StrEnum


class Retry(StrEnum):
    """What the device does after a connection ended with credentials kept."""

    BACKOFF = "backoff"  # reconnect on the usual backoff schedule (network failures)
    SLOW = "slow"  # reconnect on the slow schedule (Config.slow_retry) and at every start
    HOLD = "hold"  # no reconnect until an operator's login (stored credentials, no new scan)
