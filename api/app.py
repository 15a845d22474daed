"""The Quart-Trio application: blueprints, authentication, rate limits and error handling.

``create_app(sup, api_token)`` builds the ASGI app around a running supervisor; it starts no
task of its own (Hypercorn, started by ``api.server.serve``, runs it). Under ``/api/whatsapp``
every route needs a credential (``X-API-TOKEN``, once: two are refused on every route) except
the OpenAPI document; a request is authenticated, then charged to its credential's token
bucket, then its body must be JSON (415 otherwise), then it is dispatched.

A body may be ``ApiSettings.max_body`` bytes (413 beyond), except on the routes that take media
files (sending messages, setting a group's or the profile's picture), as JSON (base64) or
``multipart/form-data``, up to :func:`api.send_media.body_max` of the media limits; their body
is read only once the request is authenticated and charged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart import Quart, Response, g, request
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from api import (
    cluster_forward,
    dashboard,
    errors,
    metrics,
    openapi,
    protocol_errors,
    routes_account,
    routes_actions,
    routes_ai,
    routes_cluster,
    routes_contacts,
    routes_devices,
    routes_events,
    routes_groups,
    routes_history,
    routes_media,
    routes_messages,
    routes_ops,
    routes_proxy,
    routes_simulator,
    routes_webhooks,
    sim_account,
    sim_contacts,
    sim_groups,
)
from api.auth import ONE_TOKEN, authenticate, charge, refuse
from api.errors import ApiError
from api.send_media import body_max
from api.state import ApiSettings, AppState, current_state
from api.ws import endpoint as ws_endpoint
from supervisor.autoreply import AutoReply
from supervisor.devices import Devices
from supervisor.supervisor import simulator_controls

log = logging.getLogger("wasup.api")

API_PREFIX = "/api/whatsapp"

#: GET /metrics again under API_PREFIX, so that every path under it has a route (and a method
#: it does not serve answers 405, not 404).
PREFIXED_METRICS = "api_metrics"

#: Endpoints that need no credential (GET /metrics checks its own: a bearer token too).
PUBLIC_ENDPOINTS = frozenset(
    {
        "openapi.openapi_json",
        "meta.health",
        "meta.ready",
        "metrics.metrics_text",
        f"{PREFIXED_METRICS}.metrics_text",
    }
) | dashboard.PUBLIC_ENDPOINTS

#: The routes that take media files (a larger body, JSON or multipart), and their paths: a
#: body's limit is set when the request is made, before routing.
MEDIA_ENDPOINTS = frozenset({"messages.send_message", "groups.set_picture",
                             "account.put_picture"})
MEDIA_PATH_RE = re.compile(
    rf"{API_PREFIX}/devices/[^/]+/(?:messages|groups/[^/]+/picture|profile/picture)/?")
MULTIPART = "multipart/form-data"


def create_app(
    sup: Devices,
    api_token: str,
    settings: ApiSettings | None = None,
    *,
    autoreply: AutoReply | None = None,
) -> QuartTrio:
    """Build the app serving ``sup``; ``api_token`` is the operator token; ``autoreply`` (if
    it runs) is told when a device's AI settings are stored.

    Raises ValueError for an empty token.
    """
    settings = settings or ApiSettings()
    protocol_errors.install()
    app = QuartTrio("wasup", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.request_class = _request_class(
        settings.max_body, max(settings.max_body, body_max(sup.config.media))
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    app.extensions["wasup"] = AppState.build(sup, api_token, settings, autoreply=autoreply)

    errors.register(app)

    app.register_blueprint(routes_devices.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_messages.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_history.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_media.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_actions.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_webhooks.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_ai.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_proxy.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_account.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_ops.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_contacts.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_events.bp, url_prefix=API_PREFIX)
    app.register_blueprint(routes_groups.bp, url_prefix=API_PREFIX)
    simulator = settings.simulator_routes
    if simulator is None:
        simulator = simulator_controls(sup.engine) is not None
    if simulator:
        app.register_blueprint(routes_simulator.bp, url_prefix=API_PREFIX)
        app.register_blueprint(sim_contacts.bp, url_prefix=API_PREFIX)
        app.register_blueprint(sim_groups.bp, url_prefix=API_PREFIX)
        app.register_blueprint(sim_account.bp, url_prefix=API_PREFIX)
    app.register_blueprint(openapi.bp, url_prefix=API_PREFIX)
    metrics.install(app, sup, device_labels=settings.metrics_device_labels)
    routes_cluster.install(app, sup)
    app.register_blueprint(metrics.health_bp, url_prefix=API_PREFIX)
    app.register_blueprint(metrics.metrics_bp)
    app.register_blueprint(metrics.metrics_bp, url_prefix=API_PREFIX, name=PREFIXED_METRICS)
    ws_endpoint.register(app)
    app.register_blueprint(dashboard.bp)

    app.before_request(_authenticate)
    cluster_forward.install(app)  # after authentication: forwards commands in a cluster
    app.after_request(_add_rate_limit_headers)
    app.asgi_app = _DropWhenClosing(app.asgi_app)  # type: ignore[method-assign]
    return app


async def _authenticate() -> None:
    """Authenticate and rate-limit every request that reached a route."""
    state = current_state()
    media_route = request.endpoint in MEDIA_ENDPOINTS
    limit = request.max_content_length or state.settings.max_body
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit) if media_route else RequestEntityTooLarge()
    if media_route:
        # Up to a hundred MiB: read once the credential is known and charged. A refusal
        # before that leaves the body unread, and closes the connection.
        g.body_unread = True
    else:
        # Read the body now, whatever happens next: Hypercorn stalls a keep-alive connection
        # whose previous request left a large body unread (the next request then never gets
        # an answer). Bounded by the request's max_content_length (413 beyond it).
        await request.get_data()
    if request.url_rule is None:  # no route: routing answers 404 / 405
        return
    tokens = request.headers.getlist("X-API-TOKEN")
    if len(tokens) > 1:  # ambiguous, on any route (GET /metrics reads the header itself)
        refuse(state, _client_address(), ONE_TOKEN)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    principal = await authenticate(state, tokens[0] if tokens else None)
    if principal is None:
        refuse(state, _client_address())
    if not await cluster_forward.signed_forward():  # else charged on the node it entered
        g.rate_limit_headers = charge(state, principal)
    g.principal = principal
    if media_route:
        try:
            body = await request.get_data()
        except RequestEntityTooLarge:
            raise _too_large(limit) from None
        g.body_unread = False
    else:
        body = await request.get_data()
    if body and not (
        is_json(request.mimetype) or (media_route and request.mimetype == MULTIPART)
    ):
        raise UnsupportedMediaType()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE",
                    f"request body too large (limit {limit} bytes on this route)",
                    headers={"Connection": "close"})


def _request_class(max_body: int, media_max: int) -> type[TrioRequest]:
    """The app's request class: a request's body limit is its route's."""

    class Request(TrioRequest):
        def __init__(self, method: str, scheme: str, path: str, *args: Any,
                     **kwargs: Any) -> None:
            media = method in ("POST", "PUT") and MEDIA_PATH_RE.fullmatch(path) is not None
            limit = media_max if media else max_body
            kwargs["max_content_length"] = limit
            super().__init__(method, scheme, path, *args, **kwargs)
            self.max_content_length = limit  # the multipart parser's limit too

    return Request


