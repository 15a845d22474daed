"""A full disk is an answer, not a crash: wasup over HTTP while its database cannot store anything.

The data directory lives on a 3 MiB tmpfs that a filler file fills up, as a real disk fills:
mounting it needs root (the test is skipped, saying so, where it cannot mount; the storage
layer's own tests in ``tests/test_storage.py`` fill the database with ``PRAGMA max_page_count``,
which cannot stand in here: a capped database still takes the small rows that fit its pages).
During the outage every write answers 503
``STORAGE_UNAVAILABLE`` with Retry-After at once, reads still answer, ``/ready`` says so, the
device actors neither crash nor park, and the log has one line for the outage. Once space is
freed, wasup recovers by itself: writes succeed, the device's state catches up, webhook
deliveries resume, and nothing stored before was lost.

Real sockets and Trio's real clock (the shared ``running_server``): every wait has a deadline.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from storage import Repositories, StorageUnavailable
from storage.outage import RETRY_AFTER
from storage.repositories import SqliteRepositories
from supervisor.devices import Devices
from supervisor.state import Status

from .conftest import api_client, running_server
from .lifecycle_support import sim_config, simulated
from .webhook_support import start_receiver

DEADLINE = 15.0
#: An outage answer must come at once, not after the 10 s call timeout.
AT_ONCE = 2.0


@attrs.define
class SmallDisk:
    """The data directory on a small tmpfs, and a filler file that fills it up."""

    data: Path

    @property
    def filler(self) -> Path:
        return self.data.parent / "filler"

    def fill(self) -> None:
        with open(self.filler, "wb", buffering=0) as f:  # nothing left to flush at close
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass  # no space left on device

    def free(self) -> None:
        self.filler.unlink()


@contextmanager
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield SmallDisk(mount / "data")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@attrs.frozen
class Answer:
    what: str
    status: int
    code: str | None
    retry_after: str | None
    seconds: float


async def answer(what: str, call: Any) -> Answer:
    start = trio.current_time()
    r: httpx.Response = await call
    code = r.json().get("code") if r.status_code >= 400 else None
    return Answer(what, r.status_code, code, r.headers.get("Retry-After"),
                  trio.current_time() - start)


async def wait_status(api: httpx.AsyncClient, device: str, status: str) -> dict[str, Any]:
    with trio.fail_after(DEADLINE):
        while True:
            r = await api.get(f"/devices/{device}")
            data: dict[str, Any] = r.json()["data"]
            if data["status"] == status:
                return data
            await trio.sleep(0.02)


async def test_full_disk_answers_503_and_recovers_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with small_disk(tmp_path) as disk:
        await scenario(disk, caplog)


async def scenario(disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    async with (
        trio.open_nursery() as nursery,
        running_server(disk.data, allow_networks=("127.0.0.0/8",)) as server,
        api_client(server) as api,
    ):
        receiver = await start_receiver(nursery)
        # -- before: a connected device with a webhook, a message received and delivered ----
        r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        assert r.status_code == 201, r.text
        shop = r.json()["data"]["sessionId"]
        r = await api.post("/devices", json={"userId": "u1", "alias": "Kiosk"})
        assert r.status_code == 201, r.text
        kiosk = r.json()["data"]["sessionId"]
        await wait_status(api, shop, "pending")
        r = await api.post(f"/simulator/devices/{shop}/scan", json={})
        assert r.status_code == 200, r.text
        await wait_status(api, shop, "connected")
        r = await api.put(f"/devices/{shop}/settings/webhook", json={"url": receiver.url})
        assert r.status_code == 200, r.text
        r = await api.post(f"/simulator/devices/{shop}/messages",
                           json={"from": "+15557654321", "text": "before"})
        assert r.status_code == 200, r.text
        with trio.fail_after(DEADLINE):
            await receiver.wait_requests(1)
        before = (await api.get(f"/devices/{shop}")).json()["data"]
        assert before["statistics"]["messagesReceived"] == 1

        # -- the disk fills up ----------------------------------------------------------------
        caplog.clear()
        disk.fill()
        answers: list[Answer] = []
        for n in range(3):  # again and again: nothing crashes, nothing is parked
            answers += [
                await answer("create", api.post("/devices", json={"userId": "u1", "alias": f"N{n}"})),
                await answer("update", api.put(f"/devices/{shop}", json={"alias": f"Shop {n}"})),
                await answer("webhook", api.put(f"/devices/{kiosk}/settings/webhook",
                                                json={"url": receiver.url})),
                await answer("send", api.post(f"/devices/{shop}/messages",
                                              json={"to": "15557654321", "text": "hi"})),
                await answer("logout", api.post(f"/devices/{shop}/logout")),
                await answer("ready", api.get("/ready")),
            ]
        for a in answers:
            assert (a.status, a.code) == (503, "STORAGE_UNAVAILABLE"), a
            assert a.retry_after is not None and int(a.retry_after) >= 1, a
            assert a.seconds < AT_ONCE, a
        incoming = await answer("incoming", api.post(
            f"/simulator/devices/{shop}/messages", json={"from": "+15557654321", "text": "during"}
        ))
        assert incoming.status < 500 or incoming.status == 503, incoming
        # The connection drops meanwhile: the device reconnects though its state cannot be
        # stored, and stores it once it can.
        r = await api.post(f"/simulator/devices/{shop}/disconnect", json={})
        assert r.status_code == 200, r.text
        # Reads still answer, with what was stored.
        r = await api.get(f"/devices/{shop}")
        assert r.status_code == 200
        assert r.json()["data"]["statistics"]["messagesReceived"] == 1
        r = await api.get("/sessions")
        assert r.status_code == 200
        assert server.sup.statistics().crashes == 0
        outage_lines = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(outage_lines) == 1, [rec.getMessage() for rec in outage_lines]
        assert "storage unavailable: database or disk is full" in outage_lines[0].getMessage()
        assert not any(rec.exc_info for rec in caplog.records)

        # -- space is freed: wasup recovers by itself -----------------------------------------
        disk.free()
        with trio.fail_after(DEADLINE):
            while (await api.get("/ready")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.1)
        r = await api.post("/devices", json={"userId": "u1", "alias": "After"})
        assert r.status_code == 201, r.text
        r = await api.put(f"/devices/{shop}", json={"alias": "Shop after"})
        assert r.status_code == 200, r.text
        await wait_status(api, shop, "connected")
        # The change of state the outage refused is stored now, in its place.
        history = [(h.from_status, h.to_status, h.reason) for h in await server.sup.history(shop)]
        assert history[-3:] == [
            ("connected", "disconnected", "connection_lost"),
            ("disconnected", "connecting", None),
            ("connecting", "connected", None),
        ]
        r = await api.post(f"/simulator/devices/{shop}/messages",
                           json={"from": "+15557654321", "text": "after"})
        assert r.status_code == 200, r.text
        with trio.fail_after(DEADLINE):  # the dispatcher survived: deliveries resume
            while not any(b"after" in q.body for q in receiver.requests):
                await receiver.wait_requests(len(receiver.requests) + 1)
        after = (await api.get(f"/devices/{shop}")).json()["data"]
        assert after["statistics"]["messagesReceived"] >= 2
        r = await api.get("/sessions")
        ids = {d["sessionId"] for d in r.json()["data"]}
        assert {shop, kiosk, "user_u1_device_after"} <= ids
        assert server.sup.statistics().crashes == 0
        recovered = [rec for rec in caplog.records if "available again" in rec.getMessage()]
        assert len(recovered) == 1
        nursery.cancel_scope.cancel()


async def test_started_on_a_full_disk_wasup_waits_for_space_then_comes_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path) as disk:
        async with running_server(disk.data) as server, api_client(server) as api:
            r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            assert r.status_code == 201, r.text
        disk.fill()  # while wasup is down: it cannot even open its database now
        caplog.clear()

        async def free_later() -> None:
            await trio.sleep(1.0)
            disk.free()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(free_later)
            start = trio.current_time()
            async with running_server(disk.data) as server, api_client(server) as api:
                assert trio.current_time() - start >= 1.0  # it waited for the space
                r = await api.get("/ready")
                assert r.status_code == 200, r.text
                r = await api.get("/sessions")
                assert [d["sessionId"] for d in r.json()["data"]] == ["user_u1_device_shop"]
        waiting = [rec for rec in caplog.records if "disk is full" in rec.getMessage()]
        assert len(waiting) == 1 and waiting[0].exc_info is None


# -- in virtual time: the state change an outage refused is stored on its own, later ------------


def _writer(r: Repositories) -> sqlite3.Connection:
    assert isinstance(r, SqliteRepositories)
    return r.devices._db.conn


def shown(sup: Devices, device_id: int) -> Status:
    """The device's status as its actor shows it (stored or not)."""
    child = sup.supervisor.child(device_id)
    assert child is not None
    return child.view.value.status


