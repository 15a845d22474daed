"""Shared fixtures: a whole wasup server, in-process, on 127.0.0.1 and an ephemeral port.

Usage::

    async def test_something(wasup_server, api):        # fixtures: simulator engine
        r = await api.get("/sessions")                  # httpx client on /api/whatsapp
        ...

    async with running_server(tmp_path, qr_first_timeout=5.0) as server:   # custom config
        server.url, server.api_url, server.ws_url, server.api_token, server.sup

``running_server`` takes any :class:`supervisor.config.Config` field as a keyword (defaults:
the simulator engine with 10 ms latency) plus ``settings`` (:class:`api.state.ApiSettings`)
and ``engine``. Real sockets and Trio's real clock: do not combine with ``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from api.server import Server, serve
from api.state import ApiSettings
from supervisor.config import Config
from tests.pg_support import TestPostgres
from tests.store_support import BACKENDS, Backend

TEST_TOKEN = "test-operator-token"


@asynccontextmanager
async def running_server(
    data_dir: Path,
    *,
    api_token: str = TEST_TOKEN,
    settings: ApiSettings | None = None,
    engine: Any = None,
    **config_fields: Any,
) -> AsyncIterator[Server]:
    """Serve wasup for the body of the ``async with``, then shut it down gracefully.

    Without ``settings``, the defaults but a 1 s graceful timeout: Hypercorn's WebSocket ping
    task keeps a closed WebSocket's connection alive until that timeout on shutdown.
    """
    if settings is None:
        settings = ApiSettings(graceful_timeout=1.0)
    config_fields.setdefault("engine", "simulator")
    config_fields.setdefault("simulator_latency", 0.01)
    config = Config(data_dir=data_dir, **config_fields)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, config, api_token, host="127.0.0.1", port=0, settings=settings,
                    engine=engine)
        )
        try:
            yield server
        finally:
            server.shutdown()


def api_client(server: Server, token: str | None = TEST_TOKEN, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client on ``server.api_url`` sending ``token`` as X-API-TOKEN (if not None)."""
    headers = {"X-API-TOKEN": token} if token is not None else {}
    return httpx.AsyncClient(base_url=server.api_url, headers=headers, timeout=10.0, **kwargs)


@pytest.fixture
async def wasup_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "data") as server:
        yield server


@pytest.fixture
async def api(wasup_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(wasup_server) as client:
        yield client


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TestPostgres]:
    """A PostgreSQL server for the whole session (see tests/pg_support.py). Fails, never skips,
    the tests that need it when PostgreSQL cannot start."""
    server = TestPostgres.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The test's database, once on SQLite and once on PostgreSQL (tests/store_support.py)."""
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "data" / "wasup.db"))
    server: TestPostgres = request.getfixturevalue("postgres_server")
    return Backend("postgresql", server.create_database())
