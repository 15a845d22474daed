"""Who is calling: the operator token, a device API key, or nobody.

The operator token (``X-API-TOKEN`` equal to the configured token) may do everything. A device
API key (``dev_...``, shown once when the device is created, stored only as a SHA-256 hash) may
act on its own device alone: every other device answers 404 as if it did not exist, and lists
are filtered to it. Secrets are compared as SHA-256 digests with :func:`hmac.compare_digest`,
so the comparison takes the same time wherever the first difference is.

Usage in a route::

    row = await resolve_device(device_id)   # DeviceNotFound for a device key on another device
    require_operator()                      # ApiError 403 FORBIDDEN for a device key
"""

from __future__ import annotations

import hmac
from typing import Literal, NoReturn

import attrs
from quart import g

from api.errors import ApiError
from api.state import AppState, current_state, token_digest
from storage.models import DeviceRow
from supervisor.errors import DeviceNotFound

#: Longer values are refused without hashing (no credential wasup issues is this long).
MAX_TOKEN_LENGTH = 512


@attrs.frozen
class Principal:
    kind: Literal["operator", "device"]
    device_id: int | None
    #: Key of the rate-limit bucket ("operator" or "device:<id>").
    credential_id: str

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def may_see(self, device_id: int) -> bool:
        return self.kind == "operator" or self.device_id == device_id


OPERATOR = Principal(kind="operator", device_id=None, credential_id="operator")


async def authenticate(app_state: AppState, token: str | None) -> Principal | None:
    """The principal ``token`` stands for, or None if it is missing or wrong.

    Never raises for a bad token; errors of the supervisor's key lookup propagate.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    digest = token_digest(token)
    if hmac.compare_digest(digest, app_state.operator_digest):
        return OPERATOR
    if not token.startswith("dev_"):
        return None
    row = await app_state.sup.device_for_key(token)
    if row is None:
        return None
    return Principal(kind="device", device_id=row.id, credential_id=f"device:{row.id}")


#: The 401 sentence of an HTTP request without a valid ``X-API-TOKEN``.
NOT_AUTHENTICATED = "missing or invalid X-API-TOKEN"
#: The 401 sentence of a request (HTTP or WebSocket) carrying ``X-API-TOKEN`` more than once:
#: ambiguous, so answered by neither.
ONE_TOKEN = "send exactly one X-API-TOKEN header"


def refuse(app_state: AppState, address: str, message: str = NOT_AUTHENTICATED) -> NoReturn:
    """Refuse a caller from ``address`` that has no valid credential (HTTP and WebSocket alike).

    Failed attempts are charged to the address's budget against token guessing.

    Raises: ApiError 429 RATE_LIMIT_EXCEEDED when that budget is spent, else ApiError 401
    AUTHENTICATION_FAILED with ``message``.
    """
    decision = app_state.auth_limiter.hit(f"addr:{address}")
    if not decision.allowed:
        raise ApiError(
            429, "RATE_LIMIT_EXCEEDED", "too many failed authentications, slow down",
            headers=app_state.auth_limiter.headers(decision),
        )
    raise ApiError(401, "AUTHENTICATION_FAILED", message)


def charge(app_state: AppState, principal: Principal) -> dict[str, str]:
    """Charge one request to ``principal``'s token bucket; returns the RateLimit headers.

    Raises: ApiError 429 RATE_LIMIT_EXCEEDED (with those headers) when the bucket is empty.
    """
    decision = app_state.limiter.hit(principal.credential_id)
    headers = app_state.limiter.headers(decision)
    if not decision.allowed:
        raise ApiError(429, "RATE_LIMIT_EXCEEDED", "too many requests", headers=headers)
    return headers


def current_principal() -> Principal:
    """The principal of the current request (set by the app's authentication hook).

    Raises ApiError 401 if the request was not authenticated (a route registered as public).
    """
    principal: Principal | None = g.get("principal")
    if principal is None:
        raise ApiError(401, "AUTHENTICATION_FAILED", NOT_AUTHENTICATED)
    return principal


def require_operator() -> Principal:
    """The current principal if it is the operator; ApiError 403 FORBIDDEN otherwise."""
    principal = current_principal()
    if not principal.is_operator:
        raise ApiError(403, "FORBIDDEN", "this operation needs the operator token")
    return principal


async def resolve_device(ref: str) -> DeviceRow:
    """The device ``ref`` (sessionId or numeric id) names, if the caller may act on it.

    Raises DeviceNotFound when there is no such device, and also when a device key asks for
    another device (so a key cannot probe which devices exist). In a cluster a device created
    on another node a moment ago is found too (``Devices.find``).
    """
    principal = current_principal()
    row = await current_state().sup.find(ref)
    if not principal.may_see(row.id):
        raise DeviceNotFound(ref)
    return row
