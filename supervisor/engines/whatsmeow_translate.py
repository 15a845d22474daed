"""whatsmeow's events, as neonize delivers them, translated into wasup's engine events.

Everything here is pure: a neonize protobuf event object (or a pairing status string) goes in,
a list of :data:`supervisor.engine.EngineEvent` comes out. No clock is read (the caller passes
``now``), nothing is stored, nothing talks to Go. The table in ``docs/engine-events.md`` is
this module, row by row; ``tests/test_whatsmeow_translate.py`` builds neonize's own event
objects and checks every row.

Usage::

    events = translate(neonize_event, now=now_epoch(), me=device)   # -> [Connected(...)]
    events = translate_pairing_status("timeout")                    # -> [Disconnected(...)]
    reason = connect_error_reason("failed to dial ... no such host")  # -> "unreachable: ..."

Error handling: an event type wasup does not use translates to ``[]``; a malformed event (a
missing field) translates with protobuf's defaults, never raises.
"""

from __future__ import annotations

import re
from typing import Any

from neonize.proto import Neonize_pb2 as nz

from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    MessageReceived,
    MessageStatus,
    Paired,
    TemporaryBan,
)

#: KeepAliveTimeout events tolerated before wasup treats the connection as lost (whatsmeow
#: pings every 20-30 s and waits 10 s for the answer; it gives up by itself after 3 minutes).
KEEPALIVE_MAX_ERRORS = 3

#: Expiry assumed for a ban whose end WhatsApp did not say (a ConnectFailure with code 402).
UNKNOWN_BAN_SECONDS = 3600.0

#: ConnectFailure / LoggedOut reasons and the statusReason wasup records for them.
_FAILURE_REASONS: dict[int, str] = {
    nz.GENERIC: "connect_failure",
    nz.LOGGED_OUT: "unlinked",
    nz.TEMP_BANNED: "temporary_ban",
    nz.MAIN_DEVICE_GONE: "main_device_gone",
    nz.UNKNOWN_LOGOUT: "unknown_logout",
    nz.CLIENT_OUTDATED: "client_outdated",
    nz.BAD_USER_AGENT: "bad_user_agent",
    nz.INTERNAL_SERVER_ERROR: "internal_server_error",
    nz.EXPERIMENTAL: "experimental",
    nz.SERVICE_UNAVAILABLE: "service_unavailable",
}

#: ConnectFailure reasons that end the session for good (never retried automatically).
_FINAL_FAILURES = frozenset(
    {nz.LOGGED_OUT, nz.MAIN_DEVICE_GONE, nz.UNKNOWN_LOGOUT, nz.CLIENT_OUTDATED, nz.BAD_USER_AGENT}
)

#: Receipt types that change an outgoing message's status. neonize 0.5.2 encodes whatsmeow's
#: ``played-self`` receipt as SERVER_ERROR (and an unknown type as DELIVERED), so SERVER_ERROR
#: is deliberately not mapped to ``failed``.
_RECEIPT_STATUS: dict[int, str] = {
    nz.Receipt.DELIVERED: "delivered",
    nz.Receipt.READ: "read",
    nz.Receipt.PLAYED: "read",
}


def jid_string(jid: nz.JID) -> str:
    """``user@server`` (the device part dropped), or ``""`` for an empty JID."""
    if not jid.User and not jid.Server:
        return ""
    return f"{jid.User}@{jid.Server}" if jid.User else jid.Server


def failure_reason(code: int) -> str:
    return _FAILURE_REASONS.get(code, "connect_failure")


