"""A device's own proxy: the value's rules, the two routes, and that the password never shows.

How the engine applies it (through the real Go library, to a loopback listener) is in
tests/test_whatsmeow_engine.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage import StorageUnavailable
from supervisor.errors import EngineError, InvalidRequest
from supervisor.proxy import (
    ProxySetting,
    check_url,
    effective_proxy,
    env_proxy,
    mask,
    redact,
    stored_proxies,
)

from .conftest import api_client, running_server

VALID = [
    "http://proxy.example.com:3128",
    "https://10.0.0.5:8443",
    "socks5://127.0.0.1:1080",
    "socks5://ana:s3cret@127.0.0.1:1080",
    "http://ana@proxy:8080",
    "http://ana:p%40ss%3Aword@proxy.example.com:65535",
    "http://[2001:db8::1]:3128",
    "http://ana:@host:1",
]

INVALID = [
    ("ftp://proxy:21", "scheme"),
    ("socks4://proxy:1080", "scheme"),
    ("proxy.example.com:3128", "scheme"),
    ("http://proxy.example.com", "port is required"),
    ("http://proxy:0", "port must be"),
    ("http://proxy:65536", "port must be"),
    ("http://proxy:99999", "port must be"),
    ("http://proxy:80/path", "nothing after the port"),
    ("http://proxy:80?x=1", "nothing after the port"),
    ("http://:8080", "host"),
    ("http://ana:pa ss@proxy:8080", "percent-encoded"),
    ("http://ana:p@ss@proxy:8080", "percent-encoded"),
    ("http://pro_xy:8080", "host"),
    ("http://proxy:80\n", "port must be"),
    ("", "scheme"),
]


@pytest.mark.parametrize("url", VALID)
def test_valid_urls_are_accepted_as_written(url: str) -> None:
    assert check_url(url) == url
    assert ProxySetting.parse({"url": url}).url == url


@pytest.mark.parametrize(("url", "problem"), INVALID)
def test_invalid_urls_name_the_field_and_the_problem_without_echoing(url: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ProxySetting.parse({"url": url})
    assert info.value.field == "url"
    assert problem in str(info.value)
    if url:
        assert url not in str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [([], "body"), ("x", "body"), ({}, "url"), ({"url": 5}, "url"), ({"url": True}, "url"),
     ({"url": None, "noWebsocket": True}, "noWebsocket"), ({"url": "http://a:1" * 300}, "url")],
)
def test_malformed_bodies(body: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ProxySetting.parse(body)
    assert info.value.field == field


def test_null_clears() -> None:
    assert ProxySetting.parse({"url": None}) == ProxySetting(None)
    assert ProxySetting.from_stored({"url": None}).public() == {"url": None}
    assert ProxySetting.from_stored(None).url is None


def test_the_password_is_masked_and_redacted() -> None:
    url = "socks5://ana:p%40ss@127.0.0.1:1080"
    assert mask(url) == "socks5://ana:****@127.0.0.1:1080"
    assert mask("http://ana@proxy:8080") == "http://ana@proxy:8080"
    assert mask("http://proxy:8080") == "http://proxy:8080"
    assert ProxySetting(url).public() == {"url": "socks5://ana:****@127.0.0.1:1080"}
    assert ProxySetting.from_stored(ProxySetting(url).to_stored()).url == url
    text = "dial socks5://ana:p%40ss@127.0.0.1:1080: auth p@ss refused"
    assert redact(text, url) == "dial socks5://ana:****@127.0.0.1:1080: auth **** refused"
    assert redact(text, None) == text


def test_which_proxy_whatsmeow_gets() -> None:
    own = "socks5://127.0.0.1:1080"
    # The device's own proxy wins over the environment.
    assert effective_proxy(own, {"HTTPS_PROXY": "http://corp:3128"}) == own
    # Go reads HTTPS_PROXY itself (from the environment the process was started with).
    assert effective_proxy(None, {"HTTPS_PROXY": "http://corp:3128"}) is None
    assert effective_proxy(None, {"https_proxy": "http://corp:3128"}) is None
    # Go never reads ALL_PROXY: wasup passes it.
    assert effective_proxy(None, {"ALL_PROXY": "socks5://corp:1080"}) == "socks5://corp:1080"
    assert effective_proxy(None, {"all_proxy": "socks5://corp:1080"}) == "socks5://corp:1080"
    assert effective_proxy(None, {}) is None
    assert env_proxy({"HTTP_PROXY": "http://corp:3128"}) is None  # not for https traffic
    assert env_proxy({"ALL_PROXY": " "}) is None


async def test_proxy_routes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Xq7-unlikely-secret"
    url = f"socks5://ana:{secret}@127.0.0.1:1080"
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        created = (await api.post("/devices", json={"userId": "u1", "alias": "A"})).json()["data"]
        other = (await api.post("/devices", json={"userId": "u2", "alias": "B"})).json()["data"]
        sid, key = created["sessionId"], created["apiKey"]
        path = f"/devices/{sid}/settings/proxy"

        r = await api.get(path)
        assert (r.status_code, r.json()["data"]) == (200, {"url": None})
        r = await api.put(path, json={"url": url})
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"url": "socks5://ana:****@127.0.0.1:1080"}
        r = await api.get(path)
        assert r.json()["data"] == {"url": "socks5://ana:****@127.0.0.1:1080"}
        # Stored as the settings kind "proxy", password and all (whatsmeow needs it).
        assert await server.sup.get_settings(sid, "proxy") == {"url": url}

        r = await api.put(path, json={"url": "http://proxy:99999"})
        assert (r.status_code, r.json()["code"]) == (400, "INVALID_REQUEST")
        assert "url" in r.json()["error"]
        r = await api.put(path, json={"url": "ftp://proxy:21"})
        assert r.status_code == 400 and "scheme" in r.json()["error"]
        r = await api.put(path, json={"proxy": url})
        assert r.status_code == 400 and "proxy" in r.json()["error"]
        assert secret not in r.text
        assert (await api.get(path)).json()["data"]["url"].endswith("@127.0.0.1:1080")

        # The device's own key may read and change its proxy, not another device's.
        async with api_client(server, token=key) as mine:
            assert (await mine.get(path)).status_code == 200
            r = await mine.put(path, json={"url": None})
            assert (r.status_code, r.json()["data"]) == (200, {"url": None})
            r = await mine.get(f"/devices/{other['sessionId']}/settings/proxy")
            assert (r.status_code, r.json()["code"]) == (404, "DEVICE_NOT_FOUND")
        assert await server.sup.get_settings(sid, "proxy") == {"url": None}
        async with api_client(server, token=None) as anonymous:
            assert (await anonymous.get(path)).status_code == 401
        r = await api.get("/devices/nope/settings/proxy")
        assert r.status_code == 404
    assert secret not in caplog.text


async def test_an_unreadable_proxy_setting_fails_the_connect_recoverably() -> None:
    class Broken:
        async def run(self, job: object) -> object:
            raise StorageUnavailable("database or disk is full")

    lookup = stored_proxies(Broken())  # type: ignore[arg-type]
    with pytest.raises(EngineError) as info:
        await lookup(1)
    assert info.value.recoverable
    assert info.value.reason == "connect_failed: the device's proxy setting could not be read"
