"""The whatsmeow engine's preflight: the way to WhatsApp checked before a Go client starts.

Without a proxy: a DNS lookup and a TCP connection to WhatsApp (``web.whatsapp.com:443``);
with one (the device's own, else ``HTTPS_PROXY`` / ``ALL_PROXY`` of the environment, see
:mod:`supervisor.proxy`): that the proxy is reachable and (an ``http`` proxy) opens a tunnel to
WhatsApp. A failure is a readable ``statusReason`` (``unreachable: ...``) at once, without
starting a Go client (whose failure would take longer and hold a thread and a store).

Error handling: :func:`checked_proxy` raises EngineError (recoverable, ``unreachable: ...``);
:func:`preflight` returns the reason. :func:`preflight` blocks (a worker thread).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping

from supervisor import proxy as proxy_checks
from supervisor.errors import EngineError
from supervisor.proxy import effective_proxy, env_proxy, mask, redact

log = logging.getLogger("wasup.engine.whatsmeow")


async def checked_proxy(
    own: str | None,
    environ: Mapping[str, str],
    host: str | None,
    check_seconds: float,
    session_id: str,
    thread: Callable[[Callable[[], str | None]], Awaitable[str | None]],
) -> str | None:
    """The proxy for the next connection (``own``: the device's, else the environment's),
    after the preflight to ``host`` (None: no preflight; at most ``check_seconds``) run
    through ``thread``.

    Raises EngineError (recoverable, ``unreachable: ...``) when the check fails.
    """
    found = env_proxy(environ)
    through = own if own is not None else (found[1] if found is not None else None)
    if own is not None:
        log.info("device %s: connecting through its proxy %s", session_id, mask(own))
    elif found is not None:
        log.info("device %s: connecting through the proxy of %s", session_id, found[0])
    if host is not None:
        if through is None:
            reason = await thread(lambda: preflight(host, timeout=check_seconds))
        else:
            via = through
            reason = await thread(
                lambda: proxy_checks.preflight_through(via, host, timeout=check_seconds)
            )
        if reason is not None:
            raise EngineError(redact(reason, through))
    return effective_proxy(own, environ)


def preflight(host: str, port: int = 443, timeout: float = 10.0) -> str | None:
    """Resolve ``host`` and open (then close) a TCP connection to it.

    Returns None when WhatsApp is reachable, else a ``statusReason`` such as
    ``unreachable: lookup web.whatsapp.com: name or service not known``.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        detail = (exc.strerror or str(exc)).lower()
        return f"unreachable: lookup {host}: {detail}"
    last: OSError | None = None
    for family, type_, proto, _name, addr in infos[:4]:
        try:
            with socket.socket(family, type_, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(addr)
            return None
        except OSError as exc:
            last = exc
    detail = "timed out" if isinstance(last, TimeoutError) else (
        (last.strerror or str(last)).lower() if last else "no address"
    )
    return f"unreachable: connect to {host}:{port}: {detail}"
