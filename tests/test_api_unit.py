"""Unit tests of the HTTP layer's pieces that need no server: validation, rate limiting,
credentials, error mapping, the CLI's options and token, and routes against the OpenAPI spec."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from api import validation
from api.app import create_app, routes
from api.auth import OPERATOR, authenticate
from api.cli import load_or_create_token, parse_options
from api.errors import response_for
from api.openapi import load_spec, spec_routes
from api.ratelimit import RateLimiter, RateLimitPolicy
from api.sim_messages import sim_incoming
from api.state import ApiSettings, AppState
from supervisor.config import Config
from supervisor.errors import (
    Busy,
    DeviceConflict,
    DeviceNotFound,
    EngineError,
    EngineRefused,
    InvalidRequest,
    Restarting,
    Unresponsive,
)

# -- validation -------------------------------------------------------------------------------

BAD_CREATE: list[tuple[Any, str]] = [
    ({"alias": "a"}, "userId"),
    ({"userId": "u"}, "alias"),
    ({"userId": 5, "alias": "a"}, "userId"),
    ({"userId": "u", "alias": 5}, "alias"),
    ({"userId": "u", "alias": ""}, "alias"),
    ({"userId": "u", "alias": "x" * 101}, "alias"),
    ({"userId": "u", "alias": "!!!"}, "alias"),
    ({"userId": "u", "alias": "a", "phoneNumber": "12345"}, "phoneNumber"),
    ({"userId": "u", "alias": "a", "phoneNumber": "+0123456789"}, "phoneNumber"),
    ({"userId": "u", "alias": "a", "phoneNumber": "+1234567890\n"}, "phoneNumber"),
    ({"userId": "u", "alias": "a", "businessType": ""}, "businessType"),
    ({"userId": "u", "alias": "a", "description": "d" * 501}, "description"),
    ({"userId": "u", "alias": "a", "extra": 1}, "extra"),
    ({"userId": "bad user", "alias": "a"}, "userId"),
    ({"userId": "-u", "alias": "a"}, "userId"),
    ({"userId": "u" * 65, "alias": "a"}, "userId"),
    ([], "body"),
    ("text", "body"),
    (None, "body"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATE)
def test_create_device_rejects_with_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validation.create_device(body)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_create_device_accepts_seed_body() -> None:
    req = validation.create_device(
        {
            "userId": "user123",
            "alias": "Business Account 1",
            "businessType": "retail",
            "phoneNumber": "+1234567890",
            "description": "Main business account for customer support",
        }
    )
    assert req.user_id == "user123"
    assert req.phone_number == "+1234567890"
    assert req.business_type == "retail"


def test_update_device_only_sent_fields() -> None:
    req = validation.update_device({"description": None, "alias": "New"})
    assert req.changes() == {"alias": "New", "description": None}
    for body, field in [({}, "body"), ({"alias": None}, "alias"), ({"nope": 1}, "nope")]:
        with pytest.raises(InvalidRequest) as info:
            validation.update_device(body)
        assert info.value.field == field


def test_parse_json() -> None:
    assert validation.parse_json(b'{"a": 1}') == {"a": 1}
    for raw in [b"", b"   ", b"{", b"\xff\xfe", b"[" * 100_000]:
        with pytest.raises(InvalidRequest) as info:
            validation.parse_json(raw)
        assert info.value.field == "body"


BAD_TEXT: list[tuple[bytes, str]] = [
    (b'{"userId": "u", "alias": "a\\ud800"}', "alias"),  # a lone surrogate
    (b'{"userId": "u", "alias": "a\xed\xa0\x80"}', "alias"),  # the same, UTF-8 encoded
    (b'{"userId": "u", "alias": "a", "description": "\\udfff"}', "description"),
    (b'{"userId": "u", "alias": "\\ud800", "description": "\\udfff"}', "alias"),  # the first
    (b'{"userId": "u", "alias": "a\\u0000b"}', "alias"),  # NUL
    (b'{"userId": "u", "alias": "a\\u001bb"}', "alias"),  # ESC
    (b'{"userId": "u", "alias": "a\\u0085b"}', "alias"),  # a C1 control
    (b'{"userId": "u", "alias": "a\\nb"}', "alias"),  # one line only
    (b'{"userId": "u", "alias": "a\\tb"}', "alias"),
    (b'{"userId": "u", "alias": "a", "businessType": "r\\r"}', "businessType"),
    (b'{"userId": "u", "alias": "a", "description": "one\\ntwo"}', "description"),
    (b'{"userId": "u", "alias": "a", "x\\ud800": 1}', "body"),  # a bad key
    (b'{"userId": "u", "alias": "a", "alias": "b"}', "alias"),  # a key given twice
    (b'{"userId": "u", "alias": "a", "events": [{"k": 1, "k": 2}]}', "k"),
]


@pytest.mark.parametrize(("raw", "field"), BAD_TEXT)
def test_text_rules_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validation.create_device(validation.parse_json(raw))
    assert info.value.field == field
    assert "\ud800" not in str(info.value)


def test_free_text_may_have_line_breaks_but_no_controls() -> None:
    ok = sim_incoming(validation.parse_json(b'{"from": "+15551234567", "text": "a\\nb\\tc"}'))
    assert ok.text == "a\nb\tc"
    for raw in [b'{"from": "+15551234567", "text": "a\\u0000"}',
                b'{"from": "+15551234567", "text": "\\ud83d"}']:
        with pytest.raises(InvalidRequest) as info:
            validation.parse_json(raw)
        assert info.value.field == "text"
    # a valid pair of surrogates is one character, not a lone one
    assert validation.parse_json(b'{"text": "\\ud83d\\ude00"}') == {"text": "\U0001f600"}


def test_check_params() -> None:
    validation.check_params({"device_id": "user_u_device_a"}, [("page", "2")])
    for path, query, field in [
        ({"device_id": "a\x00"}, [], "deviceId"),
        ({"session_id": "a\nb"}, [], "sessionId"),
        ({"device_id": "x" * 513}, [], "deviceId"),
        ({}, [("status", "pending\r")], "status"),
        ({}, [("a\x01", "1")], "query"),
    ]:
        with pytest.raises(InvalidRequest) as info:
            validation.check_params(path, query)
        assert info.value.field == field


def test_list_query() -> None:
    q = validation.list_query({})
    assert (q.status, q.page, q.limit, q.offset) == (None, 1, 50, 0)
    q = validation.list_query({"status": "connected", "page": "3", "limit": "10"})
    assert (q.status, q.page, q.limit, q.offset) == ("connected", 3, 10, 20)
    for args, field in [
        ({"status": "online"}, "status"),
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"limit": "101"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1.5"}, "limit"),
    ]:
        with pytest.raises(InvalidRequest) as info:
            validation.list_query(args)
        assert info.value.field == field


def test_simulator_bodies() -> None:
    assert validation.sim_scan({}).phone_number is None
    assert validation.sim_scan({"code": "ABCD-EFGH"}).code == "ABCD-EFGH"
    assert sim_incoming({"from": "+15551234567", "text": "hi"}).sender == "+15551234567"
    with pytest.raises(InvalidRequest):
        sim_incoming({"from": "+15551234567"})
    with pytest.raises(InvalidRequest):
        validation.structure({"x": 1}, validation.Empty)


# -- rate limiting ----------------------------------------------------------------------------


def test_token_bucket_refills_and_reports() -> None:
    limiter = RateLimiter(RateLimitPolicy(rate=2.0, burst=3))
    decisions = [limiter.hit("k", now=0.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after == pytest.approx(0.5)
    headers = limiter.headers(decisions[-1])
    assert headers["RateLimit-Policy"] == '"default";q=3;w=2'
    assert headers["RateLimit"] == '"default";r=0;t=2'
    assert headers["Retry-After"] == "1"
    assert limiter.hit("k", now=0.5).allowed  # one token back after 1 / rate
    assert not limiter.hit("k", now=0.5).allowed
    assert limiter.hit("other", now=0.5).allowed  # buckets are per credential
    assert "Retry-After" not in limiter.headers(limiter.hit("k", now=10.0))


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(RateLimitPolicy(rate=1.0, burst=1), max_keys=100)
    for i in range(1000):
        limiter.hit(f"k{i}", now=float(i) / 1000)
    assert len(limiter) <= 100


async def test_rate_limiter_uses_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimitPolicy(rate=1.0, burst=1))
    assert limiter.hit("k").allowed
    assert not limiter.hit("k").allowed
    await trio.sleep(1.0)
    assert limiter.hit("k").allowed


# -- credentials ------------------------------------------------------------------------------


class _FakeSup:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.engine = object()  # not the simulator
        self.config = Config()  # the media limits size the send route's body
        self.cluster = None  # a single node

    async def device_for_key(self, key: str) -> Any:
        return self.keys.get(key)

    def get(self, ref: str) -> Any:
        raise DeviceNotFound(ref)

    async def find(self, ref: str) -> Any:
        return self.get(ref)  # a single node: what the directory has


class _Row:
    id = 7


async def test_authenticate() -> None:
    sup = _FakeSup()
    sup.keys["dev_good"] = _Row()
    state = AppState.build(sup, "operator-secret", ApiSettings())
    assert await authenticate(state, "operator-secret") == OPERATOR
    device = await authenticate(state, "dev_good")
    assert device is not None and device.kind == "device" and device.device_id == 7
    assert device.credential_id == "device:7"
    assert device.may_see(7) and not device.may_see(8)
    for bad in [None, "", "operator-secre", "operator-secret ", "dev_bad", "x" * 10_000]:
        assert await authenticate(state, bad) is None
    with pytest.raises(ValueError):
        AppState.build(sup, "", ApiSettings())


# -- error mapping ----------------------------------------------------------------------------


async def test_error_mapping() -> None:
    app = create_app(_FakeSup(), "t", ApiSettings(simulator_routes=False))
    async with app.app_context():
        cases: list[tuple[BaseException, int, str]] = [
            (InvalidRequest("alias: bad", field="alias"), 400, "INVALID_REQUEST"),
            (DeviceNotFound("x"), 404, "DEVICE_NOT_FOUND"),
            (DeviceConflict("busy"), 409, "DEVICE_CONFLICT"),
            (Busy(retry_after=2.5), 503, "SERVICE_UNAVAILABLE"),
            (Restarting(), 503, "SERVICE_UNAVAILABLE"),
            (Unresponsive("slow"), 504, "GATEWAY_TIMEOUT"),
            (EngineRefused("unreachable"), 502, "ENGINE_ERROR"),
            (EngineError("stopped"), 502, "ENGINE_ERROR"),
            (RuntimeError("secret detail"), 500, "INTERNAL_ERROR"),
        ]
        for exc, status, code in cases:
            response = response_for(exc)
            body = await response.get_json()
            assert response.status_code == status
            assert body["success"] is False and body["code"] == code
            assert "secret detail" not in body["error"]
        assert response_for(Busy(retry_after=2.5)).headers["Retry-After"] == "3"
        assert response_for(Restarting()).headers["Retry-After"] == "1"


# -- routes and spec --------------------------------------------------------------------------


def test_every_route_is_in_the_spec_and_vice_versa() -> None:
    app = create_app(_FakeSup(), "t", ApiSettings(simulator_routes=True))
    served = routes(app)
    described = spec_routes(load_spec())
    assert served - described == set(), "routes missing from docs/openapi.yaml"
    assert described - served == set(), "spec paths the app does not serve"


def test_simulator_routes_only_with_the_simulator() -> None:
    app = create_app(_FakeSup(), "t", ApiSettings())
    assert not any("/simulator/" in path for _, path in routes(app))


def test_spec_is_openapi_31_with_security() -> None:
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    assert spec["components"]["securitySchemes"]["apiToken"]["name"] == "X-API-TOKEN"


# -- CLI --------------------------------------------------------------------------------------


def test_options_from_env_and_flags(tmp_path: Path) -> None:
    env = {
        "WASUP_HOST": "0.0.0.0",
        "WASUP_PORT": "4000",
        "WASUP_DATA_DIR": str(tmp_path),
        "WASUP_ENGINE": "simulator",
        "WASUP_MAX_CONCURRENT_LOGINS": "7",
        "WASUP_WEBHOOK_ALLOW_NETWORKS": "10.0.0.0/8, 192.168.0.0/16",
    }
    opts = parse_options(["serve"], env)
    assert (opts.host, opts.port, opts.data_dir, opts.engine) == (
        "0.0.0.0", 4000, tmp_path, "simulator"
    )
    assert opts.max_concurrent_logins == 7
    assert opts.webhook_allow_networks == ("10.0.0.0/8", "192.168.0.0/16")
    opts = parse_options(["serve", "--port", "5000", "--engine", "whatsmeow"], env)
    assert (opts.port, opts.engine) == (5000, "whatsmeow")
    defaults = parse_options(["serve"], {})
    assert (defaults.host, defaults.port, defaults.data_dir, defaults.engine) == (
        "127.0.0.1", 3001, Path("./data"), "whatsmeow"
    )
    assert defaults.max_concurrent_logins == 5
    with pytest.raises(SystemExit):
        parse_options(["serve", "--engine", "nope"], {})
    with pytest.raises(SystemExit):
        parse_options(["serve"], {"WASUP_PORT": "many"})


def test_token_generated_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token, generated = load_or_create_token(data, {})
    assert generated and len(token) > 40
    mode = stat.S_IMODE(os.stat(data / "api_token").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700  # the token's directory: owner only
    again, generated_again = load_or_create_token(data, {})
    assert (again, generated_again) == (token, False)
    assert load_or_create_token(data, {"WASUP_API_TOKEN": "from-env"}) == ("from-env", False)


# -- backpressure and deadlines through the app -----------------------------------------------


class _BusySup(_FakeSup):
    """A supervisor whose one device is busy (login) or slow (logout)."""

    def get(self, ref: str) -> Any:
        if ref not in {"1", "user_u_device_a"}:
            raise DeviceNotFound(ref)
        return _Row()

    async def login(self, ref: str) -> Any:
        raise Busy(retry_after=2.0)

    async def logout(self, ref: str) -> Any:
        raise Unresponsive("device 7 did not answer within 10 s")

    async def cancel(self, ref: str) -> Any:
        raise RuntimeError("boom: internal detail")


async def test_busy_slow_and_broken_devices() -> None:
    app = create_app(_BusySup(), "t", ApiSettings(simulator_routes=False))
    client = app.test_client()
    headers = {"X-API-TOKEN": "t"}
    r = await client.post("/api/whatsapp/devices/1/login", headers=headers)
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "2"
    assert (await r.get_json())["code"] == "SERVICE_UNAVAILABLE"
    r = await client.post("/api/whatsapp/devices/1/logout", headers=headers)
    assert r.status_code == 504
    assert (await r.get_json())["code"] == "GATEWAY_TIMEOUT"
    r = await client.post("/api/whatsapp/sessions/1/cancel", headers=headers)
    assert r.status_code == 500
    body = await r.get_json()
    assert body == {"success": False, "error": "internal error", "code": "INTERNAL_ERROR"}
    r = await client.post("/api/whatsapp/devices/2/login", headers=headers)
    assert r.status_code == 404
