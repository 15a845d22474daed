"""whatsmeow's events, as neonize delivers them, translated into wasup's engine events.

Everything here is pure: a neonize protobuf event object, a pairing status string or the error
text ``Neonize()`` returned goes in, a list of :data:`supervisor.engine.EngineEvent` comes out.
No clock is read (the caller passes ``now``), nothing is stored or logged, nothing talks to Go.

:data:`ROWS` is the translation table, one :class:`Row` per thing whatsmeow reports, including
what neonize 0.5.2 cannot pass on and what never reaches wasup. Every fixed outcome is data in
that table and :func:`translate` looks it up there; ``docs/gen_engine_events.py`` renders the
table as ``docs/engine-events.md``; ``tests/test_whatsmeow_translate.py`` builds neonize's own
event objects for every row.

Usage::

    events = translate(neonize_event, now=now_epoch(), me=device)   # -> [Connected(...)]
    events = translate_pairing_status("error")     # -> [PairingFailed("pair_error", restart=True)]
    event = exit_event("proto: required field neonize.Receipt.Type not set")
    #   -> Disconnected("unsupported_event", retry=Retry.SLOW)
    advice_for("client_outdated")                  # -> "... upgrade neonize ..." (for the log)

Incoming messages (their text, LID and phone-number addresses) are read by
:mod:`supervisor.engines.whatsmeow_messages`.

Error handling: an event type wasup does not use translates to ``[]``; a malformed event (a
missing field) translates with protobuf's defaults, never raises.
"""

from __future__ import annotations

import enum
import re

import attrs
from google.protobuf.message import Message as Proto
from neonize.proto import Neonize_pb2 as nz

from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    MessageReceived,
    MessageStatus,
    Paired,
    PairingFailed,
    QrCode,
    Retry,
    TemporaryBan,
)

from .whatsmeow_messages import jid_string, received, undecryptable

#: KeepAliveTimeout events tolerated before wasup treats the connection as lost (whatsmeow
#: pings every 20-30 s and waits 10 s for the answer; it gives up by itself after 3 minutes).
KEEPALIVE_MAX_ERRORS = 3

#: Expiry assumed for a ban whose end WhatsApp did not say (a ConnectFailure with code 402).
UNKNOWN_BAN_SECONDS = 3600.0

#: What neonize's Go code returns when protobuf refuses to encode an event: a ``required``
#: field it could not fill (a receipt of type ``server-error``, a ban or connect-failure code
#: its schema lacks). Its event loop has ended; the connection has to be dropped.
UNSUPPORTED_EVENT = re.compile(r"required field \S+ not set")

#: What the operator should do about a ``client_outdated`` device.
UPGRADE_NEONIZE = (
    "WhatsApp refuses the WhatsApp web version compiled into the installed neonize: upgrade "
    'neonize (pip install -U "neonize>=0.5.2,<0.6") and restart wasup; the credentials are '
    "kept and the device reconnects at the next start"
)


class Section(enum.Enum):
    """The parts of docs/engine-events.md, in order."""

    CONNECTION = "Connection"
    SESSION_END = "Logged out, refused, replaced, banned"
    PAIRING = "Pairing"
    EVENT_LOOP = "When neonize's event loop ends"
    MESSAGES = "Messages"


class Via(enum.Enum):
    """How neonize 0.5.2 hands a whatsmeow event to wasup."""

    EVENT = "event callback"
    QR = "QR callback"
    STATUS = "pairing status callback"
    EXIT = "Neonize() returns"
    NEVER = "never reaches wasup"


@attrs.frozen
class OnEvent:
    """The row for a neonize event class (and, where it matters, its reason code)."""

    event: type[Proto]
    reason: int | None = None


@attrs.frozen
class OnStatus:
    """The row for a pairing status string from whatsmeow's QR channel."""

    status: str


Key = OnEvent | OnStatus


@attrs.frozen
class Computed:
    """An outcome built from the event's own fields (``kind``: the engine event it is, or
    None for "nothing"); ``text`` says how, for the docs."""

    kind: type[EngineEvent] | None
    text: str


Outcome = EngineEvent | Computed | None


