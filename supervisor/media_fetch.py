"""Fetching a send's media from a URL (``"media": {"url": "https://…"}``), as guarded as a webhook.

The URL is chosen by whoever holds a device key, so the fetch goes through the webhooks' SSRF
guard (:func:`supervisor.webhooks.ssrf.open_client`): every connection, the first and each
redirect's, resolves the host and refuses private, loopback, link-local and other
non-public addresses unless ``Config.allow_networks`` lists them. Usage::

    data, name = await fetch_media(url, max_bytes=16 << 20, timeout=30.0,
                                   allow=config.allow_networks)

The body is streamed and counted as it arrives: a file larger than ``max_bytes`` is cut off
there (a ``Content-Length`` above it refuses the file before its first byte). Redirects
(301, 302, 303, 307, 308) are followed by hand, at most :data:`MAX_REDIRECTS`, each through
the same guard and each to an http(s) URL. ``timeout`` bounds the whole fetch, redirects
included.

Error handling: :class:`MediaUrlRefused` when the guard refuses an address (the message says
which and why) or the URL is malformed; :class:`MediaUrlFailed` when the server cannot be
reached, answers other than 2xx, redirects too often or takes longer than ``timeout``;
:class:`supervisor.errors.TooLarge` (``field="media"``) beyond ``max_bytes``. Each message is
short, lower-case and fit for an API error.

Resource handling: one HTTP client per fetch, closed when it returns or raises.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from urllib.parse import unquote

import httpx
import trio

from .errors import TooLarge
from .webhooks.ssrf import (
    IPNetwork,
    RefusedConnect,
    Resolver,
    open_client,
    parse_url,
    system_resolver,
)

#: Redirects followed before a fetch fails.
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class MediaUrlRefused(ValueError):
    """The URL is malformed, or names an address wasup may not reach."""


class MediaUrlFailed(ValueError):
    """The file could not be fetched from the URL (unreachable, an error status, too slow)."""


async def fetch_media(
    url: str,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 -- the fetch's one deadline, redirects included
    allow: Sequence[IPNetwork] = (),
    resolver: Resolver = system_resolver,
) -> tuple[bytes, str | None]:
    """The bytes at ``url`` and the file name its path ends with (None when it ends with
    ``/``).

    Error handling: :class:`MediaUrlRefused`, :class:`MediaUrlFailed`, :class:`TooLarge`, as
    the module says.
    """
    try:
        target = parse_url(url)
    except ValueError as exc:
        raise MediaUrlRefused(str(exc)) from None
    with trio.move_on_after(timeout) as scope:
        async with open_client(allow, resolver=resolver, timeout=timeout) as client:
            for _ in range(MAX_REDIRECTS + 1):
                data, location = await _get(client, target, max_bytes)
                if location is None:
                    assert data is not None
                    return data, _file_name(target)
                target = location
            raise MediaUrlFailed(f"more than {MAX_REDIRECTS} redirects")
    assert scope.cancelled_caught
    raise MediaUrlFailed(f"no complete answer within {timeout:g} seconds")


async def _get(
    client: httpx.AsyncClient, url: httpx.URL, max_bytes: int
) -> tuple[bytes | None, httpx.URL | None]:
    """One GET: ``(bytes, None)``, or ``(None, the redirect's URL)``."""
    try:
        async with client.stream("GET", url) as response:
            if response.status_code in REDIRECTS:
                return None, _redirect(url, response.headers.get("location"))
            if not 200 <= response.status_code < 300:
                raise MediaUrlFailed(f"the server answered http {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
            return b"".join(chunks), None
    except httpx.ConnectError as exc:
        if isinstance(exc.__cause__, RefusedConnect):  # httpx wraps the guard's refusal
            raise MediaUrlRefused(str(exc.__cause__)) from None
        raise MediaUrlFailed(f"could not fetch it: {_describe(exc)}") from None
    except httpx.HTTPError as exc:
        raise MediaUrlFailed(f"could not fetch it: {_describe(exc)}") from None


def _redirect(base: httpx.URL, location: str | None) -> httpx.URL:
    if not location:
        raise MediaUrlFailed("the server redirected without a location")
    try:
        return parse_url(str(base.join(location)))
    except ValueError as exc:
        raise MediaUrlRefused(f"redirected to a url wasup does not follow: {exc}") from None


def _too_large(max_bytes: int) -> TooLarge:
    return TooLarge(f"media: the file at the url is larger than {max_bytes} bytes", field="media")


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc).strip().lower()
    return text or type(exc).__name__.lower()


def _file_name(url: httpx.URL) -> str | None:
    name = posixpath.basename(unquote(url.path))
    return name or None
