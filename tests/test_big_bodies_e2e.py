"""A send body near the largest media cap is parsed and decoded off the Trio thread: while it
is, other requests are answered, and the file still goes out byte for byte.

The test holds the big body's parse in its worker thread until another request has been
answered; were the parse on the Trio thread, nothing else could be answered while it waits
and the hold would end unanswered. Ordering, not timing.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from api import send_request
from api.send_request import SendRequest
from supervisor.config import MediaConfig
from tests.media_support import PDF, b64, sha256
from tests.test_send_kinds_e2e import PEER, connected

pytestmark = pytest.mark.both_backends  # tests/store_support.py

#: How long the held parse waits for the other request before it gives up (a failure).
HOLD = 60.0


async def test_other_requests_are_answered_while_a_big_body_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = MediaConfig()
    largest = media.max_document  # the largest of the default caps
    assert largest == max(media.max_image, media.max_video, media.max_audio,
                          media.max_document, media.max_sticker)
    document = PDF + bytes(largest - len(PDF) - 1024)
    body = json.dumps({"to": PEER, "type": "document", "media": {"data": b64(document)},
                       "filename": "big.pdf"}).encode()
    entered, answered = trio.Event(), threading.Event()
    held: list[bool] = []
    parse = send_request.parse_body

    def hold(data: bytes, max_ttl: float) -> SendRequest:
        if len(data) >= send_request.BIG_BODY:  # the big one, in its worker thread
            trio.from_thread.run_sync(entered.set)
            held.append(answered.wait(HOLD))
        return parse(data, max_ttl)

    monkeypatch.setattr(send_request, "parse_body", hold)
    async with connected(tmp_path, media) as setup:
        order: list[str] = []
        results: dict[str, Any] = {}

        async def big() -> None:
            r = await setup.api.post(f"/devices/{setup.sid}/messages", content=body,
                                     headers={"content-type": "application/json"},
                                     timeout=HOLD + 60)
            results["big"] = r
            order.append("big")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(big)
            with trio.fail_after(HOLD):
                await entered.wait()
            r = await setup.api.get(f"/devices/{setup.sid}")
            assert r.status_code == 200, r.text
            order.append("other")
            r = await setup.api.post(f"/devices/{setup.sid}/messages",
                                     json={"to": PEER, "text": "small"})
            assert r.status_code in (200, 202), r.text
            order.append("small send")
            answered.set()

        assert held == [True]
        assert order == ["other", "small send", "big"]
        assert results["big"].status_code in (200, 202), results["big"].text[:300]
        await setup.until("message_sent", 2)
        sent = setup.engine.sent_messages(setup.device["id"])
        files = [m.media for m in sent if m.media is not None]
        assert len(files) == 1 and sha256(files[0]) == sha256(document)


async def test_a_bad_big_body_is_still_a_400_naming_the_field(tmp_path: Path) -> None:
    async with connected(tmp_path) as setup:
        data = "A" * (send_request.BIG_BODY + 1) + "!"  # not base64
        r = await setup.api.post(f"/devices/{setup.sid}/messages", json={
            "to": PEER, "type": "document", "media": {"data": data}})
        assert r.status_code == 400 and r.json()["field"] == "media.data", r.text[:300]
        r = await setup.api.post(f"/devices/{setup.sid}/messages", content=b"{" * (1 << 20),
                                 headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body", r.text[:300]
