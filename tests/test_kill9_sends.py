"""Queued sends across a kill -9: none is lost, none goes out twice, the order is kept.

A connected device paced at 2 sends a second, burst 1, takes a burst of sends, texts and images
(their files given in base64) in turn, all acknowledged at once (200 sent or 202 pending); the server is killed with SIGKILL while most of
them still wait in the outbound queue, and started again on the same data directory. The device
reconnects and the queue drains. Every acknowledged send must end ``sent`` exactly once (one
``message_sent`` event per message, counted through the device's webhook, deduplicated on
``webhook-id``) or, for the one being handed to WhatsApp at the kill if any, ``failed`` with
``interrupted`` (it may have left: wasup never sends it again); and the ones sent left in the
order they were accepted. The images' files wait pinned in the media store across the kill and
are unpinned once their sends are done.

Real processes (:mod:`tests.server_process`), real sockets on 127.0.0.1, Trio's real clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.server_process import Launcher
from tests.test_kill9 import DEADLINE, TOKEN, Run, free_port, wait_ready
from tests.webhook_support import start_receiver

SENDS = 20
def png(width: int, height: int, pixels: bytes) -> bytes:
    """A PNG image of 8-bit grey ``pixels`` (``width * height`` of them)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def image_of(i: int) -> bytes:
    """A small image of its own per send (so each send has its own file)."""
    return png(32, 32, bytes([i]) * 1024)


def body_of(i: int) -> dict[str, Any]:
    """Every other send is an image."""
    if i % 2:
        return {"to": "+15550002222", "type": "image", "caption": f"queued {i:02}",
                "media": {"data": base64.b64encode(image_of(i)).decode()}}
    return {"to": "+15550002222", "text": f"queued {i:02}"}


def stored_sends(db: Path) -> dict[str, tuple[str, str, str | None]]:
    """message_id -> (state, status, reason) of every tracked send."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT message_id, state, status, reason FROM sends").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def test_queued_sends_survive_a_kill9_once_each_in_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {"WASUP_API_TOKEN": TOKEN, "WASUP_LOG_LEVEL": "warning",
           "WASUP_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"}
    args = ("--qr-wait", "0", "--rate-burst", "1000")
    with trio.fail_after(180):
        async with (
            trio.open_nursery() as nursery,
            Launcher(data_dir, port, env, args) as launcher,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/whatsapp",
                              headers={"X-API-TOKEN": TOKEN}, timeout=DEADLINE) as api,
        ):
            receiver = await start_receiver(nursery)
            run = Run(api, data_dir / "wasup.db")
            await launcher.start()
            await wait_ready(api)
            sid = await run.connected("paced")
            r = await api.put(f"/devices/{sid}/settings/webhook",
                              json={"url": receiver.url, "events": ["message_sent"]})
            assert r.status_code == 200, r.text
            r = await api.put(f"/devices/{sid}/settings/sending",
                              json={"ratePerMinute": 120, "burst": 1})
            assert r.status_code == 200, r.text

            accepted: list[str] = []
            for i in range(SENDS):
                r = await api.post(f"/devices/{sid}/messages", json=body_of(i))
                assert r.status_code in (200, 202), r.text
                accepted.append(r.json()["data"]["messageId"])
            await trio.sleep(1.6)  # a few leave, most still wait
            launcher.kill()
            await launcher.reaped()
            before = stored_sends(run.db)
            assert sum(1 for s in before.values() if s[0] != "done") >= SENDS // 2
            pinned = data_dir / "media" / "pinned"
            assert len(list(pinned.iterdir())) >= SENDS // 4  # the queued images' files

            await launcher.start()
            await wait_ready(api)
            with trio.fail_after(60):
                while any(s[0] != "done" for s in stored_sends(run.db).values()):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            after = stored_sends(run.db)
            assert set(after) == set(accepted)
            interrupted = [m for m, s in after.items() if s == ("done", "failed", "interrupted")]
            assert len(interrupted) <= 1
            sent = [m for m in accepted if after[m][1] == "sent"]
            assert len(sent) + len(interrupted) == SENDS, after

            def sent_events() -> dict[str, list[dict[str, Any]]]:
                unique = {q.headers["webhook-id"]: json.loads(q.body) for q in receiver.requests}
                by_message: dict[str, list[dict[str, Any]]] = {}
                for event in unique.values():
                    by_message.setdefault(event["data"]["messageId"], []).append(event)
                return by_message

            with trio.fail_after(60):
                while set(sent_events()) != set(sent):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            events = sent_events()
            assert all(len(e) == 1 for e in events.values()), "a message went out twice"
            order = sorted(sent, key=lambda m: events[m][0]["timestamp"])
            assert order == sent  # in the order accepted
            for i, message_id in enumerate(accepted):
                if message_id in sent:  # each went out as what was asked for
                    data = events[message_id][0]["data"]
                    assert data["type"] == ("image" if i % 2 else "text")
                    if i % 2:
                        assert data["media"]["sha256"] == hashlib.sha256(image_of(i)).hexdigest()
            assert list(pinned.iterdir()) == []  # every file unpinned once its send was done
            nursery.cancel_scope.cancel()
