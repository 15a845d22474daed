"""What the HTTP and WebSocket layers share: the supervisor, settings and credential checks.

``create_app`` stores one :class:`AppState` on the app (``app.extensions["wasup"]``); route
modules reach it through :func:`current_state` inside a request or WebSocket context.
"""

from __future__ import annotations

import hashlib

import attrs
from quart import current_app

from api.ratelimit import RateLimiter, RateLimitPolicy
from supervisor.autoreply import AutoReply
from supervisor.devices import Devices

MIB = 1024 * 1024


@attrs.frozen
class WsSettings:
    """Knobs of the WebSocket event stream (``wasup serve``'s ``--ws-…`` flags, see
    :mod:`api.ws`)."""

    #: Events buffered per connection before a slow one is closed with 1013
    #: (None: the event bus's, ``Config.event_queue_size``).
    queue_size: int | None = None
    #: Seconds one send may make no progress before the connection is aborted (0: never).
    send_timeout: float = 30.0
    #: Seconds between keep-alive pings (0: no pings).
    ping_interval: float = 25.0
    #: Connections one credential may hold open at once.
    max_per_credential: int = 64


@attrs.frozen
class ApiSettings:
    """Knobs of the HTTP layer (the supervisor has its own :class:`supervisor.config.Config`)."""

    #: Per-credential token bucket.
    rate_limit: RateLimitPolicy = attrs.field(factory=RateLimitPolicy)
    #: Failed authentications per client address (slows down token guessing).
    auth_failure_limit: RateLimitPolicy = attrs.field(
        factory=lambda: RateLimitPolicy(rate=5.0, burst=50, name="auth")
    )
    #: How long POST /devices and POST /login wait for the first QR code before answering
    #: ``qrCode: null``.
    qr_wait: float = 2.0
    #: Largest accepted request body, in bytes (larger: 413).
    max_body: int = MIB
    #: Seconds Hypercorn lets requests in flight finish when shutting down.
    graceful_timeout: float = 5.0
    #: Serve the simulator control routes (only meaningful with the simulator engine).
    simulator_routes: bool | None = None  # None: when the engine is the simulator
    #: The WebSocket event stream's knobs.
    ws: WsSettings = attrs.field(factory=WsSettings)
    #: ``/metrics`` also shows each device's status with a ``device`` label (its sessionId).
    metrics_device_labels: bool = False


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@attrs.define(eq=False)
class AppState:
    sup: Devices
    settings: ApiSettings
    operator_digest: bytes
    limiter: RateLimiter
    auth_limiter: RateLimiter
    #: Told when a device's AI settings are stored (None: auto-reply does not run).
    autoreply: AutoReply | None = None

    @classmethod
    def build(
        cls,
        sup: Devices,
        api_token: str,
        settings: ApiSettings,
        *,
        autoreply: AutoReply | None = None,
    ) -> AppState:
        """The state of one app; raises ValueError for an empty operator token."""
        if not api_token:
            raise ValueError("the operator token must not be empty")
        return cls(
            sup=sup,
            settings=settings,
            operator_digest=token_digest(api_token),
            limiter=RateLimiter(settings.rate_limit),
            auth_limiter=RateLimiter(settings.auth_failure_limit),
            autoreply=autoreply,
        )


def current_state() -> AppState:
    """The :class:`AppState` of the app serving the current request or WebSocket."""
    state: AppState = current_app.extensions["wasup"]
    return state
