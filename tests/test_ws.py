"""The WebSocket event stream, end to end over real sockets.

Testing rules (as trio-websocket's own suite): servers listen on 127.0.0.1 port 0 and are
started here (``api.server.serve``, as ``wasup serve`` runs it); every I/O test has an
absolute Trio-clock deadline (``fail_after``); tests that wait on a timeout (keep-alive
pings, a stalled send, a device key's revalidation) use a MockClock that runs at real speed
while the server starts and stops, and autojumps only inside ``jumping(...)``: starting and
stopping wait on the database thread, which autojump would take for idleness and jump past.
Inside, no database work is in flight (the flooding tests publish synthetic events straight
onto the bus), so 25 s of pinging takes no real time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from werkzeug.datastructures import MultiDict

from api.logging import redact
from api.ratelimit import RateLimitPolicy
from api.state import ApiSettings, WsSettings
from api.ws import endpoint as api_ws
from api.ws import transport
from api.ws.endpoint import streams_of
from api.ws.handshake import StreamFilter
from common.clock import now_iso
from supervisor.devices import Devices
from supervisor.errors import InvalidRequest
from supervisor.events import DeviceSelection, Event
from supervisor.payloads import MessageStatusChanged
from tests.conftest import running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

TOKEN = "op-token-for-ws-tests-0123456789"
TIMEOUT = 30  # seconds of Trio clock for any one I/O test
ENVELOPE_KEYS = {"id", "type", "sessionId", "data", "timestamp"}
#: Ids of the synthetic events, far above those of the log.
SYNTHETIC_IDS = 10**12


@attrs.frozen
class Server:
    sup: Devices
    app: Any
    http_url: str
    ws_url: str

    def client(self, token: str = TOKEN) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http_url + "/api/whatsapp", headers={"X-API-TOKEN": token}
        )


@asynccontextmanager
async def serve(
    tmp_path: Path,
    *,
    queue_size: int = 256,
    send_timeout: float = 30.0,
    max_per_credential: int = 64,
    settings: ApiSettings | None = None,
    **config: Any,
) -> AsyncIterator[Server]:
    """wasup as ``wasup serve`` runs it (``api.server.serve``: Hypercorn configured with
    keep-alive pings every 25 s and redacted logs), with the simulator engine; the queue
    size is the configuration's ``event_queue_size``."""
    settings = settings or ApiSettings(graceful_timeout=1.0)
    ws = WsSettings(send_timeout=send_timeout, max_per_credential=max_per_credential)
    async with running_server(
        tmp_path / "data", api_token=TOKEN, simulator_latency=0.05,
        event_queue_size=queue_size, settings=attrs.evolve(settings, ws=ws), **config,
    ) as server:
        try:
            yield Server(
                sup=server.sup, app=server.app, http_url=server.url,
                ws_url=server.url.replace("http", "ws", 1),
            )
        except trio.Cancelled as exc:
            # The server's nursery is cancelled when it shuts down and would swallow this:
            # make a test body that was cut short fail loudly instead (a deadline, or a stray
            # Cancelled from a client library).
            raise AssertionError("the test body was cancelled") from exc


@asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """``open_websocket_url``, plus one ping round trip before the body.

    Hypercorn pings as soon as it accepts. If the client closed while that ping was still
    unanswered, trio-websocket's reader would fail to pong in the closing state and let a
    stray ``Cancelled`` escape (a client-side bug), which a surrounding nursery could swallow,
    silently skipping the rest of a test. After our own ping returns, the server's ping has
    been answered.
    """
    async with open_websocket_url(url, **kwargs) as conn:
        await conn.ping()
        yield conn


def close_reason(exc: pytest.ExceptionInfo[ConnectionClosed]) -> tuple[int, str | None]:
    reason = exc.value.reason
    assert reason is not None
    return reason.code, reason.reason


