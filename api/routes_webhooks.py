"""Webhook settings, the delivery log, redelivery and the test event (under ``/api/whatsapp``).

- ``PUT /devices/{deviceId}/settings/webhook``: ``{"url", "events", "secret", "rotateSecret",
  "enabled"}``; the URL (one line, a port from 1 to 65535) is checked against the SSRF rules
  (400 if refused). A generated secret
  is in this response only.
- ``GET /devices/{deviceId}/settings/webhook``: the settings without secrets.
- ``GET /devices/{deviceId}/webhook/deliveries?status=&page=&limit=``: newest first, each
  with its attempts.
- ``GET /devices/{deviceId}/webhook/deliveries/{deliveryId}``: one delivery.
- ``POST /devices/{deviceId}/webhook/deliveries/{deliveryId}/redeliver``: due again now,
  fresh retry schedule, same ``webhook-id`` (202).
- ``POST /devices/{deviceId}/settings/webhook/test``: one signed ``webhook_test`` event sent
  now; the answer says what the endpoint did.

Webhook settings are :class:`~supervisor.webhooks.settings.WebhookSettings` records; this module
is where they become JSON (:func:`public_view`: never a stored secret). Delivery ids are the
``msg_`` ids of :func:`common.ids.new_message_id`: anything else in the path is no such delivery
(404), whatever its characters.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from quart import Blueprint, Response, request

import storage.outbox as outbox
from api.auth import resolve_device
from api.routes_devices import ok, read_body
from api.state import current_state
from api.text import check_line
from api.validation import int_param
from common import clock
from supervisor.errors import DeviceConflict, InvalidRequest, NotFound
from supervisor.webhooks import settings as webhook_settings
from supervisor.webhooks import ssrf
from supervisor.webhooks.delivery import TestDelivery, send_test_event
from supervisor.webhooks.settings import WEBHOOK_KIND, WebhookSettings

bp = Blueprint("webhooks", __name__)

_LIMIT_MAX = 100
_LIMIT_DEFAULT = 50
#: What a delivery id looks like: ``msg_`` and URL-safe base64 (see common.ids).
_DELIVERY_ID = re.compile(r"msg_[A-Za-z0-9_-]{1,64}")


def _allow_networks() -> tuple[ssrf.IPNetwork, ...]:
    return current_state().sup.config.allow_networks


async def _settings_of(device_id: int) -> WebhookSettings | None:
    stored = await current_state().sup.get_settings(str(device_id), WEBHOOK_KIND)
    return None if stored is None else WebhookSettings.from_stored(stored)


def _check_lines(body: Any) -> None:
    """The body is an object; its ``url`` and ``secret``, when they are strings, are one line
    each."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    for name in ("url", "secret"):
        value = body.get(name)
        if isinstance(value, str):
            check_line(name, value)


def _check_port(url: str) -> None:
    """A port in the URL is one a TCP connection can use: 1 to 65535."""
    port = httpx.URL(url).port
    if port is not None and not 1 <= port <= 65535:
        raise InvalidRequest("url: the port must be from 1 to 65535", field="url")


def _delivery_id(raw: str) -> str:
    """The delivery id of a path, or 404: only ``msg_`` ids name a delivery."""
    if not _DELIVERY_ID.fullmatch(raw):
        raise NotFound("no such delivery")
    return raw


def public_view(
    settings: WebhookSettings, new_secret: str | None = None, *, now: float | None = None
) -> dict[str, Any]:
    """What the API shows: never a stored secret; ``secret`` only right after generating it.
    ``activeSecrets`` counts the secrets signing at ``now`` (default: the current time)."""
    active = settings.active_secrets(clock.now_epoch() if now is None else now)
    view: dict[str, Any] = {
        "url": settings.url,
        "events": list(settings.events),
        "enabled": settings.enabled,
        "secretSet": bool(active),
        "activeSecrets": len(active),
        "disabledReason": settings.disabled_reason,
        "disabledAt": settings.disabled_at,
    }
    if new_secret is not None:
        view["secret"] = new_secret
    return view


