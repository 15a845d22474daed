"""GET /devices: every device the caller may see, whatever its status (the dashboard's devices
page and `wasup devices list` read it), filtered by user and status, paged by id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import api_client, running_server
from tests.test_ops_api import connected, created, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py


async def test_every_device_is_listed_whatever_its_status(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        shop = await connected(api, "Shop", user="alice")
        gone = await connected(api, "Gone", user="alice")
        other = await created(api, "Other", user="bob")
        r = await api.post(f"/simulator/devices/{gone['sessionId']}/unlink", json={})
        assert r.status_code == 200, r.text
        await wait_status(api, gone["sessionId"], "logged_out")

        r = await api.get("/devices")
        assert r.status_code == 200, r.text
        listed = r.json()
        assert [d["sessionId"] for d in listed["data"]] == [
            shop["sessionId"], gone["sessionId"], other["sessionId"]]
        assert listed["pagination"] == {"total": 3, "page": 1, "limit": 50}
        # /sessions shows live sessions only: the logged-out device is not there
        sessions = (await api.get("/sessions")).json()["data"]
        assert gone["sessionId"] not in [d["sessionId"] for d in sessions]

        def ids(r: Any) -> list[str]:
            assert r.status_code == 200, r.text
            return [d["sessionId"] for d in r.json()["data"]]

        assert ids(await api.get("/devices", params={"status": "logged_out"})) == [
            gone["sessionId"]]
        assert ids(await api.get("/devices", params={"userId": "bob"})) == [other["sessionId"]]
        assert ids(await api.get("/devices", params={"limit": 2, "page": 2})) == [
            other["sessionId"]]

        r = await api.get("/devices", params={"status": "sleeping"})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", r.text
        assert "status" in r.json()["error"]
        r = await api.get("/devices", params={"limit": 0})
        assert r.status_code == 400 and "limit" in r.json()["error"], r.text


async def test_a_device_key_lists_its_own_device_only(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        mine = await created(api, "Mine", user="alice")
        await created(api, "Theirs", user="alice")
        async with api_client(server, token=mine["apiKey"]) as own:
            r = await own.get("/devices")
            assert r.status_code == 200, r.text
            assert [d["sessionId"] for d in r.json()["data"]] == [mine["sessionId"]]
            assert r.json()["pagination"]["total"] == 1
            r = await own.get("/devices", params={"userId": "bob"})
            assert r.json()["data"] == [] and r.json()["pagination"]["total"] == 0
