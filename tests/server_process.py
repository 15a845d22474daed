"""``wasup serve`` as a real process that a test may kill with SIGKILL and start again, fast.

Usage::

    async with Launcher(data_dir, port, env) as launcher:
        await launcher.start()      # a fresh `wasup serve --engine simulator` process
        ...                         # talk to it over HTTP
        launcher.kill()             # SIGKILL, at once (no await between the answer and this)
        await launcher.reaped()     # gone: its port and database are free again

Starting Python and importing wasup takes seconds of CPU; a test that restarts the server
dozens of times would spend most of its time there. So a launcher process imports wasup once
and forks a child for every start: each child is a whole wasup server process (``api.cli.main``
with the usual arguments, its own Trio run, database thread and sockets), and ``kill`` sends
SIGKILL to that child, exactly as ``kill -9`` would. The launcher starts no thread and no Trio
run before it forks.

Resource handling: leaving the ``async with`` kills the current child and ends the launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

import attrs
import trio

# The launcher: import wasup, then fork a server per "start" line; "reap PID" waits for it.
_LAUNCHER = r"""
import os, signal, sys
from api.cli import main
import api.server, api.app, supervisor.supervisor, supervisor.engines.simulator  # noqa: F401

argv = sys.argv[1:]
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "start":
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)  # the launcher's commands are not the server's
            os.dup2(2, 1)  # nor its answers
            status = 1
            try:
                status = main(argv)
            finally:
                os._exit(status)
        print(pid, flush=True)
    elif command == "reap":
        os.waitpid(int(arg), 0)
        print("reaped", flush=True)
"""


@attrs.define(eq=False)
class Launcher:
    """Starts, kills and restarts ``wasup serve --engine simulator`` on one data directory."""

    data_dir: Path
    port: int
    env: dict[str, str]
    #: More ``wasup serve`` arguments.
    args: tuple[str, ...] = ()
    _process: trio.Process | None = None
    _lines: trio.abc.ReceiveStream | None = None
    _buffer: bytes = b""
    pid: int | None = None
    starts: int = 0

    async def __aenter__(self) -> Launcher:
        command = [
            sys.executable, "-c", _LAUNCHER, "serve", "--engine", "simulator",
            "--data-dir", str(self.data_dir), "--port", str(self.port), *self.args,
        ]
        with self._log() as log:
            self._process = await trio.lowlevel.open_process(
                command, env={**os.environ, **self.env}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log,
            )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            if self.pid is not None:
                self.kill()
                await self.reaped()
            process = self._process
            if process is not None:
                assert process.stdin is not None
                await process.stdin.aclose()
                with trio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    async def start(self) -> int:
        """Fork a new server process; returns its pid (it may not listen yet)."""
        assert self.pid is None, "kill the running server first"
        await self._send("start")
        self.pid = int(await self._line())
        self.starts += 1
        return self.pid

    def kill(self) -> None:
        """SIGKILL the running server, at once."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)

    async def reaped(self) -> None:
        """Wait until the killed server is gone."""
        assert self.pid is not None
        await self._send(f"reap {self.pid}")
        assert await self._line() == "reaped"
        self.pid = None

    async def _send(self, line: str) -> None:
        assert self._process is not None and self._process.stdin is not None
        await self._process.stdin.send_all(line.encode() + b"\n")

    async def _line(self) -> str:
        assert self._process is not None and self._process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self._process.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"the launcher ended; see {self.data_dir.parent}/server.log")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _log(self) -> IO[bytes]:
        """The servers' stderr goes here (beside the data directory), for a failing run."""
        return open(self.data_dir.parent / "server.log", "ab")
