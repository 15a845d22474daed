"""A device's health: the seed's ``DeviceHealthChecker`` done where the facts are.

Usage::

    report = await device_health(devices, "user_u_device_a")              # no message sent
    report = await device_health(devices, "user_u_device_a", send_test=True)
    report.status                        # Verdict.PASS | WARN | FAIL: the worst check
    dict(report.checks)["connectionStatus"].message

The checks are the seed's (``deviceExists``, ``connectionStatus``, ``lastActivity`` and, only
when asked, ``messageSending``) and what only the server knows: ``engineLiveness`` (the
device's actor runs; the last traffic), ``timeInState`` (against what the state machine allows
that status: a QR code pending for ten minutes is wrong), ``reconnectAttempts`` (since the last
``connected``, from the state history), ``webhookBacklog`` and ``webhookFailures`` (the webhook
outbox), ``stuckSends`` (the outbound queue as the actor shows it).

:func:`assess` is pure: it turns :class:`DeviceFacts` into a :class:`HealthReport`.
:func:`gather` reads the facts (the directory, what the device shows on any node:
:func:`supervisor.cluster.mirror.shown`, one database job), and
:func:`device_health` does both, plus the test send.

Error handling: :func:`device_health` raises :class:`DeviceNotFound` for an unknown device and
``storage.StorageUnavailable`` when the database cannot be read; a failed test send is a
``fail`` check, never an exception.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import attrs
import trio

import storage
from common.clock import iso, now_epoch, parse_iso
from storage.models import DeviceRow, HistoryEntry, WebhookBacklog

from .cluster import mirror
from .config import Config
from .devices import Devices
from .errors import DeviceNotFound, WasupError
from .payloads import MessageStatusChanged
from .status import HOLDING_REASONS, SLOW_REASONS, Status
from .view import DeviceShown

#: History entries read for a report (reconnect attempts are counted within them).
HISTORY_DEPTH = 100
#: Hours without traffic after which ``lastActivity`` warns (the seed's 24 h).
ACTIVITY_WARN_HOURS = 24.0
#: Reconnect attempts since the last ``connected`` that warn, and that fail.
RECONNECTS_WARN = 3
RECONNECTS_FAIL = 10
#: Deliveries waiting, or seconds the oldest one waits, beyond which ``webhookBacklog`` warns.
BACKLOG_WARN_COUNT = 100
BACKLOG_WARN_SECONDS = 300.0
#: Seconds ``messageSending`` waits for WhatsApp to take a paced test message.
SEND_TEST_WAIT = 2.0
#: Slack on top of the longest time the state machine allows a status.
STATE_SLACK = 30.0
#: The text of the test message.
TEST_TEXT = "wasup health check"


class Verdict(enum.IntEnum):
    """A check's outcome, ordered: the report is its worst check."""

    PASS = 0
    WARN = 1
    FAIL = 2

    @property
    def wire(self) -> str:
        return self.name.lower()


@attrs.frozen
class Check:
    """One check: its verdict, the value it looked at (a status, a count, seconds, or None)
    and a sentence for a person."""

    verdict: Verdict
    value: str | int | float | None
    message: str


@attrs.frozen
class HealthReport:
    """The checks of one device, in a fixed order, and the worst of their verdicts."""

    device_id: int
    session_id: str
    timestamp: str
    checks: tuple[tuple[str, Check], ...]

    @property
    def status(self) -> Verdict:
        return max((check.verdict for _, check in self.checks), default=Verdict.PASS)

    def check(self, name: str) -> Check | None:
        return dict(self.checks).get(name)


@attrs.frozen
class DeviceFacts:
    """What a report is made from: the device's row, what its actor shows, its latest status
    changes (newest first), its webhook outbox, and the time (epoch)."""

    row: DeviceRow
    shown: DeviceShown
    history: Sequence[HistoryEntry]
    backlog: WebhookBacklog
    now: float


@attrs.frozen
class SendTest:
    """The outcome of the test message: the status it reached (``sent`` once WhatsApp took it,
    ``pending`` if it did not within the wait, ``failed``) and its id, or the error."""

    status: str
    message_id: str | None = None
    error: str | None = None


# -- the pure part ------------------------------------------------------------------------------


def expected_seconds(status: Status, reason: str | None, config: Config) -> float | None:
    """The longest a device should stay in ``status`` (with ``reason``) by the state machine's
    own timers; None where it waits for the operator (or for nothing: ``connected``)."""
    match status:
        case Status.PENDING:
            qr_cycle = config.qr_first_timeout + config.qr_next_timeout * max(
                0, config.qr_max_attempts - 1
            )
            return max(qr_cycle, config.pair_code_window) + STATE_SLACK
        case Status.CONNECTING:
            return config.connect_timeout + STATE_SLACK
        case Status.DISCONNECTED:
            if reason in HOLDING_REASONS:
                return None
            if reason in SLOW_REASONS:
                return config.slow_retry * (1 + config.backoff_jitter) + STATE_SLACK
            if reason is not None and reason.startswith("temporary_ban"):
                return None  # the ban's own end decides
            return config.backoff_cap * (1 + config.backoff_jitter) + STATE_SLACK
    return None


