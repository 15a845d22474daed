"""Sending and receiving every type end to end: HTTP in, the simulator's WhatsApp, the WebSocket
and a webhook out.

A whole wasup (simulator engine) on 127.0.0.1 with ``allow_networks`` letting it reach
127.0.0.1: a webhook receiver and a file server for the ``media.url`` form run there. Each type
is sent as JSON (base64), image and document also as multipart/form-data and from a URL; the
simulator must have received the very bytes (sha256), the WebSocket and the webhook must show
``message_sent`` with the type and the file's metadata, never its bytes. The other way, the
simulator delivers each type and both show ``message_received`` with type and metadata. Real
sockets and a real clock, every wait under a deadline.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from PIL import Image
from trio_websocket import open_websocket_url

from api.server import Server
from supervisor import message_content as mc
from supervisor.config import MediaConfig
from supervisor.engines.simulator import SimulatorEngine
from tests.conftest import TEST_TOKEN, api_client, running_server
from tests.media_support import (
    JPEG,
    MP3,
    MP4,
    OGG,
    PDF,
    PNG,
    WEBP,
    FileServer,
    b64,
    sha256,
    start_file_server,
)
from tests.test_messaging_e2e import create, wait_status
from tests.webhook_support import Receiver, start_receiver

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 20.0
PEER = "+15557654321"
PEER_JID = "15557654321@s.whatsapp.net"


@attrs.define(eq=False)
class Setup:
    server: Server
    api: httpx.AsyncClient
    device: dict[str, Any]
    hooks: Receiver
    files: FileServer
    events: list[dict[str, Any]] = attrs.field(factory=list)
    #: Set when the WebSocket brings an event (then replaced).
    arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def sid(self) -> str:
        return str(self.device["sessionId"])

    @property
    def engine(self) -> SimulatorEngine:
        engine = self.server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        return engine

    def hooked(self, kind: str) -> list[dict[str, Any]]:
        """The webhook's events of ``kind`` so far."""
        bodies = [json.loads(r.body) for r in self.hooks.requests]
        return [b for b in bodies if b["type"] == kind]

    def seen(self, kind: str) -> list[dict[str, Any]]:
        """The WebSocket's events of ``kind`` so far."""
        return [e for e in self.events if e["type"] == kind]

    async def until(self, kind: str, count: int) -> None:
        """Wait until both the WebSocket and the webhook have shown ``count`` events of
        ``kind``."""
        with trio.fail_after(DEADLINE):
            while len(self.seen(kind)) < count:
                await self.arrived.wait()
            while len(self.hooked(kind)) < count:
                await self.hooks.wait_requests(len(self.hooks.requests) + 1)

    async def collect(self, ws: Any) -> None:
        while True:
            self.events.append(json.loads(await ws.get_message()))
            self.arrived.set()
            self.arrived = trio.Event()


@asynccontextmanager
async def connected(tmp_path: Path, media: MediaConfig | None = None) -> AsyncIterator[Setup]:
    async with trio.open_nursery() as nursery:
        hooks = await start_receiver(nursery)
        files = await start_file_server(nursery)
        async with running_server(tmp_path / "data", allow_networks=("127.0.0.0/8",),
                                  media=media or MediaConfig()) as server, \
                api_client(server) as api:
            device = await create(api, "Shop")
            sid = device["sessionId"]
            await wait_status(api, sid, "pending")
            r = await api.post(f"/simulator/devices/{sid}/scan", json={})
            assert r.status_code == 200, r.text
            await wait_status(api, sid, "connected")
            r = await api.put(f"/devices/{sid}/settings/webhook",
                              json={"url": hooks.url, "events": ["message"]})
            assert r.status_code == 200, r.text
            r = await api.put(f"/devices/{sid}/settings/sending",
                              json={"ratePerMinute": 600, "burst": 100})
            assert r.status_code == 200, r.text
            setup = Setup(server, api, device, hooks, files)
            url = (f"{server.ws_url}/?token={TEST_TOKEN}"
                   "&events=message_received,message_sent,message_status")
            async with open_websocket_url(url) as ws, trio.open_nursery() as inner:
                inner.start_soon(setup.collect, ws)
                await trio.sleep(0.05)  # subscribed
                yield setup
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


