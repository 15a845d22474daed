"""Forwarding commands to a device's owner (api.cluster_forward), in process.

Node A is wasup's app over a fake supervisor whose cluster says which node owns which device;
the owner is a small HTTP server on a real socket that checks the signature as a node does and
answers with what it received, so a test sees exactly what went over the wire and what came
back to the caller. Every route of the app and of docs/openapi.yaml is classified.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
from quart import Response, request
from quart_trio import QuartTrio

from api import cluster_forward, cluster_signing
from api.app import create_app, routes
from api.openapi import load_spec, spec_routes
from api.ratelimit import RateLimitPolicy
from api.state import ApiSettings
from common.clock import now_epoch
from supervisor.config import ClusterConfig, Config
from supervisor.errors import DeviceNotFound

SECRET = "s3cret"
TOKEN = "operator-token"
DEVICE = 7


# -- the route table -------------------------------------------------------------------------


def _endpoints(app: QuartTrio) -> dict[tuple[str, str], str]:
    adapter = app.url_map.bind("localhost")
    found = {}
    for method, path in spec_routes(load_spec()):
        concrete = path.replace("{", "").replace("}", "")
        endpoint, _ = adapter.match(concrete, method=method)
        found[(method, path)] = str(endpoint)
    return found


def test_every_route_is_classified() -> None:
    app = create_app(_Sup(), TOKEN, ApiSettings(simulator_routes=True))
    served = {rule.endpoint for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" and not rule.websocket}
    assert served - set(cluster_forward.ROUTES) == set(), "classify these in ROUTES"
    described = _endpoints(app)
    assert len(described) == len(spec_routes(load_spec())) == len(routes(app))
    assert set(described.values()) <= set(cluster_forward.ROUTES)
    extra = set(cluster_forward.ROUTES) - served
    assert extra <= {"cluster.get_cluster"}, f"ROUTES names endpoints that do not exist: {extra}"


def test_commands_forward_and_reads_do_not() -> None:
    forwarded = {name for name, route in cluster_forward.ROUTES.items() if route is not None}
    for name in ("devices.login", "devices.logout", "devices.delete_device",
                 "devices.cancel_session", "messages.send_message", "messages.pair_code",
                 "actions.react", "media.get_media", "proxy.put_proxy", "contacts.check",
                 "groups.create_group", "simulator.scan", "ops.device_health"):
        assert name in forwarded, name
    for name in ("devices.get_device", "devices.list_devices", "devices.list_sessions",
                 "devices.get_qr", "history.list_messages", "events.list_events",
                 "ops.state_history", "webhooks.list_deliveries", "proxy.get_proxy"):
        assert name not in forwarded, name
    assert cluster_forward.ROUTES["media.get_media"] == cluster_forward.Forward(
        cluster_forward.Budget.MEDIA, stream=True)


def test_budgets_cover_the_owners_own_bounds() -> None:
    config, settings = Config(call_timeout=10.0), ApiSettings(qr_wait=2.0)
    budget = cluster_forward.budget
    command = budget(cluster_forward.Budget.COMMAND, config, settings)
    assert command > config.call_timeout
    assert budget(cluster_forward.Budget.LOGIN, config, settings) >= command + 2.0
    assert budget(cluster_forward.Budget.SEND, config, settings) > config.media.url_timeout
    assert budget(cluster_forward.Budget.MEDIA, config, settings) > config.media.download_timeout


# -- a fake cluster and owner ----------------------------------------------------------------


@attrs.frozen
class _Node:
    node_id: str
    advertise_url: str


@attrs.define
class _Cluster:
    owner_url: str | None
    mine: set[int] = attrs.field(factory=set)
    node_id: str = "node-a"
    secret: bytes = SECRET.encode()
    asked: int = 0

    def owns(self, device_id: int) -> bool:
        return device_id in self.mine

    async def owner(self, device_id: int) -> _Node | None:
        self.asked += 1
        return None if self.owner_url is None else _Node("node-b", self.owner_url)


class _Sup:
    def __init__(self, cluster: _Cluster | None = None, call_timeout: float = 10.0) -> None:
        self.engine = object()
        self.cluster = cluster
        self.config = Config(call_timeout=call_timeout, cluster=ClusterConfig(
            node_id="node-a", advertise_url="http://127.0.0.1:1", secret=SECRET,
            scan_seconds=2.0))

    async def device_for_key(self, key: str) -> Any:
        return None

    def resolve(self, ref: str | int) -> int:
        if str(ref) in (str(DEVICE), "user_u_device_d", "8"):
            return DEVICE if str(ref) != "8" else 8
        raise DeviceNotFound(ref)

    def get(self, ref: str | int) -> Any:
        raise DeviceNotFound(ref)  # a route that runs here answers 404

    async def find(self, ref: str | int) -> Any:
        raise DeviceNotFound(ref)  # as get; the forwarder resolves first


@attrs.define
class _Owner:
    """What the owner received; how it answers."""

    url: str = ""
    seen: list[dict[str, Any]] = attrs.field(factory=list)
    delay: float = 0.0
    payload: bytes = b""


def _owner_app(owner: _Owner) -> QuartTrio:
    app = QuartTrio("owner")

    @app.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def anything(rest: str) -> Response:
        body = await request.get_data()
        assert isinstance(body, bytes)
        path = request.scope["raw_path"]
        if request.scope["query_string"]:
            path += b"?" + request.scope["query_string"]
        node = cluster_signing.verify(SECRET.encode(), request.method, path, body,
                                      request.headers, now=now_epoch())
        owner.seen.append({"method": request.method, "path": path.decode(), "body": body,
                           "node": node, "headers": dict(request.headers)})
        await trio.sleep(owner.delay)
        if rest.endswith("/media"):
            response = Response(owner.payload, status=200, content_type="image/jpeg")
            response.headers["Content-Disposition"] = 'attachment; filename="a.jpg"'
            return response
        response = Response(json.dumps({"success": False, "error": "busy",
                                        "code": "SERVICE_UNAVAILABLE"}),
                            status=503, content_type="application/json")
        response.headers["Retry-After"] = "7"
        response.headers["X-Owner"] = "node-b"
        return response

    return app


async def _serve(nursery: trio.Nursery, app: QuartTrio) -> str:
    """Serve ``app`` on a free port until the test ends; its URL."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.1
    binds = await nursery.start(lambda task_status: hypercorn.trio.serve(
        app, config, task_status=task_status))
    return str(binds[0])


