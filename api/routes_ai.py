"""AI auto-reply settings of a device (under ``/api/whatsapp``).

- ``PUT /devices/{deviceId}/settings/ai``: ``{"enabled", "provider", "model", "autoReply",
  "systemPrompt", "baseUrl", "apiKey", "maxRepliesPerMinute", "operatorPauseSeconds",
  "historyLimit", "timeoutSeconds", "maxTokens", "temperature"}``; absent fields keep their
  value, ``null`` resets one (``"apiKey": null`` removes the key). Answers the settings as
  stored, with ``apiKeySet`` in place of the key.
- ``GET /devices/{deviceId}/settings/ai``: the same view (the defaults, disabled, when nothing
  was ever stored).

The API key is stored (the provider needs it) but never returned and never logged. A
``baseUrl`` set with a device key must pass the webhook SSRF rules (loopback, private,
link-local... refused unless listed in ``WASUP_WEBHOOK_ALLOW_NETWORKS``) and the provider is
then reached only through the guarded client; the operator token may point it anywhere (a
model server on localhost is the usual self-hosted setup).

Error handling: 400 INVALID_REQUEST naming the field (unknown fields included), 404 for a
device that does not exist or that a device key may not see.
"""

from __future__ import annotations

import attrs
from quart import Blueprint, Response

from api.auth import current_principal, resolve_device
from api.routes_devices import ok, read_body
from api.state import current_state
from supervisor.autoreply import AiSettings, apply_update
from supervisor.errors import InvalidRequest
from supervisor.webhooks import ssrf

bp = Blueprint("ai", __name__)


async def _current(device_id: int) -> AiSettings:
    stored = await current_state().sup.get_settings(str(device_id), "ai")
    return AiSettings.from_stored(stored)


@bp.put("/devices/<device_id>/settings/ai")
async def put_ai(device_id: str) -> Response:
    row = await resolve_device(device_id)
    body = await read_body()
    sup = current_state().sup
    current = await _current(row.id)
    new = apply_update(current, body)
    if isinstance(body, dict) and "baseUrl" in body:
        if current_principal().is_operator:
            new = attrs.evolve(new, guarded=False)
        else:
            allow = sup.config.allow_networks
            try:
                await ssrf.check_url(new.base_url, allow)
            except ValueError as exc:
                raise InvalidRequest(f"baseUrl: {exc}", field="baseUrl") from None
            new = attrs.evolve(new, guarded=True)
    await sup.put_settings(str(row.id), "ai", new.to_stored())
    return ok(new.public(), "AI settings updated.")


@bp.get("/devices/<device_id>/settings/ai")
async def get_ai(device_id: str) -> Response:
    row = await resolve_device(device_id)
    return ok((await _current(row.id)).public())