def assess(facts: DeviceFacts, config: Config) -> HealthReport:
    """The report for ``facts`` (see the module docstring for the checks)."""
    row = facts.row
    checks: list[tuple[str, Check]] = [
        ("deviceExists", Check(Verdict.PASS, row.session_id, "the device exists")),
        ("connectionStatus", _connection(row)),
        ("lastActivity", _activity(row, facts.now)),
        ("engineLiveness", _liveness(row, facts.shown, facts.now)),
        ("timeInState", _time_in_state(facts, config)),
        ("reconnectAttempts", _reconnects(facts.history)),
        ("webhookBacklog", _backlog(facts.backlog, facts.now)),
        ("webhookFailures", _webhook_failures(facts.backlog)),
        ("stuckSends", _stuck(facts.shown)),
    ]
    return HealthReport(row.id, row.session_id, iso(facts.now), tuple(checks))


def with_send_test(report: HealthReport, outcome: SendTest | None, row: DeviceRow) -> HealthReport:
    """``report`` with its ``messageSending`` check (``outcome`` None: the device could not
    send, ``row`` says why)."""
    return attrs.evolve(report, checks=(*report.checks, ("messageSending", _sending(outcome, row))))


def _reason_text(row: DeviceRow) -> str:
    return f" ({row.status_reason})" if row.status_reason else ""


def _connection(row: DeviceRow) -> Check:
    status = Status(row.status)
    if status is Status.CONNECTED:
        return Check(Verdict.PASS, row.status, "connected to WhatsApp")
    if status in (Status.PENDING, Status.CONNECTING):
        what = "waiting for the QR code to be scanned" if status is Status.PENDING else "connecting"
        return Check(Verdict.WARN, row.status, f"not connected yet: {what}{_reason_text(row)}")
    return Check(Verdict.FAIL, row.status, f"not connected: {row.status}{_reason_text(row)}")


def _since(at: str | None, now: float) -> float | None:
    return None if at is None else max(0.0, now - parse_iso(at))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} hours ago"


def _latest(*stamps: str | None) -> str | None:
    present = [s for s in stamps if s is not None]
    return max(present, key=parse_iso) if present else None


def _activity(row: DeviceRow, now: float) -> Check:
    latest = _latest(row.last_activity, row.last_connection)
    seconds = _since(latest, now)
    if seconds is None:
        return Check(Verdict.WARN, None, "no activity yet: the device never connected")
    hours = seconds / 3600
    verdict = Verdict.PASS if hours < ACTIVITY_WARN_HOURS else Verdict.WARN
    return Check(verdict, round(hours, 1), f"last activity {_ago(seconds)}")


def _liveness(row: DeviceRow, shown: DeviceShown, now: float) -> Check:
    if not shown.live:
        return Check(Verdict.FAIL, None, "the device's actor is restarting after a crash")
    seconds = _since(_latest(row.last_activity, row.last_seen), now)
    if seconds is None:
        return Check(Verdict.PASS, None, "the device's actor runs; no traffic yet")
    return Check(Verdict.PASS, round(seconds, 1), f"the device's actor runs; last traffic {_ago(seconds)}")


def _time_in_state(facts: DeviceFacts, config: Config) -> Check:
    row = facts.row
    entered = facts.history[0].change.at if facts.history else row.updated_at
    seconds = _since(entered, facts.now) or 0.0
    status = Status(row.status)
    limit = expected_seconds(status, row.status_reason, config)
    if limit is not None and seconds > limit:
        return Check(
            Verdict.WARN, round(seconds, 1),
            f"{row.status} for {seconds:.0f} s: longer than the {limit:.0f} s expected",
        )
    expected = "" if limit is None else f" (at most {limit:.0f} s expected)"
    return Check(Verdict.PASS, round(seconds, 1), f"{row.status} for {seconds:.0f} s{expected}")


def reconnect_attempts(history: Sequence[HistoryEntry]) -> int:
    """Reconnects (``disconnected`` -> ``connecting``) since the last ``connected``, in a
    history given newest first."""
    count = 0
    for entry in history:
        change = entry.change
        if change.to_status == Status.CONNECTED:
            break
        if change.from_status == Status.DISCONNECTED and change.to_status == Status.CONNECTING:
            count += 1
    return count


def _reconnects(history: Sequence[HistoryEntry]) -> Check:
    count = reconnect_attempts(history)
    if count >= RECONNECTS_FAIL:
        verdict = Verdict.FAIL
    elif count >= RECONNECTS_WARN:
        verdict = Verdict.WARN
    else:
        verdict = Verdict.PASS
    return Check(verdict, count, f"{count} reconnect attempts since the last connection")


