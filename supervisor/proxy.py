"""The proxy a device's WhatsApp connection goes through: its setting and the environment.

Synopsis::

    setting = ProxySetting.parse({"url": "socks5://ana:s3cret@10.0.0.5:1080"})  # PUT body
    stored = setting.to_stored()              # the "proxy" settings kind: {"url": ...}
    setting = ProxySetting.from_stored(stored)
    setting.public()                          # {"url": "socks5://ana:****@10.0.0.5:1080"}
    effective_proxy(setting.url, os.environ)  # what the engine dials through, or None
    preflight_through(url, "web.whatsapp.com")  # None, or "unreachable: proxy ..." (blocks)

A device's own proxy (``PUT /devices/{deviceId}/settings/proxy``, stored as the settings kind
``"proxy"``) is applied at the device's next connect. Without one, the process environment
decides: whatsmeow (Go) honours ``HTTPS_PROXY``/``https_proxy`` by itself, from the environment
the process was *started* with; ``ALL_PROXY``/``all_proxy``, which Go ignores, wasup passes to
whatsmeow itself. :data:`URL_PATTERN` is the one definition of a valid URL (docs/openapi.yaml has
the same pattern): scheme ``http``, ``https`` or ``socks5``, optional ``user:password@``
(percent-encoded where needed), a host name, IPv4 address or bracketed IPv6 address, and a
port from 1 to 65535; nothing after the port.

Secrets: the password is stored (whatsmeow needs it) but never returned, never logged and never
put in an error message: :meth:`ProxySetting.public` and :func:`mask` replace it with ``****``,
:func:`redact` removes it from any text (such as a Go error).
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

import storage
from supervisor.errors import EngineError, InvalidRequest

#: The settings kind the proxy is stored under.
PROXY_KIND = "proxy"
#: What :func:`mask` shows in place of a password.
MASK = "****"
MAX_URL_LENGTH = 2048

_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_USERINFO_CHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
#: A valid proxy URL (the same pattern is in docs/openapi.yaml).
URL_PATTERN = (
    r"^(?:https?|socks5)://"
    r"(?:" + _USERINFO_CHAR + r"+(?::" + _USERINFO_CHAR + r"*)?@)?"
    r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
    r":" + _PORT + r"$"
)
_URL_RE = re.compile(URL_PATTERN)
_SCHEMES = ("http", "https", "socks5")

#: Environment variables naming a proxy for every connection, in the order they win.
ENV_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
#: The ones whatsmeow (Go's ``http.ProxyFromEnvironment``) reads by itself.
GO_READS = frozenset({"HTTPS_PROXY", "https_proxy"})


@attrs.frozen
class ProxySetting:
    """A device's proxy; ``url`` None means none (the environment decides)."""

    url: str | None = None

    @classmethod
    def parse(cls, body: Any) -> ProxySetting:
        """A ``PUT /settings/proxy`` body: ``{"url": "<proxy url>" | null}``.

        Error handling: raises :class:`InvalidRequest` naming the field (``body``, ``url`` or
        an unknown field); the message never contains the URL (it may hold a password).
        """
        if not isinstance(body, dict):
            raise InvalidRequest("body: must be a JSON object", "body")
        for key in body:
            if key != "url":
                name = str(key)[:64]
                raise InvalidRequest(f"{name}: unknown field", name)
        if "url" not in body:
            raise InvalidRequest("url: is required (null removes the proxy)", "url")
        value = body["url"]
        return cls(None if value is None else check_url(value))

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> ProxySetting:
        url = None if stored is None else stored.get("url")
        return cls(url if isinstance(url, str) and url else None)

    def to_stored(self) -> dict[str, Any]:
        return {"url": self.url}

    def public(self) -> dict[str, Any]:
        """What the API shows: the URL with its password masked."""
        return {"url": None if self.url is None else mask(self.url)}


def check_url(value: Any) -> str:
    """``value`` if it is a valid proxy URL (see the module docstring).

    Error handling: raises :class:`InvalidRequest` for the field ``url`` saying what is wrong
    (scheme, host, port...), never echoing the value.
    """
    if not isinstance(value, str):
        raise InvalidRequest("url: must be a string or null", "url")
    if len(value) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url: must be at most {MAX_URL_LENGTH} characters", "url")
    if _URL_RE.fullmatch(value):
        return value
    raise InvalidRequest(f"url: {_problem(value)}", "url")


