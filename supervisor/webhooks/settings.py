"""A device's webhook settings: the frozen :class:`WebhookSettings` and its stored form.

Synopsis::

    settings, generated = normalize(body, existing, now=clock.now_epoch())   # PUT body
    enqueue(repos, device_id, events)             # in the transaction storing their cause
    stored = settings.to_stored()                 # the "webhook" settings kind
    settings = WebhookSettings.from_stored(stored)
    settings.active_secrets(now)                  # ("whsec_new", "whsec_old")

The API takes ``{"url", "events", "secret", "rotateSecret", "enabled"}``
(``PUT /devices/{deviceId}/settings/webhook``); what is stored (``settings`` kind
``"webhook"``), through the one converter :data:`stored_converter`, is::

    {"url": "https://app.example/hooks",
     "events": ["device_connected", "message_received", ...],   # concrete types, sorted
     "secrets": [{"secret": "whsec_...", "expiresAt": None},    # current first
                 {"secret": "whsec_old", "expiresAt": 1718885000.0}],  # rotation window
     "enabled": True, "disabledReason": None, "disabledAt": None,
     "failingSince": None}                                      # epoch of first failure

``events`` accepts the event types of the WebSocket and the seed's group names: ``"message"``
(message_received, message_sent, message_status, message_stuck), ``"status"`` (device_status,
device_connected, device_disconnected, device_logged_out, qr_code, qr_timeout), ``"group"``
(group_joined, group_updated, group_participants) and ``"*"``
(all). Missing or empty means all.

Secrets: a device with no secret gets one generated (``whsec_`` + base64 of 32 random bytes),
returned once in the response and never again. Giving a different secret, or
``"rotateSecret": true``, makes the new one current while the old one keeps signing for
:data:`ROTATION_WINDOW` seconds, so receivers can switch without losing a message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from common import clock
from storage.interface import OutboundEvent, Repositories
from storage.models import DeliveryTarget
from supervisor.errors import InvalidRequest
from supervisor.payloads import EVENT_TYPES
from supervisor.webhooks import signing, ssrf

#: The settings kind the webhook settings are stored under.
WEBHOOK_KIND = "webhook"
EVENT_GROUPS: dict[str, frozenset[str]] = {
    "message": frozenset(
        {
            "message_received", "message_undecryptable", "message_sent", "message_status",
            "message_stuck",
        }
    ),
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
    "group": frozenset({"group_joined", "group_updated", "group_participants"}),
    "*": EVENT_TYPES,
    "all": EVENT_TYPES,
}
#: How long a replaced secret keeps signing (seconds).
ROTATION_WINDOW = 24 * 3600.0
_MIN_SECRET = 8
_MAX_SECRET = 512
_FIELDS = frozenset({"url", "events", "secret", "rotateSecret", "enabled"})


@attrs.frozen
class Secret:
    """A signing secret; ``expires_at`` (epoch) is None for the current one."""

    secret: str = attrs.field(repr=False)
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        """True if this secret signs a delivery made at ``now``."""
        return self.expires_at is None or self.expires_at > now


@attrs.frozen
class WebhookSettings:
    """A device's webhook: where to, which events, the signing secrets, and whether it is
    enabled (and if not, why and since when, as an ISO time)."""

    url: str
    events: tuple[str, ...] = tuple(sorted(EVENT_TYPES))
    secrets: tuple[Secret, ...] = ()
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_at: str | None = None
    #: Epoch of the first failure since the last success (None: not failing).
    failing_since: float | None = None

    @classmethod
    def from_stored(cls, value: Mapping[str, Any]) -> WebhookSettings:
        """The settings from their stored dict.

        Error handling: raises ``cattrs`` validation errors for a dict that is not a stored
        form (they are written only by :meth:`to_stored`).
        """
        return stored_converter.structure(value, cls)

    def to_stored(self) -> dict[str, Any]:
        """The dict stored in the settings table."""
        stored: dict[str, Any] = stored_converter.unstructure(self)
        return stored

    def active_secrets(self, now: float) -> tuple[str, ...]:
        """Secrets that sign a delivery made at ``now``: the current one and those still inside
        their rotation window, current first."""
        return tuple(s.secret for s in self.secrets if s.active(now))

    @property
    def delivering(self) -> bool:
        """True when events are stored for delivery (enabled, with a URL)."""
        return self.enabled and bool(self.url)

    def target(self, now: float) -> DeliveryTarget | None:
        """Where a delivery made at ``now`` goes and what signs it; None when not delivering."""
        return DeliveryTarget(self.url, self.active_secrets(now)) if self.delivering else None

    def note_result(self, *, ok: bool, now: float) -> WebhookSettings:
        """After a delivery attempt: a success stops the failure clock, a failure starts it
        (at ``now``) unless it runs already."""
        if ok:
            return attrs.evolve(self, failing_since=None)
        if self.failing_since is None:
            return attrs.evolve(self, failing_since=now)
        return self

    def disabled(self, reason: str, at: str) -> WebhookSettings:
        """The same webhook, disabled for ``reason`` at ``at`` (ISO)."""
        return attrs.evolve(self, enabled=False, disabled_reason=reason, disabled_at=at)


def _make_stored_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_structure_hook(
        Secret, make_dict_structure_fn(Secret, converter, expires_at=override(rename="expiresAt"))
    )
    converter.register_unstructure_hook(
        Secret,
        make_dict_unstructure_fn(Secret, converter, expires_at=override(rename="expiresAt")),
    )
    # Any: cattrs types **overrides as its keyword flags' type
    renames: dict[str, Any] = {
        "disabled_reason": override(rename="disabledReason"),
        "disabled_at": override(rename="disabledAt"),
        "failing_since": override(rename="failingSince"),
    }
    converter.register_structure_hook(
        WebhookSettings, make_dict_structure_fn(WebhookSettings, converter, **renames)
    )
    # Lists, not tuples, in the stored JSON (and in the dicts handed around before it).
    converter.register_unstructure_hook(
        WebhookSettings,
        make_dict_unstructure_fn(
            WebhookSettings,
            converter,
            events=override(unstruct_hook=list),
            secrets=override(unstruct_hook=lambda s: [converter.unstructure(x) for x in s]),
            **renames,
        ),
    )
    return converter


#: The one converter between :class:`WebhookSettings` and its stored form.
stored_converter = _make_stored_converter()


def read(repos: Repositories, device_id: int) -> WebhookSettings | None:
    """The device's webhook settings, read in the caller's transaction (None: none stored)."""
    stored = repos.outbox.get_webhook_settings(device_id)
    return None if stored is None else WebhookSettings.from_stored(stored)


def enqueue(
    repos: Repositories,
    device_id: int,
    events: Sequence[Mapping[str, object] | OutboundEvent],
) -> int:
    """Store the events the device's webhook wants for delivery, in the caller's transaction
    (the one that stores their cause); return how many rows were written.

    Cheap when the device has no webhook: one primary-key lookup and no write.
    Error handling: storage errors propagate (and roll back the caller's work with them).
    """
    settings = read(repos, device_id)
    if settings is None or not settings.delivering:
        return 0
    return repos.outbox.enqueue_events(device_id, events, wanted=frozenset(settings.events))


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
    body: Any, existing: WebhookSettings | None, *, now: float
) -> tuple[WebhookSettings, str | None]:
    """Validate a PUT body against the stored settings; return ``(settings, new_secret)``.

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

    old = [s for s in (existing.secrets if existing else ()) if s.active(now)]
    current = old[0].secret if old else None
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
        secrets = tuple(old)
    else:
        # The replaced secret keeps signing for the rotation window; older ones keep theirs.
        retired = [
            Secret(s.secret, s.expires_at or now + ROTATION_WINDOW)
            for s in old
            if s.secret != new_secret
        ]
        secrets = (Secret(new_secret), *retired)

    settings = WebhookSettings(
        url=url,
        events=tuple(events),
        secrets=secrets,
        enabled=enabled,
        disabled_reason=None if enabled else "disabled by request",
        disabled_at=None if enabled else clock.iso(now),
    )
    return settings, generated


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