def _backlog(backlog: WebhookBacklog, now: float) -> Check:
    lag = None if backlog.oldest_pending_at is None else max(0.0, now - backlog.oldest_pending_at)
    if backlog.pending == 0 or lag is None:
        return Check(Verdict.PASS, 0, "no webhook delivery waits")
    message = f"{backlog.pending} webhook deliveries wait, the oldest for {lag:.0f} s"
    if backlog.pending > BACKLOG_WARN_COUNT or lag > BACKLOG_WARN_SECONDS:
        return Check(Verdict.WARN, backlog.pending, message)
    return Check(Verdict.PASS, backlog.pending, message)


def _webhook_failures(backlog: WebhookBacklog) -> Check:
    if backlog.failed == 0:
        return Check(Verdict.PASS, 0, "no webhook delivery ran out of retries")
    return Check(
        Verdict.WARN, backlog.failed,
        f"{backlog.failed} webhook deliveries ran out of retries (see the delivery log)",
    )


def _stuck(shown: DeviceShown) -> Check:
    if shown.stuck_sends:
        return Check(
            Verdict.WARN, shown.stuck_sends,
            f"{shown.stuck_sends} of {shown.pending_sends} waiting sends are stuck",
        )
    return Check(Verdict.PASS, 0, f"no stuck send ({shown.pending_sends} waiting)")


def _sending(outcome: SendTest | None, row: DeviceRow) -> Check:
    if outcome is None:
        if row.status != Status.CONNECTED:
            return Check(Verdict.FAIL, None, f"no test message sent: the device is {row.status}")
        return Check(Verdict.FAIL, None, "no test message sent: the device's own number is unknown")
    if outcome.status in ("sent", "delivered", "read"):
        return Check(Verdict.PASS, outcome.status,
                     f"WhatsApp took the test message {outcome.message_id}")
    if outcome.status == "pending":
        return Check(Verdict.WARN, outcome.status,
                     f"the test message {outcome.message_id} is not acknowledged yet")
    return Check(Verdict.FAIL, outcome.status, f"the test message failed: {outcome.error}")


# -- reading the facts ------------------------------------------------------------------------


async def gather(devices: Devices, ref: str | int) -> DeviceFacts:
    """The facts about one device.

    Raises: DeviceNotFound; storage.StorageUnavailable.
    """
    row = devices.get(ref)
    shown = await mirror.shown(devices, row.id)  # on any node, as GET /devices/{id} shows it

    def job(r: storage.Repositories) -> tuple[list[HistoryEntry], WebhookBacklog]:
        return r.history.page(row.id, None, HISTORY_DEPTH), r.outbox.backlog(row.id)

    history, backlog = await devices.db.run(job)
    return DeviceFacts(row, shown, history, backlog, now_epoch())


async def send_test(devices: Devices, row: DeviceRow) -> SendTest | None:
    """Send the test message to the device's own number and wait (a little) until WhatsApp
    takes it; None when the device cannot send (not connected, own number unknown)."""
    if row.status != Status.CONNECTED or not row.phone_number:
        return None
    async with devices.bus.subscribe(
        device_ids=frozenset({row.id}), types=frozenset({"message_status"})
    ) as sub:
        try:
            sent = await devices.send_message(row.id, row.phone_number, TEST_TEXT, "health")
        except WasupError as exc:
            return SendTest("failed", error=str(exc))
        message_id = str(sent["messageId"])
        if sent["status"] != "pending":
            return SendTest(str(sent["status"]), message_id)
        with trio.move_on_after(SEND_TEST_WAIT):
            async for event in sub:
                data = event.data
                if isinstance(data, MessageStatusChanged) and data.message_id == message_id:
                    return SendTest(data.status, message_id, data.reason)
        return SendTest("pending", message_id)


async def device_health(devices: Devices, ref: str | int, *, send: bool = False) -> HealthReport:
    """The device's health report; with ``send``, a test message goes to its own number first.

    Raises: DeviceNotFound; storage.StorageUnavailable.
    """
    outcome = None
    if send:
        outcome = await send_test(devices, devices.get(ref))
    facts = await gather(devices, ref)
    report = assess(facts, devices.config)
    return with_send_test(report, outcome, facts.row) if send else report


async def user_health(devices: Devices, user_id: str) -> list[HealthReport]:
    """Every device of ``user_id``, by id (devices deleted meanwhile are left out).

    Raises: storage.StorageUnavailable.
    """
    reports = []
    for row in sorted((r for r in devices.rows.values() if r.user_id == user_id), key=lambda r: r.id):
        try:
            reports.append(await device_health(devices, row.id))
        except DeviceNotFound:
            continue
    return reports


def verdicts(reports: Sequence[HealthReport]) -> Mapping[str, int]:
    """How many reports have each verdict (``pass``, ``warn``, ``fail``)."""
    counts = {v.wire: 0 for v in Verdict}
    for report in reports:
        counts[report.status.wire] += 1
    return counts