def delivery_test_view(test: TestDelivery) -> dict[str, Any]:
    """The answer of the test route: the ``webhook-id`` and what the endpoint did."""
    result = test.result
    return {
        "webhookId": test.webhook_id,
        "delivered": result.ok,
        "statusCode": result.status_code,
        "error": result.error,
        "durationMs": round(result.duration_ms, 1),
    }


@bp.put("/devices/<device_id>/settings/webhook")
async def put_webhook(device_id: str) -> Response:
    row = await resolve_device(device_id)
    body = await read_body()
    _check_lines(body)
    sup = current_state().sup
    existing = await _settings_of(row.id)
    settings, generated = webhook_settings.normalize(body, existing, now=clock.now_epoch())
    _check_port(settings.url)
    await webhook_settings.check_url(settings.url, _allow_networks())
    await sup.put_settings(str(row.id), WEBHOOK_KIND, settings.to_stored())
    message = "Webhook settings updated."
    if generated is not None:
        message += " Store the secret now: it is not shown again."
    return ok(public_view(settings, generated), message)


@bp.get("/devices/<device_id>/settings/webhook")
async def get_webhook(device_id: str) -> Response:
    row = await resolve_device(device_id)
    stored = await _settings_of(row.id)
    if stored is None:
        raise NotFound("no webhook configured for this device")
    return ok(public_view(stored))


@bp.post("/devices/<device_id>/settings/webhook/test")
async def test_webhook(device_id: str) -> Response:
    row = await resolve_device(device_id)
    stored = await _settings_of(row.id)
    if stored is None or not stored.url:
        raise DeviceConflict("no webhook configured for this device")
    test = await send_test_event(current_state().sup.config, stored, row.session_id)
    message = "Test event delivered." if test.result.ok else "Test event not delivered."
    return ok(delivery_test_view(test), message)


@bp.get("/devices/<device_id>/webhook/deliveries")
async def list_deliveries(device_id: str) -> Response:
    row = await resolve_device(device_id)
    status = request.args.get("status")
    if status is not None and status not in outbox.STATUSES:
        raise InvalidRequest(
            f"status: must be one of {', '.join(outbox.STATUSES)}", field="status"
        )
    page = int_param(request.args, "page", 1, 1, 1_000_000)
    limit = int_param(request.args, "limit", _LIMIT_DEFAULT, 1, _LIMIT_MAX)
    items, total = await current_state().sup.db.run(
        lambda r: r.outbox.list_deliveries(
            row.id, status=status, offset=(page - 1) * limit, limit=limit
        )
    )
    return ok(items, pagination={"total": total, "page": page, "limit": limit})


@bp.get("/devices/<device_id>/webhook/deliveries/<delivery_id>")
async def get_delivery(device_id: str, delivery_id: str) -> Response:
    row = await resolve_device(device_id)
    outbox_id = _delivery_id(delivery_id)
    item = await current_state().sup.db.run(
        lambda r: r.outbox.get_delivery(row.id, outbox_id)
    )
    if item is None:
        raise NotFound("no such delivery")
    return ok(item)


@bp.post("/devices/<device_id>/webhook/deliveries/<delivery_id>/redeliver")
async def redeliver(device_id: str, delivery_id: str) -> Response:
    row = await resolve_device(device_id)
    sup = current_state().sup
    stored = await _settings_of(row.id)
    if stored is None or not stored.enabled:
        raise DeviceConflict("the webhook is disabled: put the settings again to enable it")
    outbox_id = _delivery_id(delivery_id)
    now = clock.now_epoch()
    item = await sup.db.run(lambda r: r.outbox.redeliver(row.id, outbox_id, now=now))
    if item is None:
        raise NotFound("no such delivery")
    for listener in list(sup.outbox_listeners):
        listener()
    return ok(item, "Redelivery scheduled.", status=202)
