"""The troubleshooting catalogue: every reason wasup can give a device has an entry (the reasons
are read out of the code), docs/troubleshooting.md is generated from it, and troubleshoot()
turns a status, its reason, the history and the health checks into issues."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from storage.devices import CREATED_REASON
from storage.models import HistoryEntry, HistoryRow
from supervisor import troubleshooting as ts
from supervisor.engines import whatsmeow_translate as wt
from supervisor.engines.simulator import FailReason
from supervisor.health import Check, HealthReport, Verdict
from supervisor.status import HOLDING_REASONS, SLOW_REASONS, Status
from tests.docs_support import load_generator

SUPERVISOR = Path(__file__).resolve().parents[1] / "supervisor"

#: Callables whose first string argument (or ``reason=`` keyword) is a device's reason: the
#: engine events, the state machine's events and helpers, engine errors (a failed connect or
#: pairing start becomes the device's reason through ``connection_ended``), ``attrs.evolve``.
REASON_TAKERS = frozenset({
    "Disconnected", "LoggedOut", "PairingFailed", "TemporaryBan", "EngineError",
    "ConnectionLost", "Unlinked", "Banned", "DeviceDisconnected", "DeviceLoggedOut",
    "connection_ended", "_to_disconnected", "_held", "_logged_out", "_pending_reason", "_begin",
    "evolve",
})
#: Functions whose returned strings are reasons (a failed connect's, a failed preflight's).
REASON_MAKERS = frozenset({"connect_error_reason", "preflight", "preflight_through"})
#: Engine errors that answer a command (send, pair code, logout, a group or contacts request)
#: and never become a device's reason: the command's caller gets them as an error response, a
#: failed send as its ``message_status`` reason.
COMMAND_ONLY = frozenset({
    "invalid_phone_number", "pairing_not_ready", "pair_code_failed", "not_connected",
    "invalid_recipient", "send_failed", "logout_failed", "not_pairing",
    "unsupported_kind", "target_missing", "media_missing", "media_mismatch",
    "mark_read_failed", "groups_failed", "contacts_failed",
    "media_expired", "invalid_media_ref", "media_corrupt", "media_evicted", "download_failed",
})


def _text(node: ast.expr) -> str | None:
    """A string literal, or an f-string's literal head (enough for the reason's code)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value
    return None


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def reasons_in_code() -> Iterator[tuple[str, str]]:
    """(reason, where) for every reason literal in supervisor/ (see REASON_TAKERS)."""
    for path in sorted(SUPERVISOR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(SUPERVISOR.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in REASON_TAKERS:
                positional = [t for t in map(_text, node.args) if t is not None][:1]
                texts = positional + [_text(k.value) for k in node.keywords if k.arg == "reason"]
                for text in texts:
                    if text:
                        yield text, f"{where}:{node.lineno}"
            if isinstance(node, ast.FunctionDef) and node.name in REASON_MAKERS:
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and sub.value is not None:
                        text = _text(sub.value)
                        if text:
                            yield text, f"{where}:{sub.lineno}"


def every_reason() -> dict[str, str]:
    """Every reason code wasup can give a device, with where it comes from."""
    found = {ts.reason_code(text): where for text, where in reasons_in_code()}
    for row in wt.ROWS:
        outcome = row.outcome
        reason = getattr(outcome, "reason", None)
        if isinstance(reason, str):
            found.setdefault(ts.reason_code(reason), f"whatsmeow_translate.ROWS: {row.whatsmeow}")
    for fail in FailReason:
        found.setdefault(fail.value, "simulator FailReason")
    for reason in HOLDING_REASONS | SLOW_REASONS:
        found.setdefault(reason, "supervisor/status.py")
    found.setdefault(CREATED_REASON, "storage/devices.py (the history's first row)")
    return found


def test_the_scan_finds_the_reasons_of_every_source() -> None:
    found = every_reason()
    # One of each source, so that a scan that silently stopped matching is noticed.
    for reason in ("qr_expired", "crash_loop", "event_backlog", "handshake_timeout",
                   "unreachable", "connect_failed", "stream_replaced", "temporary_ban",
                   "network_unreachable", "invalid_credentials", "credentials_missing"):
        assert reason in found, reason
    assert COMMAND_ONLY <= set(found), "an excluded reason is gone from the code: drop it"


def test_every_reason_has_an_explanation_and_a_recommendation() -> None:
    missing = {code: where for code, where in every_reason().items()
               if code not in COMMAND_ONLY and code not in ts.REASONS}
    assert not missing, f"add these reasons to supervisor/troubleshooting.py: {missing}"
    for code, advice in ts.REASONS.items():
        assert advice.explanation and advice.recommendation, code
    assert set(ts.STATUSES) == set(Status)


def test_reasons_with_details_find_their_code() -> None:
    assert ts.advice_for("unreachable: lookup web.whatsapp.com: no such host") is ts.REASONS[
        "unreachable"]
    assert ts.advice_for("temporary_ban: spam") is ts.REASONS["temporary_ban"]
    assert ts.advice_for("never_heard_of") is None


def test_the_document_is_generated_from_the_catalogue() -> None:
    gen = load_generator("gen_troubleshooting.py")
    document = gen.DOC.read_text(encoding="utf-8")
    assert gen.splice(document, gen.render()) == document, "run docs/gen_troubleshooting.py"
    for code in ts.REASONS:
        assert f"| `{code}` |" in document


def _report(*checks: tuple[str, Check]) -> HealthReport:
    base = (("deviceExists", Check(Verdict.PASS, "s", "exists")),)
    return HealthReport(1, "s", "2026-01-01T00:00:00.000Z", base + checks)


def _entry(n: int, before: str | None, after: str, reason: str | None) -> HistoryEntry:
    return HistoryEntry(n, HistoryRow(before, after, reason, "2026-01-01T00:00:00.000Z"))


def test_troubleshoot_names_the_status_the_reason_the_failed_checks_and_earlier_reasons() -> None:
    report = _report(
        ("connectionStatus", Check(Verdict.FAIL, "disconnected", "not connected")),
        ("reconnectAttempts", Check(Verdict.WARN, 4, "4 reconnect attempts")),
        ("stuckSends", Check(Verdict.PASS, 0, "none")),
    )
    history = [
        _entry(5, "connected", "disconnected", "stream_replaced"),
        _entry(4, "disconnected", "connected", None),
        _entry(3, "connected", "disconnected", "keepalive_timeout"),
        _entry(1, None, "pending", "created"),
    ]
    found = ts.troubleshoot(report, Status.DISCONNECTED, "stream_replaced", history)
    assert len(found.issues) == len(found.recommendations) == 4
    assert found.issues[0].startswith("disconnected: ")
    assert found.issues[1].startswith("statusReason stream_replaced: ")
    assert found.recommendations[1] == ts.REASONS["stream_replaced"].recommendation
    assert found.issues[2].startswith("reconnectAttempts: ")
    assert found.issues[3].startswith("earlier statusReason keepalive_timeout: ")
    assert not any("created" in issue for issue in found.issues)  # routine, not an issue


def test_a_healthy_connected_device_has_no_issue() -> None:
    report = _report(("connectionStatus", Check(Verdict.PASS, "connected", "connected")))
    found = ts.troubleshoot(report, Status.CONNECTED, None, [])
    assert found.issues == () and found.recommendations == ()


def test_an_unknown_reason_still_gets_advice() -> None:
    found = ts.troubleshoot(_report(), Status.DISCONNECTED, "brand_new: x", [])
    assert found.recommendations[1] == ts.UNKNOWN.recommendation
