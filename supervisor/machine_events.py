"""What the device state machine takes in: commands, engine reports and state timeouts.

Each is a frozen record; :data:`Event` is their union, the second argument of
:func:`supervisor.state.transition`. :func:`from_engine` translates an engine's report on its
session into the event it is.
"""

from __future__ import annotations

import attrs

from . import engine as eng
from .engine import Retry

# -- events: commands ------------------------------------------------------------------------


@attrs.frozen
class Start:
    """The actor starts: for a new device, or to restore a stored one after a restart.

    ``credentials``: whether the engine holds credentials for the device (None: not asked).
    Restore reconciles ``paired`` with it, so no crash between the engine's store and wasup's
    can leave the two apart.
    """

    credentials: bool | None = None


@attrs.frozen
class Login:
    """An operator asks to log in (pair, or connect with stored credentials)."""


@attrs.frozen
class Logout:
    """An operator asks to log out at WhatsApp and wipe the credentials."""


@attrs.frozen
class Cancel:
    """An operator asks to stop the session."""


@attrs.frozen
class CrashLoop:
    """The supervisor parks the device: it crashed more often than its restart intensity."""


# -- events: from the engine -----------------------------------------------------------------


@attrs.frozen
class QrReady:
    code: str


@attrs.frozen
class Scanned:
    """The phone scanned the QR code or entered the pair code; the account as reported."""

    jid: str = ""
    phone_number: str = ""
    push_name: str | None = None
    platform: str | None = None


@attrs.frozen
class EngineConnected:
    """The handshake finished; the push name and platform if the engine reported them."""

    push_name: str | None = None
    platform: str | None = None


@attrs.frozen
class ConnectionLost:
    """The connection dropped, a connect or pairing attempt failed, or WhatsApp is unreachable;
    ``retry`` says when to reconnect (credentials are kept in every case)."""

    reason: str
    retry: Retry = Retry.BACKOFF


@attrs.frozen
class PairingFailed:
    """A pairing attempt failed visibly (a failed scan...): the device stays pending with this
    reason; ``restart``: the engine's pairing connection is gone and must be started again."""

    reason: str
    restart: bool = False


@attrs.frozen
class PairCodeIssued:
    """The engine handed out a pair code: the pairing stays open for the pair code's window
    even when the QR codes run out."""


@attrs.frozen
class Unlinked:
    """Final: unlinked from the phone, 401 from WhatsApp, banned, replaced, outdated."""

    reason: str


@attrs.frozen
class Banned:
    """A temporary ban: wait until ``until`` (epoch seconds) before trying again."""

    reason: str
    until: float


# -- events: state timeouts ------------------------------------------------------------------


@attrs.frozen
class QrExpired:
    """The QR code on show expired."""


@attrs.frozen
class PairCodeExpired:
    """The pair code's window (from the first QR code) is over."""


@attrs.frozen
class BackoffElapsed:
    """The reconnect delay is over."""


@attrs.frozen
class HandshakeTimedOut:
    """``connecting`` (or pairing start) took longer than the configured connect timeout."""


def connection_ended(
    reason: str, recoverable: bool, retry: Retry = Retry.BACKOFF
) -> ConnectionLost | Unlinked:
    """The event for a connection that ended: lost (retried as ``retry`` says) or, if not
    recoverable, unlinked."""
    return ConnectionLost(reason, retry) if recoverable else Unlinked(reason)


Event = (
    Start
    | Login
    | Logout
    | Cancel
    | CrashLoop
    | QrReady
    | Scanned
    | EngineConnected
    | ConnectionLost
    | PairingFailed
    | PairCodeIssued
    | Unlinked
    | Banned
    | QrExpired
    | PairCodeExpired
    | BackoffElapsed
    | HandshakeTimedOut
)


def from_engine(
    report: eng.QrCode
    | eng.Paired
    | eng.Connected
    | eng.Disconnected
    | eng.LoggedOut
    | eng.TemporaryBan
    | eng.PairingFailed,
) -> Event:
    """The event for an engine's report on its session (the translation table at the engine's
    edge; messages, receipts and notices are the actor's, not the state machine's)."""
    match report:
        case eng.QrCode(code=code):
            return QrReady(code)
        case eng.Paired(jid=jid, phone_number=phone, push_name=push_name, platform=platform):
            return Scanned(jid, phone, push_name, platform)
        case eng.Connected(push_name=push_name, platform=platform):
            return EngineConnected(push_name or None, platform or None)
        case eng.Disconnected(reason=reason, recoverable=recoverable, retry=retry):
            return connection_ended(reason, recoverable, retry)
        case eng.LoggedOut(reason=reason):
            return Unlinked(reason)
        case eng.TemporaryBan(reason=reason, until_epoch=until):
            return Banned(reason, until)
        case eng.PairingFailed(reason=reason, restart=restart):
            return PairingFailed(reason, restart)
