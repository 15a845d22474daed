"""The whatsmeow engine's credentials in PostgreSQL (``--database postgresql://...``), offline,
against a real PostgreSQL and neonize's real Go library.

Go creates and upgrades whatsmeow's store itself, in the device's own schema; the engine tells
whether it holds an account, wipes it on logout, delete and a new pairing, and never touches
another device's schema. A pairing attempt offline reaches Go (the preflight is off), which
opens the store, creates its tables and then fails to reach WhatsApp.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict

from storage.errors import StorageUnavailable
from storage.pg.whatsmeow import POOL_SIZE, WhatsmeowSchemas, schema_name
from supervisor.config import Config
from supervisor.engine import QrCode
from supervisor.engines.whatsmeow import WhatsmeowEngine
from supervisor.errors import EngineError
from supervisor.supervisor import make_engine

from .pg_support import TestPostgres
from .test_whatsmeow_engine import Sink

OFFLINE = "unreachable: lookup web.whatsapp.com: no such host"
#: whatsmeow's tables (store/sqlstore/upgrades/00-latest-schema.sql), its version table too.
TABLES = {
    "whatsmeow_version", "whatsmeow_device", "whatsmeow_identity_keys", "whatsmeow_pre_keys",
    "whatsmeow_sessions", "whatsmeow_sender_keys", "whatsmeow_app_state_sync_keys",
    "whatsmeow_app_state_version", "whatsmeow_app_state_mutation_macs", "whatsmeow_contacts",
    "whatsmeow_chat_settings", "whatsmeow_message_secrets", "whatsmeow_privacy_tokens",
    "whatsmeow_nct_salt", "whatsmeow_lid_map", "whatsmeow_event_buffer", "whatsmeow_retry_buffer",
}


@pytest.fixture
def url(postgres_server: TestPostgres) -> str:
    return postgres_server.create_database()


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    """The test runs in an empty working directory (neonize first tries the store's name as a
    SQLite file: nothing may appear there)."""
    here = Path.cwd()
    work = tmp_path / "cwd"
    work.mkdir()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(here)


def query(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def tables(url: str, schema: str) -> set[str]:
    rows = query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                 schema)
    return {str(name) for (name,) in rows}


def go_clients(url: str) -> int:
    """Server connections whatsmeow's Go side holds (named after wasup's Go clients)."""
    ((n,),) = query(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE"
                         " 'wasup-%%' AND datname = current_database()")
    return int(str(n))


def fake_credentials(url: str, device_id: int, user: str) -> None:
    """A whatsmeow_device row with well-formed (random) keys, in the device's schema: what a
    pairing leaves behind. whatsmeow's own table (made by Go) checks the shapes."""
    r = os.urandom
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema_name(device_id)}.whatsmeow_device (jid, registration_id,"
            " noise_key, identity_key, signed_pre_key, signed_pre_key_id, signed_pre_key_sig,"
            " adv_key, adv_details, adv_account_sig, adv_account_sig_key, adv_device_sig,"
            " platform, push_name) VALUES (%s, 1234, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s,"
            " 'android', 'Ana')",
            (f"{user}:7@s.whatsapp.net", r(32), r(32), r(32), r(64), r(32), r(16), r(64), r(32),
             r(64)),
        )
        conn.execute(  # a contact's session and the LID map: what must go with the device
            f"INSERT INTO {schema_name(device_id)}.whatsmeow_sessions VALUES (%s, %s, %s)",
            (f"{user}:7@s.whatsapp.net", "15550001111.0", b"session"),
        )
        conn.execute(f"INSERT INTO {schema_name(device_id)}.whatsmeow_lid_map VALUES (%s, %s)",
                     (f"1{device_id}@lid", f"{user}@s.whatsapp.net"))


async def paired_by_go(engine: WhatsmeowEngine, device_id: int) -> None:
    """Let whatsmeow create the device's store (a pairing attempt through Go, failing
    offline)."""
    session = engine.session(device_id, f"s{device_id}", Sink())
    with pytest.raises(EngineError) as info:
        await session.start_pairing()
    assert info.value.reason == OFFLINE
    await session.stop()


async def test_go_creates_each_devices_store_in_a_schema_of_its_own(
    url: str, tmp_path: Path, in_tmp: Path
) -> None:
    engine = WhatsmeowEngine(tmp_path / "data", preflight_host=None, database_url=url)
    for device_id in (1, 2):  # the second store is made once the first exists (dbutil's quirk)
        await paired_by_go(engine, device_id)
    for device_id in (1, 2):
        assert tables(url, schema_name(device_id)) == TABLES
        ((version, _compat),) = query(
            url, f"SELECT version, compat FROM {schema_name(device_id)}.whatsmeow_version")
        assert isinstance(version, int) and version >= 15  # upgraded by Go to its latest
    assert not any(t.startswith("whatsmeow") for t in tables(url, "public"))  # wasup's schema
    assert not (tmp_path / "data" / "whatsmeow").exists()  # no SQLite store
    assert os.listdir(in_tmp) == []  # nor a stray file from neonize's SQLite attempt
    assert go_clients(url) == 0  # the stopped clients' connections were ended
    await engine.aclose()