@attrs.frozen
class Send:
    """One send: the request, and what the simulator and the events must show of it."""

    name: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    file: tuple[str, bytes, str] | None = None  # multipart: (file name, bytes, content type)
    type: str = "text"
    content: type = mc.Text
    data: bytes | None = None  # the file the simulator must receive
    mimetype: str | None = None
    filename: str | None = None


def sends(files: FileServer) -> list[Send]:
    files.files["photo.jpg"] = JPEG
    files.files["docs/q3.pdf"] = PDF
    return [
        Send("text", {"text": f"hi @15550001111 {files.url('nothing-here')}",
                      "linkPreview": True, "mentions": ["+15550001111"]}),
        Send("image", {"type": "image", "media": {"data": b64(PNG)}, "caption": "a chart"},
             type="image", content=mc.Image, data=PNG, mimetype="image/png"),
        Send("image, multipart", form={"type": "image", "caption": "by form"},
             file=("chart.png", PNG, "image/png"), type="image", content=mc.Image, data=PNG,
             mimetype="image/png"),
        Send("image, url", {"type": "image", "media": {"url": files.url("photo.jpg")}},
             type="image", content=mc.Image, data=JPEG, mimetype="image/jpeg"),
        Send("video", {"type": "video", "media": {"data": b64(MP4)}, "caption": "clip"},
             type="video", content=mc.Video, data=MP4, mimetype="video/mp4"),
        Send("audio", {"type": "audio", "media": {"data": b64(MP3)}}, type="audio",
             content=mc.Audio, data=MP3, mimetype="audio/mpeg"),
        Send("voice", {"type": "audio", "media": {"data": b64(OGG)}, "voice": True,
                       "mimetype": "audio/ogg; codecs=opus"},
             type="audio", content=mc.Voice, data=OGG, mimetype="audio/ogg; codecs=opus"),
        Send("document", {"type": "document", "media": {"data": b64(PDF)}, "filename": "r.pdf",
                          "caption": "the report"},
             type="document", content=mc.Document, data=PDF, mimetype="application/pdf",
             filename="r.pdf"),
        Send("document, multipart", form={"type": "document", "mentions": json.dumps([PEER])},
             file=("q2.pdf", PDF, "application/octet-stream"), type="document",
             content=mc.Document, data=PDF, mimetype="application/pdf", filename="q2.pdf"),
        Send("document, url", {"type": "document", "media": {"url": files.url("docs/q3.pdf")}},
             type="document", content=mc.Document, data=PDF, mimetype="application/pdf",
             filename="q3.pdf"),
        Send("sticker", {"type": "sticker", "media": {"data": b64(WEBP)}}, type="sticker",
             content=mc.Sticker, data=WEBP, mimetype="image/webp"),
        Send("location", {"type": "location", "location": {"latitude": 52.52,
                                                           "longitude": 13.405, "name": "HQ"}},
             type="location", content=mc.Location),
        Send("contact", {"type": "contact", "contact": {"name": "Ana",
                                                        "phoneNumber": "+15550001111"}},
             type="contact", content=mc.Contact),
        Send("poll", {"type": "poll", "poll": {"question": "Lunch?", "options": ["pizza", "soup"],
                                               "multiple": True}},
             type="poll", content=mc.Poll),
        Send("location, multipart", form={"type": "location",
                                          "location": '{"latitude": 1.5, "longitude": 2}'},
             type="location", content=mc.Location),
    ]


async def post(setup: Setup, send: Send) -> httpx.Response:
    path = f"/devices/{setup.sid}/messages"
    if send.json is not None:
        return await setup.api.post(path, json={"to": PEER, **send.json})
    assert send.form is not None
    # every field a part: multipart/form-data even without a file
    parts: dict[str, Any] = {k: (None, v) for k, v in {"to": PEER, **send.form}.items()}
    if send.file is not None:
        parts["file"] = send.file
    return await setup.api.post(path, files=parts)


