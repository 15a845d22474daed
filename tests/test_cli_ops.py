"""The client commands of ``wasup`` against a real wasup on 127.0.0.1 (simulator engine, real
sockets, real clock): devices create/list/show/login/logout/cancel/delete, ``qr`` drawing the
code in the terminal and again after a rotation until the device connects, ``events --type``,
``doctor`` with a loopback listener in place of WhatsApp; and help text on every flag."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import pytest
import trio
import zxingcpp
from PIL import Image

from api import cli_doctor
from api.cli import build_parser
from api.cli_client import CliError
from api.cli_devices import execute
from api.cli_doctor import Level
from api.server import Server
from tests.conftest import TEST_TOKEN, api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 15.0
REPO = Path(__file__).resolve().parents[1]


class Screen(io.StringIO):
    """What a command printed; ``changed`` wakes whoever waits for more."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = trio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self.changed.set()
        self.changed = trio.Event()
        return written

    async def wait_for(self, needle: str, count: int = 1) -> None:
        with trio.fail_after(DEADLINE):
            while self.getvalue().count(needle) < count:
                await self.changed.wait()


def _env(server: Server) -> dict[str, str]:
    return {"WASUP_URL": server.url, "WASUP_API_TOKEN": TEST_TOKEN}


async def wasup(server: Server, *argv: str, screen: Screen | None = None) -> tuple[int, str]:
    """Run a client command in this Trio run; its exit status and output."""
    args = build_parser({}).parse_args(list(argv))
    out = screen or Screen()
    status = await execute(args, _env(server), out)
    return status, out.getvalue()


def decode_terminal_qr(drawing: str) -> str:
    """The text of a QR code drawn by ``wasup qr`` (half blocks: two modules a character)."""
    top = {"█": True, "▀": True, "▄": False}
    bottom = {"█": True, "▄": True, "▀": False}
    lines = [line for line in drawing.splitlines() if line.strip("\xa0 ")]
    width = max(len(line) for line in lines)
    scale, margin = 6, 24
    image = Image.new("L", (width * scale + 2 * margin, 2 * len(lines) * scale + 2 * margin), 255)
    for y, line in enumerate(lines):
        for x, char in enumerate(line):
            for half, table in enumerate((top, bottom)):
                if table.get(char, False):
                    box = (margin + x * scale, margin + (2 * y + half) * scale)
                    image.paste(0, (*box, box[0] + scale, box[1] + scale))
    found = zxingcpp.read_barcodes(image)
    assert found, "the drawn QR code does not decode"
    return str(found[0].text)


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                missing += _walk(child, f"{path} {name}")
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_flag_of_every_command_has_help_text() -> None:
    parser = build_parser({})
    assert _walk(parser, "wasup") == []
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"serve", "devices", "qr", "events", "doctor"} <= set(commands.choices)


