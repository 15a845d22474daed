"""The prompt auto-reply sends: a chat's recent messages turned into chat-completions messages.

Synopsis::

    turns = turns_from_history(rows)     # MessageRow list, oldest first -> [Turn, ...]
    messages = build_messages("Be brief.", turns, "price?", "msg-id", history_limit=10)
    # [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}, ...]

Pure functions over frozen values: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from storage.models import MessageRow
from supervisor.message_content import ACTIONS

#: Older turns are dropped first beyond this much history text (characters).
MAX_HISTORY_CHARS = 16000


@attrs.frozen
class Turn:
    """One message of a conversation, as the prompt sees it."""

    role: str  # "user" | "assistant"
    text: str
    message_id: str | None = None


def turns_from_history(rows: Iterable[MessageRow]) -> list[Turn]:
    """Turn message rows (oldest first) into turns: direction ``in`` is the user, ``out`` the
    assistant; rows without text, and those acting on another message (an edit's new text), are
    skipped."""
    turns = []
    for row in rows:
        if not row.text or not row.text.strip() or row.direction not in ("in", "out"):
            continue
        if row.type in ACTIONS:
            continue
        role = "user" if row.direction == "in" else "assistant"
        turns.append(Turn(role, row.text, row.message_id))
    return turns


def build_messages(
    system_prompt: str,
    history: Sequence[Turn],
    text: str,
    message_id: str | None = None,
    *,
    history_limit: int = 10,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> list[dict[str, str]]:
    """The chat-completions ``messages``: the system prompt (when set), then up to
    ``history_limit`` earlier turns of the chat (oldest first, the newest kept when the text
    budget runs out), then the incoming message as the last user turn.

    If storage already has the incoming message (found by id), it and everything after it
    are left out of the history.
    """
    ids = [t.message_id for t in history]
    if message_id is not None and message_id in ids:
        # what arrived after the incoming message is not part of the question being answered
        earlier = list(history[: ids.index(message_id)])
    else:
        earlier = list(history)
    if message_id is None and earlier and earlier[-1].role == "user" and earlier[-1].text == text:
        earlier.pop()  # storage already has the incoming message, no id to match it by
    earlier = earlier[-history_limit:] if history_limit > 0 else []
    kept: list[Turn] = []
    budget = max_history_chars
    for turn in reversed(earlier):
        budget -= len(turn.text)
        if budget < 0:
            break
        kept.append(turn)
    kept.reverse()
    messages = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": t.role, "content": t.text} for t in kept)
    messages.append({"role": "user", "content": text})
    return messages