async def test_a_state_change_the_storage_refused_is_stored_later_on_its_own(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The storage is out (another process holds the database's write lock; every write fails
    # at once) when the device's pairing times out. Nothing comes after that change to carry
    # it, so the actor stores it on its own once the storage is back: the stored row catches
    # up with the device, with its history row.
    async with simulated(sim_config(tmp_path / "data")) as (sup, _engine, _recorder):
        row, _key = await sup.create_device("u1", "shop")
        await sup.db.run(lambda r: _writer(r).execute("PRAGMA busy_timeout = 0"))
        path = sup.config.data_dir / "wasup.db"
        lock = sqlite3.connect(path, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            with trio.fail_after(600):
                while shown(sup, row.id) is not Status.QR_TIMEOUT:  # noqa: ASYNC110
                    await trio.sleep(1)
            assert lock.execute("SELECT status FROM devices").fetchall() == [("pending",)]
            with pytest.raises(StorageUnavailable):
                await sup.update_device(row.id, alias="Shop 2")
        finally:
            lock.close()  # the storage is back
        await trio.sleep(RETRY_AFTER)
        stored = await sup.db.run(lambda r: r.devices.get(row.id))
        assert stored is not None and stored.status == "qr_timeout"
        history = await sup.history(row.id)
        assert [(h.from_status, h.to_status) for h in history][-1] == ("pending", "qr_timeout")
        assert sup.statistics().crashes == 0
