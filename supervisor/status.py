"""A device's status: the six values, which changes between them are legal, and what each
``disconnected`` reason means for reconnecting.

``Status`` is the one list of statuses: everything else imports it (``supervisor.state``
re-exports it). The transitions themselves are in :mod:`supervisor.state`.
"""

from __future__ import annotations

from enum import StrEnum

from .retry import Retry


class Status(StrEnum):
    PENDING = "pending"
    QR_TIMEOUT = "qr_timeout"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"


#: States with a live or wanted session: logout and cancel apply to these.
ACTIVE = frozenset({Status.PENDING, Status.CONNECTING, Status.CONNECTED, Status.DISCONNECTED})

#: Reasons for ``disconnected`` that wasup never retries on its own (an operator's login does,
#: with the stored credentials).
HOLDING_REASONS = frozenset({"cancelled", "crash_loop", "stream_replaced"})

#: Reasons for ``disconnected`` that wasup retries on the slow schedule (``Config.slow_retry``)
#: and at once at every start of wasup: only an upgrade or WhatsApp's side fixes them.
SLOW_REASONS = frozenset({"client_outdated", "bad_user_agent", "unsupported_event", "connect_failure"})


def retry_for(reason: str | None, reported: Retry = Retry.BACKOFF) -> Retry:
    """When a ``disconnected`` device with ``reason`` reconnects.

    The reason decides for the reasons above (so a restart, which keeps only the reason,
    keeps the behaviour); any other reason keeps what the engine ``reported``.
    """
    if reason in HOLDING_REASONS:
        return Retry.HOLD
    if reason in SLOW_REASONS:
        return Retry.SLOW
    return reported

#: The legal changes of status, from DESIGN.md's table (``restore`` and ``crash_loop`` included,
#: which only ever move along these same edges).
LEGAL = frozenset(
    {
        (Status.PENDING, Status.QR_TIMEOUT),
        (Status.PENDING, Status.CONNECTING),
        (Status.PENDING, Status.DISCONNECTED),
        (Status.PENDING, Status.LOGGED_OUT),
        (Status.CONNECTING, Status.CONNECTED),
        (Status.CONNECTING, Status.DISCONNECTED),
        (Status.CONNECTING, Status.LOGGED_OUT),
        (Status.CONNECTED, Status.DISCONNECTED),
        (Status.CONNECTED, Status.LOGGED_OUT),
        (Status.DISCONNECTED, Status.CONNECTING),
        (Status.DISCONNECTED, Status.PENDING),
        (Status.DISCONNECTED, Status.LOGGED_OUT),
        (Status.DISCONNECTED, Status.QR_TIMEOUT),
        (Status.QR_TIMEOUT, Status.PENDING),
        (Status.LOGGED_OUT, Status.PENDING),
    }
)
