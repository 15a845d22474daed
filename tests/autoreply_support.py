"""Test helpers for auto-reply: a fake OpenAI-compatible provider on 127.0.0.1.

The provider is a raw Trio + h11 HTTP/1.1 server on port 0 that records every request
(path, headers, JSON body) and answers from a script: ``("reply", text)``, ``("status", 500)``,
``("hang",)`` (never answers) or ``("garbage",)`` (200 with a body that is not JSON). Without a
script entry it answers ``"echo: <last user message>"``.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import Any

import attrs
import h11
import trio


@attrs.define(eq=False)
class FakeProvider:
    requests: list[dict[str, Any]] = attrs.field(factory=list)
    script: collections.deque[tuple[Any, ...]] = attrs.field(factory=collections.deque)
    port: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, nursery: trio.Nursery) -> FakeProvider:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
        )
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def wait_requests(self, n: int) -> None:
        while len(self.requests) < n:
            await self._changed.wait()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
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
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                record = {
                    "method": request.method.decode(),
                    "path": request.target.decode(),
                    "headers": {k.decode().lower(): v.decode() for k, v in request.headers},
                    "json": json.loads(body) if body else None,
                }
                self.requests.append(record)
                self._changed.set()
                self._changed = trio.Event()
                action = self.script.popleft() if self.script else ("echo",)
                status, payload = 200, b""
                if action[0] == "hang":
                    await trio.sleep_forever()
                elif action[0] == "status":
                    status, payload = action[1], b'{"error": {"message": "boom"}}'
                elif action[0] == "garbage":
                    payload = b"<html>not json</html>"
                else:
                    if action[0] == "reply":
                        text = action[1]
                    else:
                        msgs = (record["json"] or {}).get("messages") or [{}]
                        text = "echo: " + str(msgs[-1].get("content"))
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    ).encode()
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(payload))),
                ]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