async def test_devices_create_list_show_and_the_session_commands(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server:
        status, out = await wasup(server, "devices", "create", "--user", "u1", "--alias", "Shop")
        assert status == 0, out
        created = json.loads(out[: out.index("\n}") + 2])
        sid = created["sessionId"]
        assert created["apiKey"].startswith("dev_") and "qrCode" not in created
        assert f"wasup qr {sid}" in out

        status, out = await wasup(server, "devices", "list", "--user", "u1")
        assert status == 0 and sid in out and "pending" in out
        status, out = await wasup(server, "devices", "list", "--user", "u1", "--status",
                                  "connected")
        assert sid not in out

        status, out = await wasup(server, "devices", "show", sid)
        assert status == 0 and json.loads(out)["sessionId"] == sid

        status, out = await wasup(server, "devices", "cancel", sid)
        assert status == 0 and json.loads(out)["status"] == "qr_timeout"
        status, out = await wasup(server, "devices", "login", str(created["id"]))
        assert status == 0 and json.loads(out)["status"] == "pending"
        status, out = await wasup(server, "devices", "logout", sid)
        assert status == 0 and json.loads(out)["status"] == "logged_out"
        with pytest.raises(CliError, match="409 DEVICE_CONFLICT"):
            await wasup(server, "devices", "logout", sid)
        status, out = await wasup(server, "devices", "delete", sid, "--yes")
        assert status == 0 and f"deleted {sid}" in out
        with pytest.raises(CliError, match="404 DEVICE_NOT_FOUND"):
            await wasup(server, "devices", "show", sid)


async def test_qr_draws_the_code_and_again_after_each_rotation_until_connected(
    tmp_path: Path,
) -> None:
    async with running_server(
        # Each code shows for 4 s: long enough for the test to read the one drawn even on a
        # loaded machine, short enough to see a rotation.
        tmp_path / "data", qr_first_timeout=4.0, qr_next_timeout=4.0, qr_max_attempts=10
    ) as server, api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        sid = r.json()["data"]["sessionId"]
        screen = Screen()
        async with trio.open_nursery() as nursery:
            result: list[int] = []

            async def run_qr() -> None:
                status, _ = await wasup(server, "qr", sid, "--timeout", "20", screen=screen)
                result.append(status)

            nursery.start_soon(run_qr)
            await screen.wait_for("QR code ")
            r = await api.get(f"/devices/{sid}/qr")
            assert r.status_code == 200, r.text
            first = r.json()["data"]
            drawing = screen.getvalue().split("QR code ")[0]
            assert decode_terminal_qr(drawing) == first["qrString"]

            await screen.wait_for("QR code ", 2)  # the rotation, drawn again
            second = screen.getvalue().split("QR code ")[1].split("\n", 1)[1]
            r = await api.get(f"/devices/{sid}/qr")
            assert decode_terminal_qr(second) != first["qrString"]

            r = await api.post(f"/simulator/devices/{sid}/scan", json={})
            assert r.status_code == 200, r.text
            await screen.wait_for(f"{sid} is connected")
        assert result == [0]
        # Connected now: a second run says so at once.
        status, out = await wasup(server, "qr", sid)
        assert status == 0 and "is connected" in out


async def test_qr_of_a_device_that_is_not_pairing_says_how_to_start(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        sid = r.json()["data"]["sessionId"]
        await api.post(f"/sessions/{sid}/cancel")
        status, out = await wasup(server, "qr", sid)
        assert status == 1 and f"wasup devices login {sid}" in out


async def test_events_prints_the_matching_events_as_json_lines(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        screen = Screen()

        async def tail() -> None:
            await wasup(server, "events", "--type", "device_status", "--count", "2",
                        screen=screen)

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                before = server.sup.bus.subscriber_count
                nursery.start_soon(tail)
                while True:  # until the stream is open: no event is missed after that
                    if server.sup.bus.subscriber_count > before:
                        break
                    await trio.sleep(0.01)
                r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
                sid = r.json()["data"]["sessionId"]
                await api.post(f"/simulator/devices/{sid}/scan", json={})
        events = [json.loads(line) for line in screen.getvalue().splitlines()]
        assert [e["type"] for e in events] == ["device_status"] * 2
        assert [e["sessionId"] for e in events] == [sid] * 2
        assert [e["data"]["to"] for e in events] == ["connecting", "connected"]


async def test_a_missing_token_and_an_unreachable_server_say_what_to_do(tmp_path: Path) -> None:
    args = build_parser({}).parse_args(["devices", "list", "--data-dir", str(tmp_path)])
    with pytest.raises(CliError, match="no token: pass --token"):
        await execute(args, {}, io.StringIO())
    (tmp_path / "api_token").write_text("stored-token\n")
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    args = build_parser({}).parse_args(
        ["devices", "list", "--data-dir", str(tmp_path), "--url", f"http://127.0.0.1:{port}"])
    with pytest.raises(CliError, match=f"cannot reach wasup at http://127.0.0.1:{port}"):
        await execute(args, {}, io.StringIO())


async def test_the_console_script_lists_devices(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        result = await trio.run_process(
            [sys.executable, "-m", "api.cli", "devices", "list", "--user", "u1"],
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, **_env(server)}, cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        assert b"user_u1_device_shop" in result.stdout


# -- doctor -------------------------------------------------------------------------------------


def _by_name(findings: list[cli_doctor.Finding]) -> dict[str, cli_doctor.Finding]:
    return {f.name: f for f in findings}


async def test_doctor_reaches_a_loopback_listener_and_reports_the_machine(tmp_path: Path) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    try:
        findings = await trio.to_thread.run_sync(lambda: cli_doctor.diagnose(
            tmp_path / "data", host="127.0.0.1", port=port, timeout=2.0, environ={}))
    finally:
        await listener.aclose()
    found = _by_name(findings)
    assert [f.name for f in findings] == [
        "neonize", "libmagic", "whatsapp-version", "data-dir", "open-files", "dns", "tcp"]
    assert found["neonize"].level is Level.OK and "0.5" in found["neonize"].message
    assert found["libmagic"].level is Level.OK and "application/pdf" in found["libmagic"].message
    assert "2.3000." in found["whatsapp-version"].message
    assert "days old" in found["whatsapp-version"].message
    assert found["data-dir"].level is Level.OK and (tmp_path / "data").is_dir()
    assert found["tcp"].level is Level.OK and found["dns"].level is Level.OK
    out = io.StringIO()
    assert cli_doctor.report(findings, out) == 0
    assert "ready for a first pairing" in out.getvalue()


async def test_doctor_says_what_to_fix_when_the_network_fails(tmp_path: Path) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    findings = await trio.to_thread.run_sync(lambda: cli_doctor.diagnose(
        tmp_path / "data", host="127.0.0.1", port=port, timeout=2.0, environ={}))
    tcp = _by_name(findings)["tcp"]
    assert tcp.level is Level.FAIL and f"127.0.0.1:{port}" in tcp.message
    assert "firewall" in tcp.fix
    out = io.StringIO()
    assert cli_doctor.report(findings, out) == 1
    assert "1 check(s) failed: tcp" in out.getvalue()

    dns = cli_doctor.check_dns("web.whatsapp.invalid")
    assert dns.level is Level.FAIL and "does not resolve" in dns.message and dns.fix

    # Through a proxy that is not there: the proxy check replaces DNS and TCP.
    findings = await trio.to_thread.run_sync(lambda: cli_doctor.diagnose(
        tmp_path / "data", host="web.whatsapp.com", timeout=2.0,
        environ={"HTTPS_PROXY": f"http://user:secret@127.0.0.1:{port}"}))
    proxy = _by_name(findings)["proxy"]
    assert proxy.level is Level.FAIL and "secret" not in proxy.message
    assert "HTTPS_PROXY" in proxy.message and "dns" not in _by_name(findings)


def test_doctor_flags_a_data_directory_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "open"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    finding = cli_doctor.check_data_dir(path)
    assert finding.level is Level.WARN and "chmod 700" in finding.fix


def test_the_whatsmeow_date_comes_from_go_build_information() -> None:
    data = b"xx\tdep\tgo.mau.fi/whatsmeow\tv0.0.0-20260921121126-35ae40906e74\th1:abc"
    built = cli_doctor.whatsmeow_date(data)
    assert built is not None and built.isoformat().startswith("2026-09-21T12:11:26")
    assert cli_doctor.whatsmeow_date(b"nothing") is None
