"""Where SQLite and PostgreSQL behave differently under wasup, wasup does not: inputs that one
backend takes and the other refuses get the same answer on both.

- A text holding a NUL character: SQLite stores and compares it, PostgreSQL refuses it in any
  statement. A message id in a path holding one names no message (404) on both; request
  bodies holding one are refused by validation before the database (tests/test_hostile.py).
- An empty list in ``IN ()``: SQLite takes it as false, PostgreSQL as a syntax error. A device
  key reads the event log (its own device, no other: one empty list) on both
  (tests/test_events_api.py, tests/test_ws_resume.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import api_client, running_server

pytestmark = pytest.mark.both_backends  # tests/store_support.py


async def test_a_message_id_holding_a_nul_names_no_message(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        assert r.status_code == 201, r.text
        sid = r.json()["data"]["sessionId"]
        base = f"/devices/{sid}/messages/msg%00x"
        for method, path, body in [
            ("GET", base, None),
            ("GET", f"{base}/media", None),
            ("POST", f"{base}/reaction", {"emoji": "👍"}),
            ("PATCH", base, {"text": "edited"}),
            ("DELETE", base, None),
        ]:
            r = await api.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["success"] is False


async def test_a_chat_holding_a_nul_names_no_chat(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
        sid = r.json()["data"]["sessionId"]
        r = await api.get(f"/devices/{sid}/chats/155500%0001/messages")
        assert r.status_code in (400, 404), r.text
        r = await api.get(f"/devices/{sid}/chats", params={"q": "a\x00b"})
        assert r.status_code < 500, r.text
        r = await api.get("/events", params={"sessionId": "a\x00b", "type": "qr\x00code"})
        assert r.status_code < 500, r.text
        r = await api.get("/devices", params={"userId": "a\x00b"})
        assert r.status_code < 500, r.text
