"""A real wasup (simulator engine) in a thread and Debian's headless Chromium, for the
dashboard's browser tests.

Usage::

    with ServerThread(data_dir, qr_first_timeout=3.0) as server:   # wasup on 127.0.0.1:<port>
        server.url, server.token
    with open_browser(profile_dir) as browser:                    # a Playwright BrowserContext
        page = browser.new_page()

The server runs :func:`api.server.serve` in its own Trio run on a thread, so that a test
can pass any :class:`supervisor.config.Config` knob (short QR timeouts make the QR code
rotate within seconds) and drive Playwright's synchronous API from the test thread.

Chromium is the system's (``/usr/bin/chromium``, Debian's package; ``.ci/run`` installs it):
Playwright's Python package drives it through ``executable_path`` and downloads no browser.
:func:`require_chromium` skips the tests where it is not installed, except in CI (``CI`` set)
where its absence fails them.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import trio

from api.server import Server, serve
from api.state import ApiSettings
from supervisor.config import Config

CHROMIUM = os.environ.get("WASUP_TEST_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-operator-token"
#: Seconds a Playwright wait may take before a test fails.
WAIT_MS = 15_000
#: Where screenshots go: WASUP_TEST_ARTIFACTS, else ``artifacts/`` at the top of the checkout
#: (ignored by git).
ARTIFACTS = Path(os.environ.get("WASUP_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parent.parent / "artifacts" / "dashboard")


def require_chromium() -> None:
    """Skip (locally) or fail (in CI) when Chromium or Playwright is missing."""
    problem = None
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing: apt-get install -y chromium"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is missing: pip install -e '.[test]'"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


class ServerThread:
    """wasup serving on 127.0.0.1 (an ephemeral port) from a Trio run on its own thread."""

    def __init__(self, data_dir: Path, **config_fields: Any) -> None:
        config_fields.setdefault("engine", "simulator")
        config_fields.setdefault("simulator_latency", 0.01)
        self.config = Config(data_dir=data_dir, **config_fields)
        self.settings = ApiSettings(graceful_timeout=1.0, qr_wait=1.0)
        self.token = TOKEN
        self._started: queue.Queue[tuple[Server, trio.lowlevel.TrioToken] | BaseException] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="wasup-server", daemon=True)
        self._server: Server | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None

    def _run(self) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(partial(
                    serve, self.config, self.token, host="127.0.0.1", port=0,
                    settings=self.settings,
                ))
                self._started.put((server, trio.lowlevel.current_trio_token()))

        try:
            trio.run(main)
        except BaseException as exc:
            self._started.put(exc)
            raise

    def __enter__(self) -> ServerThread:
        self._thread.start()
        started = self._started.get(timeout=60)
        if isinstance(started, BaseException):
            raise RuntimeError("wasup did not start") from started
        self._server, self._trio_token = started
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None and self._trio_token is not None:
            trio.from_thread.run_sync(self._server.shutdown, trio_token=self._trio_token)
        self._thread.join(timeout=30)

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url


@contextmanager
def open_browser(profile_dir: Path) -> Iterator[Any]:
    """Headless Chromium with a fresh profile in ``profile_dir``; yields its BrowserContext."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ],
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as ``ARTIFACTS/name.png``; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
