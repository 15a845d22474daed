"""A device's own proxy for its WhatsApp connection (under ``/api/whatsapp``).

- ``PUT /devices/{deviceId}/settings/proxy``: ``{"url": "http://user:pass@host:port"}``
  (schemes ``http``, ``https``, ``socks5``; user and password optional) or ``{"url": null}`` to
  remove it. Applied at the device's next connect (a ``login``, a reconnect, a restart).
- ``GET /devices/{deviceId}/settings/proxy``: ``{"url": ...}`` with the password shown as
  ``****`` (``null`` when the device has no proxy of its own).

The value and its rules are :class:`supervisor.proxy.ProxySetting`. The operator token or the
device's own API key may use both routes. The password is stored but never returned or logged.

Error handling: 400 INVALID_REQUEST naming the field (``url``, ``body`` or an unknown field),
404 for a device that does not exist or that a device key may not see.
"""

from __future__ import annotations

from quart import Blueprint, Response

from api.auth import resolve_device
from api.routes_devices import ok, read_body
from api.state import current_state
from supervisor.proxy import PROXY_KIND, ProxySetting

bp = Blueprint("proxy", __name__)


@bp.put("/devices/<device_id>/settings/proxy")
async def put_proxy(device_id: str) -> Response:
    row = await resolve_device(device_id)
    setting = ProxySetting.parse(await read_body())
    await current_state().sup.put_settings(str(row.id), PROXY_KIND, setting.to_stored())
    message = (
        "Proxy removed; applied at the next connect." if setting.url is None
        else "Proxy stored; applied at the next connect."
    )
    return ok(setting.public(), message)


@bp.get("/devices/<device_id>/settings/proxy")
async def get_proxy(device_id: str) -> Response:
    row = await resolve_device(device_id)
    stored = await current_state().sup.get_settings(str(row.id), PROXY_KIND)
    return ok(ProxySetting.from_stored(stored).public())
