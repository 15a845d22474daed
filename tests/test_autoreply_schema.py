"""Schemathesis (``--checks all``) against the AI settings operations of an existing device,
with the operator token and with the device's own key, so that bodies get past the 404 and
the validation itself is fuzzed against docs/openapi.yaml. Real clock; the CLI runs in a
subprocess (as in test_api_schemathesis.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from tests.conftest import TEST_TOKEN, api_client, running_server
from tests.test_api_schemathesis import SETTINGS

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


async def test_schemathesis_ai_settings(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", settings=SETTINGS) as server:
        async with api_client(server) as api:
            dev = (await api.post("/devices", json={"userId": "u", "alias": "A"})).json()["data"]
        config = tmp_path / "ai.toml"
        config.write_text(f'[parameters]\n"path.deviceId" = "{dev["sessionId"]}"\n')
        # With the device key, a schema-valid baseUrl may still be refused (400) by the SSRF
        # rules, which depend on DNS and configuration: that run skips the acceptance check.
        for token, skip in ((TEST_TOKEN, []), (dev["apiKey"], ["--exclude-checks",
                                                              "positive_data_acceptance"])):
            result = await trio.run_process(
                [
                    SCHEMATHESIS, "--config-file", str(config),
                    "run", server.api_url + "/openapi.json",
                    "--include-tag", "ai",
                    "--phases", "examples,coverage,fuzzing",  # no links to follow statefully
                    "--checks", "all",
                    "--max-examples", "40",
                    "--workers", "1",
                    "--seed", "11",
                    "--no-shrink",
                    "--request-timeout", "10",
                    "-H", f"X-API-TOKEN: {token}",
                    *skip,
                ],
                capture_stdout=True, capture_stderr=True, check=False,
                # the hooks module is found from the current directory
                env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks"},
                cwd=Path(__file__).parent,
            )
            output = (result.stdout + result.stderr).decode(errors="replace")
            assert result.returncode == 0, output[-6000:]
