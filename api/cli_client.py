"""The command line's link to a running wasup: where it is, its token, its HTTP API and its
WebSocket event stream.

Usage::

    target = resolve_target(args, os.environ)     # --url/--token, WASUP_URL/WASUP_API_TOKEN,
                                                  # or <data-dir>/api_token
    data = await call(target, "GET", "/devices/7")             # the response's "data"
    async with event_stream(target, devices=["7"], types=["qr_code"]) as ws:
        event = json.loads(await ws.get_message())

The URL is ``--url``, else ``WASUP_URL``, else ``http://127.0.0.1:3001``. The token is
``--token``, else ``WASUP_API_TOKEN``, else the token ``wasup serve`` stored in its data
directory (``--data-dir``, else ``WASUP_DATA_DIR``, else ``./data``), if it is readable there.

Error handling: :class:`CliError` with one line for the operator (no traceback) when no token
is found, the server cannot be reached, or it answers with an error envelope (its code and
message are shown).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import attrs
import httpx
import trio_websocket

#: ``wasup serve``'s token file in its data directory (``api.cli.TOKEN_FILE``).
TOKEN_FILE = "api_token"
DEFAULT_URL = "http://127.0.0.1:3001"
API_PREFIX = "/api/whatsapp"
#: Seconds one HTTP request may take.
HTTP_TIMEOUT = 30.0


class CliError(Exception):
    """What went wrong, in one line for the operator."""


@attrs.frozen
class Target:
    """A running wasup: its base URL (``http://host:port``) and the token to use."""

    url: str
    token: str

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + API_PREFIX

    def ws_url(self, query: Mapping[str, str]) -> str:
        """The event stream's URL with ``query`` (``ws``/``wss`` for ``http``/``https``)."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        tail = f"?{urlencode(query)}" if query else ""
        return f"{scheme}://{parts.netloc}/{tail}"


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every client command takes: --url, --token, --data-dir."""
    parser.add_argument(
        "--url", default=None,
        help=f"the wasup server (default: WASUP_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=None,
        help="the operator token or a device API key (default: WASUP_API_TOKEN, else the "
        "token stored in the data directory)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="where wasup serve keeps its token (default: WASUP_DATA_DIR, else ./data)",
    )


def resolve_target(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    """The server and token from the flags, the environment, or the data directory.

    Raises: CliError when no token is found, or the URL is not http(s).
    """
    url = args.url or env.get("WASUP_URL") or DEFAULT_URL
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise CliError(f"--url must be like {DEFAULT_URL}, not {url!r}")
    token = args.token or env.get("WASUP_API_TOKEN", "").strip()
    if not token:
        data_dir = args.data_dir or Path(env.get("WASUP_DATA_DIR") or "./data")
        path = data_dir / TOKEN_FILE
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            token = ""
        if not token:
            raise CliError(
                f"no token: pass --token, set WASUP_API_TOKEN, or run where {path} is readable"
            )
    return Target(url=url, token=token)


def _failure(response: httpx.Response) -> CliError:
    try:
        body = response.json()
        return CliError(f"{response.status_code} {body['code']}: {body['error']}")
    except (ValueError, KeyError, TypeError):
        return CliError(f"{response.status_code}: {response.text[:200]}")


async def call(
    target: Target, method: str, path: str, body: Mapping[str, Any] | None = None,
    params: Mapping[str, str] | None = None,
) -> Any:
    """``method path`` under ``/api/whatsapp``; the response's ``data``.

    Raises: CliError for an error response or when the server cannot be reached.
    """
    async with httpx.AsyncClient(
        base_url=target.api_url, headers={"X-API-TOKEN": target.token}, timeout=HTTP_TIMEOUT
    ) as client:
        try:
            response = await client.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach wasup at {target.url}: {exc or type(exc).__name__}") from None
    if response.status_code >= 400:
        raise _failure(response)
    return response.json().get("data")


@asynccontextmanager
async def event_stream(
    target: Target, *, devices: Sequence[str] = (), types: Sequence[str] = ()
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The WebSocket event stream, filtered to ``devices`` (session ids or numeric ids) and
    ``types``; the token goes in the ``X-API-TOKEN`` header, never in the URL.

    Raises: CliError when the handshake is refused or the server cannot be reached.
    """
    query: dict[str, str] = {}
    if devices:
        query["sessionId"] = ",".join(devices)
    if types:
        query["events"] = ",".join(types)
    url = target.ws_url(query)
    try:
        async with trio_websocket.open_websocket_url(
            url, extra_headers=[(b"X-API-TOKEN", target.token.encode())]
        ) as ws:
            yield ws
    except trio_websocket.ConnectionRejected as exc:
        detail = (exc.body or b"").decode(errors="replace")[:200]
        raise CliError(f"the event stream refused the connection ({exc.status_code}): {detail}") from None
    except (OSError, trio_websocket.HandshakeError) as exc:
        raise CliError(f"cannot open the event stream at {target.url}: {exc}") from None
