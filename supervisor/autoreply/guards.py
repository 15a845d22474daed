"""Auto-reply's guard rails per chat: the operator pause and the rate cap.

Synopsis::

    pauses = PauseBook()
    pauses.operator_sent(device_id, chat, now)              # an operator wrote to the chat
    pauses.is_paused(device_id, chat, now, pause=600.0)     # True for the next 600 s

    rates = RateBook()
    rates.try_acquire(device_id, chat, now, limit=5)        # False: 5 replies in the last 60 s

Chats are keyed by their canonical address (:func:`chat_key`), so ``+1 234``, ``1234@c.us``
and ``1234:7@s.whatsapp.net`` share one pause and one window. Times come from the caller
(``trio.current_time()`` in the service); both books forget idle chats in ``prune``.
"""

from __future__ import annotations

import attrs

from supervisor.autoreply.settings import MAX_PAUSE_SECONDS
from supervisor.policy import SlidingWindow

#: Seconds of the rate window: the rate cap is "per chat per minute".
RATE_PERIOD = 60.0


def chat_kind(jid: str) -> str:
    """``"direct"``, ``"group"``, ``"broadcast"`` or ``"other"`` (channels, unknown servers).

    A bare phone number counts as direct.
    """
    jid = jid.strip().lower()
    if "@" not in jid:
        return "direct" if any(c.isdigit() for c in jid) else "other"
    server = jid.rsplit("@", 1)[1]
    if server in ("s.whatsapp.net", "c.us", "lid"):
        return "direct"
    if server == "g.us":
        return "group"
    if server == "broadcast":
        return "broadcast"
    return "other"


def chat_key(jid: str) -> str:
    """A canonical form of a chat address, so that ``+1 234``, ``1234@c.us`` and
    ``1234:7@s.whatsapp.net`` all name the same chat."""
    jid = jid.strip().lower()
    if "@" not in jid:
        digits = "".join(c for c in jid if c.isdigit())
        return f"{digits}@s.whatsapp.net"
    user, server = jid.rsplit("@", 1)
    user = user.split(":", 1)[0]
    if server in ("s.whatsapp.net", "c.us"):
        user = user.split(".", 1)[0]
        server = "s.whatsapp.net"
    return f"{user}@{server}"


@attrs.define(eq=False)
class PauseBook:
    """When an operator last wrote to each chat; a chat is paused for a while after that."""

    _last: dict[tuple[int, str], float] = attrs.field(factory=dict)

    def operator_sent(self, device_id: int, chat: str, now: float) -> None:
        self._last[(device_id, chat_key(chat))] = now

    def paused_until(self, device_id: int, chat: str, pause: float) -> float | None:
        at = self._last.get((device_id, chat_key(chat)))
        return None if at is None else at + pause

    def is_paused(self, device_id: int, chat: str, now: float, pause: float) -> bool:
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
    _windows: dict[tuple[int, str], SlidingWindow] = attrs.field(factory=dict)

    def try_acquire(self, device_id: int, chat: str, now: float, limit: int) -> bool:
        """Count a reply in the chat and return True, or False when ``limit`` are counted in
        the window already (a changed limit applies at once)."""
        key = (device_id, chat_key(chat))
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
