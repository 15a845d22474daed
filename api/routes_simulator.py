"""Simulator controls: act as the phone and the WhatsApp server (``--engine simulator`` only).

Operator token only. Each takes a device (sessionId or numeric id) and a JSON body::

    POST /api/whatsapp/simulator/devices/{deviceId}/scan        {"phoneNumber"?, "pushName"?, "code"?}
    POST /api/whatsapp/simulator/devices/{deviceId}/disconnect  {}   network drop (recoverable)
    POST /api/whatsapp/simulator/devices/{deviceId}/unlink      {}   the phone removes the device
    POST /api/whatsapp/simulator/devices/{deviceId}/messages    {"from", "text"}  incoming message

Errors: 404 for an unknown device, 409 DEVICE_CONFLICT when the device's state does not allow
the action (scan while not pairing, disconnect while idle, message while not connected).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from api import validation
from api.auth import require_operator
from api.routes_devices import ok
from api.state import current_state
from storage.models import DeviceRow
from supervisor.engines.simulator import SimulatorEngine
from supervisor.errors import DeviceConflict

bp = Blueprint("simulator", __name__)


async def _body_or_empty() -> Any:
    data = await request.get_data()
    assert isinstance(data, bytes)
    return {} if not data.strip() else validation.parse_json(data)


def _target(device_id: str) -> tuple[SimulatorEngine, DeviceRow]:
    require_operator()
    sup = current_state().sup
    engine = sup.engine
    if not isinstance(engine, SimulatorEngine):  # registered only with the simulator
        raise DeviceConflict("the simulator engine is not running")
    return engine, sup.get(device_id)


@bp.post("/simulator/devices/<device_id>/scan")
async def scan(device_id: str) -> Response:
    engine, row = _target(device_id)
    req = validation.sim_scan(await _body_or_empty())
    paired = await engine.scan(
        row.id, phone_number=req.phone_number, push_name=req.push_name, code=req.code
    )
    return ok(
        {
            "sessionId": row.session_id,
            "jid": paired.jid,
            "phoneNumber": paired.phone_number,
            "pushName": paired.push_name,
        },
        "QR code scanned: the device is connecting.",
    )


@bp.post("/simulator/devices/<device_id>/disconnect")
async def disconnect(device_id: str) -> Response:
    engine, row = _target(device_id)
    validation.structure(await _body_or_empty(), validation.Empty)
    await engine.drop(row.id)
    return ok({"sessionId": row.session_id}, "Connection dropped.")


@bp.post("/simulator/devices/<device_id>/unlink")
async def unlink(device_id: str) -> Response:
    engine, row = _target(device_id)
    validation.structure(await _body_or_empty(), validation.Empty)
    await engine.unlink(row.id)
    return ok({"sessionId": row.session_id}, "Device unlinked from the phone.")


@bp.post("/simulator/devices/<device_id>/messages")
async def incoming_message(device_id: str) -> Response:
    engine, row = _target(device_id)
    req = validation.sim_message(await _body_or_empty())
    message_id = await engine.incoming_message(row.id, req.sender, req.text)
    return ok({"sessionId": row.session_id, "messageId": message_id}, "Message delivered.")
