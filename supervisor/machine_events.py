"""What the device state machine takes in: commands, engine reports and state timeouts.

Each is a frozen record; :data:`Event` is their union, the second argument of
:func:`supervisor.state.transition`.
"""

from __future__ import annotations

import attrs

# -- events: commands ------------------------------------------------------------------------


@attrs.frozen
class Start:
    """The actor starts: for a new device, or to restore a stored one after a restart."""


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
    """The connection dropped, a connect or pairing attempt failed, or WhatsApp is unreachable."""

    reason: str


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
class BackoffElapsed:
    """The reconnect delay is over."""


@attrs.frozen
class HandshakeTimedOut:
    """``connecting`` (or pairing start) took longer than the configured connect timeout."""


def connection_ended(reason: str, recoverable: bool) -> ConnectionLost | Unlinked:
    """The event for a connection that ended: lost (retried) or, if not recoverable, unlinked."""
    return ConnectionLost(reason) if recoverable else Unlinked(reason)


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
    | Unlinked
    | Banned
    | QrExpired
    | BackoffElapsed
    | HandshakeTimedOut
)
