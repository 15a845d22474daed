"""Helpers for the webhook tests: a scriptable receiver on 127.0.0.1 and database set-up.

The receiver speaks HTTP/1.1 through h11, answers each request with the next entry of its
script (or 200 when the script is empty) and closes the connection. Script entries:

- ``500``, ``(302, {"location": "http://169.254.169.254/"})``: a status and headers;
- ``"hang"``: never answer (the sender's timeout fires and it closes the connection);
- ``"close"``: close the connection without answering.

``await receiver.down()`` closes the listening socket (connection refused) and
``await receiver.up()`` listens again on the same port.
"""

from __future__ import annotations

import collections
from base64 import b64decode
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import h11
import trio
from standardwebhooks.webhooks import Webhook

from common import clock
from storage import Repositories
from supervisor.webhooks import settings as webhook_settings
from supervisor.webhooks.settings import WebhookSettings


@attrs.frozen
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float  # trio.current_time() when the request was complete


@attrs.define(eq=False)
class Receiver:
    nursery: trio.Nursery
    script: collections.deque[Any] = attrs.field(factory=collections.deque)
    requests: list[Received] = attrs.field(factory=list)
    port: int = 0
    in_progress: int = 0
    max_in_progress: int = 0
    _scope: trio.CancelScope | None = None
    _arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def up(self) -> None:
        await self.nursery.start(self._serve)

    async def down(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        await trio.lowlevel.checkpoint()

    async def wait_requests(self, n: int) -> None:
        while len(self.requests) < n:
            self._arrived = trio.Event()
            await self._arrived.wait()

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            try:
                # Handlers live in the outer nursery: down() stops accepting, not answering.
                await trio.serve_listeners(
                    self._handle, listeners, handler_nursery=self.nursery, task_status=task_status
                )
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        self.in_progress += 1
        self.max_in_progress = max(self.max_in_progress, self.in_progress)
        try:
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            assert request is not None
            self.requests.append(
                Received(
                    method=request.method.decode(),
                    target=request.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in request.headers},
                    body=body,
                    at=trio.current_time(),
                )
            )
            self._arrived.set()
            action = self.script.popleft() if self.script else 200
            if action == "hang":
                # Never answer; return once the sender gives up and closes the connection.
                while await stream.receive_some(65536):
                    pass
                return
            if action == "close":
                return
            status, headers = (action, {}) if isinstance(action, int) else action
            await stream.send_all(
                conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[*headers.items(), ("content-length", "2"), ("connection", "close")],
                    )
                )
            )
            await stream.send_all(conn.send(h11.Data(data=b"ok")))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            self.in_progress -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def start_receiver(nursery: trio.Nursery, *script: Any) -> Receiver:
    receiver = Receiver(nursery, collections.deque(script))
    await receiver.up()
    return receiver


async def add_device(db: Any, alias: str = "shop") -> tuple[int, str]:
    """Insert a device straight into storage; return (id, session_id)."""
    session_id = f"user_u1_device_{alias}"

    def insert(r: Repositories) -> int:
        row = r.devices.insert(
            user_id="u1",
            alias=alias,
            session_id=session_id,
            business_type=None,
            phone_number=None,
            description=None,
            api_key_hash="h" + alias,
            status="connected",
            now=clock.now_iso(),
        )
        return row.id

    return await db.run(insert), session_id


async def configure(
    db: Any, device_id: int, url: str, **body: Any
) -> tuple[dict[str, Any], str | None]:
    """Store webhook settings as the API would (no SSRF check); return (stored, new secret)."""
    existing = await db.run(lambda r: r.outbox.get_webhook_settings(device_id))
    settings, generated = webhook_settings.normalize(
        {"url": url, **body},
        None if existing is None else WebhookSettings.from_stored(existing),
        now=clock.now_epoch(),
    )
    stored = settings.to_stored()
    await db.run(lambda r: r.outbox.put_webhook_settings(device_id, stored))
    return stored, generated


async def stored_settings(db: Any, device_id: int) -> WebhookSettings:
    """The device's webhook settings as stored."""
    stored = await db.run(lambda r: r.outbox.get_webhook_settings(device_id))
    assert stored is not None
    return WebhookSettings.from_stored(stored)


def envelope(session_id: str, type_: str = "message_received", **data: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "sessionId": session_id,
        "data": data or {"messageId": "m1", "text": "hello"},
        "timestamp": clock.now_iso(),
    }


async def enqueue(db: Any, device_id: int, *events: dict[str, Any]) -> int:
    return int(await db.run(lambda r: webhook_settings.enqueue(r, device_id, list(events))))


def signed_by(secret: str | bytes, request: Received) -> bool:
    """Whether ``request`` carries a signature by ``secret``, checked with the
    ``standardwebhooks`` package (its ``sign``: ``verify`` would also demand the timestamp be
    within 5 minutes of the wall clock, which virtual time leaves far behind)."""
    wh = Webhook(secret)
    timestamp = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), tz=UTC)
    expected = wh.sign(request.headers["webhook-id"], timestamp, request.body.decode())
    offered = request.headers["webhook-signature"].split(" ")
    return any(b64decode(expected[3:]) == b64decode(sig[3:]) for sig in offered)


def database_path(tmp_path: Path) -> Path:
    return tmp_path / "wasup.db"