async def test_credentials_live_and_go_per_device(url: str, tmp_path: Path) -> None:
    engine = WhatsmeowEngine(tmp_path, preflight_host=None, database_url=url)
    for device_id in (1, 2, 3):
        await paired_by_go(engine, device_id)
        fake_credentials(url, device_id, f"1555000000{device_id}")
    sessions = {i: engine.session(i, f"s{i}", Sink()) for i in (1, 2, 3)}
    assert [await s.has_credentials() for s in sessions.values()] == [True, True, True]

    # A paired device takes the reconnect path from its own schema: no QR, nothing wiped.
    sink = Sink()
    again = WhatsmeowEngine(tmp_path, preflight_host=None, database_url=url)  # a restart
    session = again.session(1, "s1", sink)
    with pytest.raises(EngineError) as info:
        await session.connect()
    assert (info.value.reason, info.value.recoverable) == (OFFLINE, True)
    assert not any(isinstance(e, QrCode) for e in sink.events)
    await session.stop()
    assert await session.has_credentials()

    # Logout wipes device 1's store whole; the others keep theirs, row for row.
    before = {i: query(url, f"SELECT * FROM {schema_name(i)}.whatsmeow_sessions") for i in (2, 3)}
    await sessions[1].logout()
    assert tables(url, schema_name(1)) == set()
    assert [await s.has_credentials() for s in sessions.values()] == [False, True, True]
    # Delete: the same for device 2.
    await sessions[2].delete()
    assert tables(url, schema_name(2)) == set()
    assert [await s.has_credentials() for s in sessions.values()] == [False, False, True]
    assert query(url, f"SELECT * FROM {schema_name(3)}.whatsmeow_sessions") == before[3]
    assert query(url, f"SELECT lid FROM {schema_name(3)}.whatsmeow_lid_map") == [("13@lid",)]

    # Pairing anew starts from an empty store (Go recreates its tables), the rest untouched.
    with pytest.raises(EngineError):
        await sessions[3].start_pairing()
    await sessions[3].stop()
    assert tables(url, schema_name(3)) == TABLES
    assert not await sessions[3].has_credentials()
    assert query(url, f"SELECT count(*) FROM {schema_name(3)}.whatsmeow_lid_map") == [(0,)]

    # Without credentials, connecting is final, as on SQLite.
    with pytest.raises(EngineError) as info:
        await sessions[1].connect()
    assert (info.value.reason, info.value.recoverable) == ("credentials_missing", False)
    assert go_clients(url) == 0
    await engine.aclose()
    await again.aclose()


async def test_a_connection_string_without_a_url_works_and_keeps_its_password(
    postgres_server: TestPostgres, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dbname = conninfo_to_dict(url)["dbname"]
    conninfo = f"user=wasup dbname={dbname} password='p@ss w%rd'"
    monkeypatch.setenv("PGHOST", str(postgres_server.socket_dir))  # no host in the string
    schemas = WhatsmeowSchemas(conninfo)
    address = await trio.to_thread.run_sync(lambda: schemas.address(4, "wasup-4-1-x"))
    assert address.startswith(f"postgres://wasup@/{dbname}?")
    assert "password=p%40ss%20w%25rd" in address
    assert f"host={str(postgres_server.socket_dir).replace('/', '%2F')}" in address
    assert "search_path=whatsmeow_4" in address and "application_name=wasup-4-1-x" in address
    engine = WhatsmeowEngine(tmp_path, preflight_host=None, database_url=conninfo)
    await paired_by_go(engine, 4)  # Go reached the database with it
    assert tables(url, schema_name(4)) == TABLES
    await engine.aclose()


async def test_an_unreachable_database_is_a_recoverable_failure(tmp_path: Path) -> None:
    down = f"postgresql://wasup@/wasup?host={tmp_path / 'no-server'}"
    engine = WhatsmeowEngine(tmp_path, preflight_host=None, database_url=down)
    session = engine.session(1, "s1", Sink())
    with pytest.raises(StorageUnavailable):
        await session.has_credentials()  # the actor reads this as "cannot tell"
    for attempt in (session.connect, session.start_pairing):
        with pytest.raises(EngineError) as info:
            await attempt()
        assert info.value.recoverable  # never credentials_missing: nothing is known lost
        assert info.value.reason.startswith("connect_failed: whatsmeow store: ")
    assert engine.statistics().live_clients == 0
    await engine.aclose()


def test_serve_with_a_database_keeps_whatsmeow_credentials_there(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, engine="whatsmeow",
                    database_url="postgresql://wasup@/wasup?host=/nowhere")
    engine = make_engine(config, db=None)  # type: ignore[arg-type]  # not used by whatsmeow
    assert isinstance(engine, WhatsmeowEngine)
    assert isinstance(engine.stores, WhatsmeowSchemas)
    sqlite = make_engine(Config(data_dir=tmp_path, engine="whatsmeow"), db=None)  # type: ignore[arg-type]
    assert not isinstance(sqlite.stores, WhatsmeowSchemas)  # type: ignore[attr-defined]


def test_checking_many_stores_reuses_a_few_connections_and_close_ends_them(url: str) -> None:
    """A restore or a reconnect storm checks every device's store: that costs no server
    connection per check, and the engine's close leaves none of wasup's own behind."""

    def backends() -> int:
        [(count,)] = query(
            url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
        return int(str(count))

    schemas = WhatsmeowSchemas(url)
    schemas.reset(1)
    assert [schemas.has_credentials(n) for n in range(1, 41)] == [False] * 40
    opened = schemas._pool.get_stats()["connections_num"] if schemas._pool else 0
    assert 1 <= opened <= POOL_SIZE
    assert 1 <= backends() <= POOL_SIZE
    schemas.close()
    assert backends() == 0
    assert not schemas.has_credentials(1)  # usable again: the pool opens anew
    schemas.close()
