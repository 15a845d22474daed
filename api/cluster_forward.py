"""Any node answers: commands for a device another node owns are forwarded to that node.

In a cluster every node holds every device's row (:mod:`supervisor.cluster.mirror` keeps the
rows of other nodes' devices fresh), so reads are answered by whichever node gets the call. A
command reaches the device's actor or engine, which runs on one node only, the device's owner:
on any other node :func:`before_request` sends the request on to the owner's advertise URL
(method, path and query, body, the caller's credential and content headers), signed with the
cluster secret (:mod:`api.cluster_signing`), and answers the caller with the owner's answer
unchanged: status, headers (content type, Retry-After, rate limit fields, Content-Disposition)
and body, a media download streamed through.

:data:`ROUTES` says, for every endpoint of the app, whether it is answered here (``LOCAL``) or
by the device's owner (a :class:`Forward`); a test checks that every route of
``docs/openapi.yaml`` and of the app is in it, so a new route cannot be forgotten.

The order of events on a cluster node, for a request that reached a route:

1. ``api.app`` authenticates the caller and charges its rate limit (this node's bucket);
2. a request with any ``X-Wasup-*`` forwarding header must carry a valid signature (401
   AUTHENTICATION_FAILED otherwise, never served); such a request is never forwarded again:
   if this node does not own the device (any more), 503 with Retry-After;
3. a forwarded route for a device this node does not own, that the caller may see, goes to
   the owner (its credential is checked there again); no owner (the device is being moved)
   gives 503 SERVICE_UNAVAILABLE with Retry-After.

Time bounds (:func:`budget`): a forwarded call may take the owner's own bound for the route
plus :data:`MARGIN` seconds: ``call_timeout`` for a command, plus the QR wait for a login,
plus ``media.url_timeout`` for a send (it may fetch a URL), ``media.download_timeout`` for a
media download (until the owner starts answering; the body then streams). An owner that does
not take the connection within :data:`CONNECT_TIMEOUT` seconds, or goes away mid-call, gives
503 SERVICE_UNAVAILABLE with Retry-After; one that takes longer than the bound gives 504
GATEWAY_TIMEOUT (the command may have been done: a send with an ``Idempotency-Key`` is safe
to repeat). Never a 500.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Protocol

import attrs
import httpx
import trio
from prometheus_client import Counter
from quart import Quart, Response, current_app, g, request
from quart.wrappers.response import ResponseBody
from werkzeug.datastructures import Headers

from api import cluster_signing
from api.auth import Principal
from api.errors import ApiError, retry_after
from api.state import ApiSettings, current_state
from common.clock import now_epoch
from supervisor.config import Config
from supervisor.errors import DeviceNotFound

log = logging.getLogger("wasup.api.cluster")

#: Seconds a forwarded call may take beyond the owner's own bound for the route.
MARGIN = 5.0
#: Seconds to connect to the owner (nodes are near each other).
CONNECT_TIMEOUT = 3.0
#: Retry-After (seconds) when the owner cannot be reached.
UNREACHABLE_RETRY = 1.0

#: Request headers the owner gets from the caller (the signature's headers are added).
REQUEST_HEADERS = ("X-API-TOKEN", "Content-Type", "Idempotency-Key", "Accept", "User-Agent")
#: Response headers that belong to one connection (RFC 9110 §7.6.1) or that the server sets
#: itself: not copied from the owner's answer.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "date", "server", "content-length",
})


class Budget(enum.Enum):
    """What bounds a forwarded call's duration (see :func:`budget`)."""

    COMMAND = "command"  # the actor's reply: call_timeout
    LOGIN = "login"  # the actor's reply, then the wait for the first QR code
    SEND = "send"  # the actor's reply, after the media URL is fetched
    MEDIA = "media"  # a media file downloaded from WhatsApp by the owner
    HEALTH = "health"  # a test send and the wait for WhatsApp's acknowledgement


@attrs.frozen
class Forward:
    """A route answered by the device's owner."""

    budget: Budget = Budget.COMMAND
    #: The answer's body is streamed through (a media file), not read whole.
    stream: bool = False
    #: Forwarded only when this query flag is set (not absent, not ``false``); else local.
    only_with: str | None = None


#: A route answered by the node that got the call.
LOCAL = None

COMMAND = Forward()
ASK = Forward()  # the device's engine session (contacts, groups, account: Devices.ask)
SIMULATOR = Forward()  # the owner's simulator holds the device's session