async def test_every_type_goes_out_byte_for_byte(tmp_path: Path) -> None:
    async with connected(tmp_path) as setup:
        table = sends(setup.files)
        ids: list[str] = []
        for send in table:
            r = await post(setup, send)
            assert r.status_code in (200, 202), (send.name, r.text)
            data = r.json()["data"]
            # sent at once, or after the pace's jitter
            assert (r.status_code, data["status"]) in {(200, "sent"), (202, "pending")}, r.text
            assert data["to"] == PEER_JID, send.name
            assert data["type"] == send.type, send.name
            ids.append(data["messageId"])
        await setup.until("message_sent", len(table))
        # a reply quotes one of them (once it left: WhatsApp knows it by then)
        r = await setup.api.post(f"/devices/{setup.sid}/messages",
                                 json={"to": PEER, "text": "see above", "replyTo": ids[1]})
        assert r.status_code in (200, 202), r.text
        reply_id = r.json()["data"]["messageId"]
        await setup.until("message_sent", len(table) + 1)

        sent = setup.engine.sent_messages(setup.device["id"])
        assert len(sent) == len(table) + 1
        for send, got in zip(table, sent, strict=False):
            assert got.to_jid == PEER_JID
            assert isinstance(got.message.content, send.content), send.name
            media = mc.media_of(got.message.content)
            if send.data is None:
                assert media is None and got.media is None, send.name
                continue
            assert got.media is not None and sha256(got.media) == sha256(send.data), send.name
            assert media == mc.MediaInfo(send.mimetype, len(send.data), sha256(send.data),
                                         send.filename), send.name
        assert sent[0].message.mentions == ("15550001111@s.whatsapp.net",)
        assert sent[0].message.link_preview is True
        assert sent[8].message.mentions == (PEER_JID,)
        assert sent[6].message.content == mc.Voice(mc.MediaInfo(
            "audio/ogg; codecs=opus", len(OGG), sha256(OGG)))
        assert sent[12].message.content == mc.Contact("Ana", (
            "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\nTEL;type=CELL;waid=15550001111:+15550001111\n"
            "END:VCARD",))
        assert sent[13].message.content == mc.Poll("Lunch?", ("pizza", "soup"), multiple=True)
        assert sent[14].message.content == mc.Location(1.5, 2.0)
        quoted = sent[-1].message.quoted
        assert quoted is not None and quoted.message_id == ids[1]
        assert quoted.wa_id == sent[1].message_id and quoted.from_me is True

        for stream in (setup.seen, setup.hooked):
            shown = {e["data"]["messageId"]: e for e in stream("message_sent")}
            for send, message_id in zip(table, ids, strict=True):
                event = shown[message_id]
                assert event["sessionId"] == setup.sid
                assert event["data"]["type"] == ("voice" if send.content is mc.Voice
                                                  else send.type), send.name
                text = json.dumps(event)
                if send.data is not None:
                    media = event["data"]["media"]
                    assert media["sha256"] == sha256(send.data), send.name
                    assert media["size"] == len(send.data)
                    assert media["mimetype"] == send.mimetype
                    assert b64(send.data) not in text  # never the bytes
            assert shown[reply_id]["data"]["quoted"]["messageId"] == ids[1]
        statuses = {(e["data"]["messageId"], e["data"]["status"])
                    for e in setup.seen("message_status")}
        assert {(m, "sent") for m in [*ids, reply_id]} <= statuses
        r = await setup.api.get(f"/devices/{setup.sid}")
        assert r.json()["data"]["statistics"]["messagesSent"] == len(table) + 1


