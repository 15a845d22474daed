"""Nothing acknowledged is lost to a kill -9: the server is killed with SIGKILL right after an
acknowledgement of each kind, restarted on the same data directory, and every effect it had
acknowledged must be there.

The kinds: create, update, settings, scan (the phone links the device), incoming message (the
simulator's control call), send, logout, delete. Each life of the server ends with a burst of
``BURST`` concurrent requests of one kind, on as many devices (``MESSAGE_BURST`` messages on
one device); the kill is sent the instant the
first answer arrives (no await in between), while the others are still being handled, as under
load. Every request answered with success before the process died is an acknowledgement, and
each is checked after the restart. The kind rotates over the lives, ``LIVES_PER_KIND`` lives
each. The figures (trials and losses per kind) are printed (``pytest -s``).

Real processes (a whole ``wasup serve`` per life, see :mod:`tests.server_process`), real
sockets on 127.0.0.1, Trio's real clock.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.server_process import Launcher
from tests.store_support import Backend

TOKEN = "kill9-test-operator-token"
KINDS = ("create", "update", "settings", "scan", "incoming", "send", "logout", "delete")
LIVES_PER_KIND = 3
BURST = 4
#: Messages need no device each: their bursts are larger (more answers in flight at the kill).
MESSAGE_BURST = 16
DEADLINE = 20.0
#: Statuses of a device whose pairing was committed (it reconnects after the restart).
PAIRED = ("connecting", "connected", "disconnected")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Check = Callable[[], Awaitable[bool]]


@attrs.define
class Tally:
    lives: int = 0
    trials: int = 0
    lost: int = 0


@attrs.define
class Run:
    """The server's client and the devices the acknowledgements act on."""

    api: httpx.AsyncClient
    db: Backend
    #: Devices by role: standing ones (updated, hooked, hub) and one per trial for the others.
    devices: dict[str, list[str]] = attrs.field(factory=dict)
    n: int = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    def take(self, role: str) -> str:
        return self.devices[role].pop()

    async def device(self, sid: str) -> dict[str, Any] | None:
        r = await self.api.get(f"/devices/{sid}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def wait_status(self, sid: str, status: str) -> None:
        with trio.fail_after(DEADLINE):
            while (await self.device(sid) or {}).get("status") != status:  # noqa: ASYNC110
                await trio.sleep(0.02)

    async def wait_qr(self, sid: str) -> None:
        with trio.fail_after(DEADLINE):
            while (await self.api.get(f"/devices/{sid}/qr")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.02)

    async def create(self, alias: str) -> str:
        r = await self.api.post("/devices", json={"userId": "k9", "alias": alias})
        assert r.status_code == 201, r.text
        sid: str = r.json()["data"]["sessionId"]
        return sid

    async def connected(self, alias: str) -> str:
        sid = await self.create(alias)
        await self.wait_qr(sid)
        r = await self.api.post(f"/simulator/devices/{sid}/scan", json={})
        assert r.status_code == 200, r.text
        await self.wait_status(sid, "connected")
        return sid

    def stored_message(self, message_id: str) -> bool:
        return bool(self.db.peek("SELECT 1 FROM messages WHERE message_id = ?", (message_id,)))


async def wait_ready(api: httpx.AsyncClient) -> None:
    with trio.fail_after(60):
        while True:
            try:
                if (await api.get("/sessions")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.02)


# -- the devices ---------------------------------------------------------------------------------

#: What each kind needs: (role, how many, connected?) for the devices it acts on.
ROLES = {
    "update": ("updated", BURST, False),
    "settings": ("hooked", BURST, False),
    "incoming": ("hub", 1, True),
    "send": ("hub", 1, True),
    "scan": ("to scan", BURST * LIVES_PER_KIND, False),
    "logout": ("to log out", BURST * LIVES_PER_KIND, True),
    "delete": ("to delete", BURST * LIVES_PER_KIND, False),
}


async def set_up(run: Run) -> None:
    """Create every device the lives will act on, at once."""

    async def make(role: str, i: int, connect: bool) -> None:
        alias = f"{role} {i}"
        sid = await (run.connected(alias) if connect else run.create(alias))
        run.devices.setdefault(role, []).append(sid)

    async with trio.open_nursery() as nursery:
        for role, count, connect in set(ROLES.values()):
            for i in range(count):
                nursery.start_soon(make, role, i, connect)


async def ready(run: Run, kind: str) -> list[str]:
    """The devices this life's burst acts on, once they are in the state the kind needs."""
    role = ROLES[kind][0] if kind in ROLES else ""
    if kind in ("update", "settings"):
        return list(run.devices[role])
    if kind in ("incoming", "send"):
        hub = run.devices["hub"][0]
        await run.wait_status(hub, "connected")
        return [hub] * MESSAGE_BURST
    if kind == "create":
        return [""] * BURST
    sids = [run.take(role) for _ in range(BURST)]
    async with trio.open_nursery() as nursery:
        for sid in sids:
            if kind == "scan":
                nursery.start_soon(run.wait_qr, sid)
            elif kind == "logout":
                nursery.start_soon(run.wait_status, sid, "connected")
    return sids


# -- one acknowledgement of each kind ------------------------------------------------------------
# Each sends one request and, when it is answered with success, returns how to check its effect
# after the restart (None when it was refused or the connection died with the server).

Action = Callable[[Run, str], Awaitable[Check | None]]


async def ack_create(run: Run, _: str) -> Check | None:
    alias = f"created {run.next()}"
    r = await run.api.post("/devices", json={"userId": "k9", "alias": alias})
    if r.status_code != 201:
        return None
    sid = r.json()["data"]["sessionId"]

    async def present() -> bool:
        device = await run.device(sid)
        return device is not None and device["alias"] == alias

    return present


async def ack_update(run: Run, sid: str) -> Check | None:
    description = f"description {run.next()}"
    r = await run.api.put(f"/devices/{sid}", json={"description": description})
    if r.status_code != 200:
        return None

    async def present() -> bool:
        device = await run.device(sid)
        return device is not None and device["description"] == description

    return present


async def ack_settings(run: Run, sid: str) -> Check | None:
    url = f"http://127.0.0.1:9/hook/{run.next()}"
    r = await run.api.put(f"/devices/{sid}/settings/webhook",
                          json={"url": url, "events": ["message_received"]})
    if r.status_code != 200:
        return None

    async def present() -> bool:
        r = await run.api.get(f"/devices/{sid}/settings/webhook")
        return r.status_code == 200 and r.json()["data"]["url"] == url

    return present


async def ack_scan(run: Run, sid: str) -> Check | None:
    push_name = f"Phone {run.next()}"
    r = await run.api.post(f"/simulator/devices/{sid}/scan", json={"pushName": push_name})
    if r.status_code != 200:
        return None

    async def present() -> bool:
        device = await run.device(sid)
        return (
            device is not None and device["status"] in PAIRED
            and device["connectionInfo"]["pushName"] == push_name
        )

    return present


async def ack_incoming(run: Run, sid: str) -> Check | None:
    r = await run.api.post(f"/simulator/devices/{sid}/messages",
                           json={"from": "+15550001111", "text": f"incoming {run.next()}"})
    if r.status_code != 200:  # (202 queued is no acknowledgement of a commit)
        return None
    message_id: str = r.json()["data"]["messageId"]

    async def present() -> bool:
        return run.stored_message(message_id)

    return present


async def ack_send(run: Run, sid: str) -> Check | None:
    r = await run.api.post(f"/devices/{sid}/messages",
                           json={"to": "+15550002222", "text": f"sent {run.next()}"})
    if r.status_code != 200:
        return None
    message_id: str = r.json()["data"]["messageId"]

    async def present() -> bool:
        return run.stored_message(message_id)

    return present


async def ack_logout(run: Run, sid: str) -> Check | None:
    r = await run.api.post(f"/devices/{sid}/logout")
    if r.status_code != 200:
        return None

    async def present() -> bool:
        device = await run.device(sid)
        return device is not None and device["status"] == "logged_out"

    return present


async def ack_delete(run: Run, sid: str) -> Check | None:
    r = await run.api.delete(f"/devices/{sid}")
    if r.status_code != 200:
        return None

    async def present() -> bool:
        return await run.device(sid) is None

    return present


ACTIONS: dict[str, Action] = {
    "create": ack_create, "update": ack_update, "settings": ack_settings, "scan": ack_scan,
    "incoming": ack_incoming, "send": ack_send, "logout": ack_logout, "delete": ack_delete,
}


async def burst(run: Run, launcher: Launcher, kind: str, targets: list[str]) -> list[Check]:
    """Send the burst; kill the server the instant the first success arrives. Returns the
    checks of every request answered with success (before the server died)."""
    acked: list[Check] = []

    async def one(target: str) -> None:
        try:
            check = await ACTIONS[kind](run, target)
        except httpx.TransportError:
            return  # cut off by the kill: never acknowledged
        if check is None:
            return
        if not acked:
            launcher.kill()  # the instant the first answer arrived
        acked.append(check)

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)
    return acked