@attrs.frozen
class Row:
    """One line of the translation table."""

    section: Section
    whatsmeow: str  # the whatsmeow event and when it happens
    via: Via
    neonize: str  # what neonize hands over
    outcome: Outcome  # None: nothing is reported
    key: Key | None = None  # how translate() finds a fixed outcome
    note: str = ""
    advice: str = ""  # what the operator should do (logged with the reason)


_SLOW = Retry.SLOW
_S, _E, _P, _X, _M = (Section.CONNECTION, Section.SESSION_END, Section.PAIRING,
                      Section.EVENT_LOOP, Section.MESSAGES)
_NEVER_AS_CF = "never sent as ConnectFailure: whatsmeow reports this code as "

UNSUPPORTED = Disconnected("unsupported_event", retry=_SLOW)
CLIENT_OUTDATED = Disconnected("client_outdated", retry=_SLOW)
CONNECT_FAILURE = Disconnected("connect_failure", retry=_SLOW)
PAIR_ERROR = PairingFailed("pair_error", restart=True)
PASSKEY = PairingFailed("passkey_required")

ROWS: tuple[Row, ...] = (
    # -- connection -------------------------------------------------------------------------
    Row(_S, "`Connected`: logged in (after the prekey upload)", Via.EVENT, "code 3 `Connected`",
        Computed(Connected, "`Connected(pushName, platform)` from the account neonize sent "
                 "before (code 0)")),
    Row(_S, "the account (neonize's own, once when its event loop starts)", Via.EVENT,
        "code 0 `Device`", None, note="kept by the engine for the next `Connected`"),
    Row(_S, "`Disconnected`: the socket closed unexpectedly", Via.EVENT, "code 12 `Disconnected`",
        Disconnected("connection_lost"), OnEvent(nz.Disconnected),
        note="whatsmeow reconnects by itself: reported only when no `Connected` followed "
        "within the engine's grace (30 s); then wasup stops the client and reconnects"),
    Row(_S, "`KeepAliveTimeout`, fewer than 3 in a row", Via.EVENT, "code 4 `KeepAliveTimeout`",
        None),
    Row(_S, "`KeepAliveTimeout`, the 3rd in a row", Via.EVENT, "code 4 `KeepAliveTimeout`",
        Disconnected("keepalive_timeout"), OnEvent(nz.KeepAliveTimeout)),
    Row(_S, "`KeepAliveRestored`", Via.EVENT, "code 5 `KeepAliveRestored`", None,
        OnEvent(nz.KeepAliveRestored)),
    Row(_S, "`StreamError` (a stream error code whatsmeow does not know)", Via.EVENT,
        "code 11 `StreamError`", None, OnEvent(nz.StreamError),
        note="the socket close that follows is a `Disconnected`"),
    Row(_S, "stream error 503, connect failure 503 (WhatsApp restarting)", Via.NEVER,
        "nothing: whatsmeow reconnects by itself", None,
        note="if the socket closed, `Disconnected` reports it"),
    Row(_S, "stream error 515 after pairing", Via.NEVER,
        "nothing: whatsmeow reconnects by itself", None,
        note="the pairing's `Connected` follows; wasup's handshake timeout covers a failure"),
    Row(_S, "`OfflineSyncPreview`, `OfflineSyncCompleted`, `HistorySync`", Via.NEVER,
        "codes 26, 27, 13: not subscribed", None),
    Row(_S, "`ManualLoginReconnect`", Via.NEVER,
        "not exposed (only with `DisableLoginAutoReconnect`, which is off)", None),
    # -- logged out, refused, replaced, banned ---------------------------------------------
    Row(_E, "`LoggedOut` 401: unlinked from the phone (stream error `device_removed` or "
        "connect failure 401)", Via.EVENT, "code 6 `LoggedOut{Reason: LOGGED_OUT}`",
        LoggedOut("unlinked"), OnEvent(nz.LoggedOut, nz.LOGGED_OUT)),
    Row(_E, "`LoggedOut` 403: account locked (whatsmeow: main device gone)", Via.EVENT,
        "code 6 `LoggedOut{Reason: MAIN_DEVICE_GONE}`", LoggedOut("account_locked"),
        OnEvent(nz.LoggedOut, nz.MAIN_DEVICE_GONE)),
    Row(_E, "`LoggedOut` 406: banned (whatsmeow: unknown logout)", Via.EVENT,
        "code 6 `LoggedOut{Reason: UNKNOWN_LOGOUT}`", LoggedOut("banned"),
        OnEvent(nz.LoggedOut, nz.UNKNOWN_LOGOUT)),
    Row(_E, "`LoggedOut` with another reason", Via.EVENT, "code 6 `LoggedOut`", CONNECT_FAILURE,
        OnEvent(nz.LoggedOut),
        note="not sent by whatsmeow (its `IsLoggedOut` is 401, 403, 406 only)"),
    Row(_E, "`StreamReplaced`: another client connected with these credentials", Via.EVENT,
        "code 7 `StreamReplaced`", Disconnected("stream_replaced", retry=Retry.HOLD),
        OnEvent(nz.StreamReplaced),
        advice="another process uses this device's credentials: stop it, then log the "
        "device in (no new scan)"),
    Row(_E, "`ClientOutdated`: connect failure 405", Via.EVENT, "code 10 `ClientOutdated`",
        CLIENT_OUTDATED, OnEvent(nz.ClientOutdated), advice=UPGRADE_NEONIZE),
    Row(_E, "`TemporaryBan` (connect failure 402) with code 101-104 or 106", Via.EVENT,
        "code 8 `TemporaryBan{Code, Expire}`",
        Computed(TemporaryBan, "`TemporaryBan(until = now + expire)`")),
    Row(_E, "`TemporaryBan` with another code", Via.EXIT,
        "`proto: required field neonize.TemporaryBan.Code not set`", UNSUPPORTED,
        note="neonize cannot encode the code: its event loop ends (see below)"),
    Row(_E, "`ConnectFailure` 400 (generic)", Via.EVENT, "code 9 `ConnectFailure{GENERIC}`",
        CONNECT_FAILURE, OnEvent(nz.ConnectFailure, nz.GENERIC)),
    Row(_E, "`ConnectFailure` 409: bad user agent", Via.EVENT,
        "code 9 `ConnectFailure{BAD_USER_AGENT}`", Disconnected("bad_user_agent", retry=_SLOW),
        OnEvent(nz.ConnectFailure, nz.BAD_USER_AGENT), advice=UPGRADE_NEONIZE),
    Row(_E, "`ConnectFailure` 501 (experimental)", Via.EVENT,
        "code 9 `ConnectFailure{EXPERIMENTAL}`", CONNECT_FAILURE,
        OnEvent(nz.ConnectFailure, nz.EXPERIMENTAL)),
    Row(_E, "`ConnectFailure` 500 (internal server error)", Via.EVENT,
        "code 9 `ConnectFailure{INTERNAL_SERVER_ERROR}`", CONNECT_FAILURE,
        OnEvent(nz.ConnectFailure, nz.INTERNAL_SERVER_ERROR)),
    Row(_E, "`ConnectFailure` 413, 414, 415, 418 or a code whatsmeow does not know", Via.EXIT,
        "`proto: required field neonize.ConnectFailure.Reason not set`", UNSUPPORTED,
        note="neonize cannot encode the reason: its event loop ends (see below)"),
    Row(_E, "`ConnectFailure` 401", Via.EVENT, "code 9 `ConnectFailure{LOGGED_OUT}`",
        LoggedOut("unlinked"), OnEvent(nz.ConnectFailure, nz.LOGGED_OUT),
        note=_NEVER_AS_CF + "`LoggedOut`"),
    Row(_E, "`ConnectFailure` 403", Via.EVENT, "code 9 `ConnectFailure{MAIN_DEVICE_GONE}`",
        LoggedOut("account_locked"), OnEvent(nz.ConnectFailure, nz.MAIN_DEVICE_GONE),
        note=_NEVER_AS_CF + "`LoggedOut`"),
    Row(_E, "`ConnectFailure` 406", Via.EVENT, "code 9 `ConnectFailure{UNKNOWN_LOGOUT}`",
        LoggedOut("banned"), OnEvent(nz.ConnectFailure, nz.UNKNOWN_LOGOUT),
        note=_NEVER_AS_CF + "`LoggedOut`"),
    Row(_E, "`ConnectFailure` 405", Via.EVENT, "code 9 `ConnectFailure{CLIENT_OUTDATED}`",
        CLIENT_OUTDATED, OnEvent(nz.ConnectFailure, nz.CLIENT_OUTDATED),
        note=_NEVER_AS_CF + "`ClientOutdated`", advice=UPGRADE_NEONIZE),
    Row(_E, "`ConnectFailure` 402", Via.EVENT, "code 9 `ConnectFailure{TEMP_BANNED}`",
        Computed(TemporaryBan, "`TemporaryBan(until = now + 1 h)` (no expiry given)"),
        note=_NEVER_AS_CF + "`TemporaryBan`"),
    Row(_E, "`ConnectFailure` 503", Via.EVENT, "code 9 `ConnectFailure{SERVICE_UNAVAILABLE}`",
        CONNECT_FAILURE, OnEvent(nz.ConnectFailure, nz.SERVICE_UNAVAILABLE),
        note="never sent: whatsmeow reconnects by itself after a 503"),
    # -- pairing ------------------------------------------------------------------------------
    Row(_P, "a QR code from whatsmeow's QR channel", Via.QR, "the code string",
        Computed(QrCode, "`QrCode(code)`: the first at once, each next one when wasup's QR "
                 "timer asks (`next_qr`)")),
    Row(_P, "`QR` (all codes of the pairing)", Via.NEVER, "code 1: not subscribed",
        None, note="the QR channel hands the codes over one by one"),
    Row(_P, "`PairSuccess`: the phone scanned the code or entered the pair code", Via.STATUS,
        "`success`", None, OnStatus("success"), note="the `PairStatus` event follows"),
    Row(_P, "`PairSuccess`", Via.EVENT, "code 2 `PairStatus{SUCCESS, ID}`",
        Computed(Paired, "`Paired(jid, phone, platform)`")),
    Row(_P, "`PairError`: a scan that failed locally (bad signature, store error), or "
        "`PairPasskeyError`", Via.STATUS, "`error`", PAIR_ERROR, OnStatus("error"),
        note="the client has already disconnected: wasup starts pairing again at once"),
    Row(_P, "`PairError`", Via.NEVER, "code 2 `PairStatus{ERROR}`: stays in neonize's channel",
        PAIR_ERROR, OnEvent(nz.PairStatus, nz.PairStatus.ERROR),
        note="neonize waits for an account that a failed pairing never stores"),
    Row(_P, "`QRScannedWithoutMultidevice`", Via.STATUS, "`err-scanned-without-multidevice`",
        PairingFailed("scanned_without_multidevice"),
        OnStatus("err-scanned-without-multidevice"),
        note="the phone must enable multi-device; the same QR code can be scanned again"),
    Row(_P, "`PairPasskeyRequest`", Via.STATUS, "`passkey-request`", PASSKEY,
        OnStatus("passkey-request"),
        note="neonize cannot answer a passkey request: link this account by QR code or pair "
        "code from a phone that does not ask for one"),
    Row(_P, "`PairPasskeyConfirmation`", Via.STATUS, "`passkey-confirmation`", PASSKEY,
        OnStatus("passkey-confirmation")),
    Row(_P, "`ClientOutdated` while pairing", Via.STATUS, "`err-client-outdated`",
        CLIENT_OUTDATED, OnStatus("err-client-outdated"), advice=UPGRADE_NEONIZE),
    Row(_P, "the QR channel closed without a scan (the socket dropped)", Via.STATUS, "`timeout`",
        Disconnected("pairing_interrupted"), OnStatus("timeout"),
        note="when the codes run out (160 s) wasup's own QR timer has already ended the pairing"),
    Row(_P, "the QR channel in an unexpected state", Via.STATUS, "`err-unexpected-state`",
        Disconnected("pairing_unexpected_state"), OnStatus("err-unexpected-state")),
    # -- neonize's event loop ends ------------------------------------------------------------
    Row(_X, "an event neonize cannot encode: receipt `server-error` or of an unknown type, "
        "a ban or connect-failure code its schema lacks", Via.EXIT,
        "`proto: required field … not set`", UNSUPPORTED,
        note="whatsmeow is still connected but nobody reads its events: wasup drops the "
        "client and retries on the slow schedule instead of reconnecting again and again"),
    Row(_X, "a connect that failed before any event (DNS, refused, timeout)", Via.EXIT,
        "the error text", Computed(Disconnected, "`unreachable: lookup web.whatsapp.com: no "
                                   "such host`, `unreachable: connection refused`, "
                                   "`connect_failed: …`")),
    # -- messages -----------------------------------------------------------------------------
    Row(_M, "`Message` of any kind: text, media (image, video, audio, voice note, document, "
        "sticker), location, contact, poll, poll vote, reaction, edit, revoke; also inside "
        "ephemeral, view-once and other wrappers", Via.EVENT, "code 17 `Message`",
        Computed(MessageReceived, "`MessageReceived` with its typed `content` "
                 "(supervisor/message_content.py), `quoted` and `push_name`; `sender`/`chat` "
                 "as phone-number JIDs where whatsmeow knows them (`SenderAlt`, `RecipientAlt` "
                 "for an `@lid` address), with `sender_lid` and `sender_pn`")),
    Row(_M, "`Message` of a kind wasup does not model (a live location, a protocol message "
        "other than revoke and edit, ...)", Via.EVENT, "code 17 `Message`",
        Computed(MessageReceived, "`MessageReceived` with `Unsupported(kind)`: the field's "
                 "name, e.g. `liveLocationMessage`, `protocolMessage:EPHEMERAL_SETTING`"),
        note="nothing is dropped: the application sees that something arrived"),
    Row(_M, "`UndecryptableMessage`: a message the device could not decrypt (whatsmeow asks "
        "the sender to send it again)", Via.EVENT, "code 44 `UndecryptableMessage`",
        Computed(MessageReceived, "`MessageReceived` with `Undecryptable(unavailable|"
                 "decrypt_failed)`: the `message_undecryptable` event")),
    Row(_M, "`Receipt` delivered", Via.EVENT, "code 18 `Receipt{DELIVERED}`",
        Computed(MessageStatus, "`MessageStatus(delivered)` per message id")),
    Row(_M, "`Receipt` read, played", Via.EVENT, "code 18 `Receipt{READ}`, `{PLAYED}`",
        Computed(MessageStatus, "`MessageStatus(read)` per message id")),
    Row(_M, "`Receipt` sender, retry, read-self, played-self, inactive, peer, history sync",
        Via.EVENT, "code 18 `Receipt` (played-self arrives as `SERVER_ERROR`)", None,
        note="`SERVER_ERROR` is not read as a failed delivery: it is a played-self receipt"),
    Row(_M, "`Receipt` server-error, or a type neonize does not know", Via.EXIT,
        "`proto: required field neonize.Receipt.Type not set`", UNSUPPORTED,
        note="its event loop ends (above)"),
)

