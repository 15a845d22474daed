"""The SSRF guard: literal and resolved addresses in every refused form, allow-listing, the
connection going to the checked address, and a redirect to the metadata address.

Names are resolved by a fake resolver (no DNS); the only sockets are on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from supervisor.errors import InvalidRequest
from supervisor.webhooks import settings as webhook_settings
from supervisor.webhooks import ssrf, transport
from supervisor.webhooks.dispatcher import attempt
from tests.webhook_support import start_receiver

REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("192.0.0.8", "private"),
    ("192.0.2.1", "private"),
    ("198.18.0.1", "reserved"),
    ("198.51.100.7", "private"),
    ("203.0.113.9", "private"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
    ("::127.0.0.1", "ipv4-compatible"),
    # IPv6 forms that embed a refused IPv4 address
    ("::ffff:127.0.0.1", "mapped loopback"),
    ("::ffff:7f00:1", "mapped loopback, hex"),
    ("::ffff:169.254.169.254", "mapped metadata"),
    ("::ffff:10.1.2.3", "mapped private"),
    ("64:ff9b::a9fe:a9fe", "nat64 metadata"),
    ("64:ff9b::127.0.0.1", "nat64 loopback"),
    ("64:ff9b::100.64.0.1", "nat64 cgnat"),
    ("64:ff9b:1::1", "local-use nat64"),
    ("2002:7f00:1::1", "6to4 loopback"),
    ("2002:a9fe:a9fe::", "6to4 metadata"),
    ("2002:c0a8:0101::1", "6to4 private"),
]

ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_refused_literal(address: str, why: str) -> None:
    ip = ipaddress.ip_address(address)
    assert ssrf.refusal(ip) is not None, why
    with pytest.raises(ssrf.AddressRefused):
        ssrf.check_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_allowed_literal(address: str) -> None:
    assert ssrf.refusal(ipaddress.ip_address(address)) is None


def test_allow_networks() -> None:
    allow = ssrf.parse_networks(["127.0.0.0/8", " fd00::/8 ", ""])
    assert ssrf.refusal(ipaddress.ip_address("127.0.0.1"), allow) is None
    assert ssrf.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allow) is None
    assert ssrf.refusal(ipaddress.ip_address("fd12::1"), allow) is None
    assert ssrf.refusal(ipaddress.ip_address("10.0.0.1"), allow) == "private"
    assert ssrf.refusal(ipaddress.ip_address("::1"), allow) == "loopback"
    with pytest.raises(ValueError, match="not a network"):
        ssrf.parse_networks(["10.0.0.0/33"])


def fake_resolver(table: dict[str, list[str]]) -> Any:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        await trio.lowlevel.checkpoint()
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


NAMES = {
    "metadata.test": ["169.254.169.254"],
    "internal.test": ["10.0.0.5"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
    "mapped.test": ["::ffff:192.168.0.1"],
    "nat64.test": ["64:ff9b::a00:1"],
    "sixtofour.test": ["2002:a00:1::1"],
    "public.test": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
}


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://10.0.0.1:8080/hook",
        "http://100.100.100.200/",
        "http://[::1]:3001/",
        "http://[fe80::1]/",
        "http://0.0.0.0:3001/",
        "https://metadata.test/",
        "https://internal.test/hook",
        "https://mixed.test/hook",
        "https://mapped.test/hook",
        "https://nat64.test/hook",
        "https://sixtofour.test/hook",
    ],
)
async def test_settings_refuse(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await webhook_settings.check_url(url, (), fake_resolver(NAMES))
    assert info.value.field == "url"
    assert "not allowed" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex
        "http://127.1/",  # short form
        "http://017700000001/",  # octal
        "http://localhost:3001/",
    ],
)
async def test_settings_refuse_odd_loopback_forms(url: str) -> None:
    # The system resolver turns these into 127.0.0.1 without any network traffic.
    with pytest.raises(InvalidRequest):
        await webhook_settings.check_url(url, ())


async def test_settings_accept_public_and_unresolvable_names() -> None:
    resolver = fake_resolver(NAMES)
    await webhook_settings.check_url("https://public.test/hook", (), resolver)
    # A DNS outage at settings time: accepted, checked again at every delivery.
    await webhook_settings.check_url("https://not-yet-published.test/hook", (), resolver)
    assert resolver.calls == ["public.test", "not-yet-published.test"]
    await webhook_settings.check_url("http://127.0.0.1:9/", ssrf.parse_networks(["127.0.0.0/8"]))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "http"),
        ("file:///etc/passwd", "http"),
        ("http://user:pass@example.com/", "credentials"),
        ("//example.com/", "http"),
        ("", "required"),
        (42, "required"),
        ("http://" + "a" * 3000 + ".com/", "too long"),
    ],
)
def test_malformed_urls(url: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        webhook_settings.normalize({"url": url}, None, now=0.0)


async def test_connects_to_the_checked_address_with_the_name_in_host() -> None:
    """The name resolves to 127.0.0.1 (allowed here); the socket goes to that address while
    the Host header keeps the name."""
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        resolver = fake_resolver({"hooks.test": ["127.0.0.1"]})
        allow = ssrf.parse_networks(["127.0.0.0/8"])
        async with ssrf.open_client(allow, resolver=resolver) as client:
            url = f"http://hooks.test:{receiver.port}/hook?x=1"
            result = await attempt(client, url, "msg_1", b"{}", ["whsec_" + "A" * 32])
        assert result.ok, result
        assert resolver.calls == ["hooks.test"]
        assert receiver.requests[0].headers["host"] == f"hooks.test:{receiver.port}"
        assert receiver.requests[0].target == "/hook?x=1"
        nursery.cancel_scope.cancel()


async def test_delivery_time_refusal_is_a_clear_failure() -> None:
    """A name that resolved to nothing bad at settings time now points inside (DNS
    rebinding): the delivery fails without a connection, with a readable error."""
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        resolver = fake_resolver({"rebind.test": ["93.184.216.34", "127.0.0.1"]})
        async with ssrf.open_client((), resolver=resolver) as client:
            url = f"http://rebind.test:{receiver.port}/hook"
            result = await attempt(client, url, "msg_1", b"{}", ["whsec_" + "A" * 32])
            literal = await attempt(
                client, f"http://127.0.0.1:{receiver.port}/", "msg_2", b"{}", ["x" * 10]
            )
        assert not result.ok and result.status_code is None
        assert "127.0.0.1 is not allowed (loopback)" in (result.error or "")
        assert "not allowed" in (literal.error or "")
        assert receiver.requests == []
        nursery.cancel_scope.cancel()


async def test_redirect_to_metadata_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(
            nursery,
            (302, {"location": "http://169.254.169.254/latest/meta-data/iam/"}),
            (307, {"location": "http://[::ffff:a9fe:a9fe]/"}),
        )
        resolver = fake_resolver({})
        allow = ssrf.parse_networks(["127.0.0.0/8"])
        connects: list[str] = []
        original = ssrf.GuardedBackend.connect_tcp

        async def spy(self: ssrf.GuardedBackend, host: str, port: int, **kwargs: Any) -> Any:
            connects.append(host)
            return await original(self, host, port, **kwargs)

        monkeypatch.setattr(ssrf.GuardedBackend, "connect_tcp", spy)
        async with ssrf.open_client(allow, resolver=resolver) as client:
            first = await attempt(client, receiver.url, "msg_1", b"{}", ["x" * 10])
            second = await attempt(client, receiver.url, "msg_2", b"{}", ["x" * 10])
        assert first.status_code == 302 and not first.ok
        assert "redirect not followed" in (first.error or "")
        assert second.status_code == 307 and not second.ok
        assert connects == ["127.0.0.1", "127.0.0.1"]  # never the metadata address
        assert len(receiver.requests) == 2
        nursery.cancel_scope.cancel()


def test_unix_socket_and_proxy_env_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
    client = ssrf.open_client(())
    assert isinstance(client._transport, transport.BackendTransport)  # type: ignore[attr-defined]
    assert client._mounts == {}  # type: ignore[attr-defined]


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_keeps_the_name_for_sni_and_certificate(tmp_path: Path) -> None:
    """https to a name that resolves to 127.0.0.1: the socket goes to the checked address,
    TLS is verified against the name (SNI + certificate), and a certificate for another name
    fails."""
    cert, key = _self_signed(tmp_path, "hooks.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)  # type: ignore[assignment]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)

        async def tls_handler(stream: trio.SocketStream) -> None:
            await receiver._handle(trio.SSLStream(stream, server_ctx, server_side=True))  # type: ignore[arg-type]

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, tls_handler, listeners)
        resolver = fake_resolver({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        allow = ssrf.parse_networks(["127.0.0.0/8"])
        async with ssrf.open_client(allow, resolver=resolver, verify=client_ctx) as client:
            good = await attempt(
                client, f"https://hooks.test:{port}/hook", "msg_1", b"{}", ["x" * 10]
            )
            bad = await attempt(
                client, f"https://other.test:{port}/hook", "msg_2", b"{}", ["x" * 10]
            )
        assert good.ok, good
        assert receiver.requests[0].headers["host"] == f"hooks.test:{port}"
        assert sni[0] == "hooks.test"
        assert not bad.ok and "certificate" in (bad.error or "").lower()
        nursery.cancel_scope.cancel()


# -- the transport's contract with httpx (supervisor/webhooks/transport.py) -----------------


def test_httpcore_errors_become_the_httpx_errors_httpx_itself_raises() -> None:
    from httpx._transports.default import _load_httpcore_exceptions  # the private original

    assert transport.HTTPCORE_TO_HTTPX == _load_httpcore_exceptions()
    for httpcore_exc in transport.HTTPCORE_TO_HTTPX:
        with pytest.raises(httpx.HTTPError) as info, transport.httpx_errors():
            raise httpcore_exc("boom")
        with pytest.raises(httpx.HTTPError) as theirs:
            with httpx._transports.default.map_httpcore_exceptions():
                raise httpcore_exc("boom")
        assert type(info.value) is type(theirs.value) and str(info.value) == "boom"
    with pytest.raises(KeyError), transport.httpx_errors():
        raise KeyError("not httpcore's")


async def test_a_refused_connect_is_an_httpx_connect_error() -> None:
    async with ssrf.open_client(()) as client:
        with pytest.raises(httpx.ConnectError, match="loopback"):
            await client.get("http://127.0.0.1:1/")


async def test_a_failing_response_stream_raises_httpx_errors() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        allow = ssrf.parse_networks(["127.0.0.0/8"])
        async with ssrf.open_client(allow) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"http://127.0.0.1:{port}/")
        nursery.cancel_scope.cancel()


def test_an_unchecked_httpx_version_refuses_to_import() -> None:
    transport.check_versions(transport.HTTPX_VERSION, "1.0.9")
    with pytest.raises(ImportError, match="re-verify HTTPCORE_TO_HTTPX"):
        transport.check_versions("0.29.0", "1.0.9")
    with pytest.raises(ImportError, match=r"found httpx 0\.28\.1 and httpcore 2\.0\.0"):
        transport.check_versions(transport.HTTPX_VERSION, "2.0.0")
