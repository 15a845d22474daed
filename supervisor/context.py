"""What a device actor is given to work with: the frozen :class:`ActorContext`.

The supervisor builds one context for all actors; an actor reaches the database, the event bus,
the directory, the timers, the login limiter and the media store through it, and nothing else of
the core.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import trio

import storage

from .config import Config
from .directory import DeviceDirectory
from .events import EventBus
from .media import MediaStore
from .policy import Backoff
from .qr import QrAttempt
from .timers import Timers


@attrs.define(eq=False)
class OutboxSignal:
    """Tells the webhook dispatcher that outbox rows were written (once per publish)."""

    listeners: list[Callable[[], None]] = attrs.field(factory=list)
    written: bool = False

    def notify(self) -> None:
        """Call every listener if rows were written since the last call."""
        if self.written:
            self.written = False
            for fn in self.listeners:
                fn()


@attrs.frozen
class ActorContext:
    """The services every device actor shares."""

    config: Config
    db: storage.Store
    bus: EventBus
    directory: DeviceDirectory
    timers: Timers
    login_limiter: trio.CapacityLimiter
    ops_nursery: trio.Nursery
    rng: random.Random
    backoff: Backoff
    outbox: OutboxSignal
    media: MediaStore
    #: Told when the QR code a device shows changes (None: no QR code on show any more).
    qr_listeners: list[Callable[[int, QrAttempt | None], None]] = attrs.field(factory=list)
