"""One whatsmeow client as the Trio side of the engine sees it: a :class:`Link`.

A link is one connection attempt (one Go ``Neonize()`` call, a
:class:`~supervisor.engines.whatsmeow_client.GoClient`): how far it got (:class:`LinkState`,
which only moves forward), the QR codes whatsmeow handed over, and how it ended
(:attr:`Link.failure`, :attr:`Link.exit_error`). What Go's callbacks hand over to Trio are the
:data:`GoCallback` records. Only the Trio thread reads or changes a link.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

import attrs
import trio
from neonize.proto.Neonize_pb2 import Device

from supervisor.errors import EngineError

from . import whatsmeow_client as wc


class LinkState(enum.Enum):
    """How far one Go client got. It only moves forward; how it ended is apart from it
    (:attr:`Link.failure`, :attr:`Link.exit_error`), so a failed link still says whether it
    had paired."""

    STARTING = "starting"  # Go is starting; a pairing link has shown no QR code yet
    SHOWING_QR = "showing_qr"  # pairing: a QR code was reported, the phone may scan
    PAIRED = "paired"  # the phone scanned; the pairing connection carries on to connected
    CONNECTED = "connected"  # WhatsApp accepted the login


@attrs.frozen
class GoQr:
    code: str


@attrs.frozen
class GoStatus:
    status: str


@attrs.frozen
class GoEvent:
    code: int
    data: bytes


@attrs.frozen
class GoExit:
    error: str


#: What a Go callback hands over to Trio.
GoCallback = GoQr | GoStatus | GoEvent | GoExit


@attrs.define(eq=False)
class Link:
    """What the Trio side knows about one Go client (one connection attempt).

    ``proxy`` is the proxy URL handed to Go (None: the environment's ``HTTPS_PROXY``, or a
    direct connection); its password never leaves this object (see :mod:`supervisor.proxy`).
    ``grace`` is set while a connected link waits for whatsmeow's own reconnect after a
    ``Disconnected`` (cancelling it ends the wait).
    """

    client: wc.GoClient
    pairing: bool
    proxy: str | None = attrs.field(default=None, repr=False)  # may hold a password
    state: LinkState = LinkState.STARTING
    codes: list[str] = attrs.field(factory=list)
    shown: int = 0  # codes[:shown] have been reported
    want_qr: bool = False
    me: Device | None = None
    exit_error: str | None = None  # set once Neonize() returned ("" = cleanly)
    failure: EngineError | None = None  # a final or connection-ending event arrived
    waiting: int = 0  # start_pairing/connect calls waiting on this link
    grace: trio.CancelScope | None = None
    commits: set[trio.CancelScope] = attrs.field(factory=set)  # Go threads waiting for commits
    reconnects: int = 0  # whatsmeow reconnected by itself within the grace period
    changed: trio.Event = attrs.field(factory=trio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    @property
    def paired(self) -> bool:
        """The phone scanned (or the link logged in with stored credentials)."""
        return self.state in (LinkState.PAIRED, LinkState.CONNECTED)

    @property
    def live(self) -> bool:
        """Neither failed nor returned from Go."""
        return self.exit_error is None and self.failure is None

    @contextlib.contextmanager
    def committing(self) -> Iterator[trio.CancelScope]:
        """A cancel scope around one wait for the device's commit; :meth:`stop_waiting`
        cancels it."""
        scope = trio.CancelScope()
        self.commits.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self.commits.discard(scope)

    def stop_waiting(self) -> None:
        """The link is being stopped: Go's threads waiting for a commit return at once (what
        was handed over stays with the device, which commits it all the same)."""
        for scope in self.commits:
            scope.cancel()

    def end_grace(self) -> None:
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None
