"""Helpers for the media send tests: small real files of each kind, and a file server.

The sample files are what libmagic recognizes (a PNG drawn by pypng, the first bytes of the
other formats): enough for wasup's detection, never decoded by anything. ``FileServer``
answers ``GET /<name>`` on 127.0.0.1 with the file registered under that name, or with a
scripted answer::

    async with trio.open_nursery() as nursery:
        server = await start_file_server(nursery)
        server.files["cat.png"] = PNG
        server.routes["/moved"] = (302, {"location": "/cat.png"})
        server.url("cat.png")                   # http://127.0.0.1:<port>/cat.png
        server.chunked = True                    # no Content-Length: the client must count

A route set to ``"hang"`` never answers.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import attrs
import h11
import png
import trio


def _png() -> bytes:
    out = io.BytesIO()
    png.Writer(4, 4, greyscale=True).write(out, [[0, 85, 170, 255]] * 4)
    return out.getvalue()


PNG = _png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64)
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;" + bytes(16)
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00" + bytes(24)
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08free"
OGG = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01" + bytes(20)
MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 20
CSV = b"name,amount\nana,3\nbo,4\n"

#: A file of each media type, and the mimetype wasup detects for it.
SAMPLES: dict[str, tuple[bytes, str]] = {
    "image": (PNG, "image/png"),
    "video": (MP4, "video/mp4"),
    "audio": (MP3, "audio/mpeg"),
    "document": (PDF, "application/pdf"),
    "sticker": (WEBP, "image/webp"),
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@attrs.define(eq=False)
class FileServer:
    port: int = 0
    files: dict[str, bytes] = attrs.field(factory=dict)
    routes: dict[str, Any] = attrs.field(factory=dict)
    chunked: bool = False
    requests: list[str] = attrs.field(factory=list)
    #: Bytes of the body the server managed to send, per request (a cut-off fetch sends less).
    sent: list[int] = attrs.field(factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name.lstrip('/')}"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode()
                    break
                return
            self.requests.append(target)
            action = self.routes.get(target)
            if action == "hang":
                while await stream.receive_some(65536):
                    pass
                return
            if action is not None:
                status, headers = action
                await stream.send_all(conn.send(h11.Response(
                    status_code=status,
                    headers=[*headers.items(), ("content-length", "0"), ("connection", "close")])))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                return
            data = self.files.get(target.lstrip("/"))
            if data is None:
                await stream.send_all(conn.send(h11.Response(
                    status_code=404, headers=[("content-length", "0"), ("connection", "close")])))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                return
            length = [] if self.chunked else [("content-length", str(len(data)))]
            await stream.send_all(conn.send(h11.Response(
                status_code=200, headers=[*length, ("connection", "close")])))
            sent = 0
            self.sent.append(0)
            for start in range(0, len(data), 16384):
                await stream.send_all(conn.send(h11.Data(data=data[start:start + 16384])))
                sent += len(data[start:start + 16384])
                self.sent[-1] = sent
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def start_file_server(nursery: trio.Nursery) -> FileServer:
    """A :class:`FileServer` on 127.0.0.1, serving until ``nursery`` is cancelled."""
    server = FileServer()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, server.handle, listeners)
    return server
