"""A device's webhook settings: validation, normalisation, secrets, and the stored shape.

The API takes ``{"url", "events", "secret", "rotateSecret", "enabled"}``
(``PUT /devices/{deviceId}/settings/webhook``); what is stored (``settings`` kind
``"webhook"``) is::

    {"url": "https://app.example/hooks",
     "events": ["device_connected", "message_received", ...],   # concrete types, sorted
     "secrets": [{"secret": "whsec_...", "expiresAt": None},    # current first
                 {"secret": "whsec_old", "expiresAt": 1718885000.0}],  # rotation window
     "enabled": True, "disabledReason": None, "disabledAt": None,
     "failingSince": None}                                      # epoch of first failure

``events`` accepts the event types of the WebSocket and the seed's group names: ``"message"``
(message_received, message_sent, message_status), ``"status"`` (device_status,
device_connected, device_disconnected, device_logged_out, qr_code, qr_timeout) and ``"*"``
(all). Missing or empty means all.

Secrets: a device with no secret gets one generated (``whsec_`` + base64 of 32 random bytes),
returned once in the response and never again. Giving a different secret, or
``"rotateSecret": true``, makes the new one current while the old one keeps signing for
:data:`ROTATION_WINDOW` seconds, so receivers can switch without losing a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common import clock
from supervisor.errors import InvalidRequest
from supervisor.events import EVENT_TYPES
from supervisor.webhooks import signing, ssrf

EVENT_GROUPS: dict[str, frozenset[str]] = {
    "message": frozenset({"message_received", "message_sent", "message_status"}),
    "status": frozenset(
        {
            "device_status",
            "device_connected",
            "device_disconnected",
            "device_logged_out",
            "qr_code",
            "qr_timeout",
        }
    ),
    "*": EVENT_TYPES,
    "all": EVENT_TYPES,
}
#: How long a replaced secret keeps signing (seconds).
ROTATION_WINDOW = 24 * 3600.0
_MIN_SECRET = 8
_MAX_SECRET = 512
_FIELDS = frozenset({"url", "events", "secret", "rotateSecret", "enabled"})


def expand_events(events: Any) -> list[str]:
    """Concrete event types for an ``events`` value (types and group names), sorted.

    Error handling: ``InvalidRequest(field="events")`` for anything but a list of known names.
    """
    if events is None:
        return sorted(EVENT_TYPES)
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise InvalidRequest("events must be a list of event names", field="events")
    chosen: set[str] = set()
    for name in events:
        if name in EVENT_TYPES:
            chosen.add(name)
        elif name in EVENT_GROUPS:
            chosen |= EVENT_GROUPS[name]
        else:
            raise InvalidRequest(f"unknown event {name!r}", field="events")
    return sorted(chosen or EVENT_TYPES)


def _check_secret(secret: Any) -> str:
    if not isinstance(secret, str):
        raise InvalidRequest("secret must be a string", field="secret")
    if not _MIN_SECRET <= len(secret) <= _MAX_SECRET:
        raise InvalidRequest(
            f"secret must be {_MIN_SECRET} to {_MAX_SECRET} characters", field="secret"
        )
    try:
        signing.secret_key(secret)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="secret") from exc
    return secret


def normalize(
    body: Any, existing: dict[str, Any] | None, *, now: float
) -> tuple[dict[str, Any], str | None]:
    """Validate a request body against the stored settings; return ``(stored, new_secret)``.

    ``new_secret`` is the generated secret to show once, or None when the caller gave the
    secret or the current one is kept. Pure: no I/O (the URL's addresses are checked by
    :func:`check_url`).

    Error handling: ``InvalidRequest`` naming the field.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    try:
        url = str(ssrf.parse_url(body.get("url")))  # parse_url rejects a non-string
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="url") from exc
    events = expand_events(body.get("events"))
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidRequest("enabled must be true or false", field="enabled")
    rotate = body.get("rotateSecret", False)
    if not isinstance(rotate, bool):
        raise InvalidRequest("rotateSecret must be true or false", field="rotateSecret")

    old = [dict(s) for s in (existing or {}).get("secrets", [])]
    old = [s for s in old if s.get("expiresAt") is None or s["expiresAt"] > now]
    current = old[0]["secret"] if old else None
    generated: str | None = None
    if "secret" in body and body["secret"] is not None:
        if rotate:
            raise InvalidRequest("give either secret or rotateSecret", field="rotateSecret")
        new_secret = _check_secret(body["secret"])
    elif rotate or current is None:
        new_secret = generated = signing.generate_secret()
    else:
        new_secret = current
    if new_secret == current:
        secrets = old
    else:
        # The replaced secret keeps signing for the rotation window; older ones keep theirs.
        retired = [
            {"secret": s["secret"], "expiresAt": s.get("expiresAt") or now + ROTATION_WINDOW}
            for s in old
            if s["secret"] != new_secret
        ]
        secrets = [{"secret": new_secret, "expiresAt": None}, *retired]

    stored: dict[str, Any] = {
        "url": url,
        "events": events,
        "secrets": secrets,
        "enabled": enabled,
        "disabledReason": None if enabled else "disabled by request",
        "disabledAt": None if enabled else clock.iso(now),
        "failingSince": None,
    }
    return stored, generated


async def check_url(
    url: str, allow: Sequence[ssrf.IPNetwork], resolver: ssrf.Resolver = ssrf.system_resolver
) -> None:
    """Settings-time SSRF check (see :func:`ssrf.check_url`).

    Error handling: ``InvalidRequest(field="url")`` for a refused or malformed URL.
    """
    try:
        await ssrf.check_url(url, allow, resolver)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="url") from exc


def active_secrets(settings: dict[str, Any], now: float) -> list[str]:
    """Secrets that sign a delivery made at ``now``: the current one and those still inside
    their rotation window."""
    return [
        s["secret"]
        for s in settings.get("secrets", [])
        if s.get("expiresAt") is None or s["expiresAt"] > now
    ]


def public_view(
    settings: dict[str, Any], new_secret: str | None = None, *, now: float | None = None
) -> dict[str, Any]:
    """What the API shows: never a stored secret; ``secret`` only right after generating it.
    ``activeSecrets`` counts the secrets signing at ``now`` (default: the current time)."""
    active = active_secrets(settings, clock.now_epoch() if now is None else now)
    view: dict[str, Any] = {
        "url": settings.get("url"),
        "events": list(settings.get("events", [])),
        "enabled": bool(settings.get("enabled", True)),
        "secretSet": bool(active),
        "activeSecrets": len(active),
        "disabledReason": settings.get("disabledReason"),
        "disabledAt": settings.get("disabledAt"),
    }
    if new_secret is not None:
        view["secret"] = new_secret
    return view