@pytest.fixture
async def owner(nursery: trio.Nursery) -> _Owner:
    state = _Owner()
    state.url = await _serve(nursery, _owner_app(state))
    return state


def _client(cluster: _Cluster, call_timeout: float = 10.0) -> Any:
    app = create_app(_Sup(cluster, call_timeout), TOKEN, ApiSettings(simulator_routes=True))
    return app.test_client()


def _forwards(client: Any, outcome: str) -> float:
    """``wasup_forwards_total{outcome}`` on the client's app."""
    [family] = client.app.extensions["wasup.forwards"].collect()
    return sum(float(sample.value) for sample in family.samples
               if sample.name == "wasup_forwards_total" and sample.labels == {"outcome": outcome})


async def test_a_command_goes_to_the_owner_and_its_answer_comes_back_unchanged(
    owner: _Owner,
) -> None:
    cluster = _Cluster(owner.url)
    client = _client(cluster)
    body = b'{"to": "+15550001", "text": "hi"}'
    response = await client.post(
        f"/api/whatsapp/devices/{DEVICE}/messages?dryRun=1&x=%2F", data=body,
        headers={"X-API-TOKEN": TOKEN, "Content-Type": "application/json",
                 "Idempotency-Key": "k-1", "Cookie": "not=forwarded"},
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-Owner"] == "node-b"
    assert response.content_type == "application/json"
    assert (await response.get_json())["code"] == "SERVICE_UNAVAILABLE"
    [seen] = owner.seen
    assert seen["method"] == "POST" and seen["body"] == body and seen["node"] == "node-a"
    assert seen["path"] == f"/api/whatsapp/devices/{DEVICE}/messages?dryRun=1&x=%2F"
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert headers["x-api-token"] == TOKEN and headers["idempotency-key"] == "k-1"
    assert "cookie" not in headers
    assert _forwards(client, "answered") == 1


async def test_a_session_reference_and_a_delete_forward_too(owner: _Owner) -> None:
    client = _client(_Cluster(owner.url))
    await client.post("/api/whatsapp/sessions/user_u_device_d/cancel",
                      headers={"X-API-TOKEN": TOKEN})
    await client.delete(f"/api/whatsapp/devices/{DEVICE}", headers={"X-API-TOKEN": TOKEN})
    assert [(s["method"], s["path"]) for s in owner.seen] == [
        ("POST", "/api/whatsapp/sessions/user_u_device_d/cancel"),
        ("DELETE", f"/api/whatsapp/devices/{DEVICE}"),
    ]


async def test_a_media_download_streams_through(owner: _Owner, nursery: trio.Nursery) -> None:
    owner.payload = bytes(range(256)) * 4096 * 4  # 4 MiB
    app = create_app(_Sup(_Cluster(owner.url)), TOKEN, ApiSettings())
    node_a = await _serve(nursery, app)
    async with httpx.AsyncClient() as client:
        async with client.stream(
            "GET", f"{node_a}/api/whatsapp/devices/{DEVICE}/messages/m1/media",
            headers={"X-API-TOKEN": TOKEN},
        ) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "image/jpeg"
            assert response.headers["Content-Length"] == str(len(owner.payload))
            assert response.headers["Content-Disposition"] == 'attachment; filename="a.jpg"'
            assert "transfer-encoding" not in response.headers
            chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == owner.payload
    assert len(chunks) > 1  # streamed, not one piece


async def test_reads_owned_devices_and_unknown_devices_stay_here(owner: _Owner) -> None:
    cluster = _Cluster(owner.url, mine={DEVICE})
    client = _client(cluster)
    token = {"X-API-TOKEN": TOKEN}
    assert (await client.post(f"/api/whatsapp/devices/{DEVICE}/logout",
                              headers=token)).status_code == 404  # ours: the route answers
    assert (await client.post("/api/whatsapp/devices/99/logout",
                              headers=token)).status_code == 404  # no such device
    cluster.mine.clear()
    assert (await client.get(f"/api/whatsapp/devices/{DEVICE}/history",
                             headers=token)).status_code == 404  # a read: answered here
    assert (await client.get(f"/api/whatsapp/devices/{DEVICE}/health",
                             headers=token)).status_code == 404  # no test send: here
    assert (await client.post(f"/api/whatsapp/devices/{DEVICE}/logout")).status_code == 401
    assert owner.seen == [] and cluster.asked == 0
    await client.get(f"/api/whatsapp/devices/{DEVICE}/health?sendTest=true", headers=token)
    assert [s["path"] for s in owner.seen] == [
        f"/api/whatsapp/devices/{DEVICE}/health?sendTest=true"]


async def test_no_owner_means_503_with_retry_after() -> None:
    client = _client(_Cluster(None))
    response = await client.post(f"/api/whatsapp/devices/{DEVICE}/login",
                                 headers={"X-API-TOKEN": TOKEN})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    body = await response.get_json()
    assert body["code"] == "SERVICE_UNAVAILABLE" and "being moved" in body["error"]


async def test_an_owner_that_cannot_be_reached_means_503() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(_Cluster(f"http://127.0.0.1:{port}"))
    response = await client.post(f"/api/whatsapp/devices/{DEVICE}/logout",
                                 headers={"X-API-TOKEN": TOKEN})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "cannot be reached" in (await response.get_json())["error"]
    assert _forwards(client, "unreachable") == 1


async def test_a_slow_owner_means_504_within_the_bound(
    owner: _Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_forward, "MARGIN", 0.0)
    owner.delay = 5.0
    client = _client(_Cluster(owner.url), call_timeout=0.3)
    started = trio.current_time()
    response = await client.post(f"/api/whatsapp/devices/{DEVICE}/logout",
                                 headers={"X-API-TOKEN": TOKEN})
    assert response.status_code == 504
    assert (await response.get_json())["code"] == "GATEWAY_TIMEOUT"
    assert trio.current_time() - started < 2.0
    assert _forwards(client, "timeout") == 1


async def test_a_forwarded_request_is_never_forwarded_again(owner: _Owner) -> None:
    cluster = _Cluster(owner.url)  # node A does not own the device either
    client = _client(cluster)
    path = f"/api/whatsapp/devices/{DEVICE}/logout"
    signed = cluster_signing.sign(SECRET.encode(), "POST", path.encode(), b"",
                                  node="node-c", now=now_epoch())
    response = await client.post(path, headers={"X-API-TOKEN": TOKEN, **signed})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert "not on this node" in (await response.get_json())["error"]
    assert owner.seen == [] and cluster.asked == 0
    assert _forwards(client, "not_owner") == 1


async def test_a_forged_forward_is_refused_unserved(owner: _Owner) -> None:
    cluster = _Cluster(owner.url, mine={DEVICE})
    client = _client(cluster)
    path = f"/api/whatsapp/devices/{DEVICE}/logout"
    good = cluster_signing.sign(SECRET.encode(), "POST", path.encode(), b"",
                                node="node-c", now=now_epoch())
    forged = [
        cluster_signing.sign(b"guess", "POST", path.encode(), b"", node="node-c",
                             now=now_epoch()),
        cluster_signing.sign(SECRET.encode(), "POST", path.encode(), b"", node="node-c",
                             now=now_epoch() - 120),
        {**good, cluster_signing.SIGNATURE: "v1=" + "0" * 64},
        {cluster_signing.NODE: "node-c"},
    ]
    for headers in forged:
        response = await client.post(path, headers={"X-API-TOKEN": TOKEN, **headers})
        assert response.status_code == 401, headers
        assert (await response.get_json())["code"] == "AUTHENTICATION_FAILED"
    tampered = await client.post(path, data=b"{}", headers={
        "X-API-TOKEN": TOKEN, "Content-Type": "application/json", **good})
    assert tampered.status_code == 401
    # the genuine one is served here (the route answers: the fake supervisor has no device)
    assert (await client.post(path, headers={"X-API-TOKEN": TOKEN, **good})).status_code == 404
    assert owner.seen == []
    assert _forwards(client, "refused") == 5


async def test_a_signed_request_on_a_single_node_is_refused() -> None:
    app = create_app(_Sup(None), TOKEN, ApiSettings())
    path = f"/api/whatsapp/devices/{DEVICE}/logout"
    signed = cluster_signing.sign(SECRET.encode(), "POST", path.encode(), b"",
                                  node="node-c", now=now_epoch())
    response = await app.test_client().post(path, headers={"X-API-TOKEN": TOKEN, **signed})
    assert response.status_code == 401


async def test_a_forwarded_request_is_not_charged_twice() -> None:
    """The node a call entered charged the caller's rate limit; the owner does not again."""
    cluster = _Cluster(None, mine={DEVICE})
    app = create_app(_Sup(cluster), TOKEN, ApiSettings(
        rate_limit=RateLimitPolicy(rate=0.001, burst=2)))
    client = app.test_client()
    path = f"/api/whatsapp/devices/{DEVICE}/logout"
    for _ in range(4):  # forwarded by node C: served (404 from the fake supervisor), free
        signed = cluster_signing.sign(SECRET.encode(), "POST", path.encode(), b"",
                                      node="node-c", now=now_epoch())
        response = await client.post(path, headers={"X-API-TOKEN": TOKEN, **signed})
        assert response.status_code == 404
        assert "RateLimit" not in response.headers
    direct = [await client.post(path, headers={"X-API-TOKEN": TOKEN}) for _ in range(3)]
    assert [r.status_code for r in direct] == [404, 404, 429]  # its own bucket was still full
    assert "RateLimit" in direct[0].headers
