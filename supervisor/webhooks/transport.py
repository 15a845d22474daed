"""Depends on the private exception mapping of httpx 0.28.1 (``map_httpcore_exceptions`` in
``httpx/_transports/default.py``), re-implemented here over httpcore 1.0's public API: an httpx
transport whose connections go through a network backend of wasup's choosing.

httpx has no parameter for httpcore's network backend, which is where
:mod:`supervisor.webhooks.ssrf` checks every address it connects to. So instead of
``httpx.AsyncHTTPTransport``, webhooks use :class:`BackendTransport`: a small
``httpx.AsyncBaseTransport`` (public) over ``httpcore.AsyncConnectionPool(network_backend=...)``
(public). What httpx does privately in between, converting httpcore's exceptions into its own,
is done here by :func:`httpx_errors`, with the table httpx 0.28.1 uses.

Upgrading httpx or httpcore: compare :data:`HTTPCORE_TO_HTTPX` with
``_load_httpcore_exceptions`` in ``httpx/_transports/default.py`` and the request/response
conversion in its ``AsyncHTTPTransport.handle_async_request``, then update the versions below.
``tests/test_webhook_ssrf.py`` checks the table against the installed httpx.

Error handling: importing this module raises ``ImportError`` when the installed httpx or
httpcore is not the checked version. Requests raise ``httpx`` exceptions only.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from importlib.metadata import version

import httpcore
import httpx

#: The releases whose behaviour this module mirrors.
HTTPX_VERSION = "0.28.1"
HTTPCORE_MAJOR = "1."



def check_versions(httpx_version: str, httpcore_version: str) -> None:
    """Raise ``ImportError`` saying what to re-verify unless these are the checked versions."""
    if httpx_version != HTTPX_VERSION or not httpcore_version.startswith(HTTPCORE_MAJOR):
        raise ImportError(
            f"wasup's webhook transport mirrors httpx {HTTPX_VERSION} over httpcore "
            f"{HTTPCORE_MAJOR}x, found httpx {httpx_version} and httpcore {httpcore_version}: "
            "re-verify HTTPCORE_TO_HTTPX and BackendTransport in supervisor/webhooks/transport.py "
            "against httpx/_transports/default.py, then update the versions"
        )


check_versions(version("httpx"), version("httpcore"))

#: httpcore's exceptions and the httpx exception each becomes (httpx 0.28.1's own table).
#: The most specific match wins, as in httpx.
HTTPCORE_TO_HTTPX: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


def httpx_error(exc: Exception) -> type[httpx.HTTPError] | None:
    """The httpx exception type that httpcore's ``exc`` becomes, or None if it is not one."""
    mapped: type[httpx.HTTPError] | None = None
    for from_exc, to_exc in HTTPCORE_TO_HTTPX.items():
        if isinstance(exc, from_exc) and (mapped is None or issubclass(to_exc, mapped)):
            mapped = to_exc
    return mapped


@contextlib.contextmanager
def httpx_errors() -> Iterator[None]:
    """Re-raise httpcore's exceptions as httpx's, with the same message (the cause kept)."""
    try:
        yield
    except Exception as exc:
        mapped = httpx_error(exc)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._response.stream
        assert isinstance(stream, AsyncIterable)
        with httpx_errors():
            async for part in stream:
                yield part

    async def aclose(self) -> None:
        await self._response.aclose()


class BackendTransport(httpx.AsyncBaseTransport):
    """An httpx transport over httpcore's connection pool with ``network_backend``; HTTP/1.1,
    no proxy, TLS verified with ``verify``.

    Resource handling: :meth:`aclose` (called by ``httpx.AsyncClient``'s ``aclose``) closes
    the pool's connections.
    """

    def __init__(
        self,
        network_backend: httpcore.AsyncNetworkBackend,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 100,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=min(20, max_connections),
            keepalive_expiry=5.0,
            network_backend=network_backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with httpx_errors():
            response = await self._pool.handle_async_request(req)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