async def test_kill9_right_after_each_kind_of_acknowledgement(
    tmp_path: Path, backend: Backend
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "warning",
           "WASUP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"}
    # POST /devices answers at once; every stored device reconnects at once after a restart.
    args = ("--qr-wait", "0", "--max-concurrent-logins", "100", "--rate-burst", "1000",
            *database_args(backend))
    tally = {kind: Tally() for kind in KINDS}
    with trio.fail_after(600):
        async with (
            Launcher(data_dir, port, env, args) as launcher,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                              headers={"X-API-TOKEN": TOKEN}, timeout=DEADLINE) as api,
        ):
            run = Run(api, backend)
            await launcher.start()
            await wait_ready(api)
            await set_up(run)
            for life in range(LIVES_PER_KIND * len(KINDS)):
                kind = KINDS[life % len(KINDS)]
                targets = await ready(run, kind)
                acked = await burst(run, launcher, kind, targets)
                assert acked, f"no {kind} request was answered with success"
                await launcher.reaped()
                await launcher.start()
                await wait_ready(api)
                counts = tally[kind]
                counts.lives += 1
                for present in acked:
                    counts.trials += 1
                    if not await present():
                        counts.lost += 1

    print(f"\nkill -9 right after an acknowledgement on {backend.name} ({launcher.starts} starts,"
          f" bursts of {BURST}, of messages {MESSAGE_BURST}):")
    for kind, counts in tally.items():
        print(f"  {kind:9} lives {counts.lives}, acknowledged {counts.trials:3}, lost {counts.lost}")
    assert {kind: counts.lost for kind, counts in tally.items()} == dict.fromkeys(KINDS, 0)


