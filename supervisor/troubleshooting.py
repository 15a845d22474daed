"""The troubleshooting catalogue: what every ``statusReason`` means and what to do about it.

Usage::

    advice = advice_for("client_outdated")       # Advice(explanation=..., recommendation=...)
    advice_for("unreachable: lookup web.whatsapp.com: no such host")   # by its code, "unreachable"
    found = troubleshoot(report, history)        # Troubleshooting(issues=(...), recommendations=(...))

A reason is a machine-readable code, sometimes followed by ``": "`` and details
(``temporary_ban: spam``, ``unreachable: connection refused``, ``connect_failed: ...``); the
catalogue is keyed by the code. :data:`REASONS` has an entry for every reason wasup can give a
device (``tests/test_troubleshooting.py`` reads the reasons out of the code and fails when one
lacks an entry); :data:`STATUSES` says what each status means on its own.
``docs/troubleshooting.md`` is generated from both (``docs/gen_troubleshooting.py``).

:func:`troubleshoot` is the seed's ``troubleshootDevice`` done on the server: the status and
its reason, the state history (reconnects, recent reasons) and the health checks become a list
of issues, each with its recommendation.

Error handling: nothing here raises; an unknown reason gets a generic entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import attrs

from storage.models import HistoryEntry

from .health import HealthReport, Verdict
from .status import Status


@attrs.frozen
class Advice:
    """What a reason or status means, and what the operator should do."""

    explanation: str
    recommendation: str


@attrs.frozen
class Troubleshooting:
    """Issues found and one recommendation each (in the same order; duplicates dropped)."""

    issues: tuple[str, ...]
    recommendations: tuple[str, ...]


_UPGRADE = (
    "Upgrade neonize (pip install -U \"neonize>=0.5.2,<0.6\") and restart wasup; the "
    "credentials are kept and the device reconnects at the next start."
)
_SCAN_AGAIN = "Log the device in (POST /devices/{id}/login) and scan the new QR code."
_LOGIN_AGAIN = "Log the device in (POST /devices/{id}/login): the stored credentials are used, no new scan."
_WAIT_BACKOFF = (
    "Nothing to do if it is rare: wasup reconnects on its backoff schedule. If it repeats, "
    "check the network of the wasup host (run `wasup doctor`)."
)

#: Every reason code, with what it means and what to do.
REASONS: Mapping[str, Advice] = MappingProxyType({
    # -- wasup's own ---------------------------------------------------------------------
    "created": Advice(
        "The device was created (the first entry of its history).",
        "Scan the QR code shown by POST /devices or GET /devices/{id}/qr."),
    "restart": Advice(
        "wasup restarted while the device was connected or connecting; it reconnects by itself.",
        "Nothing to do: the device reconnects with its stored credentials."),
    "logout": Advice(
        "The device was logged out through the API (POST /devices/{id}/logout); its "
        "credentials were wiped.",
        _SCAN_AGAIN),
    "cancelled": Advice(
        "The device's session was cancelled through the API (POST /sessions/{id}/cancel); "
        "wasup does not reconnect it on its own.",
        "Log the device in again when wanted (POST /devices/{id}/login)."),
    "crash_loop": Advice(
        "The device's actor crashed more often than its restart budget allows; wasup parked "
        "it instead of crashing again and again.",
        "Read wasup's log around the crashes (it has the traceback), then log the device in "
        "(POST /devices/{id}/login); report the traceback if it comes back."),
    "handshake_timeout": Advice(
        "A login handshake (connecting, or pairing until the first QR code) took longer than "
        "wasup allows (connect_timeout).",
        _WAIT_BACKOFF),
    "qr_expired": Advice(
        "Every QR code of the pairing expired without a scan.",
        "Log the device in (POST /devices/{id}/login) and scan the QR code within its "
        "expiresAt; or pair by phone code (POST /devices/{id}/pair-code)."),
    "credentials_missing": Advice(
        "The device was paired, but its credentials are gone (deleted, or the data directory "
        "was replaced); it cannot reconnect.",
        _SCAN_AGAIN),
    "invalid_credentials": Advice(
        "The stored credentials cannot be read (corrupt or from another engine).",
        _SCAN_AGAIN),
    "event_backlog": Advice(
        "The device received engine events faster than it could store them; wasup dropped "
        "the connection to resynchronise (WhatsApp sends again what was not acknowledged).",
        "Nothing to do if it is rare. If it repeats, the database is too slow for the "
        "traffic: check the disk of the data directory."),
    "stopped": Advice(
        "The engine session was stopped while an operation was under way.",
        "Nothing to do: a later login or reconnect starts a new session."),
    # -- the connection --------------------------------------------------------------------
    "connection_lost": Advice(
        "The connection to WhatsApp dropped and whatsmeow did not get it back within its grace.",
        _WAIT_BACKOFF),
    "keepalive_timeout": Advice(
        "WhatsApp stopped answering keep-alive pings (three in a row).",
        _WAIT_BACKOFF),
    "unreachable": Advice(
        "WhatsApp (or the proxy) could not be reached: a DNS lookup failed, the connection was "
        "refused or timed out (the reason says which).",
        "Check the host's DNS, firewall and proxy settings (`wasup doctor` tests DNS and TCP "
        "to web.whatsapp.com); wasup keeps retrying on its backoff schedule."),
    "network_unreachable": Advice(
        "The simulated WhatsApp was made unreachable (simulator engine).",
        "Make the simulator reachable again; the device reconnects on its backoff schedule."),
    "connect_failed": Advice(
        "A connection attempt failed for a reason not otherwise known (the text says what "
        "neonize reported), or the device's proxy setting could not be read.",
        _WAIT_BACKOFF),
    "connect_failure": Advice(
        "WhatsApp refused the connection with a generic, experimental or internal-server "
        "error.",
        "Nothing to do at first: wasup retries on the slow schedule (slow_retry) and at every "
        "start. If it lasts for hours, check for a newer neonize."),
    "unsupported_event": Advice(
        "neonize could not encode an event WhatsApp sent (a code its schema lacks), so its "
        "event loop ended; wasup dropped the client.",
        "wasup retries on the slow schedule. " + _UPGRADE),
    # -- refused, replaced, banned ----------------------------------------------------------
    "stream_replaced": Advice(
        "Another client connected with this device's credentials and WhatsApp closed this "
        "one; wasup does not fight it by reconnecting.",
        "Stop the other process that uses these credentials (another wasup, a copied data "
        "directory), then " + _LOGIN_AGAIN[0].lower() + _LOGIN_AGAIN[1:]),
    "client_outdated": Advice(
        "WhatsApp refuses the WhatsApp web version compiled into the installed neonize (405).",
        _UPGRADE),
    "bad_user_agent": Advice(
        "WhatsApp refused the client's user agent (409).",
        _UPGRADE),
    "temporary_ban": Advice(
        "WhatsApp banned the account temporarily (the code says why, e.g. spam); a login is "
        "refused until the ban ends.",
        "Wait for the ban to end (the device reconnects by itself), and lower the sending "
        "rate (PUT /devices/{id}/settings/sending) before it does."),
    "unlinked": Advice(
        "The device was unlinked from the phone (Linked devices -> Log out), or WhatsApp "
        "removed it; the credentials were wiped.",
        _SCAN_AGAIN),
    "account_locked": Advice(
        "WhatsApp locked the account (403); the credentials were wiped.",
        "Open WhatsApp on the phone and follow its instructions to unlock the account, then "
        + _SCAN_AGAIN[0].lower() + _SCAN_AGAIN[1:]),
    "banned": Advice(
        "WhatsApp banned the account (406); the credentials were wiped.",
        "Open WhatsApp on the phone: it says whether the ban can be appealed. Do not pair the "
        "number again until the account works on the phone."),
    # -- pairing ------------------------------------------------------------------------------
    "pair_error": Advice(
        "The phone scanned the QR code, but pairing failed (a bad signature or a store error); "
        "pairing starts again at once with a new code.",
        "Scan the new QR code. If it fails again, update WhatsApp on the phone."),
    "scanned_without_multidevice": Advice(
        "The phone scanned the code without multi-device support.",
        "Update WhatsApp on the phone (linked devices need multi-device), then scan the same "
        "QR code again."),
    "passkey_required": Advice(
        "The phone asked for a passkey, which neonize cannot answer.",
        "Pair by QR code or phone code from a phone that does not ask for a passkey (turn "
        "passkeys off for linking in the phone's WhatsApp settings)."),
    "pairing_interrupted": Advice(
        "The pairing connection dropped before a scan.",
        "Wait: pairing starts again after the backoff; then scan the new QR code. If it "
        "repeats, check the network (`wasup doctor`)."),
    "pairing_unexpected_state": Advice(
        "whatsmeow's QR channel reported an unexpected state.",
        "Wait for pairing to start again, or log the device in (POST /devices/{id}/login)."),
})

#: What each status means when its reason says nothing more.
STATUSES: Mapping[Status, Advice] = MappingProxyType({
    Status.PENDING: Advice(
        "The device is waiting for its QR code to be scanned (or a phone code entered).",
        "Scan the QR code with WhatsApp on the phone: Settings -> Linked devices -> Link a "
        "device (GET /devices/{id}/qr, or `wasup qr DEVICE` in a terminal)."),
    Status.QR_TIMEOUT: Advice(
        "Pairing ended without a scan.",
        "Log the device in (POST /devices/{id}/login) and scan the new QR code quickly."),
    Status.CONNECTING: Advice(
        "The device is connecting with its stored credentials.",
        "Wait a few seconds; if it stays connecting, check the network (`wasup doctor`)."),
    Status.CONNECTED: Advice(
        "The device is connected to WhatsApp.",
        "Nothing to do."),
    Status.DISCONNECTED: Advice(
        "The device is disconnected from WhatsApp; its credentials are kept.",
        "Wait for the reconnect, or log the device in (POST /devices/{id}/login)."),
    Status.LOGGED_OUT: Advice(
        "The device is logged out; its credentials are gone.",
        _SCAN_AGAIN),
})

UNKNOWN = Advice(
    "wasup has no entry for this reason.",
    "Read wasup's log for the device; log it in again if it does not recover.",
)


def reason_code(reason: str) -> str:
    """The code of a reason: the part before ``": "`` (``unreachable: ...`` -> ``unreachable``)."""
    return reason.split(":", 1)[0].strip()


def advice_for(reason: str) -> Advice | None:
    """The catalogue's entry for ``reason`` (by its code), or None."""
    return REASONS.get(reason_code(reason))


