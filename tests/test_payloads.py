"""Event payload records and their wire JSON: docs/events.md is the catalogue."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import attrs
import pytest

from common.clock import parse_iso
from storage.outbox import body_of
from supervisor import message_content as mc
from supervisor.events import Event
from supervisor.payloads import (
    EVENT_TYPES,
    CallReceived,
    Catalogued,
    DeviceConnected,
    DeviceDisconnected,
    DeviceLoggedOut,
    GroupJoined,
    GroupParticipants,
    GroupUpdated,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    MessageStuck,
    MessageUndecryptable,
    Payload,
    PresenceChanged,
    QrShown,
    QrTimedOut,
    StatusChanged,
    WebhookDisabled,
    to_wire,
)
from supervisor.qr import QrAttempt
from supervisor.status import Status

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _qr(d: dict[str, Any]) -> QrShown:
    expires = d["expiresAt"]
    return QrShown(QrAttempt(d["qrString"], d["attempt"], d["maxAttempts"], expires, parse_iso(expires)))


#: A payload of each catalogued type, built from the values of its docs/events.md example.
SAMPLES: dict[str, Callable[[dict[str, Any]], Payload]] = {
    "qr_code": _qr,
    "qr_timeout": lambda d: QrTimedOut(),
    "device_connected": lambda d: DeviceConnected(),
    "device_disconnected": lambda d: DeviceDisconnected(d["reason"]),
    "device_logged_out": lambda d: DeviceLoggedOut(d["reason"]),
    "device_status": lambda d: StatusChanged(Status(d["from"]), Status(d["to"]), d["reason"]),
    "message_received": lambda d: MessageReceived(
        d["messageId"], d["from"], d["chat"], d["text"], d["isGroup"], d["fromMe"], d["timestamp"],
        d["senderLid"], d["senderPn"],
        content=mc.Image(mc.MediaInfo(d["media"]["mimetype"], d["media"]["size"],
                                      d["media"]["sha256"]), caption=d["media"]["caption"]),
        quoted=mc.Quoted(d["quoted"]["messageId"]), push_name=d["pushName"],
    ),
    "message_undecryptable": lambda d: MessageUndecryptable(
        d["messageId"], d["from"], d["chat"], d["isGroup"], d["fromMe"], d["timestamp"],
        d["reason"], d["senderLid"], d["senderPn"],
    ),
    "message_sent": lambda d: MessageSent(
        d["messageId"], d["to"], d["text"], status=d["status"], origin=d["origin"],
        quoted=mc.Quoted(d["quoted"]["messageId"], d["quoted"]["chat"], d["quoted"]["from"]),
    ),
    "message_status": lambda d: MessageStatusChanged(d["messageId"], d["status"], d["reason"]),
    "message_stuck": lambda d: MessageStuck(d["messageId"], d["to"], d["status"], d["since"]),
    "group_joined": lambda d: GroupJoined(d["groupId"], d["subject"], d["participants"], d["by"]),
    "group_updated": lambda d: GroupUpdated(
        d["groupId"], d["by"], d["subject"], d["topic"], d["announce"], d["locked"]
    ),
    "group_participants": lambda d: GroupParticipants(
        d["groupId"], d["action"], d["participants"], d["by"]
    ),
    "presence": lambda d: PresenceChanged(d["from"], d["state"], d["chat"], d["lastSeen"]),
    "call_received": lambda d: CallReceived(
        d["callId"], d["from"], d["video"], d["isGroup"], d["rejected"]
    ),
}


def _example(kind: str) -> dict[str, Any]:
    document = (DOCS / "events.md").read_text(encoding="utf-8")
    section = document.split(f"### `{kind}`", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```json\n(.*?)\n```", section, flags=re.S)
    assert block is not None, f"no example for {kind}"
    example: dict[str, Any] = json.loads(block.group(1))
    return example


def test_every_event_type_has_one_record() -> None:
    records = get_args(Catalogued)
    assert {r.type for r in records} == EVENT_TYPES == set(SAMPLES)
    assert len(records) == len(EVENT_TYPES)
    assert WebhookDisabled.type not in EVENT_TYPES  # a notice, not in the catalogue
    assert set(get_args(Payload)) == {*records, WebhookDisabled}


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_wire_json_is_the_documented_example(kind: str) -> None:
    example = _example(kind)
    payload = SAMPLES[kind](example["data"])
    assert payload.type == example["type"] == kind
    wire = to_wire(payload)
    assert list(wire) == list(example["data"])  # the same keys, in the same order
    if kind == "qr_code":
        qr_code = wire.pop("qrCode")
        assert isinstance(qr_code, str) and qr_code.startswith("data:image/png;base64,iVBOR")
        del example["data"]["qrCode"]  # the example's PNG is cut short
    assert wire == example["data"]
    event = Event(example["sessionId"], 1, payload, example["timestamp"], id=example["id"])
    assert json.loads(event.json_text) == {**example, "data": to_wire(payload)}


def test_webhook_disabled_notice_has_its_documented_fields() -> None:
    document = (DOCS / "events.md").read_text(encoding="utf-8")
    documented = re.search(r'`webhook_disabled` \(`data: \{(.*?)\}`\)', document)
    assert documented is not None
    keys = [k.strip().strip('"') for k in documented.group(1).split(",")]
    assert list(to_wire(WebhookDisabled(url="https://example.com/hook", reason="gone"))) == keys


def test_envelope_bytes() -> None:
    """The WebSocket text and the webhook body, byte for byte."""
    event = Event("user_u_device_d", 7, StatusChanged(Status.CONNECTING, Status.CONNECTED, None),
                  "2025-06-19T12:00:00.000Z")
    assert event.type == "device_status"
    assert event.json_text == (
        '{"type":"device_status","sessionId":"user_u_device_d",'
        '"data":{"from":"connecting","to":"connected","reason":null},'
        '"timestamp":"2025-06-19T12:00:00.000Z"}'
    )
    assert body_of(event.to_json()) == event.json_text
    logged = attrs.evolve(event, id=42)
    assert logged.json_text == (
        '{"id":42,"type":"device_status","sessionId":"user_u_device_d",'
        '"data":{"from":"connecting","to":"connected","reason":null},'
        '"timestamp":"2025-06-19T12:00:00.000Z"}'
    )
    assert body_of(logged.to_json()) == logged.json_text
    sent = Event("s", 1, MessageSent("m1", "49170@s.whatsapp.net", "caf\u00e9", origin="api"), "t")
    assert sent.json_text == (
        '{"type":"message_sent","sessionId":"s","data":{"messageId":"m1",'
        '"to":"49170@s.whatsapp.net","type":"text","text":"caf\u00e9","hasMedia":false,'
        '"media":null,"quoted":null,"status":"sent","origin":"api"},'
        '"timestamp":"t"}'
    )


def test_qr_png_is_rendered_only_when_the_event_is_read() -> None:
    attempt = QrAttempt.expiring(
        "payloads-test-lazy-qr", attempt=1, max_attempts=3, expires_at_epoch=1.75e9
    )
    event = Event("s", 1, QrShown(attempt), "t")
    assert event.type == "qr_code" and not attempt.is_rendered
    data = json.loads(event.json_text)["data"]
    assert attempt.is_rendered and data["qrCode"] == attempt.data_url
    assert data["qrString"] == "payloads-test-lazy-qr" and data["attempt"] == 1
