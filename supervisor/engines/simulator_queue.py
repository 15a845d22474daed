"""The simulated WhatsApp's offline queue: messages for a linked device wait here until the
device has committed them.

As WhatsApp does, the simulator keeps every incoming message of a linked device until the
device acknowledges it: while the device is offline the message waits; when it is connected
(or when it reconnects) the queue hands the messages over in order, each with
:meth:`supervisor.engine.Sink.deliver`, and drops a message only after its ``deliver``
returned, that is after wasup committed it. A message whose ``deliver`` failed, or was cut
short by a disconnect or a crash, stays queued and is delivered again at the next connect;
wasup recognises the repeated message id and stores it once.

Where the messages are kept is a :class:`QueueStore`: in memory for tests and benchmarks
(:class:`MemoryQueueStore`), in wasup's database when wasup runs the simulator in process
(``supervisor.supervisor.DbQueueStore``), so the queue survives a kill -9 of wasup.

Resource handling: one ``trio.Lock`` per device with a non-empty queue or a delivery under
way, so one device's messages are handed over one at a time and in order.

Error handling: :meth:`OfflineQueue.flush` never raises for a failed delivery
(:class:`~supervisor.errors.DeliveryFailed`): it stops and leaves the rest queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from supervisor import message_content as mc
from supervisor.engine import MessageReceived, Sink
from supervisor.errors import DeliveryFailed


@attrs.frozen
class QueuedMessage:
    """An incoming message as WhatsApp holds it for the device (its id is fixed when sent):
    ``content`` what it carries (a :class:`~supervisor.message_content.Text` of ``text`` when
    not given), ``quoted`` the id of the message it replies to, ``push_name`` the sender's
    display name."""

    message_id: str
    chat: str
    sender: str
    text: str
    is_group: bool
    timestamp: float
    content: mc.Content | None = None
    quoted: str | None = None
    push_name: str | None = None

    def event(self) -> MessageReceived:
        """The message as the engine reports it; a media message's ``media_ref`` is its id,
        the key its file is kept under (``SimulatedServer.media``)."""
        content = self.content or mc.Text(self.text)
        quoted = None if self.quoted is None else mc.Quoted(self.quoted, chat=self.chat)
        media_ref = self.message_id if mc.media_of(content) is not None else None
        return MessageReceived(
            message_id=self.message_id, chat=self.chat, sender=self.sender, text=self.text,
            is_group=self.is_group, from_me=False, timestamp=self.timestamp,
            sender_pn=self.sender, content=content, quoted=quoted, push_name=self.push_name,
            media_ref=media_ref,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "messageId": self.message_id, "chat": self.chat, "sender": self.sender,
            "text": self.text, "isGroup": self.is_group, "timestamp": self.timestamp,
            "content": None if self.content is None else mc.to_json(self.content),
            "quoted": self.quoted, "pushName": self.push_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueuedMessage:
        """Error handling: ``TypeError`` when ``data`` is not a queued message's JSON (one
        written before messages had a content has none: a text)."""
        message_id, chat, sender, text = (
            data.get(k) for k in ("messageId", "chat", "sender", "text")
        )
        is_group, timestamp = data.get("isGroup"), data.get("timestamp")
        content, quoted, push_name = data.get("content"), data.get("quoted"), data.get("pushName")
        if not (
            isinstance(message_id, str) and isinstance(chat, str) and isinstance(sender, str)
            and isinstance(text, str) and isinstance(is_group, bool)
            and isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
            and (content is None or isinstance(content, dict))
            and (quoted is None or isinstance(quoted, str))
            and (push_name is None or isinstance(push_name, str))
        ):
            raise TypeError(f"not a queued message: {data!r}")
        return cls(message_id, chat, sender, text, is_group, float(timestamp),
                   None if content is None else mc.from_json(content), quoted, push_name)


class QueueStore(Protocol):
    """Where the queued messages are kept: each device's list, oldest first."""

    def pending(self, device_id: int) -> list[QueuedMessage]:
        """The device's queued messages, oldest first (a copy; read from memory)."""
        ...

    async def push(self, device_id: int, message: QueuedMessage) -> None:
        """Append ``message`` to the device's queue; returns once it is kept."""

    async def remove(self, device_id: int, message_id: str) -> None:
        """Drop the message with this id from the device's queue (no error if absent)."""

    async def clear(self, device_id: int) -> None:
        """Drop the device's whole queue (it was unlinked, logged out or deleted)."""


@attrs.define(eq=False)
class MemoryQueueStore:
    """A :class:`QueueStore` in a dict, for tests and benchmarks."""

    data: dict[int, list[QueuedMessage]] = attrs.field(factory=dict)

    def pending(self, device_id: int) -> list[QueuedMessage]:
        return list(self.data.get(device_id, ()))

    async def push(self, device_id: int, message: QueuedMessage) -> None:
        self.data.setdefault(device_id, []).append(message)

    async def remove(self, device_id: int, message_id: str) -> None:
        kept = [m for m in self.data.get(device_id, ()) if m.message_id != message_id]
        if kept:
            self.data[device_id] = kept
        else:
            self.data.pop(device_id, None)

    async def clear(self, device_id: int) -> None:
        self.data.pop(device_id, None)


@attrs.define(eq=False)
class OfflineQueue:
    """The queue's behaviour over a :class:`QueueStore`: push, and flush in order."""

    store: QueueStore
    _locks: dict[int, trio.Lock] = attrs.field(factory=dict)
    _users: dict[int, int] = attrs.field(factory=dict)

    def pending(self, device_id: int) -> list[QueuedMessage]:
        return self.store.pending(device_id)

    async def push(self, device_id: int, message: QueuedMessage) -> None:
        await self.store.push(device_id, message)

    async def clear(self, device_id: int) -> None:
        await self.store.clear(device_id)

    async def flush(self, device_id: int, sink: Sink, online: Callable[[], bool]) -> None:
        """Hand the device's queued messages to ``sink`` in order, while ``online()`` holds.

        Each message leaves the queue only after ``sink.deliver`` returned for it. Returns when
        the queue is empty, ``online()`` turned false, or a delivery failed (the message and
        those after it stay queued). Cheap when the queue is empty: no lock, no await.
        """
        if not self.store.pending(device_id):
            return
        self._users[device_id] = self._users.get(device_id, 0) + 1
        lock = self._locks.setdefault(device_id, trio.Lock())
        try:
            async with lock:
                while online():
                    pending = self.store.pending(device_id)
                    if not pending:
                        return
                    head = pending[0]
                    try:
                        await sink.deliver(head.event())
                    except DeliveryFailed:
                        return
                    await self.store.remove(device_id, head.message_id)
        finally:
            self._users[device_id] -= 1
            if not self._users[device_id]:
                del self._users[device_id]
                del self._locks[device_id]