#: Every endpoint of the app: LOCAL, or how it is forwarded. Reads come from the directory and
#: the database; whatever reaches the device's actor or engine goes to its owner.
ROUTES: Mapping[str, Forward | None] = {
    # devices and sessions (api.routes_devices)
    "devices.create_device": LOCAL,  # created and claimed by this node
    "devices.get_device": LOCAL,
    "devices.update_device": COMMAND,  # the actor writes the row
    "devices.delete_device": COMMAND,
    "devices.get_qr": LOCAL,  # the stored QR code (supervisor.cluster.qr_store)
    "devices.login": Forward(Budget.LOGIN),
    "devices.logout": COMMAND,
    "devices.list_devices": LOCAL,
    "devices.list_user_devices": LOCAL,
    "devices.list_sessions": LOCAL,
    "devices.cancel_session": COMMAND,
    # pairing, sending, sending settings (api.routes_messages)
    "messages.pair_code": COMMAND,
    "messages.send_message": Forward(Budget.SEND),
    "messages.put_sending": COMMAND,  # settings the actor holds
    "messages.get_sending": LOCAL,
    # message actions (api.routes_actions)
    "actions.read_chat": COMMAND,
    "actions.react": Forward(Budget.SEND),
    "actions.edit": Forward(Budget.SEND),
    "actions.revoke": Forward(Budget.SEND),
    # stored history (api.routes_history), events (api.routes_events)
    "history.list_chats": LOCAL,
    "history.list_messages": LOCAL,
    "history.get_message": LOCAL,
    "events.list_events": LOCAL,
    # media: the cache is per node (api.routes_media)
    "media.get_media": Forward(Budget.MEDIA, stream=True),
    # settings: the actor stores them (PUT), the database answers (GET)
    "webhooks.put_webhook": COMMAND,
    "webhooks.get_webhook": LOCAL,
    "webhooks.test_webhook": LOCAL,  # an HTTP call from any node
    "webhooks.list_deliveries": LOCAL,
    "webhooks.get_delivery": LOCAL,
    "webhooks.redeliver": LOCAL,  # an outbox row; every node's dispatcher is woken
    "ai.put_ai": COMMAND,  # the owner's auto-reply is told too
    "ai.get_ai": LOCAL,
    "proxy.put_proxy": COMMAND,
    "proxy.get_proxy": LOCAL,
    "account.put_call_settings": COMMAND,
    "account.get_call_settings": LOCAL,
    # the account's requests to WhatsApp (api.routes_account)
    "account.set_presence": ASK,
    "account.set_chat_presence": ASK,
    "account.subscribe_presence": ASK,
    "account.get_profile": ASK,
    "account.put_profile": ASK,
    "account.put_picture": Forward(Budget.SEND),
    "account.reject_call": ASK,
    # contacts and groups (api.routes_contacts, api.routes_groups)
    "contacts.check": ASK,  # the hourly budget is the owner's
    "contacts.address_book": ASK,
    "contacts.info": ASK,
    "contacts.lid": ASK,
    "contacts.block": ASK,
    "contacts.unblock": ASK,
    "groups.list_groups": ASK,
    "groups.create_group": ASK,
    "groups.join_group": ASK,
    "groups.get_group": ASK,
    "groups.change_group": ASK,
    "groups.set_picture": Forward(Budget.SEND),
    "groups.change_participants": ASK,
    "groups.invite_link": ASK,
    "groups.leave_group": ASK,
    # operations (api.routes_ops): a health check with a test send goes to the owner
    "ops.device_health": Forward(Budget.HEALTH, only_with="sendTest"),
    "ops.user_health": LOCAL,
    "ops.troubleshoot": LOCAL,
    "ops.state_history": LOCAL,
    # simulator controls (api.routes_simulator, api.sim_*)
    "simulator.scan": SIMULATOR,
    "simulator.disconnect": SIMULATOR,
    "simulator.unlink": SIMULATOR,
    "simulator.incoming_message": SIMULATOR,
    "simulator.receipt": SIMULATOR,
    "simulator.fail": SIMULATOR,
    "sim_account.incoming_call": SIMULATOR,
    "sim_account.contact_presence": SIMULATOR,
    "simulator_contacts.put_contact": SIMULATOR,
    "simulator_contacts.contacts_state": SIMULATOR,
    "simulator_groups.create": SIMULATOR,
    "simulator_groups.change": SIMULATOR,
    "simulator_groups.participants": SIMULATOR,
    # the node itself
    "cluster.get_cluster": LOCAL,
    "openapi.openapi_json": LOCAL,
    "meta.health": LOCAL,
    "meta.ready": LOCAL,
    "metrics.metrics_text": LOCAL,
    "api_metrics.metrics_text": LOCAL,
    "dashboard.dashboard_page": LOCAL,
    "dashboard.dashboard_asset": LOCAL,
    "dashboard.docs_page": LOCAL,
    "dashboard.docs_asset": LOCAL,
}

