"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/whatsapp/openapi.json``.

The source is ``docs/openapi.yaml``; ``api/openapi.yaml`` (a symlink to it in the repository,
package data in a wheel) is read first, ``docs/`` next to the package as a fallback. It is loaded once per process.
When the simulator routes are not registered, their paths are left out of the served document,
so the document always describes exactly what this server answers.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from quart import Blueprint, Response, current_app, jsonify

bp = Blueprint("openapi", __name__)

SIMULATOR_PREFIX = "/simulator/"


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    # api/openapi.yaml is a symlink to docs/openapi.yaml in a checkout, a copy in a wheel.
    return [here / "openapi.yaml", here.parent / "docs" / "openapi.yaml"]


@functools.cache
def load_spec() -> dict[str, Any]:
    """The parsed spec. Raises FileNotFoundError if neither copy exists."""
    for path in _candidates():
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            break
    else:
        resource = resources.files("api").joinpath("openapi.yaml")
        text = resource.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError("openapi.yaml does not hold a mapping")
    return spec


def spec_for(*, simulator: bool) -> dict[str, Any]:
    """The spec as this server serves it (without simulator paths unless ``simulator``)."""
    spec = load_spec()
    if simulator:
        return spec
    spec = copy.copy(spec)
    spec["paths"] = {
        path: item for path, item in spec["paths"].items() if not path.startswith(SIMULATOR_PREFIX)
    }
    return spec


@functools.cache
def _served(simulator: bool) -> dict[str, Any]:
    return spec_for(simulator=simulator)


def spec_routes(spec: dict[str, Any], prefix: str = "/api/whatsapp") -> set[tuple[str, str]]:
    """(METHOD, path) pairs the spec describes, with the server prefix applied."""
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    pairs: set[tuple[str, str]] = set()
    for path, item in spec.get("paths", {}).items():
        # A path with servers of its own (GET /metrics) is served under each of them.
        bases = [str(server["url"]).rstrip("/") for server in item.get("servers", ())] or [prefix]
        for base in bases:
            pairs.update((m.upper(), base + path) for m in item if m in methods)
    return pairs


@bp.get("/openapi.json")
async def openapi_json() -> Response:
    simulator = "simulator.scan" in current_app.view_functions
    return jsonify(_served(simulator))
