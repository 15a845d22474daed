"""Error responses: the one place that maps exceptions to HTTP statuses and codes.

Every error leaves wasup as ``{"success": false, "error": "<message>", "code": "<CODE>"}``
(plus ``field`` for a 400 that can name one). :func:`register` installs handlers so that no
request, however malformed, gets an HTML page, a traceback or a bare 500: unexpected
exceptions are logged (without request data) and answered with a generic 500 envelope.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from api.send_media import DetectionUnavailable
from storage.errors import StorageUnavailable
from supervisor.errors import (
    Busy,
    DeviceConflict,
    DeviceNotFound,
    EngineError,
    EngineRefused,
    InvalidRequest,
    MediaExpired,
    NotFound,
    QueueFull,
    RateLimited,
    Restarting,
    SimulatorUnreachable,
    TooLarge,
    Unresponsive,
    WasupError,
    WhatsAppForbidden,
    WhatsAppRefused,
)

log = logging.getLogger("wasup.api")

#: Codes for statuses werkzeug raises itself (routing, body size, protocol errors).
HTTP_CODES: dict[int, str] = {
    400: "INVALID_REQUEST",
    401: "AUTHENTICATION_FAILED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "DEVICE_CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMIT_EXCEEDED",
    431: "HEADERS_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}

HTTP_MESSAGES: dict[int, str] = {
    400: "bad request",
    404: "no such route",
    405: "method not allowed on this route",
    413: "request body too large (limit 1 MiB)",
    415: "the body must be JSON: send Content-Type: application/json",
}


#: THE table from wasup's exceptions to HTTP status and error code (the most derived type wins).
ERRORS: dict[type[Exception], tuple[int, str]] = {
    InvalidRequest: (400, "INVALID_REQUEST"),
    TooLarge: (413, "PAYLOAD_TOO_LARGE"),
    DeviceNotFound: (404, "DEVICE_NOT_FOUND"),
    NotFound: (404, "NOT_FOUND"),
    MediaExpired: (410, "MEDIA_EXPIRED"),
    DeviceConflict: (409, "DEVICE_CONFLICT"),
    EngineError: (502, "ENGINE_ERROR"),
    EngineRefused: (502, "ENGINE_ERROR"),
    WhatsAppRefused: (409, "DEVICE_CONFLICT"),
    WhatsAppForbidden: (403, "FORBIDDEN"),
    Busy: (503, "SERVICE_UNAVAILABLE"),
    QueueFull: (429, "RATE_LIMIT_EXCEEDED"),
    RateLimited: (429, "RATE_LIMIT_EXCEEDED"),
    Restarting: (503, "SERVICE_UNAVAILABLE"),
    SimulatorUnreachable: (503, "SERVICE_UNAVAILABLE"),
    StorageUnavailable: (503, "STORAGE_UNAVAILABLE"),
    Unresponsive: (504, "GATEWAY_TIMEOUT"),
    DetectionUnavailable: (503, "SERVICE_UNAVAILABLE"),
    WasupError: (500, "INTERNAL_ERROR"),
}


def status_and_code(exc: BaseException) -> tuple[int, str] | None:
    """The status and code :data:`ERRORS` gives ``exc``'s type, or None if it has none."""
    for cls in type(exc).__mro__:
        entry = ERRORS.get(cls)
        if entry is not None:
            return entry
    return None


class ApiError(Exception):
    """An HTTP-only error answered as is (401, 403, 429: :mod:`api.auth` makes those)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    field: str | None = None,
    reason: str | None = None,
) -> Response:
    body: dict[str, Any] = {"success": False, "error": message, "code": code}
    if field is not None:
        body["field"] = field
    if reason is not None:
        body["reason"] = reason
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _domain_headers(exc: BaseException) -> dict[str, str] | None:
    """The headers a domain error adds: Retry-After when it says when to try again."""
    if isinstance(exc, Busy | QueueFull | RateLimited | Restarting | SimulatorUnreachable
                  | StorageUnavailable):
        return {"Retry-After": retry_after(exc.retry_after)}
    return None


def response_for(exc: BaseException) -> Response:
    """The error envelope for any exception (the mapping lives here and nowhere else)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, str(exc), headers=exc.headers)
    entry = status_and_code(exc)
    if entry is not None:
        status, code = entry
        if type(exc) is WasupError:
            log.error("wasup error without a status: %r", exc)
        field = exc.field if isinstance(exc, InvalidRequest) else None
        reason = exc.reason if isinstance(exc, WhatsAppRefused) else None  # WhatsApp's word
        return error_response(
            status, code, str(exc) or code.lower(), headers=_domain_headers(exc), field=field,
            reason=reason,
        )
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        headers: dict[str, str] = {}
        for name, value in exc.get_headers():
            if name.lower() in {"allow", "retry-after"}:
                headers[name] = value
        if status == 413:
            # The rest of the body was never read: the connection cannot carry another request.
            headers["Connection"] = "close"
        message = HTTP_MESSAGES.get(status) or (exc.description or exc.name).lower()
        if isinstance(exc, WebsocketMismatch):
            message = "this is the WebSocket event stream: connect with ws://HOST:PORT/?token=..."
        return error_response(
            status, HTTP_CODES.get(status, "INVALID_REQUEST" if status < 500 else "INTERNAL_ERROR"),
            message, headers=headers,
        )
    log.error("unhandled error in a request", exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error")


def register(app: Quart) -> None:
    """Install the handlers that turn every exception into the JSON envelope."""

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        return response_for(exc)

    @app.errorhandler(Exception)
    async def _any(exc: Exception) -> Response:
        return response_for(exc)