async def test_refused_sends_keep_nothing_pinned(tmp_path: Path) -> None:
    """A send refused after its file was stored (an unknown replyTo, a device that takes no
    sends) unpins the file; a refused file is never stored."""
    async with connected(tmp_path) as setup:
        media = setup.server.sup.media
        r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
            "to": PEER, "type": "image", "media": {"data": b64(PNG)}, "replyTo": "3ANOSUCH"})
        assert r.status_code == 400 and r.json()["field"] == "replyTo", r.text
        path = await media.path(sha256(PNG))
        assert path is not None and path.parent.name != "pinned"
        r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
            "to": PEER, "type": "image", "media": {"data": b64(PDF)}})
        assert r.status_code == 400 and r.json()["field"] == "media", r.text
        assert await media.get(sha256(PDF)) is None
        r = await setup.api.post(f"/devices/{setup.sid}/logout")
        assert r.status_code == 200, r.text
        r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
            "to": PEER, "type": "document", "media": {"data": b64(PDF)}})
        assert r.status_code == 409, r.text
        path = await media.path(sha256(PDF))
        assert path is not None and path.parent.name != "pinned"


async def test_url_form_refusals_and_limits(tmp_path: Path) -> None:
    async with connected(tmp_path, MediaConfig(max_image=1 << 20)) as setup:
        setup.files.files["big.png"] = PNG + bytes(1 << 20)  # beyond an image's limit
        setup.files.routes["/meta"] = (302, {"location": "http://169.254.169.254/latest/"})
        for url, status, field, says in [
            (setup.files.url("missing.png"), 400, "media.url", "http 404"),
            (setup.files.url("meta"), 400, "media.url", "169.254.169.254"),
            ("http://10.1.2.3:9/a.png", 400, "media.url", "private"),
            (setup.files.url("big.png"), 413, "media", "1 MiB"),
        ]:
            r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
                "to": PEER, "type": "image", "media": {"url": url}})
            assert r.status_code == status, (url, r.text)
            assert r.json()["field"] == field and says in r.json()["error"], r.text
        assert setup.engine.sent_messages(setup.device["id"]) == []


async def test_large_files_and_the_route_limit(tmp_path: Path) -> None:
    """A file at an image's limit goes out in base64 (a body beyond the 1 MiB of other
    routes); one byte more is 413, in base64 and as multipart; other routes keep their limit."""
    async with connected(tmp_path, MediaConfig(max_image=2 << 20)) as setup:
        cap = setup.server.sup.config.media.max_image
        big = PNG + bytes(cap - len(PNG))
        path = f"/devices/{setup.sid}/messages"
        r = await setup.api.post(path, json={"to": PEER, "type": "image",
                                             "media": {"data": b64(big)}})
        assert r.status_code in (200, 202), r.text[:300]
        r = await setup.api.post(path, data={"to": PEER, "type": "image"},
                                 files={"file": ("big.png", big + b"\x00", "image/png")})
        assert r.status_code == 413 and r.json()["field"] == "file", r.text[:300]
        r = await setup.api.post(path, json={"to": PEER, "type": "image",
                                             "media": {"data": b64(big + b"\x00")}})
        assert r.status_code == 413 and r.json()["field"] == "media", r.text[:300]
        r = await setup.api.put(f"/devices/{setup.sid}",
                                json={"alias": "x", "description": "d" * (2 << 20)})
        assert r.status_code == 413
        await setup.until("message_sent", 1)
        sent = setup.engine.sent_messages(setup.device["id"])
        assert len(sent) == 1 and sent[0].media is not None and sha256(sent[0].media) == sha256(big)


