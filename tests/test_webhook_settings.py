"""Webhook settings normalisation, their stored form, secrets and Standard Webhooks signatures
(pure code)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import attrs
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api.routes_webhooks import public_view
from supervisor.errors import InvalidRequest
from supervisor.webhooks import settings as ws
from supervisor.webhooks import signing

URL = "https://hooks.example/wasup"


def test_generated_secret_shape() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) >= 24
    assert secret != signing.generate_secret()


def test_seed_example_groups() -> None:
    stored, generated = ws.normalize(
        {"url": URL, "events": ["message", "status"], "secret": "webhook_secret"}, None, now=0.0
    )
    assert generated is None
    assert set(stored.events) == ws.EVENT_GROUPS["message"] | ws.EVENT_GROUPS["status"]
    assert set(stored.events) < ws.EVENT_TYPES  # groups, presence and calls are not chosen
    assert set(ws.expand_events(["group"])) == {
        "group_joined", "group_updated", "group_participants"}
    assert stored.to_stored()["secrets"] == [{"secret": "webhook_secret", "expiresAt": None}]
    assert ws.expand_events(["message"]) == [
        "message_received", "message_sent", "message_status", "message_stuck",
        "message_undecryptable",
    ]
    assert "device_connected" in ws.expand_events(["status"])
    assert ws.expand_events(["qr_code", "device_status"]) == ["device_status", "qr_code"]
    assert ws.expand_events(None) == sorted(ws.EVENT_TYPES)
    assert ws.expand_events(["*"]) == sorted(ws.EVENT_TYPES)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": URL, "events": ["nope"]}, "events"),
        ({"url": URL, "events": "message"}, "events"),
        ({"url": URL, "secret": "short"}, "secret"),
        ({"url": URL, "secret": 12345678}, "secret"),
        ({"url": URL, "secret": "whsec_!!!notbase64!!!"}, "secret"),
        ({"url": URL, "enabled": "yes"}, "enabled"),
        ({"url": URL, "rotateSecret": 1}, "rotateSecret"),
        ({"url": URL, "secret": "s" * 20, "rotateSecret": True}, "rotateSecret"),
        ({"url": URL, "extra": 1}, "extra"),
        ({"events": ["message"]}, "url"),
    ],
)
def test_invalid_bodies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ws.normalize(body, None, now=0.0)
    assert info.value.field == field


def test_secret_generated_once_then_kept_and_rotated() -> None:
    first, secret = ws.normalize({"url": URL}, None, now=100.0)
    assert secret is not None
    view = public_view(first, secret)
    assert view["secret"] == secret and view["secretSet"] is True
    assert "secret" not in public_view(first)
    assert secret not in repr(public_view(first))
    assert secret not in repr(first)

    again, none = ws.normalize({"url": URL, "events": ["message"]}, first, now=200.0)
    assert none is None and again.active_secrets(200.0) == (secret,)

    rotated, new = ws.normalize({"url": URL, "rotateSecret": True}, again, now=300.0)
    assert new is not None and new != secret
    assert rotated.active_secrets(300.0) == (new, secret)
    assert rotated.active_secrets(300.0 + ws.ROTATION_WINDOW + 1) == (new,)

    chosen, none = ws.normalize({"url": URL, "secret": "my-own-secret"}, rotated, now=400.0)
    assert none is None
    assert chosen.active_secrets(400.0) == ("my-own-secret", new, secret)
    # The earlier secret keeps its own (earlier) expiry.
    assert chosen.active_secrets(300.0 + ws.ROTATION_WINDOW + 1) == ("my-own-secret", new)


def test_put_again_reenables_a_disabled_webhook() -> None:
    stored, _ = ws.normalize({"url": URL}, None, now=0.0)
    stored = attrs.evolve(stored, enabled=False, disabled_reason="endpoint answered 410 gone")
    again, _ = ws.normalize({"url": URL}, stored, now=1.0)
    assert again.enabled is True and again.disabled_reason is None
    off, _ = ws.normalize({"url": URL, "enabled": False}, stored, now=1.0)
    assert off.enabled is False and off.disabled_reason == "disabled by request"


def test_stored_form_round_trips_with_its_json_names() -> None:
    settings, secret = ws.normalize({"url": URL, "events": ["message"]}, None, now=0.0)
    rotated, new = ws.normalize(
        {"url": URL, "events": ["message"], "rotateSecret": True}, settings, now=10.0
    )
    stored = rotated.to_stored()
    assert stored == {
        "url": URL,
        "events": [
            "message_received", "message_sent", "message_status", "message_stuck",
            "message_undecryptable",
        ],
        "secrets": [
            {"secret": new, "expiresAt": None},
            {"secret": secret, "expiresAt": 10.0 + ws.ROTATION_WINDOW},
        ],
        "enabled": True,
        "disabledReason": None,
        "disabledAt": None,
        "failingSince": None,
    }
    assert ws.WebhookSettings.from_stored(stored) == rotated
    # A document written before failingSince existed still reads.
    del stored["failingSince"]
    assert ws.WebhookSettings.from_stored(stored) == rotated


@pytest.mark.parametrize("secret", [signing.generate_secret(), "webhook_secret"])
def test_signature_matches_standardwebhooks(secret: str) -> None:
    body = b'{"type":"message_received","data":{"text":"h\xc3\xa9llo"}}'
    ts = int(datetime.now(tz=UTC).timestamp())
    headers = signing.sign_headers("msg_abc", ts, body, [secret])
    key: str | bytes = secret if secret.startswith("whsec_") else secret.encode()
    assert Webhook(key).verify(body, headers) is not None
    assert signing.verify(secret, headers, body, now=ts)
    assert not signing.verify(secret, headers, body + b" ", now=ts)
    assert not signing.verify(secret, headers, body, now=ts + 301)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(body, headers)


def test_several_secrets_space_separated() -> None:
    a, b = signing.generate_secret(), signing.generate_secret()
    ts = int(datetime.now(tz=UTC).timestamp())
    headers = signing.sign_headers("msg_1", ts, b"{}", [a, b])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    Webhook(a).verify(b"{}", headers)
    Webhook(b).verify(b"{}", headers)
    with pytest.raises(ValueError):
        signing.sign_headers("msg_1", ts, b"{}", [])


def test_failure_clock_disabling_and_target() -> None:
    settings, secret = ws.normalize({"url": URL}, None, now=0.0)
    assert settings.target(5.0) is not None and settings.target(5.0).secrets == (secret,)
    failing = settings.note_result(ok=False, now=10.0)
    assert failing.failing_since == 10.0
    assert failing.note_result(ok=False, now=20.0).failing_since == 10.0  # already running
    assert failing.note_result(ok=True, now=30.0).failing_since is None
    off = failing.disabled("endpoint answered 410 gone", "2026-01-01T00:00:00.000Z")
    assert not off.enabled and off.disabled_reason == "endpoint answered 410 gone"
    assert off.target(40.0) is None
    assert ws.WebhookSettings.from_stored(off.to_stored()) == off