def translate(event: Any, *, now: float, me: nz.Device | None = None) -> list[EngineEvent]:
    """Translate one neonize event object into wasup's engine events.

    ``now`` (epoch seconds) turns a ban's relative expiry into an instant; ``me`` is the
    account neonize reported last (its push name and platform go into :class:`Connected`).
    """
    match event:
        case nz.Connected():
            push_name = me.PushName if me is not None and me.PushName else None
            platform = me.Platform if me is not None and me.Platform else None
            return [Connected(push_name=push_name, platform=platform)]
        case nz.Disconnected():
            return [Disconnected("connection_lost", recoverable=True)]
        case nz.KeepAliveTimeout():
            if event.ErrorCount < KEEPALIVE_MAX_ERRORS:
                return []
            return [Disconnected("keepalive_timeout", recoverable=True)]
        case nz.KeepAliveRestored():
            return []
        case nz.LoggedOut():
            reason = failure_reason(event.Reason) if event.HasField("Reason") else "unlinked"
            if reason == "connect_failure":
                reason = "unlinked"
            return [LoggedOut(reason)]
        case nz.StreamReplaced():
            return [LoggedOut("stream_replaced")]
        case nz.TemporaryBan():
            code = nz.TemporaryBan.TempBanReason.Name(event.Code).lower()
            return [TemporaryBan(f"temporary_ban: {code}", until_epoch=now + max(0, event.Expire))]
        case nz.ConnectFailure():
            reason = failure_reason(event.Reason)
            if event.Reason in _FINAL_FAILURES:
                return [LoggedOut(reason)]
            if event.Reason == nz.TEMP_BANNED:
                return [TemporaryBan(reason, until_epoch=now + UNKNOWN_BAN_SECONDS)]
            detail = f": {event.Message}" if event.Message else ""
            return [Disconnected(f"{reason}{detail}", recoverable=True)]
        case nz.ClientOutdated():
            return [LoggedOut("client_outdated")]
        case nz.StreamError():
            return []  # whatsmeow handles (or reports as other events) what it understands
        case nz.PairStatus():
            if event.Status == nz.PairStatus.SUCCESS:
                return [
                    Paired(
                        jid=jid_string(event.ID),
                        phone_number=event.ID.User,
                        push_name=None,
                        platform=event.Platform or None,
                    )
                ]
            return [Disconnected(f"pair_error: {event.Error or 'unknown'}", recoverable=True)]
        case nz.Message():
            return _message(event)
        case nz.Receipt():
            status = _RECEIPT_STATUS.get(event.Type)
            if status is None:
                return []
            return [MessageStatus(message_id=mid, status=status) for mid in event.MessageIDs]
    return []


def _message(event: nz.Message) -> list[EngineEvent]:
    text = message_text(event.Message)
    if text is None:
        return []  # reactions, receipts of history, protocol and media-only messages
    info = event.Info
    source = info.MessageSource
    chat = jid_string(source.Chat)
    ts = float(info.Timestamp)
    if ts > 1e11:  # neonize builds differ: seconds in some, milliseconds in others
        ts /= 1000.0
    return [
        MessageReceived(
            message_id=info.ID,
            chat=chat,
            sender=jid_string(source.Sender) or chat,
            text=text,
            is_group=source.IsGroup,
            from_me=source.IsFromMe,
            timestamp=ts,
            is_broadcast=source.Chat.Server == "broadcast",
        )
    ]


def message_text(message: Any, depth: int = 0) -> str | None:
    """The text of a WhatsApp message (its caption for media), or None if it carries none."""
    if depth > 3:
        return None
    if message.conversation:
        return str(message.conversation)
    if message.HasField("extendedTextMessage"):
        return str(message.extendedTextMessage.text)
    for name in ("imageMessage", "videoMessage", "documentMessage"):
        if message.HasField(name):
            return str(getattr(message, name).caption)
    for wrapper in (
        "ephemeralMessage",
        "viewOnceMessage",
        "viewOnceMessageV2",
        "documentWithCaptionMessage",
    ):
        if message.HasField(wrapper):
            return message_text(getattr(message, wrapper).message, depth + 1)
    return None


def translate_pairing_status(status: str) -> list[EngineEvent]:
    """Translate the status strings whatsmeow's QR channel reports while pairing.

    ``success`` and ``error`` are followed by a PairStatus event, which carries the details;
    ``timeout`` means the channel closed without a scan (the connection dropped, or the codes
    ran out) and ``err-client-outdated`` that WhatsApp refuses this client version.
    """
    match status:
        case "timeout":
            return [Disconnected("pairing_interrupted", recoverable=True)]
        case "err-client-outdated":
            return [LoggedOut("client_outdated")]
        case "err-unexpected-state":
            return [Disconnected("pairing_unexpected_state", recoverable=True)]
    return []


_DNS = re.compile(r"lookup (\S+?)(?: on \S+)?: (.+)$")


def connect_error_reason(message: str) -> str:
    """A short ``statusReason`` for a failed connect, from neonize's error text.

    Examples: ``unreachable: lookup web.whatsapp.com: no such host``,
    ``unreachable: connection refused``, ``unreachable: i/o timeout``, else
    ``connect_failed: <the text, shortened>``.
    """
    text = " ".join(message.split())
    m = _DNS.search(text)
    if m:
        return f"unreachable: lookup {m.group(1)}: {m.group(2)}"
    lowered = text.lower()
    for needle in ("connection refused", "network is unreachable", "no route to host",
                   "i/o timeout", "connection reset", "tls handshake timeout"):
        if needle in lowered:
            return f"unreachable: {needle}"
    short = text if len(text) <= 160 else text[:157] + "..."
    return f"connect_failed: {short or 'unknown error'}"