async def test_queued_messages_survive_a_kill9_and_arrive_once_in_order(
    tmp_path: Path, backend: Backend
) -> None:
    """Messages sent to a device while it is offline wait in the simulated WhatsApp's queue,
    which wasup keeps in its database: they survive a kill -9, and a kill in the middle of
    handing them over loses none and stores none twice."""
    data_dir = tmp_path / "data"
    port = free_port()
    env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "warning"}
    count = 40
    with trio.fail_after(300):
        async with (
            Launcher(data_dir, port, env, ("--qr-wait", "0", "--rate-burst", "1000",
                                           *database_args(backend))) as launcher,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                              headers={"X-API-TOKEN": TOKEN}, timeout=DEADLINE) as api,
        ):
            run = Run(api, backend)
            await launcher.start()
            await wait_ready(api)
            sid = await run.connected("offline for a while")
            # WhatsApp bans the account for a few seconds: the device is offline meanwhile
            r = await api.post(f"/simulator/devices/{sid}/fail",
                               json={"reason": "temporary_ban", "seconds": 8})
            assert r.status_code == 200, r.text
            await run.wait_status(sid, "disconnected")
            texts = [f"queued {i:03}" for i in range(count)]
            for text in texts:
                r = await api.post(f"/simulator/devices/{sid}/messages",
                                   json={"from": "+15550003333", "text": text})
                assert r.status_code == 202 and r.json()["data"]["status"] == "queued", r.text
            launcher.kill()
            await launcher.reaped()

            # Restarted: once the ban is over the device reconnects and the queue is handed
            # over; kill again while that is under way.
            await launcher.start()
            await wait_ready(api)
            with trio.fail_after(DEADLINE):
                while not stored_texts(run.db, sid):  # noqa: ASYNC110 (polling another process)
                    await trio.sleep(0.005)
            launcher.kill()
            await launcher.reaped()
            interrupted = len(stored_texts(run.db, sid))

            await launcher.start()
            await wait_ready(api)
            with trio.fail_after(DEADLINE):
                while len(stored_texts(run.db, sid)) < count:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            await run.wait_status(sid, "connected")
            device = await run.device(sid)
            assert device is not None
            r = await api.post(f"/simulator/devices/{sid}/messages",
                               json={"from": "+15550003333", "text": "after"})
            assert r.status_code == 200, r.text
    print(f"\nqueued {count} messages; a kill -9 after {interrupted} were stored")
    assert stored_texts(run.db, sid) == [*texts, "after"]  # in order, each once
    assert device["statistics"]["messagesReceived"] == count


def stored_texts(db: Backend, sid: str) -> list[str]:
    """The texts of the device's stored incoming messages, in the order they were stored."""
    rows = db.peek(
        "SELECT m.text FROM messages m JOIN devices d ON d.id = m.device_id"
        " WHERE d.session_id = ? AND m.direction = 'in' ORDER BY m.id", (sid,)
    )
    return [str(text) for (text,) in rows]


def database_args(backend: Backend) -> tuple[str, ...]:
    """``wasup serve``'s arguments for the backend's database (SQLite: the data directory's)."""
    return () if backend.name == "sqlite" else ("--database", backend.location)
