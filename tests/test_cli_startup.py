"""How ``wasup serve`` starts: the bot label off for whatsmeow, a readable line when libmagic is
missing, and the open-files limit raised. Each test runs the real command in a subprocess and
looks at the serving process through ``/proc``.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from api.startup import bot_tag_is_off

REPO = Path(__file__).resolve().parent.parent
TOKEN = "startup-test-token"
#: Seconds a wasup process may take to start (or to refuse to): a watchdog, not a measurement;
#: a start took up to 30 s on a loaded machine.
STARTUP_DEADLINE = 90

LISTENING = re.compile(rb"wasup listening on (http://127\.0\.0\.1:\d+)")
#: The console script when installed beside the interpreter (as `make` does), else the module.
WASUP = (
    [str(Path(sys.executable).with_name("wasup"))]
    if Path(sys.executable).with_name("wasup").exists()
    else [sys.executable, "-m", "api.cli"]
)

linux_only = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(
        entry.decode().split("=", 1) for entry in raw.split(b"\0") if b"=" in entry
    )


def _loaded_neonize(pid: int) -> bool:
    return "neonize" in Path(f"/proc/{pid}/maps").read_text()


def _open_files_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open files line in /proc/<pid>/limits")


def _base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("WASUP_") and k != "NEONIZE_BOT_TAG"
    }
    return {**env, "WASUP_API_TOKEN": TOKEN, **extra}


LOWER_NOFILE_THEN_EXEC = (
    "import os, resource, sys; "
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@attrs.define(eq=False)
class Served:
    process: trio.Process
    url: str
    output: bytearray

    async def stop(self) -> str:
        """SIGTERM, then the whole output once the process has exited cleanly."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.output += chunk
        await self.process.wait()
        text = self.output.decode()
        assert self.process.returncode == 0, text
        return text


@asynccontextmanager
async def serving(
    data_dir: Path, engine: str, env: dict[str, str], *, nofile_soft: int | None = None
) -> AsyncIterator[Served]:
    """``wasup serve`` on a free port until it listens; killed if the test leaves it running.

    With ``nofile_soft``, wasup is started (exec'd, same process) by a small Python that first
    lowers the soft open-files limit, as a shell's ``ulimit -Sn`` would.
    """
    command = [*WASUP, "serve", "--engine", engine, "--port", "0", "--data-dir", str(data_dir)]
    if nofile_soft is not None:
        command = [sys.executable, "-c", LOWER_NOFILE_THEN_EXEC, str(nofile_soft), *command]
    process = await trio.lowlevel.open_process(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = bytearray()
    try:
        assert process.stdout is not None
        with trio.fail_after(STARTUP_DEADLINE):
            while (match := LISTENING.search(output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"wasup exited before listening:\n{output.decode()}"
                output += chunk
        yield Served(process, match.group(1).decode(), output)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@linux_only
async def test_whatsmeow_serve_loads_neonize_with_the_bot_tag_off(tmp_path: Path) -> None:
    # Started WITHOUT the variable: the serving process (same pid, re-executed) has it in the
    # environment block it started with, which is the one neonize's Go runtime reads.
    async with serving(tmp_path / "data", "whatsmeow", _base_env()) as served:
        pid = served.process.pid
        assert _environ(pid)["NEONIZE_BOT_TAG"] == "off"
        assert _loaded_neonize(pid)  # this very process loaded neonize's Go library
        async with httpx.AsyncClient(base_url=served.url) as client:
            r = await client.get("/api/whatsapp/sessions", headers={"X-API-TOKEN": TOKEN})
            assert r.status_code == 200
        output = await served.stop()
    assert "NEONIZE_BOT_TAG=off: messages are sent without the bot label" in output
    assert "wasup stopped" in output


@linux_only
async def test_an_explicit_bot_tag_is_respected_with_a_warning(tmp_path: Path) -> None:
    env = _base_env(NEONIZE_BOT_TAG="on")
    async with serving(tmp_path / "data", "whatsmeow", env) as served:
        assert _environ(served.process.pid)["NEONIZE_BOT_TAG"] == "on"
        output = await served.stop()
    assert re.search(r"WARNING wasup\.startup: NEONIZE_BOT_TAG=on .* as sent by a bot", output)


@pytest.mark.parametrize(
    ("value", "off"),
    [("off", True), (" OFF ", True), ("none", True), ("false", True), ("0", True),
     ("on", False), ("", False), ("no", False)],
)
def test_bot_tag_values_read_as_off_as_neonize_reads_them(value: str, off: bool) -> None:
    assert bot_tag_is_off(value) is off


SITECUSTOMIZE = '''
import ctypes, ctypes.util
_find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if "magic" in name else _find(name)
_init = ctypes.CDLL.__init__
def _refuse(self, name, *args, **kwargs):
    if name and "magic" in str(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    _init(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = _refuse
'''


async def test_missing_libmagic_is_one_readable_line_and_status_2(tmp_path: Path) -> None:
    # A machine without libmagic, as python-magic sees it: no library to find or load.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = _base_env(PYTHONPATH=str(site), WASUP_LOG_LEVEL="warning")
    command = [*WASUP, "serve", "--engine", "whatsmeow", "--port", "0",
               "--data-dir", str(tmp_path / "data")]
    with trio.fail_after(STARTUP_DEADLINE):
        result = await trio.run_process(command, env=env, cwd=REPO, check=False,
                                        capture_stdout=True, capture_stderr=True)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.splitlines() == [
        "wasup: the whatsmeow engine needs the libmagic system library, which was not found: "
        "install it (Debian/Ubuntu: apt install libmagic1; macOS: brew install libmagic), "
        "or run with --engine simulator"
    ]
    assert result.stdout == b""


@linux_only
async def test_serve_raises_the_open_files_limit_to_the_hard_limit(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    async with serving(tmp_path / "data", "simulator", _base_env(), nofile_soft=256) as served:
        soft_now, hard_now = _open_files_limit(served.process.pid)
        assert soft_now == hard_now != "256"
        # The simulator needs no bot tag: no re-execution, no neonize.
        assert "NEONIZE_BOT_TAG" not in _environ(served.process.pid)
        assert not _loaded_neonize(served.process.pid)
        output = await served.stop()
    assert f"open files: soft limit raised from 256 to {soft_now}" in output
