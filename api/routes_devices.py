"""The seed's device and session endpoints (under ``/api/whatsapp``).

Handlers validate at the edge (``api.validation``), check the caller (``api.auth``) and hand
the work to the supervisor facade; shapes follow the seed field by field. Errors are raised,
never answered here: ``api.errors`` maps them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from quart import Blueprint, Response, jsonify, request

from api import validation
from api.auth import current_principal, require_operator, resolve_device
from api.state import current_state
from storage.models import DeviceRow
from supervisor.cluster import mirror, qr_store
from supervisor.errors import DeviceNotFound
from supervisor.qr import QrAttempt

bp = Blueprint("devices", __name__)


# -- shapes -----------------------------------------------------------------------------------


def created_json(row: DeviceRow, api_key: str, qr_code: str | None) -> dict[str, Any]:
    """POST /devices ``data``."""
    return {
        "id": row.id,
        "sessionId": row.session_id,
        "userId": row.user_id,
        "alias": row.alias,
        "businessType": row.business_type,
        "phoneNumber": row.phone_number,
        "description": row.description,
        "status": row.status,
        "statusReason": row.status_reason,
        "apiKey": api_key,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "qrCode": qr_code,
    }


def device_json(row: DeviceRow) -> dict[str, Any]:
    """GET /devices/{deviceId} ``data``: the record with connectionInfo and statistics."""
    return {
        **_summary_json(row),
        "businessType": row.business_type,
        "description": row.description,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "connectionInfo": {
            "isConnected": row.status == "connected",
            "lastSeen": row.last_seen,
            "platform": row.platform,
            "battery": row.battery,
            "pushName": row.push_name,
        },
        "statistics": {
            "messagesSent": row.messages_sent,
            "messagesReceived": row.messages_received,
            "lastActivity": row.last_activity,
        },
    }


def _summary_json(row: DeviceRow) -> dict[str, Any]:
    """What every device listing shows of a device."""
    return {
        "id": row.id,
        "sessionId": row.session_id,
        "userId": row.user_id,
        "alias": row.alias,
        "phoneNumber": row.phone_number,
        "status": row.status,
        "statusReason": row.status_reason,
        "lastConnection": row.last_connection,
    }


def list_item_json(row: DeviceRow) -> dict[str, Any]:
    """One entry of GET /users/{userId}/devices."""
    return {
        **_summary_json(row),
        "messagesSent": row.messages_sent,
        "businessType": row.business_type,
    }


def session_json(row: DeviceRow) -> dict[str, Any]:
    """One entry of GET /sessions."""
    return {
        **_summary_json(row),
        "isConnected": row.status == "connected",
        "updatedAt": row.updated_at,
    }


def status_json(row: DeviceRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "sessionId": row.session_id,
        "status": row.status,
        "statusReason": row.status_reason,
    }


def ok(data: Any, message: str | None = None, status: int = 200, **extra: Any) -> Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if message is not None:
        body["message"] = message
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    return response


async def read_body() -> Any:
    """The decoded JSON body (InvalidRequest on malformed JSON; 413 if too large)."""
    data = await request.get_data()
    assert isinstance(data, bytes)
    return validation.parse_json(data)


async def _qr_url(attempt: QrAttempt | None) -> str | None:
    return None if attempt is None else await attempt.render()


# -- devices ----------------------------------------------------------------------------------


@bp.post("/devices")
async def create_device() -> Response:
    require_operator()
    req = validation.create_device(await read_body())
    state = current_state()
    sup = state.sup
    row, api_key = await sup.create_device(
        req.user_id,
        req.alias,
        business_type=req.business_type,
        phone_number=req.phone_number,
        description=req.description,
    )
    attempt = await qr_store.wait_qr(sup, row.id, state.settings.qr_wait)
    qr_code = await _qr_url(attempt)
    with contextlib.suppress(DeviceNotFound):  # deleted meanwhile: answer what was created
        row = sup.get(row.session_id)
    return ok(
        created_json(row, api_key, qr_code),
        "Device created successfully. Scan QR code to authenticate.",
        status=201,
    )


@bp.get("/devices/<device_id>")
async def get_device(device_id: str) -> Response:
    row = await resolve_device(device_id)
    data = device_json(row)
    pending, stuck = await mirror.outbound_counts(current_state().sup, row.id)
    data["outboundQueue"] = {"pending": pending, "stuck": stuck}
    cluster = current_state().sup.cluster
    if cluster is not None:  # docs/cluster.md: the node holding the device's lease
        data["node"] = await cluster.owner_id(row.id)
    return ok(data)


@bp.put("/devices/<device_id>")
async def update_device(device_id: str) -> Response:
    row = await resolve_device(device_id)
    req = validation.update_device(await read_body())
    row = await current_state().sup.update_device(str(row.id), **req.changes())
    return ok(device_json(row), "Device updated successfully.")


@bp.delete("/devices/<device_id>")
async def delete_device(device_id: str) -> Response:
    row = await resolve_device(device_id)
    await current_state().sup.delete_device(str(row.id))
    return ok({"id": row.id, "sessionId": row.session_id}, "Device deleted successfully.")


@bp.get("/devices/<device_id>/qr")
async def get_qr(device_id: str) -> Response:
    row = await resolve_device(device_id)
    attempt = await qr_store.current_qr(current_state().sup, row.id)
    return ok(attempt.to_json(await attempt.render()))


@bp.post("/devices/<device_id>/login")
async def login(device_id: str) -> Response:
    row = await resolve_device(device_id)
    state = current_state()
    row, attempt = await state.sup.login(str(row.id))
    if attempt is None and row.status == "pending":
        attempt = await state.sup.wait_qr(str(row.id), state.settings.qr_wait)
    return ok(
        {"sessionId": row.session_id, "status": row.status, "qrCode": await _qr_url(attempt)},
        "Login initiated. Scan QR code if required.",
    )


@bp.post("/devices/<device_id>/logout")
async def logout(device_id: str) -> Response:
    row = await resolve_device(device_id)
    row = await current_state().sup.logout(str(row.id))
    return ok(status_json(row), "Device logged out successfully.")


# -- users and sessions -----------------------------------------------------------------------


@bp.get("/devices")
async def list_devices() -> Response:
    """Every device (or those of ``userId``), optionally in ``status``, one page by id; a
    device key sees its own device only."""
    user_id = request.args.get("userId")
    if user_id is not None:
        validation.check_user_id(user_id)
    return await _device_page(user_id)


@bp.get("/users/<user_id>/devices")
async def list_user_devices(user_id: str) -> Response:
    validation.check_user_id(user_id)
    return await _device_page(user_id)


async def _device_page(user_id: str | None) -> Response:
    """One page of the devices of ``user_id`` (None: of every user) the caller may see."""
    query = validation.list_query(request.args)
    principal = current_principal()
    sup = current_state().sup
    rows: list[DeviceRow]
    if principal.is_operator:
        rows, total = await sup.list_devices(user_id, query.status, query.page, query.limit)
    else:
        assert principal.device_id is not None
        own = sup.get(str(principal.device_id))
        visible = user_id in (None, own.user_id) and query.status in (None, own.status)
        total = 1 if visible else 0
        rows = [own] if visible and query.page == 1 else []
    return ok(
        [list_item_json(row) for row in rows],
        pagination={"total": total, "page": query.page, "limit": query.limit},
    )


@bp.get("/sessions")
async def list_sessions() -> Response:
    principal = current_principal()
    rows = current_state().sup.sessions()
    if not principal.is_operator:
        rows = [row for row in rows if row.id == principal.device_id]
    return ok([session_json(row) for row in rows])


@bp.post("/sessions/<session_id>/cancel")
async def cancel_session(session_id: str) -> Response:
    row = await resolve_device(session_id)
    row = await current_state().sup.cancel(str(row.id))
    return ok(status_json(row), "Session cancelled.")
