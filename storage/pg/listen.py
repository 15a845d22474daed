"""PostgreSQL notifications (LISTEN/NOTIFY) delivered into Trio: one listening connection per
store.

Synopsis::

    async with db.listen("wasup_devices") as payloads:    # trio.MemoryReceiveChannel[str]
        async for payload in payloads:
            if payload == RELOAD:                          # "*": anything may have changed
                ...reload everything...
            else:
                ...reload the one thing the payload names...

:class:`Listener` holds one connection of its own (not one of the pool's: a LISTEN belongs to
its session), opened on the first subscription, in a worker thread that waits for notifications
with psycopg's ``Connection.notifies()`` in short rounds, so that between rounds it can take
new channels and notice that it must stop. A notification reaches the Trio thread through the
store's ``TrioToken``; the subscribers of its channel get its payload, in the order the
transactions that sent them committed (PostgreSQL delivers them so).

Resource handling: each subscriber has a bounded channel (:data:`QUEUE_SIZE` payloads). A
subscriber that falls behind loses its backlog to one :data:`RELOAD` (its queue keeps one slot
for it): payloads that arrive while that ``"*"`` waits are dropped, because whoever reads the
``"*"`` reloads after they committed. The thread ends, and every subscriber's iteration with
it, when the store closes (:meth:`Listener.aclose`).

Error handling: a connection that breaks (the server restarts, a network outage) is logged
once and opened again by the thread every :data:`RETRY_SECONDS` until it succeeds; notifications
sent meanwhile are lost, so every subscriber then gets :data:`RELOAD`. Nothing is raised to the
subscribers: an outage only delays them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import psycopg
import trio
from psycopg import sql

log = logging.getLogger(__name__)

#: The payload every subscriber gets when notifications may have been lost.
RELOAD = "*"
#: Payloads a subscriber may hold unread (one more slot is kept for :data:`RELOAD`).
QUEUE_SIZE = 256
#: Longest wait for notifications in one round of the thread (seconds): how late it notices a
#: new channel or that it must stop.
ROUND_SECONDS = 0.2
#: Seconds between attempts to connect again after the connection broke.
RETRY_SECONDS = 0.5
#: Seconds one connection attempt may take.
CONNECT_SECONDS = 5

_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@attrs.define(eq=False)
class _Subscriber:
    """One ``listen`` block: its channel and the send side of its payloads."""

    channel: str
    send: trio.MemorySendChannel[str]
    #: A RELOAD waits in the queue: payloads are dropped until the queue is read empty.
    reloading: bool = False

    def offer(self, payload: str) -> None:
        """Queue ``payload`` (the Trio thread), or fall back to one RELOAD when full."""
        used = self.send.statistics().current_buffer_used
        if self.reloading:
            if used:
                return  # the RELOAD still waits, and its reader reloads after this change
            self.reloading = False
        if used >= QUEUE_SIZE or payload == RELOAD:
            self.reloading = True
            payload = RELOAD
        try:
            self.send.send_nowait(payload)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # full only if reloading already; closed: the block has ended


@attrs.define(eq=False)
class Listener:
    """The LISTEN connection of one store and its subscribers (see the module doc).

    ``connect`` opens a new autocommit connection (a worker thread calls it).
    """

    label: str
    _connect: Callable[[], psycopg.Connection[tuple[object, ...]]]
    _token: trio.lowlevel.TrioToken
    _subscribers: set[_Subscriber] = attrs.field(factory=set)
    # Shared with the thread, under _lock: the channels to listen to, and the requests to
    # confirm once listening (or once the connection is known to be down).
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _channels: set[str] = attrs.field(factory=set)
    _requests: list[trio.Event] = attrs.field(factory=list)
    _active: frozenset[str] = frozenset()  # listened to on the connection open now
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None
    _closed: bool = False
    #: How many times the connection was opened again after breaking.
    reconnects: int = 0

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """Receive the payloads of ``channel`` sent by transactions that commit from now on
        (once this returns, the server is listening, or the connection is down and a
        :data:`RELOAD` will come when it is back).

        Raises: ValueError for a channel name that is not a lower-case identifier;
        RuntimeError once the listener is closed.
        """
        if _CHANNEL.match(channel) is None:
            raise ValueError(f"not a channel name: {channel!r}")
        if self._closed:
            raise RuntimeError("the store is closed")
        send, receive = trio.open_memory_channel[str](QUEUE_SIZE + 1)
        subscriber = _Subscriber(channel, send)
        ready = trio.Event()
        with self._lock:
            self._channels.add(channel)
            if channel in self._active:
                ready.set()  # should the connection break now, a RELOAD follows
            else:
                self._requests.append(ready)
        self._subscribers.add(subscriber)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"wasup-listen {self.label}", daemon=True
            )
            self._thread.start()
        try:
            await ready.wait()
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(subscriber)
            send.close()

    async def aclose(self) -> None:
        """Stop the thread (within one round), close its connection, end every subscriber's
        iteration. Idempotent."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await trio.to_thread.run_sync(thread.join)
        for subscriber in list(self._subscribers):
            subscriber.send.close()

    # -- the Trio side of a notification -----------------------------------------------------

    def _deliver(self, channel: str | None, payload: str) -> None:
        """Hand ``payload`` to the subscribers of ``channel`` (None: to every subscriber)."""
        for subscriber in list(self._subscribers):
            if channel is None or subscriber.channel == channel:
                subscriber.offer(payload)

    def _to_trio(self, fn: Callable[..., None], *args: object) -> bool:
        """Run ``fn(*args)`` on the Trio thread soon; False once Trio is gone."""
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    # -- the worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        listening: set[str] = set()
        broken = False
        try:
            while not self._stop.is_set():
                if conn is None:
                    try:
                        conn = self._connect()
                    except psycopg.Error as exc:
                        self._confirm_all()  # a RELOAD follows the connection
                        if not broken:
                            log.warning("notifications from %s interrupted: %s; reconnecting",
                                        self.label, _first_line(exc))
                            broken = True
                        self._stop.wait(RETRY_SECONDS)
                        continue
                    listening = set()
                    if broken:
                        self.reconnects += 1
                        log.warning("notifications from %s back", self.label)
                try:
                    with self._lock:
                        wanted, requests = set(self._channels), self._requests
                        self._requests = []
                    for channel in sorted(wanted - listening):
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                        listening.add(channel)
                        with self._lock:
                            self._active = frozenset(listening)
                    if broken:  # listening again: whatever was sent meanwhile is lost
                        broken = False
                        if not self._to_trio(self._deliver, None, RELOAD):
                            return
                    for ready in requests:
                        if not self._to_trio(ready.set):
                            return
                    for note in conn.notifies(timeout=ROUND_SECONDS):
                        if not self._to_trio(self._deliver, note.channel, note.payload):
                            return
                except psycopg.Error as exc:
                    with self._lock:
                        self._active = frozenset()
                    if not broken:
                        log.warning("notifications from %s interrupted: %s; reconnecting",
                                    self.label, _first_line(exc))
                        broken = True
                    _close(conn)
                    conn = None
        finally:
            if conn is not None:
                _close(conn)

    def _confirm_all(self) -> None:
        """Let every waiting subscriber in while the connection is down."""
        with self._lock:
            requests, self._requests = self._requests, []
        for ready in requests:
            self._to_trio(ready.set)


def _close(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    try:
        conn.close()
    except psycopg.Error:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connector(url: str) -> Callable[[], psycopg.Connection[tuple[object, ...]]]:
    """A function opening an autocommit connection to ``url`` for a :class:`Listener`, with
    TCP keepalives so that a silent network outage is noticed too."""

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_SECONDS,
            keepalives=1, keepalives_idle=10, keepalives_interval=3, keepalives_count=3,
        )

    return connect
