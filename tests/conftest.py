"""Shared fixtures: a whole wasup server, in-process, on 127.0.0.1 and an ephemeral port.

Usage::

    async def test_something(wasup_server, api):        # fixtures: simulator engine
        r = await api.get("/sessions")                  # httpx client on /api/whatsapp
        ...

    async with running_server(tmp_path, qr_first_timeout=5.0) as server:   # custom config
        server.url, server.api_url, server.ws_url, server.api_token, server.sup

``running_server`` takes any :class:`supervisor.config.Config` field as a keyword (defaults:
the simulator engine with 10 ms latency, and the current test's database: see below) plus
``settings`` (:class:`api.state.ApiSettings`) and ``engine``. Real sockets and Trio's real
clock: do not combine with ``autojump_clock``.

Backends: a test marked ``pytest.mark.both_backends`` (or in a module so marked) runs once on
SQLite and once on PostgreSQL; ``running_server`` and ``tests.lifecycle_support.sim_config``
then use a database of the session's test PostgreSQL per data directory. A test of such a
module that is about SQLite itself is marked ``pytest.mark.sqlite_only``
(``tests/store_support.py``).
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
from tests import store_support
from tests.pg_support import TestPostgres
from tests.store_support import BACKENDS, Backend, TestBackend

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
    if "database_url" not in config_fields:
        config_fields["database_url"] = store_support.database_url_for(data_dir)
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run the test on SQLite and on PostgreSQL (tests/store_support.py)"
    )
    config.addinivalue_line(
        "markers", "sqlite_only(reason): a test about SQLite itself, in a both_backends module"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``database_backend`` over both backends for the tests marked so that open a
    data directory (take ``tmp_path`` or the ``wasup_server`` fixture): a test of such a module
    that opens no database runs once."""
    if metafunc.definition.get_closest_marker("both_backends") is None:
        return
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        return
    if not {"tmp_path", "wasup_server"} & set(metafunc.fixturenames):
        return
    metafunc.parametrize("database_backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def database_backend(request: pytest.FixtureRequest) -> Iterator[TestBackend]:
    """The backend of the supervisor and the server a test opens: SQLite unless the test is
    marked ``both_backends`` and this is its PostgreSQL run."""
    name = getattr(request, "param", "sqlite")
    server = request.getfixturevalue("postgres_server") if name == "postgresql" else None
    chosen = TestBackend(name, server)
    store_support.use(chosen)
    try:
        yield chosen
    finally:
        store_support.use(TestBackend())
