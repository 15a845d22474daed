"""What reactions, edits, revokes and poll votes did to their target message, in SQLite.

A reaction, an edit, a revoke or a poll vote is a message of its own (stored as any other,
with its type), and it changes the message it acts on. This repository applies that change to
the target's row in ``messages``, for incoming actions and for those the device sends alike:

- an edit replaces the target's text (a text message's text, a media message's caption) and
  marks it ``edited`` with the time (``editedAt``);
- a revoke (deleted for everyone) clears the target's text and content, keeps its type and
  marks it ``revoked`` with the time (``revokedAt``);
- a reaction sets the sender's emoji in the target's ``reactions`` (one per sender, a later
  one replaces it); an empty emoji removes the sender's reaction;
- a poll vote sets the voter's chosen options (by name) in the poll's ``poll.votes`` (one
  choice per voter, a later one replaces it); an empty choice removes the voter's vote.

These marks live in the target's ``content`` JSON next to the content fields, so the history's
message JSON shows them as they are. A revoked message takes no edit, reaction or vote any more. A
target is found by wasup's id of it (``msg_...`` for the device's own sends, WhatsApp's id for
every other message) or by WhatsApp's id of an own send. An action whose target is not stored
(never seen, or gone with retention) changes nothing.

Synopsis::

    r.message_actions.react(device_id, "3EB0...", sender="1555...@s.whatsapp.net", emoji="👍")
    r.message_actions.edit(device_id, "msg_...", "new text", at=now_iso())
    r.message_actions.revoke(device_id, "3A...", at=now_iso())
    r.message_actions.poll(device_id, "3EB0...")   # StoredPoll("msg_...", ("Yes", "No")), or None
    r.message_actions.vote(device_id, "3EB0...", voter="1555...@s.whatsapp.net", options=["Yes"])

Bound to the database thread's connection and called inside ``Database.run``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import sqlite_utils

#: The kinds an edit applies to: those with a text of their own (a caption for media).
EDITABLE_TYPES = frozenset({"text", "image", "video", "document"})


@attrs.frozen
class StoredPoll:
    """A poll as stored: wasup's id of it (``msg_...`` for the device's own) and its option
    names in order."""

    message_id: str
    options: tuple[str, ...]


@attrs.frozen
class _Target:
    row: int
    message_id: str
    type: str
    content: dict[str, Any]


@attrs.define(eq=False)
class SqliteMessageActions:
    """Applies actions to their target rows in ``messages`` (see the module doc)."""

    _db: sqlite_utils.Database

    def react(self, device_id: int, target_id: str, *, sender: str, emoji: str) -> bool:
        """Set (or with ``emoji == ""`` remove) ``sender``'s reaction on the target; False
        when there is no such target or it is revoked.

        Error handling: nothing of its own.
        """
        target = self._find(device_id, target_id)
        if target is None or target.content.get("revoked"):
            return False
        reactions = dict(target.content.get("reactions") or {})
        if emoji:
            reactions[sender] = emoji
        else:
            reactions.pop(sender, None)
        self._write(target, None, {**target.content, "reactions": reactions}, text_too=False)
        return True

    def edit(self, device_id: int, target_id: str, text: str, *, at: str) -> bool:
        """Replace the target's text (or caption) with ``text``, marked edited at ``at``
        (ISO); False when there is no such target, it is revoked or of a kind without text.

        Error handling: nothing of its own.
        """
        target = self._find(device_id, target_id)
        if target is None or target.content.get("revoked") or target.type not in EDITABLE_TYPES:
            return False
        content = {**target.content, "edited": True, "editedAt": at}
        if "text" in content:
            content["text"] = text
        media = content.get("media")
        if isinstance(media, dict) and "caption" in media:
            content["media"] = {**media, "caption": text}
        self._write(target, text, content, text_too=True)
        return True

    def revoke(self, device_id: int, target_id: str, *, at: str) -> bool:
        """Clear the target's text and content, marked revoked at ``at`` (ISO); False when
        there is no such target or it was revoked already.

        Error handling: nothing of its own.
        """
        target = self._find(device_id, target_id)
        if target is None or target.content.get("revoked"):
            return False
        self._write(target, None, {"revoked": True, "revokedAt": at}, text_too=True)
        return True

    def poll(self, device_id: int, target_id: str) -> StoredPoll | None:
        """The device's poll ``target_id`` (wasup's id or WhatsApp's id of an own send);
        None when there is no such poll (or it is revoked).

        Error handling: nothing of its own.
        """
        target = self._find(device_id, target_id)
        poll = self._poll(target)
        options = None if poll is None else poll.get("options")
        if target is None or not isinstance(options, list):
            return None
        return StoredPoll(target.message_id, tuple(o for o in options if isinstance(o, str)))

    def vote(
        self, device_id: int, target_id: str, *, voter: str, options: Sequence[str]
    ) -> bool:
        """Set ``voter``'s choice on the poll to ``options`` (names; empty: remove the
        voter's vote); False when there is no such poll or it is revoked.

        Error handling: nothing of its own.
        """
        target = self._find(device_id, target_id)
        poll = self._poll(target)
        if target is None or poll is None:
            return False
        votes = dict(poll.get("votes") or {})
        if options:
            votes[voter] = list(options)
        else:
            votes.pop(voter, None)
        content = {**target.content, "poll": {**poll, "votes": votes}}
        self._write(target, None, content, text_too=False)
        return True

    # -- internals -----------------------------------------------------------------------------

    def _find(self, device_id: int, target_id: str) -> _Target | None:
        conn = self._db.conn
        found = conn.execute(
            "SELECT id, message_id, type, content FROM messages"
            " WHERE device_id = ? AND message_id = ?",
            (device_id, target_id),
        ).fetchone()
        if found is None:  # WhatsApp's id of an own send: its row is under wasup's id
            found = conn.execute(
                "SELECT m.id, m.message_id, m.type, m.content FROM sends AS s JOIN messages AS m"
                " ON m.device_id = s.device_id AND m.message_id = s.message_id"
                " WHERE s.device_id = ? AND s.wa_id = ?",
                (device_id, target_id),
            ).fetchone()
        if found is None:
            return None
        content = json.loads(found[3]) if found[3] is not None else {}
        return _Target(int(found[0]), str(found[1]), str(found[2]),
                       content if isinstance(content, dict) else {})

    @staticmethod
    def _poll(target: _Target | None) -> dict[str, Any] | None:
        """The stored poll object of a poll target that is not revoked, else None."""
        if target is None or target.type != "poll" or target.content.get("revoked"):
            return None
        poll = target.content.get("poll")
        return poll if isinstance(poll, dict) else None

    def _write(
        self, target: _Target, text: str | None, content: dict[str, Any], *, text_too: bool
    ) -> None:
        encoded = json.dumps(content, ensure_ascii=False)
        if text_too:
            self._db.conn.execute(
                "UPDATE messages SET text = ?, content = ? WHERE id = ?",
                (text, encoded, target.row),
            )
        else:
            self._db.conn.execute(
                "UPDATE messages SET content = ? WHERE id = ?", (encoded, target.row)
            )