def troubleshoot(
    report: HealthReport, status: Status, reason: str | None, history: Sequence[HistoryEntry]
) -> Troubleshooting:
    """Issues and recommendations from the status and reason, the history (newest first) and
    the health checks that did not pass."""
    found: list[tuple[str, str]] = []
    if status is not Status.CONNECTED:
        what = STATUSES[status]
        found.append((f"{status.value}: {what.explanation}", what.recommendation))
    if reason is not None:
        known = advice_for(reason) or UNKNOWN
        found.append((f"statusReason {reason}: {known.explanation}", known.recommendation))
    for name, check in report.checks:
        if check.verdict is Verdict.PASS or name in ("connectionStatus", "deviceExists"):
            continue
        found.append((f"{name}: {check.message}", _CHECK_ADVICE.get(name, UNKNOWN.recommendation)))
    recent = [e.change.reason for e in history[1:6] if e.change.reason and e.change.reason != reason]
    for earlier in dict.fromkeys(recent):
        before = advice_for(earlier)
        if before is not None and reason_code(earlier) not in _ROUTINE:
            found.append((f"earlier statusReason {earlier}: {before.explanation}",
                          before.recommendation))
    issues: list[str] = []
    recommendations: list[str] = []
    for issue, recommendation in found:
        if issue not in issues:
            issues.append(issue)
            recommendations.append(recommendation)
    return Troubleshooting(tuple(issues), tuple(recommendations))


