"""Which addresses a webhook may reach, and an HTTP client that reaches only those.

A webhook URL is chosen by whoever holds a device key, so wasup must not become a way into the
operator's own network (the cloud metadata service at 169.254.169.254, a database on
10.0.0.5, the admin port of something on localhost). The rule: resolve the host, refuse if
*any* address is private, loopback, link-local, shared (CGNAT, 100.64/10), reserved,
unspecified, multicast or not globally routable, or an IPv6 address that embeds such an IPv4
address (``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``); then connect to the
address that was checked, so a DNS answer that changes between the check and the connection
(DNS rebinding) changes nothing. Networks listed in ``Config.allow_networks``
(``WASUP_WEBHOOK_ALLOW_NETWORKS``) are allowed anyway.

Synopsis::

    allow = config.allow_networks
    async with open_client(allow) as client:       # an httpx.AsyncClient
        response = await client.post(url, content=body)   # redirects are never followed

The client does the resolve-check-connect in its network backend (:class:`GuardedBackend`),
below httpx and httpcore (the transport that plugs a backend into httpx is
:mod:`supervisor.webhooks.transport`), so the URL, the ``Host`` header, TLS SNI and certificate checks all
keep the name while the socket goes to the checked address. It ignores proxy environment
variables (a proxy would make the check meaningless).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx
import trio

from supervisor.webhooks.transport import BackendTransport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolver(host, port) -> [address, ...]``; raises ``OSError`` (``socket.gaierror``) when the
#: name does not resolve.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
#: Special-purpose IPv4 blocks that Python's ``is_private`` / ``is_global`` miss in some
#: versions (IANA special-purpose registry): IETF protocol assignments, benchmarking.
_SPECIAL_V4 = (
    ipaddress.IPv4Network("192.0.0.0/24"),
    ipaddress.IPv4Network("198.18.0.0/15"),
)


class AddressRefused(ValueError):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


class RefusedConnect(httpcore.ConnectError):
    """Raised inside the HTTP client when a connection would go to a refused address;
    httpx reports it as ``httpx.ConnectError`` with the same message."""


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDRs such as ``"127.0.0.0/8"`` or ``"fd00::/8"`` (host bits are ignored).

    Error handling: ``ValueError`` naming the first entry that is not a network.
    """
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        text = cidr.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network: {text!r}") from exc
    return tuple(networks)


def _allowed(ip: IPAddress, allow: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in allow)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def refusal(ip: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why webhooks may not reach ``ip``, or None if they may."""
    if _allowed(ip, allow):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = refusal(embedded, allow)
            return None if inner is None else f"{inner} (embedded in {ip})"
        if ip in _NAT64_LOCAL:
            return "private"
        if ip.teredo is not None:
            return "teredo tunnel"
        if ip.is_site_local:
            return "site-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space (cgnat)"
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in _SPECIAL_V4):
        return "reserved"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def check_address(address: str, allow: Sequence[IPNetwork] = ()) -> IPAddress:
    """Parse ``address`` and return it if webhooks may reach it.

    Error handling: ``AddressRefused`` saying which address and why.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    reason = refusal(ip, allow)
    if reason is not None:
        raise AddressRefused(f"address {ip} is not allowed ({reason})")
    return ip


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver (in a worker thread unless it is numeric).

    Error handling: ``socket.gaierror`` (an ``OSError``) if the name does not resolve, or
    cannot be a host name at all (a label over 63 characters fails IDNA encoding).
    """
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except UnicodeError as exc:
        raise socket.gaierror(f"{host[:64]}: not a valid host name ({exc})") from None
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def checked_addresses(
    host: str, port: int, allow: Sequence[IPNetwork], resolver: Resolver = system_resolver
) -> list[str]:
    """Resolve ``host`` and return its addresses, all of them allowed.

    Error handling: ``AddressRefused`` if any address is refused (one bad address refuses
    the name: a client could not tell which one it reaches); ``OSError`` if the name does
    not resolve or resolves to nothing.
    """
    host = host.strip("[]")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        check_address(host, allow)
        return [host]
    addresses = await resolver(host, port)
    if not addresses:
        raise socket.gaierror(f"{host} resolves to no address")
    for address in addresses:
        check_address(address, allow)
    return addresses


def parse_url(url: Any) -> httpx.URL:
    """Check the shape of a webhook URL: absolute http(s), a host, no credentials.

    Error handling: ``ValueError`` with a short message.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url is required")
    if len(url) > 2048:
        raise ValueError("url is too long (at most 2048 characters)")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ValueError(f"url is not valid: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise ValueError("url must start with http:// or https://")
    if not parsed.host:
        raise ValueError("url has no host")
    if parsed.userinfo:
        raise ValueError("url must not contain credentials")
    if parsed.fragment:
        raise ValueError("url must not contain a fragment")
    return parsed


def default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def check_url(
    url: str, allow: Sequence[IPNetwork], resolver: Resolver = system_resolver
) -> httpx.URL:
    """Settings-time check of a webhook URL.

    A literal address, or a name that resolves, must pass :func:`refusal` for every address.
    A name that does not resolve now (a DNS outage, a record not published yet) is accepted:
    every delivery resolves and checks it again.

    Error handling: ``ValueError`` for a malformed URL, ``AddressRefused`` (a ``ValueError``)
    for a refused address.
    """
    parsed = parse_url(url)
    try:
        with trio.move_on_after(5.0):
            await checked_addresses(parsed.host, default_port(parsed), allow, resolver)
    except AddressRefused:
        raise
    except OSError:
        pass
    return parsed


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks every address, then connects to a
    checked address (the first that accepts).

    Error handling: :class:`RefusedConnect` (``httpx.ConnectError`` above httpx) when an
    address is refused or the name does not resolve; the inner backend's errors otherwise.
    """

    def __init__(
        self,
        allow: Sequence[IPNetwork],
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow = tuple(allow)
        self._resolver = resolver
        self._inner = inner or httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's backend signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await checked_addresses(host, port, self._allow, self._resolver)
        except AddressRefused as exc:
            raise RefusedConnect(str(exc)) from exc
        except OSError as exc:
            raise RefusedConnect(f"cannot resolve {host}: {exc}") from exc
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's backend signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedConnect("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def open_client(
    allow: Sequence[IPNetwork],
    *,
    resolver: Resolver = system_resolver,
    timeout: float = 15.0,
    max_connections: int = 100,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for webhook deliveries: SSRF-guarded, no redirects followed,
    no proxies, ``timeout`` per network operation, TLS certificates verified (against the
    system's CA store, or ``verify`` when it is an ``ssl.SSLContext``). Use as ``async with``."""
    return httpx.AsyncClient(
        transport=BackendTransport(
            GuardedBackend(allow, resolver), max_connections=max_connections, verify=verify
        ),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
    )
