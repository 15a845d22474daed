"""supervisor.health's pure part: the checks of a device from its facts, against the state
machine's timers (a QR code pending for ten minutes warns), the history's reconnects, the
webhook outbox and the outbound queue."""

from __future__ import annotations

import attrs

from common.clock import iso, parse_iso
from storage.models import DeviceRow, HistoryEntry, HistoryRow, WebhookBacklog
from supervisor import health, readiness
from supervisor.config import Config
from supervisor.health import DeviceFacts, Verdict
from supervisor.status import Status
from supervisor.view import DeviceShown

NOW = parse_iso("2026-03-01T12:00:00.000Z")
CONFIG = Config(engine="simulator")


def _row(status: str, reason: str | None = None, **fields: object) -> DeviceRow:
    values: dict[str, object] = {
        "id": 1, "session_id": "user_u1_device_shop", "user_id": "u1", "alias": "Shop",
        "business_type": None, "phone_number": None, "description": None, "status": status,
        "status_reason": reason, "created_at": iso(NOW - 3600), "updated_at": iso(NOW - 60),
        "last_connection": None, "paired": False, "push_name": None, "platform": None,
        "jid": None, "last_seen": None, "battery": None, "messages_sent": 0,
        "messages_received": 0, "last_activity": None, "api_key_hash": "h",
    }
    values.update(fields)
    return DeviceRow(**values)  # type: ignore[arg-type]


def _entry(n: int, before: str | None, after: str, ago: float, reason: str | None = None) -> HistoryEntry:
    return HistoryEntry(n, HistoryRow(before, after, reason, iso(NOW - ago)))


def _facts(row: DeviceRow, history: list[HistoryEntry], *, shown: DeviceShown | None = None,
           backlog: WebhookBacklog | None = None) -> DeviceFacts:
    return DeviceFacts(
        row=row,
        shown=shown or DeviceShown(Status(row.status), live=True),
        history=history,
        backlog=backlog or WebhookBacklog(0, None, 0),
        now=NOW,
    )


def test_a_connected_device_passes() -> None:
    row = _row("connected", last_connection=iso(NOW - 120), last_seen=iso(NOW - 120))
    report = health.assess(_facts(row, [_entry(3, "connecting", "connected", 120)]), CONFIG)
    assert report.status is Verdict.PASS
    assert [name for name, _ in report.checks] == [
        "deviceExists", "connectionStatus", "lastActivity", "engineLiveness", "timeInState",
        "reconnectAttempts", "webhookBacklog", "webhookFailures", "stuckSends",
    ]
    assert report.check("timeInState") == health.Check(Verdict.PASS, 120.0, "connected for 120 s")


def test_a_qr_pending_for_ten_minutes_warns_and_a_fresh_one_does_not() -> None:
    fresh = health.assess(_facts(_row("pending"), [_entry(1, None, "pending", 30, "created")]),
                          CONFIG)
    assert fresh.check("timeInState").verdict is Verdict.PASS  # type: ignore[union-attr]
    stale = health.assess(_facts(_row("pending"), [_entry(1, None, "pending", 600, "created")]),
                          CONFIG)
    check = stale.check("timeInState")
    assert check is not None and check.verdict is Verdict.WARN
    assert "pending for 600 s" in check.message and stale.status is Verdict.WARN


def test_a_disconnected_device_fails_with_its_reason() -> None:
    row = _row("disconnected", "stream_replaced", last_connection=iso(NOW - 100))
    report = health.assess(_facts(row, [_entry(4, "connected", "disconnected", 10)]), CONFIG)
    assert report.status is Verdict.FAIL
    check = report.check("connectionStatus")
    assert check is not None and check.value == "disconnected"
    assert "stream_replaced" in check.message
    # Held until a login: no timer, so no "too long" either.
    assert report.check("timeInState").verdict is Verdict.PASS  # type: ignore[union-attr]


