"""Auto-reply's guard rails: which messages may be answered, the operator pause, the rate cap.

Synopsis::

    screen(received, max_age=600.0)      # a MessageReceived: Jid of the chat, or "ignored_group"...

    pauses = PauseBook()
    pauses.operator_sent(device_id, jid, now)               # an operator wrote to the chat
    pauses.is_paused(device_id, jid, now, pause=600.0)      # True for the next 600 s

    rates = RateBook()
    rates.try_acquire(device_id, jid, now, limit=5)         # False: 5 replies in the last 60 s

Chats are :class:`~supervisor.jid.Jid` values, equal whatever spelling they were parsed from, so
``+1 555 123 4567``, ``15551234567@c.us`` and ``15551234567:7@s.whatsapp.net`` share one pause
and one window. Times come from the caller
(``trio.current_time()`` in the service); both books forget idle chats in ``prune``.
"""

from __future__ import annotations

import attrs

from common import clock
from supervisor.autoreply.settings import MAX_PAUSE_SECONDS
from supervisor.jid import InvalidJid, Jid, JidKind
from supervisor.message_content import ACTIONS
from supervisor.payloads import MessageReceived
from supervisor.policy import SlidingWindow

#: Seconds of the rate window: the rate cap is "per chat per minute".
RATE_PERIOD = 60.0


@attrs.define(eq=False)
class PauseBook:
    """When an operator last wrote to each chat; a chat is paused for a while after that."""

    _last: dict[tuple[int, Jid], float] = attrs.field(factory=dict)

    def operator_sent(self, device_id: int, chat: Jid, now: float) -> None:
        self._last[(device_id, chat)] = now

    def paused_until(self, device_id: int, chat: Jid, pause: float) -> float | None:
        at = self._last.get((device_id, chat))
        return None if at is None else at + pause

    def is_paused(self, device_id: int, chat: Jid, now: float, pause: float) -> bool:
        until = self.paused_until(device_id, chat, pause)
        return until is not None and now < until

    def prune(self, now: float, max_pause: float = MAX_PAUSE_SECONDS) -> None:
        """Forget pauses that no setting can make last until ``now``."""
        for key in [k for k, at in self._last.items() if at + max_pause <= now]:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


@attrs.define(eq=False)
class RateBook:
    """Replies per chat in a sliding window of ``period`` seconds (one window per chat)."""

    period: float = RATE_PERIOD
    _windows: dict[tuple[int, Jid], SlidingWindow] = attrs.field(factory=dict)

    def try_acquire(self, device_id: int, chat: Jid, now: float, limit: int) -> bool:
        """Count a reply in the chat and return True, or False when ``limit`` are counted in
        the window already (a changed limit applies at once)."""
        key = (device_id, chat)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow(self.period)
        return window.try_acquire(now, limit)

    def prune(self, now: float) -> None:
        """Forget the windows of chats without a reply inside the window."""
        for key in [k for k, w in self._windows.items() if w.idle(now)]:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


def screen(message: MessageReceived, max_age: float) -> Jid | str:
    """The chat of a received message that auto-reply may answer, settings aside; else the
    outcome saying why not (``ignored_group``, ``ignored_broadcast``, ``ignored_own``,
    ``ignored_other``, ``ignored_stale``). A reaction, an edit, a revoke or a poll vote
    acts on an earlier message and is not answered (``ignored_other``)."""
    chat = message.chat or message.sender
    if not chat.strip():
        return "ignored_other"
    if message.from_me:
        return "ignored_own"
    jid = parse_address(chat)
    kind = None if jid is None else jid.kind
    sender = parse_address(message.sender)
    if sender is not None and sender.kind is JidKind.BROADCAST:
        kind = JidKind.BROADCAST
    if message.is_group:
        kind = JidKind.GROUP
    if kind is JidKind.GROUP:
        return "ignored_group"
    if kind is JidKind.BROADCAST:
        return "ignored_broadcast"
    if jid is None or not jid.kind.is_direct or not message.text.strip():
        return "ignored_other"
    if message.content is not None and message.content.type in ACTIONS:
        return "ignored_other"
    age = _age(message.timestamp)
    if age is not None and age > max_age:
        return "ignored_stale"
    return jid


def parse_address(address: str | None) -> Jid | None:
    """The Jid of an address from an event or a device row, None if it is none."""
    if address is None:
        return None
    try:
        return Jid.parse(address)
    except InvalidJid:
        return None


def _age(timestamp: str) -> float | None:
    """Seconds since a message's ISO timestamp, None if it is not one (or not after 1970)."""
    try:
        epoch = clock.parse_iso(timestamp)
    except ValueError:
        return None
    if epoch <= 0:
        return None
    return clock.now_epoch() - epoch
