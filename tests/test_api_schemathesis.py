"""Schemathesis (``--checks all``; the examples, coverage, fuzzing and stateful phases)
against a live wasup on 127.0.0.1, four ways: with the operator token over the whole API, with
the operator token on one connected device (so that bodies reach validation and sending), with
one device's API key against another device, and unauthenticated.

Each run is the schemathesis CLI in a subprocess (its own threads and event loop stay out of
the Trio run): seeded, a bounded number of examples per operation, one worker, and killed
after ``RUN_DEADLINE`` seconds. Zero failures are required. Real time: these tests do not use
the autojump clock.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from api import send_media
from api.ratelimit import RateLimitPolicy
from api.server import Server
from api.state import ApiSettings
from tests.conftest import TEST_TOKEN, api_client, running_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# Generous limits: schemathesis is one fast client; rate limiting has its own tests.
SETTINGS = ApiSettings(
    rate_limit=RateLimitPolicy(rate=10_000, burst=100_000),
    auth_failure_limit=RateLimitPolicy(rate=10_000, burst=100_000, name="auth"),
    qr_wait=0.2,
)
MAX_EXAMPLES = "5"
SEED = "7"
#: Seconds one schemathesis run may take (a few tens are usual; the device run's thousand send
#: bodies take a minute or two on a loaded machine) before the test fails.
RUN_DEADLINE = 240
#: A send's file must be what its type says and its replyTo must name a stored message, a
#: group picture must be a JPEG: no schema can say either, so a schema-valid send or picture
#: may be refused (400), which the acceptance check takes for those routes. Where no device exists, every one of its thousand body
#: mutations answers 404: the coverage phase is off for it there (the device run covers it).
SEND_CONFIG = """
[[operations]]
include-operation-id = "setGroupPicture"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "404", "409", "413", "429"]

[[operations]]
include-operation-id = "sendMessage"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "413", "429"]
"""
SEND_NO_COVERAGE = SEND_CONFIG + "phases.coverage.enabled = false\n"
#: A profile picture must be an image, which no schema can say either (the coverage phase's
#: bodies do not pass through the hooks that make a valid file an image).
PICTURE_CONFIG = """
[[operations]]
include-operation-id = "putProfilePicture"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "413", "429"]
"""


@pytest.fixture(autouse=True)
def no_media_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send's ``media.url`` is not fetched: the generated URLs name hosts anywhere."""

    async def refuse(url: str, **_: Any) -> tuple[bytes, str | None]:
        raise send_media.MediaUrlRefused("not fetched in this test")

    monkeypatch.setattr(send_media, "fetch_media", refuse)