async def next_event(conn: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await conn.get_message()
    event = json.loads(message)
    assert set(event) == ENVELOPE_KEYS
    return event


async def wait_for(
    conn: trio_websocket.WebSocketConnection, type_: str, session_id: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first event of ``type_`` (for ``session_id``) and every event before it."""
    seen = []
    while True:
        event = await next_event(conn)
        seen.append(event)
        if event["type"] == type_ and (session_id is None or event["sessionId"] == session_id):
            return event, seen


async def create_device(client: httpx.AsyncClient, alias: str) -> dict[str, Any]:
    response = await client.post("/devices", json={"userId": "user123", "alias": alias})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def scan(client: httpx.AsyncClient, device_id: int | str) -> None:
    response = await client.post(f"/simulator/devices/{device_id}/scan", json={})
    assert response.status_code == 200, response.text


def synthetic(i: int, size: int = 0, device_id: int = 1) -> Event:
    """A message_status event whose status is padded by ``size`` bytes (published straight on
    the bus; no other subscriber of the server, such as auto-reply, listens to this type)."""
    return Event(
        session_id=f"user_bench_device_{device_id}",
        device_id=device_id,
        data=MessageStatusChanged(message_id=f"m{i}", status="delivered" + "x" * size),
        timestamp=now_iso(),
        id=SYNTHETIC_IDS + i,
    )


@contextmanager
def jumping(clock: trio.testing.MockClock) -> Iterator[None]:
    """Autojump only inside: opening and closing the database waits on a thread, which the
    autojump clock would mistake for idleness and jump past; outside, time runs as usual."""
    clock.rate, clock.autojump_threshold = 0.0, 0.0
    try:
        yield
    finally:
        clock.rate, clock.autojump_threshold = 1.0, math.inf


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """A MockClock that runs at real speed until a test turns autojump on with ``jumping``."""
    return trio.testing.MockClock(rate=1.0)


# -- pure parts -------------------------------------------------------------------------------


def test_filter_parsing() -> None:
    f = StreamFilter.from_query(
        MultiDict({"sessionId": "a, b,,", "events": "qr_code,device_connected"})
    )
    assert f.refs == frozenset({"a", "b"})
    assert f.types == frozenset({"qr_code", "device_connected"})
    assert StreamFilter.from_query(MultiDict()) == StreamFilter(None, None)
    with pytest.raises(InvalidRequest) as exc:
        StreamFilter.from_query(MultiDict({"events": "qr_code,nope"}))
    assert exc.value.field == "events"


def test_filter_selects_by_id_and_session_id() -> None:
    f = StreamFilter.from_query(MultiDict({"sessionId": "7,user_a_device_b,\u00b3"}))
    assert f.selection == DeviceSelection(
        ids=frozenset({7}), session_ids=frozenset({"user_a_device_b"})
    )
    event = synthetic(1, device_id=7)
    assert f.selection is not None and f.selection.matches(event)
    assert f.selection.matches(attrs.evolve(event, device_id=9, session_id="user_a_device_b"))
    assert not f.selection.matches(attrs.evolve(event, device_id=3))  # not "³"
    assert StreamFilter().selection is None


def test_event_is_encoded_once() -> None:
    event = synthetic(1, 3)
    text = event.json_text
    assert json.loads(text) == event.to_json()
    assert event.json_text is text
    twin = attrs.evolve(event)
    assert twin.json_text == text and twin.json_text is not text


def test_abort_without_a_socket_reports_false() -> None:
    class NotHypercorn:
        _send = None

    assert transport.abort(NotHypercorn()) is False  # type: ignore[arg-type]


async def test_find_socket_stream_under_hypercorn(tmp_path: Path) -> None:
    """The contract of api.ws.transport with Quart 0.22.0 and Hypercorn 0.18.0: from a
    connection's Websocket, the walk reaches the TCP socket of exactly that connection."""
    assert transport.VERIFIED == {"quart": "0.22.0", "hypercorn": "0.18.0"}
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            async with connect(f"{server.ws_url}/?token={TOKEN}") as conn:
                (stream,) = streams_of(server.app).streams
                found = transport.find_socket_stream(stream.ws)
                assert isinstance(found, trio.SocketStream)
                assert found.socket.getpeername()[1] == conn.local.port


async def test_client_messages_are_discarded(tmp_path: Path) -> None:
    """The stream ignores what a client sends (within 64 KiB), and a bigger frame closes the
    connection with 1009 instead of being buffered."""
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            async with connect(f"{server.ws_url}/?token={TOKEN}") as conn:
                for _ in range(50):  # more than Quart's inbox of 10 would hold
                    await conn.send_message('{"type":"ping"}')
                server.sup.bus.publish(synthetic(1))
                event = await next_event(conn)
                assert event["data"]["messageId"] == "m1"
                await conn.send_message("x" * (api_ws.MAX_CLIENT_MESSAGE + 1))
                with pytest.raises(ConnectionClosed) as exc:
                    await conn.get_message()
                assert close_reason(exc)[0] == 1009


def test_redact() -> None:
    line = '127.0.0.1:5 - - "GET /?token=s3cret&sessionId=x 1.1" 101 "dev_abcdefghijklmnop"'
    out = redact(line)
    assert "s3cret" not in out and "abcdefghijklmnop" not in out
    assert "sessionId=x" in out


# -- authentication ---------------------------------------------------------------------------


async def test_token_in_query_header_and_subprotocol(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            async with connect(f"{server.ws_url}/?token={TOKEN}") as conn:
                assert conn.subprotocol is None
            async with connect(
                server.ws_url + "/", extra_headers=[(b"X-API-TOKEN", TOKEN.encode())]
            ) as conn:
                assert conn.subprotocol is None
            # A browser offers the token as a subprotocol; the server must echo one it offered.
            async with connect(server.ws_url + "/", subprotocols=[TOKEN]) as conn:
                assert conn.subprotocol == TOKEN
            async with connect(
                server.ws_url + "/", subprotocols=["wasup", TOKEN]
            ) as conn:
                assert conn.subprotocol == "wasup"  # the secret is not reflected
            async with connect(f"{server.ws_url}/?token={TOKEN}", subprotocols=["wasup"]) as conn:
                assert conn.subprotocol == "wasup"
            async with server.client() as client:
                device = await create_device(client, "Auth Check")
            async with connect(
                server.ws_url + "/", subprotocols=[device["apiKey"]]
            ) as conn:
                assert conn.subprotocol == device["apiKey"]


async def test_a_bad_token_anywhere_refuses_the_handshake(tmp_path: Path) -> None:
    """docs/websocket.md: every offered credential must be valid and name one credential."""
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            async with server.client() as client:
                key = (await create_device(client, "Rule Check"))["apiKey"]
            good = [(b"X-API-TOKEN", TOKEN.encode())]
            refused: list[tuple[str, dict[str, Any], str]] = [
                ("/?token=wrong", {"extra_headers": good}, "invalid api token"),
                ("/?token=", {"extra_headers": good}, "invalid api token"),
                (f"/?token={TOKEN}", {"extra_headers": [(b"X-API-TOKEN", b"wrong")]},
                 "invalid api token"),
                (f"/?token={TOKEN}&token=wrong", {}, "invalid api token"),
                (f"/?token={TOKEN}", {"subprotocols": ["wasup", "wrong"]}, "invalid api token"),
                ("/", {"subprotocols": [TOKEN, "wrong"]}, "invalid api token"),
                (f"/?token={TOKEN}", {"extra_headers": [(b"X-API-TOKEN", key.encode())]},
                 "conflicting api tokens"),
            ]
            for suffix, kwargs, message in refused:
                with pytest.raises(ConnectionRejected) as exc:
                    async with open_websocket_url(server.ws_url + suffix, **kwargs):
                        pass  # pragma: no cover
                assert exc.value.status_code == 401, (suffix, kwargs)
                assert exc.value.body is not None
                assert json.loads(exc.value.body)["error"] == message, (suffix, kwargs)
            # The same valid token twice, in two places, is one credential.
            async with connect(f"{server.ws_url}/?token={TOKEN}", extra_headers=good) as conn:
                assert conn.subprotocol is None
            assert api_ws.open_streams(server.app) == 0


@pytest.mark.parametrize(
    ("suffix", "kwargs", "message"),
    [
        ("/", {}, "missing api token"),
        ("/?token=wrong", {}, "invalid api token"),
        ("/", {"extra_headers": [(b"X-API-TOKEN", b"wrong")]}, "invalid api token"),
        ("/", {"subprotocols": ["wrong"]}, "invalid api token"),
        ("/?token=dev_notakeyatall0000000000000000", {}, "invalid api token"),
    ],
)
async def test_unauthenticated_handshake_is_refused(
    tmp_path: Path, suffix: str, kwargs: dict[str, Any], message: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(server.ws_url + suffix, **kwargs):
                    pass  # pragma: no cover
            assert exc.value.status_code == 401
            assert exc.value.body is not None
            body = json.loads(exc.value.body)
            assert body == {"success": False, "error": message, "code": "AUTHENTICATION_FAILED"}
            assert api_ws.open_streams(server.app) == 0


async def test_bad_filter_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(f"{server.ws_url}/?token={TOKEN}&events=bogus"):
                    pass  # pragma: no cover
            assert exc.value.status_code == 400
            assert exc.value.body is not None
            body = json.loads(exc.value.body)
            assert body["code"] == "INVALID_REQUEST" and body["field"] == "events"


async def test_handshake_is_rate_limited_per_credential(tmp_path: Path) -> None:
    settings = ApiSettings(rate_limit=RateLimitPolicy(rate=0.001, burst=2))
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path, settings=settings) as server:
            for _ in range(2):
                async with connect(f"{server.ws_url}/?token={TOKEN}"):
                    pass
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(f"{server.ws_url}/?token={TOKEN}"):
                    pass  # pragma: no cover
            assert exc.value.status_code == 429
            headers = dict(exc.value.headers or ())
            assert b"retry-after" in headers and b"ratelimit" in headers
            assert exc.value.body is not None
            assert json.loads(exc.value.body)["code"] == "RATE_LIMIT_EXCEEDED"


async def test_connections_per_credential_are_capped(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path, max_per_credential=2) as server, server.client() as client:
            device = await create_device(client, "Capped")
            url = f"{server.ws_url}/?token={TOKEN}"
            async with connect(url), connect(url):
                with pytest.raises(ConnectionRejected) as exc:
                    async with open_websocket_url(url):
                        pass  # pragma: no cover
                assert exc.value.status_code == 429
                # Another credential has its own allowance.
                async with connect(f"{server.ws_url}/?token={device['apiKey']}"):
                    assert api_ws.open_streams(server.app) == 3
            async with connect(url):  # the slots are free again
                pass


# -- the seed's flow --------------------------------------------------------------------------


async def test_seed_flow_qr_then_connected(tmp_path: Path) -> None:
    """The seed's DeviceMonitor: ws://host:port?token=..., create over HTTP, qr_code, scan,
    device_connected; every message is the envelope {type, sessionId, data, timestamp}."""
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            # The seed writes `ws://localhost:3001?token=...` (no slash before the query).
            async with connect(f"{server.ws_url}?token={TOKEN}") as conn:
                device = await create_device(client, "Business Account 1")
                session_id = device["sessionId"]
                assert session_id == "user_user123_device_business-account-1"
                qr, _ = await wait_for(conn, "qr_code", session_id)
                assert qr["data"]["qrCode"].startswith("data:image/png;base64,")
                assert qr["data"]["attempt"] == 1
                assert set(qr["data"]) >= {"qrCode", "qrString", "expiresAt", "attempt",
                                           "maxAttempts"}
                assert qr["timestamp"].endswith("Z")
                await scan(client, device["id"])
                connected, before = await wait_for(conn, "device_connected", session_id)
                assert connected["sessionId"] == session_id
                statuses = [e["data"]["to"] for e in before if e["type"] == "device_status"]
                assert statuses[-1:] == ["connected"]
                response = await client.get(f"/devices/{session_id}")
                assert response.json()["data"]["status"] == "connected"
                # An incoming message: the seed's message_received.
                response = await client.post(
                    f"/simulator/devices/{device['id']}/messages",
                    json={"from": "+15550001111", "text": "hello wasup"},
                )
                assert response.status_code == 200, response.text
                received, _ = await wait_for(conn, "message_received", session_id)
                assert received["data"]["text"] == "hello wasup"
                assert set(received["data"]) >= {"messageId", "from", "chat", "text", "timestamp"}
                # The phone unlinks the device: device_logged_out.
                await client.post(f"/simulator/devices/{device['id']}/unlink", json={})
                logged_out, _ = await wait_for(conn, "device_logged_out", session_id)
                assert "reason" in logged_out["data"]


async def test_device_key_sees_only_its_device(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            mine = await create_device(client, "Mine")
            other = await create_device(client, "Other")
            url = f"{server.ws_url}/?token={mine['apiKey']}"
            async with connect(url) as conn:
                # The other device's events come first; the key must not see them.
                await scan(client, other["id"])
                async with connect(f"{server.ws_url}/?token={TOKEN}") as operator:
                    await wait_for(operator, "device_connected", other["sessionId"])
                await scan(client, mine["id"])
                _, seen = await wait_for(conn, "device_connected", mine["sessionId"])
                assert {e["sessionId"] for e in seen} == {mine["sessionId"]}
            # Asking for the other device by filter does not widen what the key may see.
            url = (
                f"{server.ws_url}/?token={other['apiKey']}"
                f"&sessionId={mine['sessionId']},{other['sessionId']}&events=device_disconnected"
            )
            async with connect(url) as conn:
                await client.post(f"/simulator/devices/{mine['id']}/disconnect", json={})
                await client.post(f"/simulator/devices/{other['id']}/disconnect", json={})
                event = await next_event(conn)
                assert event["sessionId"] == other["sessionId"]


async def test_filters_by_session_and_event_type(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            a = await create_device(client, "Alpha")
            b = await create_device(client, "Beta")
            url = (
                f"{server.ws_url}/?token={TOKEN}&sessionId={a['sessionId']},nobody"
                "&events=device_connected,device_disconnected"
            )
            async with connect(url) as conn, connect(
                f"{server.ws_url}/?token={TOKEN}&sessionId={b['id']}&events=device_connected"
            ) as by_id:
                await scan(client, b["id"])
                await scan(client, a["id"])
                event = await next_event(conn)
                assert (event["type"], event["sessionId"]) == ("device_connected", a["sessionId"])
                event = await next_event(by_id)
                assert (event["type"], event["sessionId"]) == ("device_connected", b["sessionId"])
                await client.post(f"/simulator/devices/{a['id']}/disconnect", json={})
                event = await next_event(conn)
                assert event["type"] == "device_disconnected"
                assert event["sessionId"] == a["sessionId"]
                assert "reason" in event["data"]


async def test_filtered_connection_is_not_dropped_for_other_devices(tmp_path: Path) -> None:
    """A connection filtered to one device subscribes to that device only: a flood of other
    devices' events, far beyond its queue, neither reaches it nor gets it dropped as slow."""
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path, queue_size=8) as server, server.client() as client:
            mine = await create_device(client, "Mine")
            url = (
                f"{server.ws_url}/?token={TOKEN}&sessionId={mine['sessionId']}"
                "&events=message_status"
            )
            async with connect(url) as conn:
                bus = server.sup.bus
                dropped = bus.dropped_subscribers
                for i in range(100):  # published back to back: no chance to read in between
                    bus.publish(synthetic(i, device_id=mine["id"] + 1000))
                bus.publish(
                    attrs.evolve(synthetic(100, device_id=mine["id"]), session_id=mine["sessionId"])
                )
                event = await next_event(conn)
                assert event["data"]["messageId"] == "m100"
                assert bus.dropped_subscribers == dropped


async def test_filter_naming_no_device_is_accepted(tmp_path: Path) -> None:
    """References to no device (non-ASCII digits among them) select nothing, no error."""
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            mine = await create_device(client, "Mine")
            url = f"{server.ws_url}/?token={TOKEN}&sessionId=%C2%B3,nobody,{mine['id']}"
            async with connect(url) as conn:
                server.sup.bus.publish(synthetic(1, device_id=mine["id"] + 1))
                server.sup.bus.publish(synthetic(2, device_id=mine["id"]))
                event = await next_event(conn)
                assert event["data"]["messageId"] == "m2"


async def test_one_encoding_for_many_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event sent to several connections is encoded to JSON once."""
    encoded: list[Event] = []
    wire_data = Event.wire_data

    def counting(self: Event) -> str:
        encoded.append(self)
        return wire_data(self)

    monkeypatch.setattr(Event, "wire_data", counting)
    event = synthetic(1)
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            url = f"{server.ws_url}/?token={TOKEN}&events=message_status"
            async with connect(url) as a, connect(url) as b, connect(url) as c:
                server.sup.bus.publish(event)
                for conn in (a, b, c):
                    assert (await next_event(conn))["data"]["messageId"] == "m1"
    assert sum(1 for e in encoded if e is event) == 1


# -- slow consumers ---------------------------------------------------------------------------


@attrs.define(eq=False)
class Collector:
    """Reads a connection in the background, so that it keeps up."""

    received: list[dict[str, Any]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, conn: trio_websocket.WebSocketConnection) -> None:
        try:
            while True:
                self.received.append(json.loads(await conn.get_message()))
                self._changed.set()
                self._changed = trio.Event()
        except ConnectionClosed:
            return

    async def wait(self, predicate: Any) -> None:
        while not predicate(self.received):
            await self._changed.wait()


async def _flood_until_dropped(server: Server, size: int, limit: int = 5000) -> int:
    """Publish events (letting every task run in between) until the bus drops a subscriber."""
    bus = server.sup.bus
    dropped = bus.dropped_subscribers
    for i in range(limit):
        bus.publish(synthetic(i, size))
        await trio.testing.wait_all_tasks_blocked()
        if bus.dropped_subscribers > dropped:
            return i + 1
    raise AssertionError("no subscriber was dropped")


async def test_slow_consumer_is_closed_with_1013(tmp_path: Path) -> None:
    """A client that stops reading fills its socket, then its bounded queue; the bus drops
    it and it is closed with 1013 once the server can write again. The other subscriber and
    the actors are not held up."""
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path, queue_size=8, send_timeout=0) as server:
            url = f"{server.ws_url}/?token={TOKEN}"
            async with server.client() as client, connect(
                url
            ) as slow, connect(url) as fast, trio.open_nursery() as nursery:
                collector = Collector()
                received = collector.received
                nursery.start_soon(collector.run, fast)
                base = server.sup.bus.subscriber_count
                published = await _flood_until_dropped(server, size=16_000)
                # More than the queue holds: the pump sent until TCP pushed back first.
                assert published > 8 + 1
                assert server.sup.bus.subscriber_count == base - 1  # the fast one is left
                # The actors go on: a device is created, pairs and connects meanwhile.
                device = await create_device(client, "Still Working")
                await scan(client, device["id"])
                with trio.fail_after(10):
                    await collector.wait(lambda events: any(
                        e["type"] == "device_connected" and e["sessionId"] == device["sessionId"]
                        for e in events
                    ))
                assert [e["data"]["messageId"] for e in received[:published]] == [
                    f"m{i}" for i in range(published)
                ]
                # The slow client reads at last: what was in flight, then the close code.
                got = 0
                with pytest.raises(ConnectionClosed) as exc:
                    while True:
                        await slow.get_message()
                        got += 1
                assert close_reason(exc) == (1013, "subscriber too slow")
                assert got < published
                nursery.cancel_scope.cancel()


async def test_client_that_never_reads_is_aborted(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Hypercorn's socket write cannot be cancelled, so a peer that never reads would pin its
    connection forever: the send watchdog resets the connection after the send timeout."""
    with trio.fail_after(TIMEOUT * 10):
        async with serve(tmp_path, queue_size=8, send_timeout=10) as server:
            url = f"{server.ws_url}/?token={TOKEN}"
            async with connect(url) as stuck, connect(
                url
            ) as fast, trio.open_nursery() as nursery:
                collector = Collector()
                received = collector.received
                nursery.start_soon(collector.run, fast)
                base = server.sup.bus.subscriber_count
                with jumping(mock_clock):
                    published = await _flood_until_dropped(server, size=16_000)
                    assert api_ws.open_streams(server.app) == 2  # one stuck in its send
                    # The watchdog fires within 15 s (virtual), well before Hypercorn's
                    # read timeout (60 s), which could not help: it waits for the stuck send.
                    await trio.sleep(20)
                    assert api_ws.open_streams(server.app) == 1
                    assert server.sup.bus.subscriber_count == base - 1
                    server.sup.bus.publish(synthetic(published, 10))
                    with trio.fail_after(5):
                        await collector.wait(lambda events: len(events) > published)
                    assert received[-1]["data"]["messageId"] == f"m{published}"
                    # The stuck client finds its connection reset (no close frame could go out).
                    with pytest.raises(ConnectionClosed) as exc:
                        while True:
                            await stuck.get_message()
                    assert close_reason(exc)[0] == 1006
                nursery.cancel_scope.cancel()


# -- keep-alive -------------------------------------------------------------------------------


async def _ws_handshake(port: int) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """A bare wsproto client, so the test sees (and may ignore) the server's pings."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = wsproto.events.Request(host="127.0.0.1", target=f"/?token={TOKEN}")
    await stream.send_all(client.send(request))
    while True:
        client.receive_data(await stream.receive_some())
        if any(isinstance(e, wsproto.events.AcceptConnection) for e in client.events()):
            return stream, client


async def test_server_pings_and_closes_a_silent_peer(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Hypercorn pings every interval; a peer that answers nothing is closed after
    ``read_timeout`` (2 intervals + 10 s = 60 s). A peer that answers stays."""
    with trio.fail_after(TIMEOUT * 10):
        async with serve(tmp_path) as server:
            port = int(server.http_url.rsplit(":", 1)[1])
            silent, silent_ws = await _ws_handshake(port)
            polite, polite_ws = await _ws_handshake(port)
            base = server.sup.bus.subscriber_count
            with jumping(mock_clock):
                start = trio.current_time()
                pings = 0
                while pings < 4:  # the polite peer answers four pings (75 s and more)
                    polite_ws.receive_data(await polite.receive_some())
                    for event in polite_ws.events():
                        if isinstance(event, wsproto.events.Ping):
                            pings += 1
                            await polite.send_all(polite_ws.send(event.response()))
                assert 75 <= trio.current_time() - start <= 110
                # The silent peer got pings too, never answered, and was closed at 60 s.
                got_pings = 0
                while data := await silent.receive_some():
                    silent_ws.receive_data(data)
                    got_pings += sum(
                        isinstance(e, wsproto.events.Ping) for e in silent_ws.events()
                    )
                assert got_pings >= 1
                assert server.sup.bus.subscriber_count == base - 1
            await polite.aclose()
            await silent.aclose()


async def test_deleted_device_key_stream_is_closed(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """A device key's stream re-checks its device every 30 s (virtual here)."""
    with trio.fail_after(TIMEOUT * 10):
        async with serve(tmp_path) as server, server.client() as client:
            device = await create_device(client, "Short Lived")
            async with connect(f"{server.ws_url}/?token={device['apiKey']}") as conn:
                response = await client.delete(f"/devices/{device['id']}")
                assert response.status_code == 200
                with jumping(mock_clock):
                    with pytest.raises(ConnectionClosed) as exc:
                        while True:  # events from before the deletion, then the close
                            await conn.get_message()
                    assert close_reason(exc) == (1008, "credential no longer valid")
            # The key is dead for new connections too.
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"{server.ws_url}/?token={device['apiKey']}"):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 401


# -- shutdown and logs ------------------------------------------------------------------------


async def test_graceful_shutdown_closes_with_1001(tmp_path: Path) -> None:
    checked = False
    with trio.fail_after(TIMEOUT):
        async with running_server(tmp_path / "data", api_token=TOKEN) as server:
            async with connect(f"{server.ws_url}?token={TOKEN}") as conn:
                server.shutdown()
                with pytest.raises(ConnectionClosed) as exc:
                    await conn.get_message()
                assert close_reason(exc) == (1001, "server shutting down")
                checked = True
    assert checked  # the server's nursery, cancelled once it stops, did not cut us short


async def test_handshake_during_shutdown_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server:
            api_ws.close_streams(server.app)  # what a graceful shutdown does first
            with pytest.raises(ConnectionRejected) as exc:
                async with open_websocket_url(f"{server.ws_url}/?token={TOKEN}"):
                    pass  # pragma: no cover
            assert exc.value.status_code == 503
            assert exc.value.body is not None
            assert json.loads(exc.value.body)["code"] == "SERVICE_UNAVAILABLE"


async def test_tokens_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(TIMEOUT):
        async with serve(tmp_path) as server, server.client() as client:
            device = await create_device(client, "Quiet")
            key = device["apiKey"]
            for url, kwargs in [
                (f"{server.ws_url}/?token={TOKEN}&events=qr_code", {}),
                (f"{server.ws_url}/?token={key}", {}),
                (server.ws_url + "/", {"subprotocols": [key]}),
                (server.ws_url + "/", {"extra_headers": [(b"X-API-TOKEN", TOKEN.encode())]}),
            ]:
                async with connect(url, **kwargs):
                    pass
            with pytest.raises(ConnectionRejected):
                async with open_websocket_url(f"{server.ws_url}/?token={key}x"):
                    pass  # pragma: no cover
    access = [r for r in caplog.records if r.name == "wasup.access"]
    assert len(access) >= 5  # one per handshake
    opened = [r for r in caplog.records if r.getMessage().startswith("websocket opened")]
    assert len(opened) == 4
    assert any("device:" in r.getMessage() for r in opened)
    for record in caplog.records:
        if not record.name.startswith(("wasup", "hypercorn", "quart", "supervisor", "api")):
            continue  # the test's own clients (httpx, trio-websocket) log their URLs
        text = record.getMessage() + str(record.exc_info or "")
        assert TOKEN not in text
        assert key[4:] not in text
