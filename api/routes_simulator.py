"""Simulator controls: act as the phone and the WhatsApp server (``--engine simulator`` only).

Operator token only. Each takes a device (sessionId or numeric id) and a JSON body::

    POST /api/whatsapp/simulator/devices/{deviceId}/scan        {"phoneNumber"?, "pushName"?, "code"?}
    POST /api/whatsapp/simulator/devices/{deviceId}/disconnect  {}   network drop (recoverable)
    POST /api/whatsapp/simulator/devices/{deviceId}/unlink      {}   the phone removes the device
    POST /api/whatsapp/simulator/devices/{deviceId}/messages    {"from", "type"?, ...}  incoming
    POST /api/whatsapp/simulator/devices/{deviceId}/receipts    {"messageId", "status"}
    POST /api/whatsapp/simulator/devices/{deviceId}/fail        {"reason", "seconds"?}

``scan`` answers once wasup committed the pairing. ``messages`` answers 200 ``delivered`` once
wasup committed the message, or 202 ``queued`` when the device is linked but not connected:
the message waits in the simulated WhatsApp's offline queue and arrives, in order, when the
device reconnects; it takes every type of message (:mod:`api.sim_messages`), and keeps the
file of a media message. ``receipts`` plays the recipient's phone for a message the device
sent: ``delivered`` or ``read`` (a ``message_status`` event). ``fail`` makes WhatsApp report a failure the way the real engine does
(``client_outdated``, ``stream_replaced``, ``pair_error``, ``account_locked``, ``banned``,
``temporary_ban`` for ``seconds``; see ``SimulatorEngine.fail``).

Errors: 400 naming the field for a malformed body; 404 for an unknown device; 409
DEVICE_CONFLICT when the device's state does not allow the action (scan while not pairing,
disconnect while idle, a message for a device that is not linked, a receipt while not
connected, a failure its connection cannot have); 503 SERVICE_UNAVAILABLE with Retry-After
when the shared simulator's process (``--simulator-url``) cannot be reached.
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Blueprint, Response, request

from api import validation
from api.auth import require_operator
from api.routes_devices import ok
from api.sim_messages import MESSAGE_ID_RE, sim_incoming
from api.state import current_state
from storage.models import DeviceRow
from supervisor.engines.simulator import FailReason
from supervisor.engines.simulator_controls import SimulatorControls
from supervisor.errors import DeviceConflict, InvalidRequest
from supervisor.message_content import PollVote
from supervisor.supervisor import simulator_controls

bp = Blueprint("simulator", __name__)


async def _body_or_empty() -> Any:
    data = await request.get_data()
    assert isinstance(data, bytes)
    return {} if not data.strip() else validation.parse_json(data)


def _target(device_id: str) -> tuple[SimulatorControls, DeviceRow]:
    require_operator()
    sup = current_state().sup
    controls = simulator_controls(sup.engine)  # in process, or the shared simulator's
    if controls is None:  # registered only with the simulator
        raise DeviceConflict("the simulator engine is not running")
    return controls, sup.get(device_id)


@bp.post("/simulator/devices/<device_id>/scan")
async def scan(device_id: str) -> Response:
    engine, row = _target(device_id)
    req = validation.sim_scan(await _body_or_empty())
    paired = await engine.scan(row.id, req.phone_number, req.push_name, req.code)
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
    req = sim_incoming(await _body_or_empty())
    content = req.content
    if isinstance(content, PollVote):  # a vote names the device's own poll by WhatsApp's id
        poll_id = await current_state().sup.whatsapp_id(row.id, content.target_id)
        content = attrs.evolve(content, target_id=poll_id)
    incoming = await engine.incoming_message(
        row.id, req.sender, req.text, content, req.quoted, req.push_name, req.media)
    data = {"sessionId": row.session_id, "messageId": incoming.message_id}
    if incoming.delivered:
        return ok({**data, "status": "delivered"}, "Message delivered.")
    return ok(
        {**data, "status": "queued"}, "Device offline: the message waits in the offline queue.",
        status=202,
    )


#: The receipts the recipient's phone sends.
RECEIPT_STATUSES = ("delivered", "read")


def sim_receipt(body: Any) -> tuple[str, str]:
    """``{"messageId", "status": "delivered" | "read"}`` as ``(message_id, status)``.

    Error handling: :class:`InvalidRequest` naming ``body``, ``messageId`` or ``status``.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    for key in body:
        if key not in ("messageId", "status"):
            raise InvalidRequest(f"{key}: unknown field", field=key)
    message_id, status = body.get("messageId"), body.get("status")
    if not isinstance(message_id, str) or not MESSAGE_ID_RE.fullmatch(message_id):
        raise InvalidRequest(
            "messageId: must be a message id (1 to 128 letters, digits, '_' or '-')",
            field="messageId",
        )
    if status not in RECEIPT_STATUSES:
        raise InvalidRequest("status: must be delivered or read", field="status")
    return message_id, status


@bp.post("/simulator/devices/<device_id>/receipts")
async def receipt(device_id: str) -> Response:
    engine, row = _target(device_id)
    message_id, status = sim_receipt(await _body_or_empty())
    # The API's messageId is wasup's; the simulated WhatsApp knows the message by its own.
    await engine.ack(row.id, await current_state().sup.whatsapp_id(row.id, message_id), status)
    return ok(
        {"sessionId": row.session_id, "messageId": message_id, "status": status},
        f"The recipient's phone sent a {status} receipt.",
    )


#: The longest temporary ban ``fail`` accepts: a year.
MAX_BAN_SECONDS = 365 * 24 * 3600


@attrs.frozen
class SimFail:
    reason: FailReason
    seconds: int | None = None


def sim_fail(body: Any) -> SimFail:
    """``{"reason": one of FailReason, "seconds"?: whole seconds, for temporary_ban}``.

    Error handling: :class:`InvalidRequest` naming ``body``, ``reason`` or ``seconds``.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    for key in body:
        if key not in ("reason", "seconds"):
            raise InvalidRequest(f"{key}: unknown field", field=key)
    reason = body.get("reason")
    names = ", ".join(r.value for r in FailReason)
    if not isinstance(reason, str) or reason not in {r.value for r in FailReason}:
        raise InvalidRequest(f"reason: must be one of {names}", field="reason")
    seconds = body.get("seconds")
    if "seconds" in body:
        seconds = validation.number("seconds", seconds, 1, MAX_BAN_SECONDS, integer=True)
        if reason != FailReason.TEMPORARY_BAN:
            raise InvalidRequest("seconds: only for temporary_ban", field="seconds")
    return SimFail(FailReason(reason), seconds)


@bp.post("/simulator/devices/<device_id>/fail")
async def fail(device_id: str) -> Response:
    engine, row = _target(device_id)
    req = sim_fail(await _body_or_empty())
    await engine.fail(row.id, req.reason, req.seconds)
    return ok(
        {"sessionId": row.session_id, "reason": req.reason.value},
        f"WhatsApp reported {req.reason.value}.",
    )
