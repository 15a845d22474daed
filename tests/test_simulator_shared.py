"""The shared simulated WhatsApp: ``wasup simulator serve`` as its own process, and ``wasup serve
--engine simulator --simulator-url`` nodes using it (real processes throughout).

One node pairs, connects, sends and receives (text, an image, a group) and drives the simulator
controls through its own API; two nodes on one PostgreSQL database connect the same device and
the first one's connection is replaced (``stream_replaced``, counted by the process); a killed
and restarted simulator is reconnected to by the node on its own.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from api.cli import parse_options
from api.cli_serve import serve_config
from supervisor import engine as eng
from supervisor import message_content as mc
from supervisor.engine_contacts import ContactsApi
from supervisor.engine_groups import GroupsApi
from supervisor.engines import simulator_wire as wire
from supervisor.engines.simulator_controls import SimulatorControls
from supervisor.engines.simulator_server import SimulatedCrash
from supervisor.errors import DeliveryFailed, EngineError, InvalidRequest, WhatsAppForbidden
from supervisor.outgoing import Outgoing, Target
from supervisor.payloads import CallReceived
from tests.media_support import PNG
from tests.pg_support import TestPostgres
from tests.server_process import Launcher
from tests.test_kill9 import free_port, wait_ready

TOKEN = "shared-sim-token"
PEER = "+15557654321"
DEADLINE = 30.0
REPO = Path(__file__).resolve().parent.parent


@attrs.define(eq=False)
class SharedSimulator:
    """``wasup simulator serve`` as a child process of the test."""

    log: Path
    port: int = attrs.field(factory=free_port)
    process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with open(self.log, "ab") as log:  # noqa: ASYNC230
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "api.cli", "simulator", "serve", "--port", str(self.port),
                 "--latency", "0.05", "--log-level", "warning"],
                cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        async with httpx.AsyncClient() as client:
            with trio.fail_after(60):
                while True:
                    try:
                        if (await client.get(self.url + "/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    async def stats(self) -> dict[str, int]:
        async with httpx.AsyncClient() as client:
            stats: dict[str, int] = (await client.get(self.url + "/simulator/stats")).json()
            return stats

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the exit; its status."""
        assert self.process is not None
        self.process.send_signal(signum)
        with trio.fail_after(20):
            status = await self.process.wait()
        self.process = None
        return status

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()


@asynccontextmanager
async def shared_simulator(tmp_path: Path) -> AsyncIterator[SharedSimulator]:
    sim = SharedSimulator(tmp_path / "simulator.log")
    try:
        await sim.start()
        yield sim
    finally:
        await sim.close()


@attrs.define(eq=False)
class Node:
    """One ``wasup serve`` process and its API client."""

    api: httpx.AsyncClient
    launcher: Launcher

    async def device(self, sid: str) -> dict[str, Any]:
        r = await self.api.get(f"/devices/{sid}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def wait_status(self, sid: str, *statuses: str, within: float = DEADLINE) -> str:
        with trio.fail_after(within):
            while (status := (await self.device(sid))["status"]) not in statuses:  # noqa: ASYNC110
                await trio.sleep(0.05)
        return str(status)

    async def wait_qr(self, sid: str) -> dict[str, Any]:
        with trio.fail_after(DEADLINE):
            while (r := await self.api.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.05)
        data: dict[str, Any] = r.json()["data"]
        return data

    async def paired(self, alias: str) -> str:
        r = await self.api.post("/devices", json={"userId": "u1", "alias": alias})
        assert r.status_code == 201, r.text
        sid: str = r.json()["data"]["sessionId"]
        await self.wait_qr(sid)
        r = await self.api.post(f"/simulator/devices/{sid}/scan", json={})
        assert r.status_code == 200, r.text
        await self.wait_status(sid, "connected")
        return sid


@asynccontextmanager
async def node(tmp_path: Path, name: str, sim: SharedSimulator,
               *args: str) -> AsyncIterator[Node]:
    port = free_port()
    data_dir = tmp_path / name / "data"
    data_dir.mkdir(parents=True)
    env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "warning"}
    launch = Launcher(data_dir, port, env, ("--simulator-url", sim.url, "--qr-wait", "0", *args))
    async with (
        launch as launcher,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                          headers={"X-API-TOKEN": TOKEN}, timeout=DEADLINE) as api,
    ):
        await launcher.start()
        await wait_ready(api)
        yield Node(api, launcher)


def data(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()["data"]


def test_the_simulator_url_flag_and_variable(tmp_path: Path) -> None:
    url = "http://127.0.0.1:4000"
    base = ["serve", "--engine", "simulator", "--data-dir", str(tmp_path)]
    assert parse_options(base, {}).simulator_url is None  # in process by default
    assert serve_config(parse_options([*base, "--simulator-url", url], {})).simulator_url == url
    options = parse_options(base, {"WASUP_SIMULATOR_URL": url})
    assert serve_config(options).simulator_url == url
    for wrong in (["serve", "--simulator-url", url], [*base, "--simulator-url", "ftp://x"]):
        try:
            parse_options(wrong, {})
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"accepted {wrong}")