def is_json(mimetype: str) -> bool:
    """Whether a request's media type (without parameters, lower-case) names JSON."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


class _DropWhenClosing:
    """ASGI middleware: a response the client's connection can no longer take is dropped.

    Hypercorn 0.18 (``trio/tcp_server.py``) half-closes a connection whose request it will not
    finish reading (a 413 sent before the body) without its send lock; a response sent in that
    instant fails with ``trio.BusyResourceError``, which Hypercorn would log as a 40-line
    "Error in ASGI Framework" traceback. The answer cannot reach the client anyway: the rest of
    it is dropped and the request ends quietly.
    """

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gone = False

        async def guarded_send(message: ASGISendEvent) -> None:
            nonlocal gone
            if gone:
                return
            try:
                await send(message)
            except trio.BusyResourceError:
                gone = True
                log.debug("response dropped: the client connection is closing")

        await self.app(scope, receive, guarded_send)


def _client_address() -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


async def _add_rate_limit_headers(response: Response) -> Response:
    headers: dict[str, str] | None = g.get("rate_limit_headers")
    if headers:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
    if g.get("body_unread"):
        response.headers["Connection"] = "close"
    return response


def routes(app: Quart) -> set[tuple[str, str]]:
    """The (METHOD, OpenAPI path) pairs ``app`` serves, for comparison with the spec."""
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.websocket:
            continue
        path = _ARG_RE.sub(lambda m: "{" + _camel(m.group(1)) + "}", rule.rule)
        for method in rule.methods or ():
            if method in {"HEAD", "OPTIONS"}:
                continue
            served.add((method, path))
    return served


_ARG_RE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
