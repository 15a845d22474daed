"""``wasup serve``'s WebSocket options: flags and ``WASUP_WS_…`` variables reach the stream.

Servers listen on 127.0.0.1 port 0 and are started here; every I/O test has an absolute
Trio-clock deadline.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from api.cli import api_settings, parse_options
from api.server import hypercorn_config
from api.state import WsSettings
from api.ws import endpoint as api_ws
from tests.conftest import TEST_TOKEN, running_server

WS_ENV = {
    "WASUP_WS_PING_INTERVAL": "40",
    "WASUP_WS_SEND_TIMEOUT": "12.5",
    "WASUP_WS_MAX_PER_CREDENTIAL": "3",
    "WASUP_WS_QUEUE_SIZE": "32",
}


def test_defaults() -> None:
    opts = parse_options(["serve"], {})
    assert (opts.ws_ping_interval, opts.ws_send_timeout) == (25.0, 30.0)
    assert opts.ws_max_per_credential == 64
    assert opts.ws_queue_size is None  # the event bus's own (Config.event_queue_size)
    assert api_settings(opts).ws == WsSettings() == WsSettings(
        queue_size=None, send_timeout=30.0, ping_interval=25.0, max_per_credential=64
    )


def test_env_vars_and_flags_with_flags_winning() -> None:
    opts = parse_options(["serve"], WS_ENV)
    assert (opts.ws_ping_interval, opts.ws_send_timeout) == (40.0, 12.5)
    assert (opts.ws_max_per_credential, opts.ws_queue_size) == (3, 32)
    opts = parse_options(
        [
            "serve",
            "--ws-ping-interval", "0",
            "--ws-send-timeout", "5",
            "--ws-max-per-credential", "1",
            "--ws-queue-size", "8",
        ],
        WS_ENV,
    )
    assert (opts.ws_ping_interval, opts.ws_send_timeout) == (0.0, 5.0)
    assert (opts.ws_max_per_credential, opts.ws_queue_size) == (1, 8)
    assert api_settings(opts).ws == WsSettings(
        queue_size=8, send_timeout=5.0, ping_interval=0.0, max_per_credential=1
    )


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--ws-ping-interval", "-1"], {}),
        (["--ws-ping-interval", "nan"], {}),
        (["--ws-send-timeout", "inf"], {}),
        (["--ws-send-timeout", "-2"], {}),
        (["--ws-max-per-credential", "0"], {}),
        (["--ws-queue-size", "0"], {}),
        ([], {"WASUP_WS_QUEUE_SIZE": "lots"}),
        ([], {"WASUP_WS_MAX_PER_CREDENTIAL": "1.5"}),
    ],
)
def test_invalid_values_are_refused(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(["serve", *argv], env)


def test_ping_interval_reaches_hypercorn(monkeypatch: pytest.MonkeyPatch) -> None:
    config = hypercorn_config("127.0.0.1", 0, ws=WsSettings(ping_interval=40.0))
    assert config.websocket_ping_interval == 40.0
    assert config.read_timeout == 90  # two intervals and ten seconds
    assert config.websocket_max_message_size == api_ws.MAX_CLIENT_MESSAGE
    no_pings = hypercorn_config("127.0.0.1", 0, ws=WsSettings(ping_interval=0.0))
    assert no_pings.websocket_ping_interval is None
    # The environment is read once, by the command line: not here.
    monkeypatch.setenv("WASUP_WS_PING_INTERVAL", "7")
    assert hypercorn_config("127.0.0.1", 0).websocket_ping_interval == 25.0


async def test_flags_reach_the_running_stream(tmp_path: Path) -> None:
    opts = parse_options(
        ["serve", "--ws-max-per-credential", "1", "--ws-send-timeout", "9"], WS_ENV
    )
    # A short grace period, as every in-process server of the suite (see tests/conftest.py).
    settings = attrs.evolve(api_settings(opts), graceful_timeout=1.0)
    # The flags win, the variables fill in the rest.
    assert settings.ws == WsSettings(
        queue_size=32, send_timeout=9.0, ping_interval=40.0, max_per_credential=1
    )
    with trio.fail_after(30):
        async with running_server(tmp_path / "data", settings=settings) as server:
            url = server.url.replace("http", "ws", 1) + f"/?token={TEST_TOKEN}"
            async with open_websocket_url(url) as conn:
                await conn.ping()
                assert api_ws.open_streams(server.app) == 1
                with pytest.raises(ConnectionRejected) as exc:
                    async with open_websocket_url(url):
                        pass  # pragma: no cover
                assert exc.value.status_code == 429
                assert exc.value.body is not None
                assert "at most 1" in json.loads(exc.value.body)["error"]
