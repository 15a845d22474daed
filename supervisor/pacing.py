"""How fast one device sends: its pacing (``PUT .../settings/sending`` over
:class:`~supervisor.config.SendingConfig`'s defaults) and the token bucket that enforces it.

The outbound queue (:mod:`supervisor.outbound`) takes a token for every send: up to ``burst``
sends leave back to back, then one per ``60 / ratePerMinute`` seconds on average.
"""

from __future__ import annotations

import attrs

import storage

from .config import SendingConfig

#: The settings kind that overrides a device's pacing (``PUT .../settings/sending``).
SETTINGS_KIND = "sending"
#: Bounds of the pacing settings (shared with the route's validation and docs/openapi.yaml).
RATE_MIN, RATE_MAX = 1.0, 600.0
BURST_MIN, BURST_MAX = 1, 100


@attrs.frozen
class Pacing:
    """How fast one device sends: ``rate_per_minute`` on average, ``burst`` back to back."""

    rate_per_minute: float
    burst: int

    @classmethod
    def of(cls, settings: storage.JsonObject | None, config: SendingConfig) -> Pacing:
        """The device's pacing: its ``sending`` settings document over the defaults."""
        doc = settings or {}
        return cls(
            rate_per_minute=float(doc.get("ratePerMinute", config.rate_per_minute)),
            burst=int(doc.get("burst", config.burst)),
        )

    def to_json(self) -> dict[str, float | int]:
        return {"ratePerMinute": self.rate_per_minute, "burst": self.burst}


@attrs.define
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second (Trio time)."""

    rate: float
    burst: int
    tokens: float
    updated: float

    @classmethod
    def full(cls, pacing: Pacing, now: float) -> TokenBucket:
        return cls(pacing.rate_per_minute / 60.0, pacing.burst, float(pacing.burst), now)

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def ready_at(self, now: float) -> float:
        """When a token is (or was) there to take."""
        self._refill(now)
        return now if self.tokens >= 1.0 else now + (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0
