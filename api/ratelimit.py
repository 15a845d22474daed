"""Per-credential rate limiting: one token bucket per credential, in memory.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; each request
takes one. An empty bucket answers 429 with ``Retry-After`` (seconds until one token is back).
Every answer carries the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers)::

    RateLimit-Policy: "default";q=100;w=2     # quota q per window w seconds (burst / rate)
    RateLimit: "default";r=57;t=1             # r tokens remaining, t seconds until full

Time comes from ``trio.current_time()``, so tests drive it with the MockClock. Memory is bounded:
when more than ``max_keys`` credentials have buckets, the ones that have refilled completely
(indistinguishable from a fresh bucket) are forgotten first, then the oldest.
"""

from __future__ import annotations

import math

import attrs
import trio


@attrs.frozen
class RateLimitPolicy:
    rate: float = 50.0  # tokens per second
    burst: int = 100  # bucket size
    name: str = "default"

    @property
    def window(self) -> int:
        """Seconds for an empty bucket to refill completely (the ``w`` of RateLimit-Policy)."""
        return max(1, math.ceil(self.burst / self.rate))


@attrs.frozen
class Decision:
    allowed: bool
    remaining: int
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one token is available (0 when allowed)


@attrs.define(eq=False)
class _Bucket:
    tokens: float
    updated: float


@attrs.define(eq=False)
class RateLimiter:
    """Token buckets keyed by credential id. Not thread-safe: use it from the Trio thread."""

    policy: RateLimitPolicy = attrs.field(factory=RateLimitPolicy)
    max_keys: int = 100_000
    _buckets: dict[str, _Bucket] = attrs.field(factory=dict, init=False)

    def hit(self, key: str, now: float | None = None) -> Decision:
        """Take one token from ``key``'s bucket if there is one."""
        now = trio.current_time() if now is None else now
        policy = self.policy
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(tokens=float(policy.burst), updated=now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(policy.burst), bucket.tokens + elapsed * policy.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            allowed, retry = True, 0.0
        else:
            allowed, retry = False, (1.0 - bucket.tokens) / policy.rate
        reset = (policy.burst - bucket.tokens) / policy.rate
        return Decision(
            allowed=allowed, remaining=math.floor(bucket.tokens), reset=reset, retry_after=retry
        )

    def headers(self, decision: Decision) -> dict[str, str]:
        """The RateLimit-Policy and RateLimit header fields for ``decision``."""
        name = self.policy.name
        headers = {
            "RateLimit-Policy": f'"{name}";q={self.policy.burst};w={self.policy.window}',
            "RateLimit": f'"{name}";r={decision.remaining};t={math.ceil(decision.reset)}',
        }
        if not decision.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
        return headers

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        policy = self.policy
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * policy.rate >= policy.burst:
                del self._buckets[key]
        # Still full of busy credentials: forget the least recently used half.
        if len(self._buckets) >= self.max_keys:
            oldest = sorted(self._buckets.items(), key=lambda item: item[1].updated)
            for key, _ in oldest[: len(oldest) // 2 + 1]:
                del self._buckets[key]