def _problem(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in _SCHEMES:
        return "the scheme must be http, https or socks5 (http://host:port)"
    authority = rest
    if re.search(r"[/?#]", rest):
        return "must be scheme://[user:password@]host:port with nothing after the port"
    userinfo, at, hostport = authority.rpartition("@")
    if at and not re.fullmatch(
        _USERINFO_CHAR + r"+(?::" + _USERINFO_CHAR + r"*)?", userinfo
    ):
        return "user and password must be percent-encoded (no spaces or control characters)"
    m = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(.*))?", hostport, flags=re.S)
    host, port = (m.group(1), m.group(2)) if m else (hostport, None)
    if not host or not re.fullmatch(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]", host):
        return "the host must be a host name or an IP address"
    if not port:
        return "a port is required (host:port)"
    return "the port must be a number from 1 to 65535"


def mask(url: str) -> str:
    """``url`` with its password (if any) replaced by :data:`MASK`."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':' + MASK if colon else ''}@{hostport}"


def password(url: str | None) -> str | None:
    """The password in ``url`` (None when there is none), as written and decoded."""
    if url is None:
        return None
    try:
        secret = urlsplit(url).password
    except ValueError:
        return None
    return secret or None


def redact(text: str, url: str | None) -> str:
    """``text`` with every form of ``url``'s password removed (for errors and logs)."""
    secret = password(url)
    if not secret:
        return text
    for form in {secret, unquote(secret)}:
        if form:
            text = text.replace(form, MASK)
    return text


def env_proxy(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The environment's proxy for every connection as ``(variable, url)``, or None."""
    for name in ENV_PROXIES:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def effective_proxy(device_url: str | None, environ: Mapping[str, str]) -> str | None:
    """The proxy wasup must hand to whatsmeow for one connection, or None.

    The device's own proxy wins. Else ``ALL_PROXY`` when it is the environment's proxy (Go
    reads ``HTTPS_PROXY`` itself, but never ``ALL_PROXY``).
    """
    if device_url is not None:
        return device_url
    found = env_proxy(environ)
    if found is None or found[0] in GO_READS:
        return None
    return found[1]


#: Default ports of the proxy schemes (Go's, for a URL without one).
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080}


def preflight_through(url: str, host: str, port: int = 443, timeout: float = 10.0) -> str | None:
    """Check, before whatsmeow is started, that the proxy ``url`` can be used: it is reachable
    and, for an ``http`` proxy, it opens a tunnel to ``host:port`` (a ``CONNECT``, closed at
    once). Blocks: call it in a worker thread.

    Returns None when it can (or when ``url`` is not something to check: whatsmeow then says
    what is wrong with it), else a ``statusReason`` such as
    ``unreachable: proxy 10.0.0.5:3128: connection refused`` or
    ``unreachable: proxy 10.0.0.5:3128 answered HTTP/1.1 407 Proxy Authentication Required``;
    never the password.
    """
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        proxy_host, proxy_port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    proxy_port = proxy_port or _DEFAULT_PORTS.get(scheme)
    if not proxy_host or proxy_port is None:
        return None
    where = f"proxy {proxy_host}:{proxy_port}"
    try:
        with socket.create_connection((proxy_host, proxy_port), timeout=timeout) as sock:
            if scheme != "http":
                return None  # reachable; the tunnel itself is whatsmeow's to open
            head = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            if parts.username is not None:
                user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                head += f"Proxy-Authorization: Basic {base64.b64encode(user.encode()).decode()}\r\n"
            sock.sendall(f"{head}\r\n".encode())
            status = _status_line(sock)
    except OSError as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else (
            (exc.strerror or str(exc)).lower() if isinstance(exc.strerror, str) else str(exc)
        )
        return f"unreachable: {where}: {detail or type(exc).__name__}"
    words = status.split(" ", 2)
    if len(words) >= 2 and words[0].startswith("HTTP/") and words[1].startswith("2"):
        return None
    shown = "".join(c for c in status if c.isprintable())[:80] or "nothing"
    return f"unreachable: {where} answered {shown}"


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data and len(data) < 1024:
        chunk = sock.recv(1024 - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1").strip()


#: Reads one device's stored proxy URL (None when it has none).
ProxyLookup = Callable[[int], Awaitable[str | None]]


def stored_proxies(db: storage.Store) -> ProxyLookup:
    """A :data:`ProxyLookup` reading the settings kind ``"proxy"`` from ``db``.

    Error handling: when the database cannot be read the lookup raises a recoverable
    :class:`EngineError` (``connect_failed: ...``): the connection is retried later, on the
    usual backoff, rather than made without the device's proxy.
    """

    async def lookup(device_id: int) -> str | None:
        try:
            stored = await db.run(lambda r: r.settings.get(device_id, PROXY_KIND))
        except storage.StorageError as exc:
            raise EngineError(
                "connect_failed: the device's proxy setting could not be read"
            ) from exc
        return ProxySetting.from_stored(stored).url

    return lookup