_BY_KEY: dict[Key, Row] = {row.key: row for row in ROWS if row.key is not None}

#: Receipt types that change an outgoing message's status.
_RECEIPT_STATUS: dict[int, str] = {
    nz.Receipt.DELIVERED: "delivered",
    nz.Receipt.READ: "read",
    nz.Receipt.PLAYED: "read",
}


def _fixed(key: Key, fallback: Key | None = None) -> list[EngineEvent]:
    """The fixed outcome of the row ``key`` (or ``fallback``) finds, as a list."""
    row = _BY_KEY.get(key) or (_BY_KEY.get(fallback) if fallback is not None else None)
    if row is None or row.outcome is None or isinstance(row.outcome, Computed):
        return []
    return [row.outcome]


def advice_for(reason: str) -> str | None:
    """What the operator should do about a device that stopped with ``reason``, if anything
    (for the engine's log line): ``client_outdated`` says to upgrade neonize."""
    for row in ROWS:
        if row.advice and _reason_of(row.outcome) == reason:
            return row.advice
    return None


def _reason_of(outcome: Outcome) -> str | None:
    match outcome:
        case Disconnected(reason=r) | LoggedOut(reason=r) | PairingFailed(reason=r):
            return r
    return None


def translate(event: Proto, *, now: float, me: nz.Device | None = None) -> list[EngineEvent]:
    """Translate one neonize event object into wasup's engine events.

    ``now`` (epoch seconds) turns a ban's relative expiry into an instant; ``me`` is the
    account neonize reported last (its push name and platform go into :class:`Connected`).
    """
    match event:
        case nz.Connected():
            push_name = me.PushName if me is not None and me.PushName else None
            platform = me.Platform if me is not None and me.Platform else None
            return [Connected(push_name=push_name, platform=platform)]
        case nz.KeepAliveTimeout() if event.ErrorCount < KEEPALIVE_MAX_ERRORS:
            return []
        case nz.LoggedOut():
            # whatsmeow before 2025 sent a device_removed logout without a reason
            reason = event.Reason if event.HasField("Reason") else nz.LOGGED_OUT
            return _fixed(OnEvent(nz.LoggedOut, reason), OnEvent(nz.LoggedOut))
        case nz.TemporaryBan():
            code = nz.TemporaryBan.TempBanReason.Name(event.Code).lower()
            return [TemporaryBan(f"temporary_ban: {code}", until_epoch=now + max(0, event.Expire))]
        case nz.ConnectFailure() if event.Reason == nz.TEMP_BANNED:
            return [TemporaryBan("temporary_ban", until_epoch=now + UNKNOWN_BAN_SECONDS)]
        case nz.ConnectFailure():
            return _fixed(OnEvent(nz.ConnectFailure, event.Reason), OnEvent(nz.ConnectFailure))
        case nz.PairStatus() if event.Status == nz.PairStatus.SUCCESS:
            return [
                Paired(
                    jid=jid_string(event.ID),
                    phone_number=event.ID.User,
                    push_name=None,
                    platform=event.Platform or None,
                )
            ]
        case nz.PairStatus():
            return _fixed(OnEvent(nz.PairStatus, nz.PairStatus.ERROR))
        case nz.Message():
            return received(event)
        case nz.UndecryptableMessage():
            return undecryptable(event)
        case nz.Receipt():
            status = _RECEIPT_STATUS.get(event.Type)
            if status is None:
                return []
            return [MessageStatus(message_id=mid, status=status) for mid in event.MessageIDs]
    return _fixed(OnEvent(type(event)))


