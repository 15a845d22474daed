"""A device's status: the six values, and which changes between them are legal.

``Status`` is the one list of statuses: everything else imports it (``supervisor.state``
re-exports it). The transitions themselves are in :mod:`supervisor.state`.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    QR_TIMEOUT = "qr_timeout"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"


#: States with a live or wanted session: logout and cancel apply to these.
ACTIVE = frozenset({Status.PENDING, Status.CONNECTING, Status.CONNECTED, Status.DISCONNECTED})

#: Reasons for ``disconnected`` that wasup never retries on its own (an operator's login does).
HOLDING_REASONS = frozenset({"cancelled", "crash_loop"})

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
