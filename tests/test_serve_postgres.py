"""wasup on PostgreSQL: ``wasup serve --database`` / ``WASUP_DATABASE_URL``, and the supervisor
and the HTTP API running with their data in PostgreSQL (a fresh database on the session's test
server, tests/pg_support.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio

from api.cli import parse_options
from api.cli_serve import serve_config
from supervisor.supervisor import open_supervisor
from tests.conftest import api_client, running_server
from tests.lifecycle_support import connected_device, sim_config, simulated, wait_status
from tests.pg_support import TestPostgres


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_database_flag_and_variable(tmp_path: Path) -> None:
    url = "postgresql://wasup@db.internal/wasup"
    assert parse_options(["serve"], {}).database_url is None  # SQLite by default
    assert parse_options(["serve", "--database", url], {}).database_url == url
    env = {"WASUP_DATABASE_URL": "postgres://other/wasup"}
    assert parse_options(["serve"], env).database_url == "postgres://other/wasup"
    assert parse_options(["serve", "--database", url], env).database_url == url  # flag wins
    options = parse_options(["serve", "--database", url, "--data-dir", str(tmp_path)], {})
    assert serve_config(options).database_url == url
    with pytest.raises(SystemExit):
        parse_options(["serve", "--database", "sqlite:///tmp/x.db"], {})


async def test_a_supervisor_on_postgresql_keeps_its_devices_across_restarts(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    config = sim_config(tmp_path / "data", database_url=url)
    async with simulated(config) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        row, _ = await sup.create_device("u1", "Second")
    for _ in range(2):
        async with open_supervisor(config) as sup:
            await wait_status(sup, device, "connected")
            assert sup.get(device).paired
            assert sup.get(row.id).status == "pending"
    assert count(url, "devices") == 2
    assert count(url, "credentials") == 1  # the simulator's credentials are in PostgreSQL too
    assert not config.database_path.exists()  # and no SQLite database beside them


async def test_the_api_serves_from_postgresql(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with running_server(tmp_path / "data", database_url=url) as server:
        async with api_client(server) as api:
            created = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            assert created.status_code == 201, created.text
            sid, device = created.json()["data"]["sessionId"], created.json()["data"]["id"]
            clash = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            assert clash.status_code == 409, clash.text  # the unique alias, from PostgreSQL
            scan = await api.post(f"/simulator/devices/{sid}/scan", json={})
            assert scan.status_code == 200, scan.text
            await wait_status(server.sup, device, "connected", within=20)
    async with running_server(tmp_path / "data", database_url=url) as server:
        async with api_client(server) as api:
            listed = (await api.get("/devices")).json()["data"]
            assert [d["sessionId"] for d in listed] == [sid]
            await wait_status(server.sup, device, "connected", within=20)
    assert count(url, "state_history") >= 3


async def test_writes_answer_503_while_postgresql_is_down_and_recover(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    async with running_server(tmp_path / "data", database_url=url) as server:
        async with api_client(server) as api:
            assert (await api.post("/devices", json={"userId": "u1", "alias": "A"})).status_code == 201
            postgres_server.stop_server()
            try:
                down = await api.post("/devices", json={"userId": "u1", "alias": "B"})
                assert down.status_code == 503, down.text
                assert int(down.headers["Retry-After"]) > 0
            finally:
                postgres_server.start_server()
            with trio.fail_after(20):
                while True:
                    again = await api.post("/devices", json={"userId": "u1", "alias": "B"})
                    if again.status_code != 503:
                        break
                    await trio.sleep(0.2)
            assert again.status_code == 201, again.text
            names = {d["alias"] for d in (await api.get("/devices")).json()["data"]}
            assert names == {"A", "B"}



