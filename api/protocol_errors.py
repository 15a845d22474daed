"""The JSON error envelope on the answers Hypercorn gives before a request reaches wasup.

Depends on Hypercorn 0.18 (:data:`SUPPORTED`): its private ``_send_error_response`` methods,
which answer with an empty body, are replaced by ones that send the envelope
``{"success": false, "error": ..., "code": ...}`` with the same status and headers
(``content-length``, ``connection: close``):

- ``hypercorn.protocol.h11.H11Protocol``: a request h11 cannot parse (a malformed request line
  or header, a bad ``Content-Length``, a chunked body that is not, headers over h11's limit:
  400 or 431);
- ``hypercorn.protocol.ws_stream.WSStream``: a WebSocket upgrade that is not a valid
  handshake (no ``Sec-WebSocket-Key``, an unsupported version: 400), data before the
  handshake completes;
- ``hypercorn.protocol.http_stream.HTTPStream``: an application that ended without answering
  (500; wasup's error handlers always answer, so this is a last resort).

What Hypercorn still answers without a body: nothing for a connection that never sent a
complete request line (it is closed), and an HTTP/2 connection's protocol errors (wasup serves
HTTP/1.1; an ``h2c`` upgrade is Hypercorn's own).

:func:`install` does the replacement once per process, only for the version it was written
against; with another version it leaves Hypercorn alone and returns False (the contract test in
tests/test_hostile.py then fails, so an upgrade cannot silently drop the envelope).
"""

from __future__ import annotations

import json
from importlib import metadata

import h11
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol import http_stream, ws_stream
from hypercorn.protocol.events import Body, EndBody, Response

from api.errors import HTTP_CODES

#: The Hypercorn releases whose private methods this module replaces.
SUPPORTED = ("0.18.",)

#: Messages of the statuses Hypercorn answers itself.
MESSAGES: dict[int, str] = {
    400: "malformed HTTP request",
    404: "no such route",
    414: "request target too long",
    431: "request headers too large",
    500: "internal error",
}

_installed = False


def envelope(status: int) -> bytes:
    """The error envelope for ``status`` as Hypercorn sends it (one JSON line)."""
    code = HTTP_CODES.get(status, "INVALID_REQUEST" if status < 500 else "INTERNAL_ERROR")
    message = MESSAGES.get(status, "bad request" if status < 500 else "internal error")
    body = {"success": False, "error": message, "code": code}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]


async def _h11_error(self: hypercorn_h11.H11Protocol, status_code: int) -> None:
    body = envelope(status_code)
    headers = [*_headers(body), *self.config.response_headers("h11")]
    await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


async def _stream_error(
    self: http_stream.HTTPStream | ws_stream.WSStream, status_code: int
) -> None:
    body = envelope(status_code)
    await self.send(
        Response(stream_id=self.stream_id, status_code=status_code, headers=_headers(body))
    )
    await self.send(Body(stream_id=self.stream_id, data=body))
    await self.send(EndBody(stream_id=self.stream_id))


async def _http_stream_error(self: http_stream.HTTPStream, status_code: int) -> None:
    await _stream_error(self, status_code)
    self.state = http_stream.ASGIHTTPState.CLOSED
    await self.config.log.access(
        self.scope, {"status": status_code, "headers": []}, 0.0
    )


async def _ws_stream_error(self: ws_stream.WSStream, status_code: int) -> None:
    await _stream_error(self, status_code)
    await self.config.log.access(
        self.scope, {"status": status_code, "headers": []}, 0.0
    )


def install() -> bool:
    """Make Hypercorn's own error answers carry the envelope; True once installed.

    Error handling: never raises; False (nothing replaced) for an unsupported Hypercorn.
    """
    global _installed
    if _installed:
        return True
    if not metadata.version("hypercorn").startswith(SUPPORTED):
        return False
    # The private methods this module exists to replace (see the module docstring).
    hypercorn_h11.H11Protocol._send_error_response = _h11_error  # type: ignore[method-assign]
    http_stream.HTTPStream._send_error_response = _http_stream_error  # type: ignore[method-assign]
    ws_stream.WSStream._send_error_response = _ws_stream_error  # type: ignore[method-assign]
    _installed = True
    return True
