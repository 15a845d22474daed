"""Logs and metrics for operations: ``--log-format json`` writes one JSON object per line with
the device, event and reason of a status change; /metrics gains aggregates without a label per
device (reconnects, messages in and out, time in state, webhook lag) that move with activity."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import trio

from api.cli import api_settings, parse_options
from api.logging import JsonFormatter
from api.state import ApiSettings
from tests.conftest import api_client, running_server
from tests.webhook_support import start_receiver

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 15.0


async def wait_status(api: object, ref: str, status: str) -> None:
    with trio.fail_after(DEADLINE):
        while True:
            r = await api.get(f"/devices/{ref}")  # type: ignore[attr-defined]
            if r.json()["data"]["status"] == status:
                return
            await trio.sleep(0.01)


def test_the_log_format_flag_and_variable() -> None:
    assert parse_options(["serve"], {}).log_format == "text"
    assert parse_options(["serve", "--log-format", "json"], {}).log_format == "json"
    assert parse_options(["serve"], {"WASUP_LOG_FORMAT": "json"}).log_format == "json"


async def test_json_logs_parse_line_by_line_with_device_event_and_reason(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        async with running_server(tmp_path / "data") as server, api_client(server) as api:
            r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            sid = r.json()["data"]["sessionId"]
            await api.post(f"/simulator/devices/{sid}/scan", json={})
            await wait_status(api, sid, "connected")
            r = await api.post(f"/simulator/devices/{sid}/fail", json={"reason": "stream_replaced"})
            assert r.status_code == 200
            await wait_status(api, sid, "disconnected")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries and all(
        {"time", "level", "logger", "message", "device", "event", "reason"} <= set(e)
        for e in entries
    )
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in entries)
    changes = [e for e in entries if e["event"] == "device_status"]
    assert [(e["device"], e["reason"]) for e in changes][-1] == (sid, "stream_replaced")
    assert all(e["level"] == "info" for e in changes)
    created = [e for e in entries if e["message"] == f"device {sid} created"]
    assert created and created[0]["device"] == sid  # found in the message itself


def _sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name}{labels} missing from /metrics"
    return float(m.group(1))


async def test_the_new_metrics_appear_after_activity(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with running_server(
            tmp_path / "data", allow_networks=("127.0.0.0/8",), backoff_base=0.2,
        ) as server, api_client(server) as api:
            r = await api.get("/metrics")
            text = r.text
            assert _sample(text, "wasup_reconnects_total") == 0
            assert _sample(text, "wasup_messages_total", '{direction="in"}') == 0

            r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            sid = r.json()["data"]["sessionId"]
            r = await api.put(f"/devices/{sid}/settings/webhook",
                              json={"url": receiver.url, "events": ["message_received"]})
            assert r.status_code == 200, r.text
            await api.post(f"/simulator/devices/{sid}/scan", json={})
            await wait_status(api, sid, "connected")
            r = await api.post(f"/simulator/devices/{sid}/messages",
                               json={"from": "+15550000001", "text": "hello"})
            assert r.status_code == 200, r.text
            r = await api.post(f"/devices/{sid}/messages", json={"to": "+15550000001", "text": "hi"})
            assert r.status_code == 200, r.text
            with trio.fail_after(DEADLINE):
                await receiver.wait_requests(1)
            r = await api.post(f"/simulator/devices/{sid}/disconnect", json={})
            assert r.status_code == 200, r.text
            await wait_status(api, sid, "disconnected")
            await wait_status(api, sid, "connected")  # reconnected after the backoff

            with trio.fail_after(DEADLINE):
                while True:  # the delivery is recorded just after the receiver answered
                    text = (await api.get("/metrics")).text
                    if _sample(text, "wasup_webhook_lag_seconds_count") >= 1:
                        break
                    await trio.sleep(0.01)
            assert _sample(text, "wasup_reconnects_total") == 1
            assert _sample(text, "wasup_messages_total", '{direction="in"}') == 1
            assert _sample(text, "wasup_messages_total", '{direction="out"}') == 1
            # pending -> connecting -> connected -> disconnected -> connecting -> connected:
            # the first status is not timed (its start was not seen), the others when left.
            assert _sample(text, "wasup_device_state_seconds_count", '{state="connecting"}') == 2
            assert _sample(text, "wasup_device_state_seconds_count", '{state="connected"}') == 1
            assert _sample(text, "wasup_device_state_seconds_count", '{state="disconnected"}') == 1
            assert sid not in text  # no label per device
        nursery.cancel_scope.cancel()


async def test_per_device_labels_only_when_asked_for(tmp_path: Path) -> None:
    assert parse_options(["serve"], {}).metrics_device_labels is False
    assert parse_options(["serve", "--metrics-device-labels"], {}).metrics_device_labels
    assert parse_options(["serve"], {"WASUP_METRICS_DEVICE_LABELS": "1"}).metrics_device_labels
    assert api_settings(parse_options(["serve", "--metrics-device-labels"], {})).metrics_device_labels
    for asked in (False, True):
        settings = ApiSettings(graceful_timeout=1.0, metrics_device_labels=asked)
        async with running_server(tmp_path / f"data{asked}", settings=settings) as server, \
                api_client(server) as api:
            r = await api.post("/devices", json={"userId": "u1", "alias": "Shop"})
            sid = r.json()["data"]["sessionId"]
            text = (await api.get("/metrics")).text
            line = f'wasup_device_status{{device="{sid}",status="pending"}} 1.0'
            assert (line in text) is asked
            assert (sid in text) is asked