_COUNTER = "wasup.forwards"

#: The view argument naming the device, by route (``deviceId`` but for the session cancel).
_DEVICE_ARGS = ("device_id", "session_id")


def budget(kind: Budget, config: Config, settings: ApiSettings) -> float:
    """Seconds a forwarded call of ``kind`` may take (see the module docstring)."""
    base = config.call_timeout + MARGIN
    match kind:
        case Budget.COMMAND:
            return base
        case Budget.LOGIN:
            return base + settings.qr_wait
        case Budget.SEND:
            return base + config.media.url_timeout
        case Budget.MEDIA:
            return base + config.media.download_timeout
        case Budget.HEALTH:
            return base + 2 * config.call_timeout


class OwnerNode(Protocol):
    """The node that holds a device's lease, as the cluster lists it."""

    @property
    def node_id(self) -> str: ...

    @property
    def advertise_url(self) -> str: ...


class Cluster(Protocol):
    """What forwarding needs of this node's cluster membership."""

    @property
    def node_id(self) -> str: ...

    @property
    def secret(self) -> bytes: ...

    def owns(self, device_id: int) -> bool: ...

    async def owner(self, device_id: int) -> OwnerNode | None: ...


def install(app: Quart) -> None:
    """Check forwarded requests and forward commands; the hook runs after authentication.
    ``wasup_forwards_total{outcome}`` counts them on the app's metrics registry, if any:
    ``answered`` (the owner's answer passed on, whatever its status), ``no_owner``,
    ``unreachable``, ``timeout``, ``not_owner`` (a forwarded request for a device that moved
    on) and ``refused`` (a bad signature)."""
    app.before_request(before_request)
    metrics = app.extensions.get("wasup.metrics")
    app.extensions[_COUNTER] = Counter(
        "wasup_forwards", "Requests forwarded to a device's owner, and forwards refused",
        ["outcome"], registry=metrics.registry if metrics is not None else None)

    @app.after_serving
    async def _close_client() -> None:
        client: httpx.AsyncClient | None = app.extensions.pop("wasup_forward_client", None)
        if client is not None:
            await client.aclose()


def _count(outcome: str) -> None:
    counter: Counter | None = current_app.extensions.get(_COUNTER)
    if counter is not None:
        counter.labels(outcome).inc()


def route_of(endpoint: str | None) -> Forward | None:
    """How ``endpoint`` is answered (None: here, as is an endpoint not in :data:`ROUTES`)."""
    return None if endpoint is None else ROUTES.get(endpoint)


async def before_request() -> Response | None:
    """Refuse a badly signed forwarded request; forward a command for a device owned elsewhere
    (returns the owner's answer); None: the route answers here."""
    if request.url_rule is None:
        return None
    state = current_state()
    cluster: Cluster | None = state.sup.cluster
    forwarded = await signed_forward()
    if cluster is None:
        return None
    route = route_of(request.endpoint)
    if route is None or (route.only_with is not None
                         and request.args.get(route.only_with) in (None, "false")):
        return None
    device_id = await _device(g.get("principal"))
    if device_id is None or cluster.owns(device_id):
        return None  # unknown or not the caller's: the route answers 404; or ours
    retry = state.sup.config.cluster.scan_seconds if state.sup.config.cluster else 2.0
    if forwarded:
        _count("not_owner")
        raise _moving(device_id, retry, "is not on this node any more")
    owner = await cluster.owner(device_id)
    if owner is None or owner.node_id == cluster.node_id:
        _count("no_owner")
        raise _moving(device_id, retry, "has no node right now (it is being moved)")
    limit = budget(route.budget, state.sup.config, state.settings)
    return await _forward(cluster, owner, limit, stream=route.stream)


async def signed_forward() -> bool:
    """Whether another node of this cluster forwarded the request: its signature is checked
    once per request (ApiError 401 when it does not hold). Such a request was charged to the
    caller's rate limit on the node it entered, and is not charged again here."""
    if "forward_signed" not in g:
        forwarded = cluster_signing.is_forwarded(_signature_headers())
        if forwarded:
            await _check_signature(current_state().sup.cluster)
        g.forward_signed = forwarded
    return bool(g.forward_signed)


async def _device(principal: Principal | None) -> int | None:
    """The id of the device the request names, if it exists and the caller may see it (one
    created on another node a moment ago included: ``Devices.find``)."""
    args = request.view_args or {}
    ref = next((args[name] for name in _DEVICE_ARGS if name in args), None)
    if ref is None or principal is None:
        return None
    sup = current_state().sup
    try:
        device_id = sup.resolve(str(ref))
    except DeviceNotFound:
        try:
            device_id = (await sup.find(str(ref))).id
        except DeviceNotFound:
            return None
    return device_id if principal.may_see(device_id) else None