def test_every_session_call_and_control_crosses_the_wire_typed() -> None:
    calls = set(wire.SESSION_METHODS) | set(wire.DEVICE_METHODS)
    for protocol, prefix in ((ContactsApi, "contacts."), (GroupsApi, "groups.")):
        assert {n for n in vars(protocol) if not n.startswith("_")} <= {
            c.removeprefix(prefix) for c in calls if c.startswith(prefix)}
    assert {"start_pairing", "connect", "send", "download", "mark_read", "logout",
            "delete"} <= calls
    assert set(wire.CONTROL_METHODS) == {n for n in vars(SimulatorControls)
                                         if not n.startswith("_")}
    message = Outgoing(mc.Reaction("3EB0AA", "+1"), target=Target(
        "3EB0AA", "1@s.whatsapp.net", None, True, "msg_1", "text", "2026-01-01T00:00:00Z"))
    args = {"to_jid": "1@s.whatsapp.net", "message": message, "media": b"\x00\xff"}
    sent = wire.encode_args(wire.SESSION_METHODS, "send", args)
    assert wire.decode_args(wire.SESSION_METHODS, "send", sent) == args
    for refused in ({"to_jid": 1}, {**sent, "extra": 1}, [1]):
        try:
            wire.decode_args(wire.SESSION_METHODS, "send", refused)
        except wire.WireError:
            pass
        else:
            raise AssertionError(refused)
    events: list[eng.EngineEvent] = [
        eng.QrCode("2@x"), eng.Paired("1@s.whatsapp.net", "+1", "A"),
        eng.Disconnected("stream_replaced", retry=eng.Retry.HOLD),
        eng.MessageReceived("3A", "c@g.us", "s@s.whatsapp.net", "hi", is_group=True,
                            quoted=mc.Quoted("3B", chat="c@g.us")),
        eng.Notice(CallReceived("c1", "s@s.whatsapp.net", video=True)),
    ]
    for event in events:
        assert wire.decode_event(wire.encode_event(event)) == event
    for error in (EngineError("not_connected", True), DeliveryFailed("device_deleted"),
                  InvalidRequest("wrong pair code", "code"), SimulatedCrash("fault"),
                  WhatsAppForbidden("not_admin", "only admins")):
        encoded = wire.encode_error(error)
        assert encoded is not None
        back = wire.decode_error(encoded)
        assert type(back) is type(error) and str(back) == str(error)
        assert vars(back) == vars(error)


async def test_a_node_pairs_sends_and_receives_through_the_shared_simulator(
    tmp_path: Path,
) -> None:
    with trio.fail_after(240):
        async with shared_simulator(tmp_path) as sim, node(tmp_path, "a", sim) as a:
            r = await a.api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            sid = data(r, 201)["sessionId"]
            qr = await a.wait_qr(sid)
            assert qr["qrCode"].startswith("data:image/png;base64,")
            scan = data(await a.api.post(f"/simulator/devices/{sid}/scan",
                                         json={"phoneNumber": "+15550001111"}))
            assert scan["phoneNumber"] == "+15550001111"
            await a.wait_status(sid, "connected")

            # A send reaches the simulated WhatsApp: its receipt control knows the message.
            sent = data(await a.api.post(f"/devices/{sid}/messages",
                                         json={"to": PEER, "text": "hello"}))
            assert sent["status"] == "sent"
            r = await a.api.post(f"/simulator/devices/{sid}/receipts",
                                 json={"messageId": sent["messageId"], "status": "read"})
            data(r)
            with trio.fail_after(DEADLINE):
                while data(await a.api.get(f"/devices/{sid}/messages/{sent['messageId']}"))[  # noqa: ASYNC110
                        "status"] != "read":
                    await trio.sleep(0.05)

            # Incoming: a text, then an image whose file is downloaded over the wire.
            got = data(await a.api.post(f"/simulator/devices/{sid}/messages",
                                        json={"from": PEER, "text": "hi back"}))
            assert got["status"] == "delivered"
            stored = data(await a.api.get(f"/devices/{sid}/messages/{got['messageId']}"))
            assert stored["text"] == "hi back"
            image = data(await a.api.post(f"/simulator/devices/{sid}/messages", json={
                "from": PEER, "type": "image",
                "media": {"data": base64.b64encode(PNG).decode()}}))
            r = await a.api.get(f"/devices/{sid}/messages/{image['messageId']}/media")
            assert r.status_code == 200 and r.content == PNG

            # A group made by another member; the device's own group calls go over the wire.
            made = data(await a.api.post(f"/simulator/devices/{sid}/groups", json={
                "owner": PEER, "subject": "Team", "participants": ["+15550002222"]}), 201)
            groups = data(await a.api.get(f"/devices/{sid}/groups"))
            assert made["groupId"] in [g["id"] for g in groups]
            r = await a.api.patch(f"/devices/{sid}/groups/{made['groupId']}",
                                  json={"subject": "Team 2"})
            assert r.status_code in (200, 403), r.text  # a plain member may not; WhatsApp says
            r = await a.api.post(f"/devices/{sid}/contacts/check", json={"phoneNumbers": [PEER]})
            assert r.status_code == 200, r.text
            seen = data(await a.api.get(f"/simulator/devices/{sid}/contacts"))
            assert seen["checkRequests"] == 1

            # The network drops: the device reconnects by itself.
            data(await a.api.post(f"/simulator/devices/{sid}/disconnect", json={}))
            with trio.fail_after(DEADLINE):
                while (await sim.stats())["connections"] < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await a.wait_status(sid, "connected")
            # WhatsApp reports a failure: the same statuses as in process.
            data(await a.api.post(f"/simulator/devices/{sid}/fail",
                                  json={"reason": "stream_replaced"}))
            device = await a.device(sid)
            with trio.fail_after(DEADLINE):
                while (device := await a.device(sid))["status"] == "connected":  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert device["statusReason"] == "stream_replaced"
            # The phone unlinks the device while it is away: WhatsApp refuses its next login.
            data(await a.api.post(f"/simulator/devices/{sid}/unlink", json={}))
            data(await a.api.post(f"/devices/{sid}/login"))
            await a.wait_status(sid, "logged_out")
            assert (await a.device(sid))["statusReason"] == "unlinked"

            stats = await sim.stats()
            assert stats["streamReplaced"] == 0  # fail() is WhatsApp's report, not a double
            assert stats["connections"] == 3  # the pairing (then its login), reconnect, login
            assert await sim.stop(signal.SIGTERM) == 0  # a clean stop