async def test_a_text_with_link_preview_carries_its_pages_card(tmp_path: Path) -> None:
    """The card is made when the text leaves (a queued text gets the page as it is then),
    through the guard (loopback allowed here); a page that cannot be had sends the text
    without a card."""
    async with connected(tmp_path) as setup:
        files, did = setup.files, setup.device["id"]
        cover = io.BytesIO()
        Image.new("RGB", (600, 300), (200, 30, 30)).save(cover, "PNG")
        files.files["cover.png"] = cover.getvalue()
        path = f"/devices/{setup.sid}/messages"
        r = await setup.api.post(path, json={"to": PEER, "linkPreview": True,
                                             "text": f"read {files.url('gone')} now"})
        assert r.status_code in (200, 202), r.text
        await setup.until("message_sent", 1)
        plain = setup.engine.sent_messages(did)[-1].message
        assert plain.link_preview is True and plain.card is None

        await setup.engine.set_reachable(False)
        await setup.engine.drop(did)
        await wait_status(setup.api, setup.sid, "disconnected")
        r = await setup.api.post(path, json={"to": PEER, "linkPreview": True,
                                             "text": f"new post: {files.url('post')}"})
        assert r.status_code == 202, r.text
        files.files["post"] = (  # the page exists only once the text was queued
            b'<html><head><meta property="og:title" content="Spring sale">'
            b'<meta property="og:description" content="Half off">'
            b'<meta property="og:image" content="/cover.png"></head></html>')
        await setup.engine.set_reachable(True)
        await setup.until("message_sent", 2)
        card = setup.engine.sent_messages(did)[-1].message.card
        assert card is not None
        assert (card.url, card.title, card.description) == (files.url("post"), "Spring sale",
                                                            "Half off")
        assert card.thumbnail is not None and (card.thumbnail.width, card.thumbnail.height) == (
            240, 120)
        assert Image.open(io.BytesIO(card.thumbnail.data)).format == "JPEG"
        assert files.requests[-2:] == ["/post", "/cover.png"]


#: What the simulator delivers, and what message_received must show of it.
INCOMING: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"text": "hello"}, {"type": "text", "text": "hello", "hasMedia": False}),
    ({"type": "image", "media": {"data": b64(PNG)}, "caption": "a chart"},
     {"type": "image", "hasMedia": True, "media": {"mimetype": "image/png", "size": len(PNG),
                                                    "sha256": sha256(PNG)}}),
    ({"type": "video", "media": {"data": b64(MP4), "mimetype": "video/mp4"}},
     {"type": "video", "hasMedia": True, "media": {"mimetype": "video/mp4", "size": len(MP4),
                                                    "sha256": sha256(MP4)}}),
    ({"type": "audio", "media": {"data": b64(MP3)}},
     {"type": "audio", "media": {"mimetype": "audio/mpeg", "sha256": sha256(MP3)}}),
    ({"type": "audio", "voice": True, "media": {"data": b64(OGG)}},
     {"type": "voice", "media": {"mimetype": "audio/ogg", "sha256": sha256(OGG)}}),
    ({"type": "document", "media": {"data": b64(PDF), "filename": "q3.pdf"}},
     {"type": "document", "media": {"mimetype": "application/pdf", "filename": "q3.pdf",
                                    "sha256": sha256(PDF)}}),
    ({"type": "sticker", "media": {"data": b64(WEBP), "mimetype": "image/webp"}},
     {"type": "sticker", "media": {"mimetype": "image/webp", "sha256": sha256(WEBP)}}),
    ({"type": "location", "location": {"latitude": 52.52, "longitude": 13.405}},
     {"type": "location", "hasMedia": False}),
    ({"type": "contact", "contact": {"name": "Bob", "phoneNumber": "+15550001111"}},
     {"type": "contact"}),
    ({"type": "poll", "poll": {"question": "Lunch?", "options": ["yes", "no"]}},
     {"type": "poll", "text": "Lunch?"}),
]


async def test_every_type_comes_in_on_the_websocket_and_the_webhook(tmp_path: Path) -> None:
    async with connected(tmp_path) as setup:
        ids = []
        for body, _ in INCOMING:
            r = await setup.api.post(f"/simulator/devices/{setup.sid}/messages",
                                     json={"from": PEER, **body})
            assert r.status_code == 200, (body, r.text)
            ids.append(r.json()["data"]["messageId"])
        await setup.until("message_received", len(INCOMING))
        for stream in (setup.seen, setup.hooked):
            shown = {e["data"]["messageId"]: e["data"] for e in stream("message_received")}
            assert len(shown) == len(INCOMING)
            for (body, expected), message_id in zip(INCOMING, ids, strict=True):
                data = shown[message_id]
                assert data["from"] == PEER_JID
                for key, value in expected.items():
                    if key == "media":
                        assert {k: data["media"][k] for k in value} == value, body
                    else:
                        assert data[key] == value, (body, key, data)
                media = body.get("media")
                if media is not None:
                    assert media["data"] not in json.dumps(data)  # never the bytes