def _moving(device_id: int, retry: float, why: str) -> ApiError:
    return ApiError(503, "SERVICE_UNAVAILABLE", f"device {device_id} {why}: try again shortly",
                    headers={"Retry-After": retry_after(retry)})


def _signature_headers() -> dict[str, str]:
    """The request's forwarding headers (named as :mod:`api.cluster_signing` names them)."""
    return {name: value for name in cluster_signing.HEADERS
            if (value := request.headers.get(name)) is not None}


def _wire_path() -> bytes:
    """The request's path and query as they came on the wire."""
    raw = request.scope.get("raw_path") or request.path.encode()
    query = request.scope.get("query_string") or b""
    return bytes(raw) + (b"?" + bytes(query) if query else b"")


async def _check_signature(cluster: Cluster | None) -> None:
    """Raises ApiError 401 unless the forwarded request's signature holds on this cluster."""
    if cluster is None:
        raise ApiError(401, "AUTHENTICATION_FAILED",
                       "forwarded request refused: this node is not in a cluster")
    body = await request.get_data()
    assert isinstance(body, bytes)
    try:
        cluster_signing.verify(cluster.secret, request.method, _wire_path(), body,
                               _signature_headers(), now=now_epoch())
    except cluster_signing.BadSignature as exc:
        log.warning("forwarded request refused: %s", exc)
        _count("refused")
        raise ApiError(401, "AUTHENTICATION_FAILED", f"forwarded request refused: {exc}") from None


def _client() -> httpx.AsyncClient:
    client: httpx.AsyncClient | None = current_app.extensions.get("wasup_forward_client")
    if client is None:
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        current_app.extensions["wasup_forward_client"] = client
    return client


async def _forward(cluster: Cluster, owner: OwnerNode, limit: float, *,
                   stream: bool) -> Response:
    """Send the request to ``owner`` and answer with its answer (see the module docstring)."""
    body = await request.get_data()
    assert isinstance(body, bytes)
    url = httpx.URL(owner.advertise_url.rstrip("/") + "/").copy_with(
        raw_path=_wire_path())
    headers = {name: value for name in REQUEST_HEADERS
               if (value := request.headers.get(name)) is not None}
    headers.update(cluster_signing.sign(cluster.secret, request.method, url.raw_path, body,
                                        node=cluster.node_id, now=now_epoch()))
    timeout = httpx.Timeout(limit, connect=CONNECT_TIMEOUT, pool=CONNECT_TIMEOUT)
    client = _client()
    upstream: httpx.Response | None = None
    where = f"device's node {owner.node_id}"
    try:
        with trio.fail_after(limit + CONNECT_TIMEOUT):
            upstream = await client.send(
                client.build_request(request.method, url, headers=headers, content=body,
                                     timeout=timeout),
                stream=True,
            )
            if not stream:
                await upstream.aread()
    except (trio.TooSlowError, httpx.TimeoutException) as exc:
        if upstream is not None:
            await upstream.aclose()
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            raise _unreachable(where, exc) from None
        _count("timeout")
        raise ApiError(504, "GATEWAY_TIMEOUT",
                       f"the {where} did not answer within {limit:g} s") from None
    except httpx.HTTPError as exc:
        if upstream is not None:
            await upstream.aclose()
        raise _unreachable(where, exc) from None
    _count("answered")
    return _answer(upstream, stream)


def _unreachable(where: str, exc: Exception) -> ApiError:
    _count("unreachable")
    log.warning("forwarding to the %s failed: %s", where, type(exc).__name__)
    return ApiError(503, "SERVICE_UNAVAILABLE", f"the {where} cannot be reached: try again",
                    headers={"Retry-After": retry_after(UNREACHABLE_RETRY)})


def _answer(upstream: httpx.Response, stream: bool) -> Response:
    """The caller's answer: the owner's status, end-to-end headers and body."""
    headers = Headers([(name, value) for name, value in upstream.headers.multi_items()
                       if name.lower() not in _HOP_BY_HOP])
    if not stream:
        return Response(upstream.content, status=upstream.status_code, headers=headers)
    response = Response(_StreamedBody(upstream), status=upstream.status_code, headers=headers)
    length = upstream.headers.get("Content-Length")
    if length is not None and length.isdigit():
        response.content_length = int(length)
    return response


class _StreamedBody(ResponseBody):
    """The owner's answer body, passed on chunk by chunk; the owner's connection is closed at
    the end (or when the caller went away)."""

    def __init__(self, upstream: httpx.Response) -> None:
        self.upstream = upstream

    async def __aenter__(self) -> _StreamedBody:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.upstream.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.upstream.aiter_raw()
