"""At-least-once across SIGKILL: ``wasup serve`` is killed ten times while webhook deliveries
are pending and the receiver is down (refusing connections, or accepting and never
answering); after the last restart, with the receiver back, every event arrives, signed.

Real processes, real sockets on 127.0.0.1, Trio's real clock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import httpx
import trio
from standardwebhooks.webhooks import Webhook

from tests.webhook_support import Receiver, start_receiver

TOKEN = "crash-test-operator-token"
ROUNDS = 10
PER_ROUND = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_server(data_dir: Path, port: int) -> trio.Process:
    env = {
        **os.environ,
        "WASUP_API_TOKEN": TOKEN,
        "WASUP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "WASUP_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from api.cli import main; sys.exit(main())",
        "serve",
        "--engine",
        "simulator",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    with _server_log(data_dir) as log:
        return await trio.lowlevel.open_process(
            command, env=env, stdout=subprocess.DEVNULL, stderr=log
        )


def _server_log(data_dir: Path) -> IO[bytes]:
    """The server's stderr goes here (beside the data directory), for a failing run."""
    return open(data_dir.parent / "server.log", "ab")


async def wait_ready(api: httpx.AsyncClient) -> None:
    while True:
        try:
            r = await api.get("/sessions")
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        await trio.sleep(0.05)


async def wait_connected(api: httpx.AsyncClient, sid: str) -> None:
    # Polling another process: there is no event to wait on.
    while (await api.get(f"/devices/{sid}")).json()["data"]["status"] != "connected":  # noqa: ASYNC110
        await trio.sleep(0.05)


async def stored_deliveries(api: httpx.AsyncClient, sid: str) -> int:
    r = await api.get(f"/devices/{sid}/webhook/deliveries", params={"limit": 1})
    return int(r.json()["pagination"]["total"])


async def kill(process: trio.Process) -> None:
    process.send_signal(signal.SIGKILL)
    await process.wait()


async def test_sigkill_rounds_lose_no_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/whatsapp"
    texts: list[str] = []
    secrets: dict[str, str] = {}
    with trio.fail_after(240):
        async with (
            trio.open_nursery() as nursery,
            httpx.AsyncClient(base_url=base, headers={"X-API-TOKEN": TOKEN}, timeout=10) as api,
        ):
            receiver: Receiver = await start_receiver(nursery)
            for round_ in range(ROUNDS):
                hanging = round_ % 2 == 0
                if hanging:
                    receiver.script.extend(["hang"] * 100)
                else:
                    await receiver.down()
                process = await start_server(data_dir, port)
                try:
                    await wait_ready(api)
                    # A device per round: the simulator derives message ids from a per-process
                    # counter, so a restarted device would repeat the ids of its messages.
                    r = await api.post("/devices", json={"userId": "u1", "alias": f"c{round_}"})
                    sid = r.json()["data"]["sessionId"]
                    r = await api.put(
                        f"/devices/{sid}/settings/webhook",
                        json={"url": receiver.url, "events": ["message_received"]},
                    )
                    assert r.status_code == 200, r.text
                    secrets[sid] = r.json()["data"]["secret"]
                    await api.post(f"/simulator/devices/{sid}/scan", json={})
                    await wait_connected(api, sid)
                    for i in range(PER_ROUND):
                        text = f"round {round_} message {i}"
                        texts.append(text)
                        r = await api.post(
                            f"/simulator/devices/{sid}/messages",
                            json={"from": "+15550001111", "text": text},
                        )
                        assert r.status_code == 200, r.text
                    # Every event is stored (it is in the delivery log) before the kill.
                    while await stored_deliveries(api, sid) < PER_ROUND:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                    await trio.sleep(0.2)  # deliveries are in flight or failing
                finally:
                    await kill(process)
                if not hanging:
                    await receiver.up()
                receiver.script.clear()

            # Everything is still pending; let the time the retry schedule asks for pass.
            with sqlite3.connect(data_dir / "wasup.db") as conn:
                statuses = dict(
                    conn.execute("SELECT status, COUNT(*) FROM webhook_outbox GROUP BY status")
                )
                assert statuses == {"pending": ROUNDS * PER_ROUND}
                conn.execute("UPDATE webhook_outbox SET next_attempt_at = 0")

            process = await start_server(data_dir, port)
            try:
                await wait_ready(api)
                while True:
                    total = 0
                    for sid in secrets:
                        r = await api.get(
                            f"/devices/{sid}/webhook/deliveries",
                            params={"status": "delivered", "limit": 1},
                        )
                        total += r.json()["pagination"]["total"]
                    if total == len(texts):
                        break
                    await trio.sleep(0.05)
            finally:
                await kill(process)
            nursery.cancel_scope.cancel()

    delivered: dict[str, Any] = {}
    for request in receiver.requests:
        body = json.loads(request.body)
        secret = secrets[body["sessionId"]]
        try:
            Webhook(secret).verify(request.body, request.headers)
        except Exception as exc:  # say which request failed
            raise AssertionError(f"bad signature on {request.headers['webhook-id']}") from exc
        delivered.setdefault(request.headers["webhook-id"], body)
    assert sorted(b["data"]["text"] for b in delivered.values()) == sorted(texts)
    assert len(delivered) == ROUNDS * PER_ROUND
