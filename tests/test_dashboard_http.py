"""The dashboard's and the API docs' routes over plain HTTP: who is sent where, what each
answer carries (the security headers), and that nothing outside the fixed asset table is
served. The pages themselves are exercised in a browser by test_dashboard_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from api.dashboard import DASHBOARD_CSP, SWAGGER_FILES
from tests.conftest import TEST_TOKEN, api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ASSETS = Path(__file__).resolve().parent.parent / "api" / "dashboard_assets"


async def test_root_sends_browsers_to_the_dashboard_and_stays_the_stream(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, httpx.AsyncClient() as client:
        r = await client.get(server.url + "/", headers={"Accept": BROWSER_ACCEPT})
        assert (r.status_code, r.headers["Location"]) == (302, "/dashboard")
        # A JSON client (or one that accepts anything) still learns that / is the stream.
        for accept in ("application/json", "*/*", "application/json, text/html"):
            r = await client.get(server.url + "/", headers={"Accept": accept})
            assert (r.status_code, r.json()["code"]) == (400, "INVALID_REQUEST"), accept
            assert "WebSocket" in r.json()["error"]
        # And the WebSocket at / still streams events.
        from trio_websocket import open_websocket_url

        async with api_client(server) as api:
            async with open_websocket_url(server.ws_url, subprotocols=["wasup", TEST_TOKEN]) as ws:
                await api.post("/devices", json={"userId": "u", "alias": "a"})
                assert '"type"' in await ws.get_message()


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "application/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
        ("/docs", "text/html"),
        ("/docs/docs.js", "application/javascript"),
        *((f"/docs/{name}", "text/css" if name.endswith(".css") else "application/javascript")
          for name in SWAGGER_FILES),
    ],
)
async def test_pages_and_assets_need_no_credential_and_carry_the_policy(
    tmp_path: Path, path: str, media: str
) -> None:
    async with running_server(tmp_path / "data") as server, httpx.AsyncClient() as client:
        r = await client.get(server.url + path)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == media
    policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_unknown_and_traversing_names_are_404(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, httpx.AsyncClient() as client:
        for path in ("/dashboard/nope.js", "/dashboard/..%2Fdashboard.py", "/docs/index.css",
                     "/docs/app.js", "/dashboard/docs.html", "/dashboard/%2e%2e%2fapp.py"):
            r = await client.get(server.url + path)
            assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND"), path
        r = await client.post(server.url + "/dashboard", json={})
        assert r.status_code == 405


def test_pages_load_only_local_files_with_no_inline_script_or_style() -> None:
    """What the policy forbids is not there to forbid: every script and style sheet is a file
    of wasup's (no CDN), none is inline, no handler or style attribute, no HTML built from
    strings, no eval."""
    for page in ("index.html", "docs.html"):
        text = (ASSETS / page).read_text()
        assert re.findall(r"<script\b[^>]*>", text) == re.findall(
            r'<script\b[^>]*\bsrc="/[^"]+"[^>]*>(?=</script>)', text), f"{page}: inline script"
        assert "<style" not in text and not re.search(r"\s(style|on\w+)=", text), page
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f"{page}: not from wasup"
    for script in ASSETS.glob("*.js"):
        code = script.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", code)
        assert "eval(" not in code and "new Function" not in code, script.name
    assert "script-src 'self'" in DASHBOARD_CSP


def test_spec_describes_the_pages() -> None:
    spec = yaml.safe_load((ASSETS.parent.parent / "docs" / "openapi.yaml").read_text())
    for path in ("/dashboard", "/dashboard/{name}", "/docs", "/docs/{name}"):
        assert spec["paths"][path]["get"]["security"] == []