def test_time_in_state_follows_the_state_machines_timers() -> None:
    assert health.expected_seconds(Status.CONNECTING, None, CONFIG) == CONFIG.connect_timeout + 30
    assert health.expected_seconds(Status.DISCONNECTED, "cancelled", CONFIG) is None
    assert health.expected_seconds(Status.DISCONNECTED, "temporary_ban: spam", CONFIG) is None
    slow = health.expected_seconds(Status.DISCONNECTED, "client_outdated", CONFIG)
    backoff = health.expected_seconds(Status.DISCONNECTED, "connection_lost", CONFIG)
    assert slow is not None and backoff is not None and slow > backoff
    assert health.expected_seconds(Status.CONNECTED, None, CONFIG) is None


def test_reconnect_attempts_count_since_the_last_connection() -> None:
    history = [  # newest first
        _entry(9, "connecting", "disconnected", 1, "connection_lost"),
        _entry(8, "disconnected", "connecting", 2),
        _entry(7, "connecting", "disconnected", 3, "connection_lost"),
        _entry(6, "disconnected", "connecting", 4),
        _entry(5, "connected", "disconnected", 5, "keepalive_timeout"),
        _entry(4, "connecting", "connected", 6),
        _entry(3, "disconnected", "connecting", 7),
    ]
    assert health.reconnect_attempts(history) == 2
    many = [_entry(i, "disconnected", "connecting", i) for i in range(health.RECONNECTS_FAIL)]
    report = health.assess(_facts(_row("connecting"), many), CONFIG)
    assert report.check("reconnectAttempts").verdict is Verdict.FAIL  # type: ignore[union-attr]


def test_webhook_backlog_failures_and_stuck_sends_show() -> None:
    row = _row("connected", last_connection=iso(NOW - 10))
    facts = _facts(
        row, [],
        shown=DeviceShown(Status.CONNECTED, live=True, pending_sends=3, stuck_sends=2),
        backlog=WebhookBacklog(pending=4, oldest_pending_at=NOW - 900, failed=1),
    )
    report = health.assess(facts, CONFIG)
    backlog = report.check("webhookBacklog")
    assert backlog is not None and backlog.verdict is Verdict.WARN and backlog.value == 4
    assert "oldest for 900 s" in backlog.message
    assert report.check("webhookFailures") == health.Check(
        Verdict.WARN, 1, "1 webhook deliveries ran out of retries (see the delivery log)")
    stuck = report.check("stuckSends")
    assert stuck is not None and stuck.verdict is Verdict.WARN and stuck.value == 2
    assert report.status is Verdict.WARN


def test_an_actor_restarting_fails_liveness() -> None:
    row = _row("connected", last_connection=iso(NOW - 10))
    facts = _facts(row, [], shown=DeviceShown(Status.CONNECTED, live=False))
    assert health.assess(facts, CONFIG).check("engineLiveness").verdict is Verdict.FAIL  # type: ignore[union-attr]


def test_no_activity_for_a_day_warns() -> None:
    row = _row("connected", last_connection=iso(NOW - 30 * 3600))
    check = health.assess(_facts(row, []), CONFIG).check("lastActivity")
    assert check is not None and check.verdict is Verdict.WARN and check.value == 30.0


def test_the_send_test_check() -> None:
    row = _row("connected", phone_number="15551234567")
    report = health.assess(_facts(row, []), CONFIG)
    sent = health.with_send_test(report, health.SendTest("sent", "m1"), row)
    assert sent.check("messageSending").verdict is Verdict.PASS  # type: ignore[union-attr]
    failed = health.with_send_test(report, health.SendTest("failed", "m1", "expired"), row)
    assert failed.check("messageSending").verdict is Verdict.FAIL  # type: ignore[union-attr]
    offline = health.with_send_test(report, None, attrs.evolve(row, status="disconnected"))
    check = offline.check("messageSending")
    assert check is not None and check.verdict is Verdict.FAIL and "disconnected" in check.message


def test_the_engine_check_of_readiness() -> None:
    assert readiness.engine_check("simulator").ok
    assert readiness.engine_check_of("simulator", frozenset()).ok
    assert not readiness.engine_check_of("whatsmeow", frozenset()).ok
    assert readiness.engine_check_of("whatsmeow", frozenset({readiness.NEONIZE_ADAPTER})).ok