#: Reasons of the history that are part of normal life (not worth an issue on their own).
_ROUTINE = frozenset({"created", "restart", "logout", "cancelled", "qr_expired"})

#: What to do about a health check that did not pass.
_CHECK_ADVICE: Mapping[str, str] = MappingProxyType({
    "lastActivity": "Check that the phone is online and WhatsApp runs on it; a device with no "
    "traffic for a day may have been unlinked.",
    "engineLiveness": "The device's actor is restarting after a crash: read wasup's log.",
    "timeInState": "The device stays in its status longer than wasup's timers allow: log it in "
    "again (POST /devices/{id}/login) or cancel it, and read wasup's log.",
    "reconnectAttempts": "The device keeps reconnecting: check the network of the wasup host "
    "(`wasup doctor`) and the device's proxy.",
    "webhookBacklog": "Webhook deliveries wait: check that the webhook endpoint answers quickly "
    "with a 2xx (GET /devices/{id}/webhook/deliveries shows the attempts).",
    "webhookFailures": "Some deliveries ran out of retries: fix the endpoint, then redeliver "
    "them (POST /devices/{id}/webhook/deliveries/{deliveryId}/redeliver).",
    "stuckSends": "Sends are not acknowledged: check the connection; stuck sends expire after "
    "their ttl.",
    "messageSending": "The test message was not taken: check the device's status and reason.",
})