async def test_a_second_node_connecting_the_device_replaces_the_first(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    url = postgres_server.create_database()
    with trio.fail_after(300):
        async with (
            shared_simulator(tmp_path) as sim,
            node(tmp_path, "a", sim, "--database", url) as a,
        ):
            sid = await a.paired("Shop")
            assert (await sim.stats())["streamReplaced"] == 0
            # Node B restores the device from the shared database and connects it with the
            # credentials node A stored there: WhatsApp replaces A's connection.
            async with node(tmp_path, "b", sim, "--database", url) as b:
                await b.wait_status(sid, "connected")
                reason = None
                with trio.fail_after(DEADLINE):
                    while reason != "stream_replaced":
                        reason = (await a.device(sid)).get("statusReason")
                        await trio.sleep(0.05)
                assert (await a.device(sid))["status"] != "connected"
                stats = await sim.stats()
                assert stats["streamReplaced"] == 1
                assert stats["live"] == 1
                # B holds the device: a message reaches it, and A stays replaced.
                got = data(await b.api.post(f"/simulator/devices/{sid}/messages",
                                            json={"from": PEER, "text": "to b"}))
                assert got["status"] == "delivered"
                assert (await sim.stats())["streamReplaced"] == 1
                # B lets the device go (a cancel stops its connection), then A logs in again:
                # a hand-over, not a replacement.
                data(await b.api.post(f"/sessions/{sid}/cancel"))
                with trio.fail_after(DEADLINE):
                    while (await sim.stats())["live"]:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                data(await a.api.post(f"/devices/{sid}/login"))
                await a.wait_status(sid, "connected")
                stats = await sim.stats()
                assert stats["streamReplaced"] == 1 and stats["live"] == 1


async def test_the_node_reconnects_after_the_simulator_restarts(tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with shared_simulator(tmp_path) as sim, node(tmp_path, "a", sim) as a:
            sid = await a.paired("Shop")
            os.kill(sim.process.pid if sim.process else 0, signal.SIGKILL)
            await sim.close()
            await a.wait_status(sid, "disconnected", "connecting")  # unreachable: not a crash
            r = await a.api.post(f"/simulator/devices/{sid}/messages",
                                 json={"from": PEER, "text": "while it is down"})
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "SERVICE_UNAVAILABLE" and r.headers["Retry-After"] == "1"
            await sim.start()  # the same port: WhatsApp is back, having forgotten everything
            await a.wait_status(sid, "connected", within=90)
            got = data(await a.api.post(f"/simulator/devices/{sid}/messages",
                                        json={"from": PEER, "text": "after the restart"}))
            assert got["status"] == "delivered"
            assert (await sim.stats())["streamReplaced"] == 0
            assert await sim.stop(signal.SIGINT) == 0  # a clean stop with a device connected
            await a.wait_status(sid, "disconnected", "connecting")