async def run_schemathesis(
    server: Server,
    tmp: Path,
    name: str,
    *,
    token: str | None,
    config: str = "",
    phases: str = "examples,coverage,fuzzing,stateful",
    include: str | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[int, str]:
    args = [SCHEMATHESIS]
    if config:
        path = tmp / f"{name}.toml"
        path.write_text(config)
        args += ["--config-file", str(path)]
    args += [
        "run", server.api_url + "/openapi.json",
        "--checks", "all",
        "--max-examples", MAX_EXAMPLES,
        "--workers", "1",
        "--seed", SEED,
        "--no-shrink",
        "--phases", phases,
        "--request-timeout", "10",
        # Webhook and AI settings make the server resolve and reach the URLs they are given
        # (the dispatcher delivers to them, auto-reply calls the provider): not something a
        # test may do outside 127.0.0.1. test_webhook_api.py and test_autoreply_schema.py
        # fuzz those operations with the network kept out.
        "--exclude-path-regex", "webhook|settings/ai",
    ]
    if include is not None:
        args += ["--include-path-regex", include]
    args += extra
    if token is not None:
        args += ["-H", f"X-API-TOKEN: {token}"]
    with trio.fail_after(RUN_DEADLINE):
        result = await trio.run_process(
            args, capture_stdout=True, capture_stderr=True, check=False,
            # whole floats stay out of count fields (tests/schemathesis_hooks.py)
            env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks"},
            cwd=Path(__file__).parent,
        )
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


async def pinned_connected_device(server: Server, user: str) -> str:
    """A new device of ``user``, connected through the simulator, as the schemathesis
    configuration that pins every deviceId to it."""
    async with api_client(server) as api:
        r = await api.post("/devices", json={"userId": user, "alias": user.title()})
        device = r.json()["data"]
        r = await api.post(f"/simulator/devices/{device['id']}/scan", json={})
        assert r.status_code == 200, r.text
    return f'[parameters]\n"path.deviceId" = "{device["sessionId"]}"\n'


async def test_schemathesis_operator_token(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", settings=SETTINGS) as server:
        code, output = await run_schemathesis(server, tmp_path, "operator", token=TEST_TOKEN,
                                              config=SEND_NO_COVERAGE)
    assert code == 0, output[-6000:]


async def test_schemathesis_operator_token_on_a_connected_device(tmp_path: Path) -> None:
    """Operations on one existing, connected device: bodies reach validation (the spec and the
    API must agree on every value) and messages are sent."""
    async with running_server(tmp_path / "data", settings=SETTINGS) as server:
        pinned = await pinned_connected_device(server, "carol") + SEND_CONFIG
        code, output = await run_schemathesis(
            server, tmp_path, "device", token=TEST_TOKEN, config=pinned,
            include=(
                r"^/devices/\{deviceId\}(/qr|/messages|/pair-code|/chats"
                r"|/chats/\{chatId\}/messages|/messages/\{messageId\})?$"
            ),
            extra=("--exclude-method", "DELETE"),  # the device must stay for every case
        )
    assert code == 0, output[-6000:]


async def test_schemathesis_presence_profile_and_calls_on_a_connected_device(
    tmp_path: Path,
) -> None:
    """The presence, profile and call routes (and their simulator controls) on a connected
    device: every schema-valid body reaches WhatsApp (the simulated one)."""
    async with running_server(tmp_path / "data", settings=SETTINGS) as server:
        pinned = await pinned_connected_device(server, "dora") + PICTURE_CONFIG
        code, output = await run_schemathesis(
            server, tmp_path, "account", token=TEST_TOKEN, config=pinned,
            include=(
                r"^(/simulator)?/devices/\{deviceId\}/(presence|chats/\{chatId\}/presence"
                r"|contacts/\{contact\}/presence/subscribe|profile|profile/picture"
                r"|calls/\{callId\}/reject|settings/calls|calls)$"
            ),
            extra=("--exclude-method", "DELETE"),
        )
    assert code == 0, output[-6000:]


async def test_schemathesis_device_key_on_other_device_and_unauthenticated(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", settings=SETTINGS) as server:
        async with api_client(server) as api:
            a = (await api.post("/devices", json={"userId": "alice", "alias": "A"})).json()["data"]
            b = (await api.post("/devices", json={"userId": "bob", "alias": "B"})).json()["data"]
            pinned = (
                "[parameters]\n"
                f'"path.deviceId" = "{b["sessionId"]}"\n'
                f'"path.sessionId" = "{b["sessionId"]}"\n'
                '"path.userId" = "bob"\n'
            )
            results: dict[str, tuple[int, str]] = {}

            # Every answer here is 404 / 403 / 401 whatever the body, so the coverage phase's
            # thousands of body mutations would test nothing more: examples and fuzzing only.
            async def run(name: str, token: str | None, config: str) -> None:
                results[name] = await run_schemathesis(
                    server, tmp_path, name, token=token, config=config,
                    phases="examples,fuzzing,stateful",
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "cross", a["apiKey"], pinned)
                nursery.start_soon(run, "anonymous", None, "")

            for code, output in results.values():
                assert code == 0, output[-6000:]
            # Bob's device was never touched through Alice's key.
            after = (await api.get(f"/devices/{b['sessionId']}")).json()["data"]
            assert after["alias"] == "B"
            assert after["id"] == b["id"]