def translate_pairing_status(status: str) -> list[EngineEvent]:
    """Translate a status string of whatsmeow's QR channel (neonize's status callback) while
    pairing: ``error`` (a failed scan) -> ``PairingFailed(pair_error, restart=True)``,
    ``err-client-outdated`` -> ``Disconnected(client_outdated, SLOW)``; ``success`` -> ``[]``
    (the PairStatus event that follows carries the account)."""
    return _fixed(OnStatus(status))


def exit_event(error: str) -> Disconnected:
    """The engine event for ``Neonize()`` returning ``error`` on its own (the connection or
    its event loop ended): ``unsupported_event`` (retry slowly) when neonize could not encode
    an event, else the recoverable reason of :func:`connect_error_reason`."""
    if UNSUPPORTED_EVENT.search(error):
        return UNSUPPORTED
    return Disconnected(connect_error_reason(error))


_DNS = re.compile(r"lookup (\S+?)(?: on \S+)?: (.+)$")


def connect_error_reason(message: str) -> str:
    """A short ``statusReason`` for a failed connect, from neonize's error text.

    Examples: ``unreachable: lookup web.whatsapp.com: no such host``,
    ``unreachable: connection refused``, ``unreachable: i/o timeout``,
    ``unsupported_event`` (neonize could not encode an event), else
    ``connect_failed: <the text, shortened>``.
    """
    text = " ".join(message.split())
    if UNSUPPORTED_EVENT.search(text):
        return UNSUPPORTED.reason
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


#: whatsmeow's error for a file its media servers no longer have (``DownloadHTTPError``).
_EXPIRED = re.compile(r"status code (403|404|410)\b")


def download_reason(error: str) -> str:
    """The engine reason for a failed download with whatsmeow's error text ``error``."""
    if _EXPIRED.search(error):
        return "media_expired"
    return f"download_failed: {error[:200]}"


def short_error(exc: BaseException) -> str:
    """``exc`` as one line of at most 160 characters, for a reason or a log line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
