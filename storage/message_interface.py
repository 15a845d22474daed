"""The storage interface of messages: what is stored of each message, the tracked sends of the
outbound queues, the reads of history (chats, pages by cursor) with its retention, what actions
(reactions, edits, revokes, poll votes) did to their targets, and the chats' read marks.

Part of :mod:`storage.interface` (its :class:`~storage.interface.Repositories` holds these), in
a module of its own so each stays one readable page; the same rules hold (see there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.history import ChatPage, MessagePage
from storage.message_actions import StoredPoll
from storage.models import JsonObject, MessageRow, SendRow
from storage.reads import UnreadMessage


class MessageRepository(Protocol):
    """Messages a device sent or received."""

    def insert(
        self,
        device_id: int,
        *,
        message_id: str,
        chat: str,
        direction: str,
        text: str | None,
        status: str | None,
        at: str,
        sender: str | None = None,
        type: str = "text",
        content: JsonObject | None = None,
        quoted: str | None = None,
        media_ref: str | None = None,
    ) -> MessageRow:
        """Store one message (``direction`` ``"in"`` or ``"out"``) of kind ``type`` with its
        content fields, the id of the message it quotes and the engine's reference to its
        media file, and return it.

        Raises: ``Conflict`` (``field="message_id"``) for a redelivery; ``NotFound``.
        """
        ...

    def decrypted(
        self,
        device_id: int,
        message_id: str,
        *,
        text: str | None,
        type: str,
        content: JsonObject | None,
        quoted: str | None,
        media_ref: str | None = None,
    ) -> bool:
        """Fill in a message stored as ``undecryptable`` that arrived again decrypted; False
        when the device has no undecryptable message with this id.

        Raises: nothing of its own.
        """
        ...

    def get(self, device_id: int, message_id: str) -> MessageRow | None:
        """The device's message with this id, or None.

        Raises: nothing of its own.
        """
        ...

    def set_media_ref(self, device_id: int, message_id: str, media_ref: str) -> None:
        """Keep the engine's reference to the media file of the device's own send (once
        WhatsApp took it). Raises: nothing of its own."""
        ...

    def media_ref(self, device_id: int, message_id: str) -> str | None:
        """The engine's reference to the media file of the device's message
        (:attr:`supervisor.engine.MessageReceived.media_ref`), or None.

        Raises: nothing of its own.
        """
        ...

    def update_status(self, device_id: int, message_id: str, status: str) -> MessageRow | None:
        """Record a receipt, never moving a message back along the receipt order.

        Raises: nothing of its own (None for an unknown message).
        """
        ...

    def recent(self, device_id: int, chat: str, limit: int = 20) -> list[MessageRow]:
        """The last ``limit`` messages of one chat, oldest first.

        Raises: nothing of its own.
        """
        ...


class SendRepository(Protocol):
    """The tracked sends of the devices' outbound queues (see :mod:`storage.sends`)."""

    def insert(self, row: SendRow) -> None:
        """Store a new send.

        Raises: ``Conflict`` for a message id or idempotency key the device has; ``NotFound``.
        """
        ...

    def by_key(self, device_id: int, key: str) -> SendRow | None:
        """The device's send made with this idempotency key, or None."""
        ...

    def get(self, device_id: int, message_id: str) -> SendRow | None:
        """The device's send with this message id, or None."""
        ...

    def by_wa_id(self, device_id: int, wa_id: str) -> SendRow | None:
        """The device's send WhatsApp knows by ``wa_id``, or None."""
        ...

    def open(self, device_id: int) -> list[SendRow]:
        """The device's sends not done yet, in queue order."""
        ...

    def update(
        self,
        device_id: int,
        message_id: str,
        *,
        state: str,
        status: str | None = None,
        reason: str | None = None,
        wa_id: str | None = None,
    ) -> None:
        """Move a send on (state, and status, reason, WhatsApp id when given)."""
        ...

    def mark_stuck(self, device_id: int, message_id: str) -> None:
        """Record that ``message_stuck`` was raised for this send."""
        ...


class MessageHistoryRepository(Protocol):
    """Reads of the stored messages (chats, pages by cursor) and their retention."""

    def page(
        self,
        device_id: int,
        chat: str,
        *,
        before: int | None = None,
        limit: int = 50,
        since: str | None = None,
        until: str | None = None,
        from_me: bool | None = None,
        type: str | None = None,
    ) -> MessagePage:
        """One page of a chat's messages older than ``before``, newest first, filtered.

        Raises: nothing of its own.
        """
        ...

    def chats(self, device_id: int, *, before: int | None = None, limit: int = 50) -> ChatPage:
        """One page of the device's chats, most recent first, with unread counts.

        Raises: nothing of its own.
        """
        ...

    def prune_older(self, cutoff: str, *, limit: int) -> int:
        """Delete up to ``limit`` messages stored before ``cutoff``; how many.

        Raises: nothing of its own.
        """
        ...

    def prune_beyond(self, device_id: int, keep: int, *, limit: int) -> int:
        """Delete up to ``limit`` of the device's messages beyond its newest ``keep``; how many.

        Raises: nothing of its own.
        """
        ...

    def devices(self) -> list[int]:
        """The ids of the devices with stored messages.

        Raises: nothing of its own.
        """
        ...


class MessageActionRepository(Protocol):
    """What reactions, edits, revokes and poll votes did to their target (see
    :mod:`storage.message_actions`); each change returns False when it changed nothing."""

    def react(self, device_id: int, target_id: str, *, sender: str, emoji: str) -> bool:
        """Set (``emoji == ""``: remove) ``sender``'s reaction on the target."""
        ...

    def edit(self, device_id: int, target_id: str, text: str, *, at: str) -> bool:
        """Replace the target's text or caption, marked edited at ``at``."""
        ...

    def revoke(self, device_id: int, target_id: str, *, at: str) -> bool:
        """Clear the target's text and content, marked revoked at ``at``."""
        ...

    def poll(self, device_id: int, target_id: str) -> StoredPoll | None:
        """The poll ``target_id``: wasup's id of it and its options; None: no such poll."""
        ...

    def vote(
        self, device_id: int, target_id: str, *, voter: str, options: Sequence[str]
    ) -> bool:
        """Set ``voter``'s choice on the poll (``options`` empty: remove the voter's vote)."""
        ...


class ReadRepository(Protocol):
    """How far a device has read each chat (see :mod:`storage.reads`)."""

    def mark_of(self, device_id: int, chat: str) -> int:
        """The chat's read mark (a ``messages`` row id; 0: none)."""
        ...

    def unread(self, device_id: int, chat: str, *, limit: int) -> list[UnreadMessage]:
        """The newest ``limit`` incoming messages above the read mark, oldest first."""
        ...

    def mark(self, device_id: int, chat: str, row: int, at: str) -> None:
        """Move the read mark up to ``row`` (never back).

        Raises: ``NotFound`` for an unknown device.
        """
        ...
