"""PostgreSQL stopped and started again under load: a real ``wasup serve --database`` process
keeps serving while clients send messages and read devices; PostgreSQL is stopped (``pg_ctl
stop -m fast``, and ``immediate``: a crash, recovered from its WAL at the next start) and
started again.

While it is down, every write is answered 503 with Retry-After (never a 500, never a dropped
connection), reads of what wasup holds in memory still answer, and the log says what happened
in one readable line (no traceback). When it is back, wasup recovers by itself (no restart, no
operator), and every send it acknowledged (2xx) is in the database: nothing acknowledged is
lost.

Real processes and sockets (tests/server_process.py, tests/pg_support.py) on Trio's real clock;
each phase is bounded in seconds.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import attrs
import httpx
import psycopg
import pytest
import trio
from psycopg import sql

from tests.pg_support import TestPostgres
from tests.server_process import Launcher
from tests.store_support import Backend
from tests.test_kill9 import free_port, wait_ready

TOKEN = "outage-test-operator-token"
SENDERS = 3
READERS = 2
#: Seconds of load before the stop, while PostgreSQL is down, and after it answers again. Down
#: longer than the store's connect timeout (5 s): the first write waits for it, the next ones
#: are refused at once.
BEFORE, DOWN, AFTER = 1.0, 6.0, 1.0


@attrs.define
class Load:
    """What the clients saw: every answer's status, the sends acknowledged, what went wrong."""

    acked: list[str] = attrs.field(factory=list)
    statuses: Counter[tuple[str, int]] = attrs.field(factory=Counter)
    problems: list[str] = attrs.field(factory=list)
    #: Acknowledged sends since PostgreSQL was started again.
    acked_after_restart: int = 0
    restarted: bool = False

    def answer(self, what: str, r: httpx.Response) -> None:
        self.statuses[(what, r.status_code)] += 1
        if r.status_code == 503:
            retry = r.headers.get("Retry-After", "")
            code = r.json().get("code") if r.content else None
            if not retry.isdigit() or int(retry) <= 0:
                self.problems.append(f"{what}: 503 without a Retry-After ({r.headers})")
            if code != "STORAGE_UNAVAILABLE":
                self.problems.append(f"{what}: 503 {r.text}")
        elif r.status_code >= 300:
            self.problems.append(f"{what}: {r.status_code} {r.text}")


async def send_loop(api: httpx.AsyncClient, sid: str, who: int, load: Load) -> None:
    n = 0
    while True:
        n += 1
        try:
            r = await api.post(f"/devices/{sid}/messages",
                               json={"to": "+15550002222", "text": f"load {who}.{n}"})
        except httpx.TransportError as exc:
            load.problems.append(f"send: {exc!r}")
        else:
            load.answer("send", r)
            if r.status_code in (200, 202):  # sent, or queued (paced): acknowledged
                load.acked.append(r.json()["data"]["messageId"])
                load.acked_after_restart += load.restarted
        await trio.sleep(0.02)


async def read_loop(api: httpx.AsyncClient, sid: str, load: Load) -> None:
    while True:
        for path in (f"/devices/{sid}", "/devices"):
            try:
                r = await api.get(path)
            except httpx.TransportError as exc:
                load.problems.append(f"read: {exc!r}")
            else:
                load.answer("read", r)
        await trio.sleep(0.02)


def durable(url: str) -> str:
    """``url``, its database committing durably: the test server runs with
    ``synchronous_commit=off`` (tests/pg_support.py), under which PostgreSQL itself may lose the
    last commits it acknowledged when it crashes (``-m immediate``); wasup's own promise is
    tested with PostgreSQL's (default) one."""
    with psycopg.connect(url, autocommit=True) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone() or ("",)
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on")
                     .format(sql.Identifier(str(name))))
    return url


async def connected_device(api: httpx.AsyncClient) -> str:
    r = await api.post("/devices", json={"userId": "u1", "alias": "Under load"})
    assert r.status_code == 201, r.text
    sid: str = r.json()["data"]["sessionId"]
    with trio.fail_after(20):
        while (await api.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
            await trio.sleep(0.05)
        r = await api.post(f"/simulator/devices/{sid}/scan", json={})
        assert r.status_code == 200, r.text
        while (await api.get(f"/devices/{sid}")).json()["data"]["status"] != "connected":  # noqa: ASYNC110
            await trio.sleep(0.05)
    return sid


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgresql_stopped_and_started_under_load(
    tmp_path: Path, postgres_server: TestPostgres, mode: str
) -> None:
    url = durable(postgres_server.create_database())
    data_dir, port = tmp_path / "data", free_port()
    env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "warning"}
    args = ("--qr-wait", "0", "--rate-burst", "10000", "--rate-limit", "10000",
            "--database", url)
    load = Load()
    with trio.fail_after(120):
        async with (
            Launcher(data_dir, port, env, args) as launcher,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                              headers={"X-API-TOKEN": TOKEN}, timeout=20) as api,
        ):
            await launcher.start()
            await wait_ready(api)
            sid = await connected_device(api)
            async with trio.open_nursery() as clients:
                for who in range(SENDERS):
                    clients.start_soon(send_loop, api, sid, who, load)
                for _ in range(READERS):
                    clients.start_soon(read_loop, api, sid, load)
                await trio.sleep(BEFORE)
                acked_before = len(load.acked)
                await trio.to_thread.run_sync(postgres_server.stop_server, mode)
                try:
                    reads_from = load.statuses[("read", 200)]
                    await trio.sleep(DOWN)
                    refused = load.statuses[("send", 503)]
                    reads_down = load.statuses[("read", 200)] - reads_from
                finally:
                    await trio.to_thread.run_sync(postgres_server.start_server)
                load.restarted = True
                with trio.fail_after(30):  # wasup finds the database again by itself
                    while not load.acked_after_restart:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                await trio.sleep(AFTER)
                clients.cancel_scope.cancel()
            assert launcher.pid is not None
            os.kill(launcher.pid, 0)  # the same server process throughout
            assert (await api.get(f"/devices/{sid}")).json()["data"]["status"] == "connected"

    assert load.problems == [], load.problems[:10]
    assert acked_before > 0 and refused > 0, load.statuses
    assert reads_down > 0  # reads of what wasup holds kept answering while it was down
    stored = {m for (m,) in Backend("postgresql", url).peek("SELECT message_id FROM messages")}
    lost = [m for m in load.acked if m not in stored]
    assert lost == [], f"{len(lost)} of {len(load.acked)} acknowledged sends lost"
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "storage unavailable" in log, log[-3000:]
    assert "storage available again" in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]

