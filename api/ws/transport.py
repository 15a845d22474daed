"""Depends on the private internals of Quart 0.22.0 and Hypercorn 0.18.0: the WebSocket
transport adapter, the one place wasup reaches past either library's public API.

- Quart: ``websocket._get_current_object()`` (the concrete :class:`quart.wrappers.Websocket`
  behind the context-local proxy) and that object's private ``_send``, the ASGI send callable.
- Hypercorn: from that ``send``, a breadth-first walk through Hypercorn's bound methods,
  partials and their ``send``/``stream`` attributes reaches the connection's
  :class:`trio.SocketStream`.

Why: Hypercorn writes to the socket under a cancel shield, so a WebSocket send to a peer that
stopped reading can neither be cancelled nor time out; shutting the socket down is the only
way to free the task (see :func:`abort`).

On a version bump, re-verify (the import-time check below names the versions):
``tests/test_ws.py::test_find_socket_stream_under_hypercorn`` and
``test_client_that_never_reads_is_aborted``, then update the versions here.
"""

from __future__ import annotations

import importlib.metadata
import socket
from functools import partial

import trio
from quart import websocket
from quart.wrappers import Websocket

#: The library versions this module was verified against.
VERIFIED = {"quart": "0.22.0", "hypercorn": "0.18.0"}

for _dist, _expected in VERIFIED.items():
    _found = importlib.metadata.version(_dist)
    if _found != _expected:
        raise ImportError(
            f"api.ws.transport was verified against {_dist} {_expected}, found {_found}: "
            "re-verify current_websocket() and find_socket_stream() (tests/test_ws.py) "
            "and update VERIFIED"
        )


def current_websocket() -> Websocket:
    """The concrete Websocket of the current WebSocket context (not the context proxy), safe
    to hand to the stream's tasks."""
    ws: Websocket = websocket._get_current_object()  # type: ignore[attr-defined]  # private
    return ws


def find_socket_stream(ws: Websocket, depth: int = 10) -> trio.SocketStream | None:
    """The TCP stream under ``ws``, or None when the walk from its ASGI send finds none."""
    seen: set[int] = set()
    frontier: list[object] = [ws._send]  # private: the ASGI send callable
    for _ in range(depth):
        following: list[object] = []
        for obj in frontier:
            if obj is None or id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, trio.SocketStream):
                return obj
            if isinstance(obj, trio.SSLStream):
                following.append(obj.transport_stream)
                continue
            if isinstance(obj, partial):
                following.append(obj.func)
                following.extend(obj.args)
                continue
            owner = getattr(obj, "__self__", None)
            if owner is not None:
                following.append(owner)
                continue
            for name in ("stream", "send"):
                following.append(getattr(obj, name, None))
        frontier = following
    return None


def abort(ws: Websocket) -> bool:
    """Reset the TCP connection under ``ws``; True when a socket was found and shut.

    Sets ``SO_LINGER`` to 0 (so the close discards unsent data with a RST rather than holding
    it for a reader that never comes) and shuts the socket down, which wakes the blocked write
    with an error that Hypercorn handles as a closed connection.

    Error handling: never raises; an already closed socket counts as shut.
    """
    stream = find_socket_stream(ws)
    if stream is None:
        return False
    sock = stream.socket
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return True
