"""Operator endpoints (under ``/api/whatsapp``): a device's health, troubleshooting and state
history, and the health of a user's devices.

::

    GET /devices/{deviceId}/health[?sendTest=true]
        -> 200 {"success": true, "data": {"deviceId", "sessionId", "timestamp",
                "status": "pass"|"warn"|"fail", "checks": {"deviceExists": {...}, ...}}}
    GET /users/{userId}/health
        -> 200 {"success": true, "data": {"userId", "timestamp", "totalDevices",
                "summary": {"pass", "warn", "fail"}, "healthChecks": [<device health>, ...]}}
    GET /devices/{deviceId}/troubleshoot
        -> 200 {"success": true, "data": {"deviceId", "sessionId", "timestamp", "status",
                "statusReason", "issues": [...], "recommendations": [...], "health": "pass"|...}}
    GET /devices/{deviceId}/history?before=&limit=
        -> 200 {"success": true, "data": [{"from", "to", "reason", "at"}, ...],
                "pagination": {"limit", "hasMore", "nextCursor"}}     newest first

A check is ``{"status", "value", "message"}`` (``deviceExists`` also has the device as ``data``).
The checks and what they look at are in :mod:`supervisor.health`; the troubleshooting catalogue
is :mod:`supervisor.troubleshooting`. ``sendTest=true`` sends a test message to the device's own
number and reports whether WhatsApp took it (``messageSending``). History pages are keyset
pages as the message history's: pass ``nextCursor`` as ``before`` for the next, older page.
The operator token or the device's own API key may call every route here (a device key sees
only its own device in a user's health).

Errors: 400 INVALID_REQUEST naming the parameter (``sendTest``: true or false; ``before``;
``limit``: 1 to 100; ``userId``); 404 DEVICE_NOT_FOUND.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Blueprint, Response, request

from api.auth import current_principal, resolve_device
from api.routes_devices import device_json, ok
from api.routes_history import CURSOR_PATTERN
from api.state import current_state
from api.validation import check_user_id, int_param
from common.clock import now_iso
from storage.models import HistoryEntry
from supervisor import health, troubleshooting
from supervisor.errors import InvalidRequest
from supervisor.status import Status

bp = Blueprint("ops", __name__)

LIMIT_DEFAULT = 50
LIMIT_MAX = 100


def check_json(check: health.Check) -> dict[str, Any]:
    return {"status": check.verdict.wire, "value": check.value, "message": check.message}


def report_json(report: health.HealthReport, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """One device's health; ``data`` (the device, as GET /devices/{id} shows it) goes into
    ``deviceExists``."""
    checks = {name: check_json(check) for name, check in report.checks}
    if data is not None:
        checks["deviceExists"]["data"] = data
    return {
        "deviceId": report.session_id,
        "id": report.device_id,
        "timestamp": report.timestamp,
        "status": report.status.wire,
        "checks": checks,
    }


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    change = entry.change
    return {"from": change.from_status, "to": change.to_status, "reason": change.reason,
            "at": change.at}


def _flag(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise InvalidRequest(f"{name}: must be true or false", field=name)


def _cursor() -> int | None:
    raw = request.args.get("before")
    if raw is None:
        return None
    if re.fullmatch(CURSOR_PATTERN, raw) is None:
        raise InvalidRequest("before: must be a cursor from pagination.nextCursor", field="before")
    return int(raw)


@bp.get("/devices/<device_id>/health")
async def device_health(device_id: str) -> Response:
    send = _flag("sendTest")
    row = await resolve_device(device_id)
    sup = current_state().sup
    report = await health.device_health(sup, row.id, send=send)
    return ok(report_json(report, device_json(sup.get(row.id))))


@bp.get("/users/<user_id>/health")
async def user_health(user_id: str) -> Response:
    check_user_id(user_id)
    principal = current_principal()
    sup = current_state().sup
    reports = await health.user_health(sup, user_id)
    if not principal.is_operator:
        reports = [r for r in reports if r.device_id == principal.device_id]
    return ok({
        "userId": user_id,
        "timestamp": now_iso(),
        "totalDevices": len(reports),
        "summary": dict(health.verdicts(reports)),
        "healthChecks": [report_json(r) for r in reports],
    })


@bp.get("/devices/<device_id>/troubleshoot")
async def troubleshoot(device_id: str) -> Response:
    row = await resolve_device(device_id)
    sup = current_state().sup
    facts = await health.gather(sup, row.id)
    report = health.assess(facts, sup.config)
    found = troubleshooting.troubleshoot(
        report, Status(facts.row.status), facts.row.status_reason, facts.history
    )
    return ok({
        "deviceId": facts.row.session_id,
        "id": facts.row.id,
        "timestamp": report.timestamp,
        "status": facts.row.status,
        "statusReason": facts.row.status_reason,
        "health": report.status.wire,
        "issues": list(found.issues),
        "recommendations": list(found.recommendations),
    })


@bp.get("/devices/<device_id>/history")
async def state_history(device_id: str) -> Response:
    before = _cursor()
    limit = int_param(request.args, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    row = await resolve_device(device_id)
    entries = await current_state().sup.db.run(
        lambda r: r.history.page(row.id, before, limit + 1)
    )
    more = len(entries) > limit
    entries = entries[:limit]
    return ok(
        [history_json(e) for e in entries],
        pagination={
            "limit": limit,
            "hasMore": more,
            "nextCursor": str(entries[-1].id) if more and entries else None,
        },
    )
