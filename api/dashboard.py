"""The operator dashboard and the interactive API docs, served by wasup itself.

Routes (no credential: the pages hold no data; the browser signs in with the operator token,
which the page keeps in ``sessionStorage`` and sends as ``X-API-TOKEN`` and as the WebSocket
subprotocol):

- ``GET /``: ``/`` has a WebSocket route only (:mod:`api.ws`, the event stream), so a plain
  HTTP request there is a ``WebsocketMismatch``; a browser's (``Accept`` preferring
  ``text/html``) is redirected to ``/dashboard``, any other gets the 400 that says "this is
  the WebSocket event stream";
- ``GET /dashboard`` and ``GET /dashboard/<asset>``: the page and its hand-written ES modules
  and CSS (``api/dashboard_assets/``, package data);
- ``GET /docs`` and ``GET /docs/<asset>``: Swagger UI (its files from the ``swagger-ui-py``
  package, no CDN) rendering ``/api/whatsapp/openapi.json``.

Every answer carries a strict Content-Security-Policy (scripts and styles from wasup only,
nothing inline, no framing), ``nosniff`` and ``no-referrer``. Asset names are looked up in a
fixed table built at import: a name not in it is a 404, so no path from a request ever reaches
the file system.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from importlib.abc import Traversable

import attrs
from quart import Blueprint, Response, redirect, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound
from werkzeug.routing.exceptions import WebsocketMismatch

from api.errors import response_for

bp = Blueprint("dashboard", __name__)

#: The endpoints of this module: public (the app's authentication hook lets them through).
PUBLIC_ENDPOINTS = frozenset(
    {
        "dashboard.dashboard_page",
        "dashboard.dashboard_asset",
        "dashboard.docs_page",
        "dashboard.docs_asset",
    }
)

#: Where the OpenAPI document is served (read by the docs page).
OPENAPI_URL = "/api/whatsapp/openapi.json"

#: The dashboard's policy: its own scripts, styles and fetches (HTTP and WebSocket, same
#: origin) only; images from itself or data URLs (the QR codes are PNG data URLs).
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Swagger UI sets element styles from script (allowed) and shows inline SVG icons as data
#: URLs; it fetches the spec and, with "Try it out", the API (same origin).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: The Swagger UI files the docs page loads, from the swagger-ui-py package.
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


@attrs.frozen
class Asset:
    """One file served as it is: its bytes and media type."""

    body: bytes
    mimetype: str

    @classmethod
    def load(cls, file: Traversable) -> Asset:
        mimetype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if mimetype == "text/javascript":
            mimetype = "application/javascript"
        return cls(body=file.read_bytes(), mimetype=mimetype)


def _load(folder: Traversable, names: tuple[str, ...] | None = None) -> dict[str, Asset]:
    """The files of ``folder`` (or just ``names``) by name."""
    files = [folder / name for name in names] if names else list(folder.iterdir())
    return {file.name: Asset.load(file) for file in files if file.is_file()}


_DASHBOARD = _load(resources.files("api") / "dashboard_assets")
_SWAGGER = _load(resources.files("swagger_ui") / "static", SWAGGER_FILES)
#: The docs page's own files (its HTML and the script starting Swagger UI), besides Swagger's.
_DOCS = {**_SWAGGER, "docs.js": _DASHBOARD["docs.js"]}


def _serve(asset: Asset, policy: str, *, cache: bool = False) -> Response:
    response = Response(asset.body, mimetype=asset.mimetype)
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # The dashboard changes with wasup: revalidate every time (cheap on 127.0.0.1); Swagger
    # UI's bundle is large and changes only with the package.
    response.headers["Cache-Control"] = "public, max-age=86400" if cache else "no-cache"
    return response


def wants_html() -> bool:
    """Whether the request's ``Accept`` prefers HTML to JSON (a browser's navigation)."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


@bp.app_errorhandler(WebsocketMismatch)
async def plain_http_at_the_stream(exc: WebsocketMismatch) -> ResponseReturnValue:
    """A plain HTTP request for a WebSocket-only path (``/``, the event stream): a browser's
    ``GET`` goes to the dashboard; anything else is the 400 saying what ``/`` is."""
    if request.method in {"GET", "HEAD"} and request.path == "/" and wants_html():
        return redirect("/dashboard", 302)
    return response_for(exc)


@bp.get("/dashboard")
async def dashboard_page() -> Response:
    return _serve(_DASHBOARD["index.html"], DASHBOARD_CSP)


@bp.get("/dashboard/<name>")
async def dashboard_asset(name: str) -> Response:
    asset = _DASHBOARD.get(name)
    if asset is None or name == "docs.html":
        raise NotFound()
    return _serve(asset, DASHBOARD_CSP)


@bp.get("/docs")
async def docs_page() -> Response:
    return _serve(_DASHBOARD["docs.html"], DOCS_CSP)


@bp.get("/docs/<name>")
async def docs_asset(name: str) -> Response:
    asset = _DOCS.get(name)
    if asset is None:
        raise NotFound()
    return _serve(asset, DOCS_CSP, cache=name in SWAGGER_FILES)
