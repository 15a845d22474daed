"""Actions on a message: reactions, edits and revokes, incoming and sent by the device.

An action is a message of its own (stored and published as any other, type ``reaction``,
``edit`` or ``revoke``) that changes its target: :func:`apply` hands that change to storage
(:mod:`storage.message_actions`: an edit replaces the target's text and marks it edited, a
revoke clears it and marks it revoked, a reaction sets or removes the sender's emoji). The
device's actor applies an incoming action in the transaction that stores it
(:func:`apply_incoming`); the outbound queue applies one the device sent once WhatsApp took
it.
"""

from __future__ import annotations

from common.clock import iso
from storage.message_interface import MessageActionRepository

from . import engine as eng
from . import message_content as mc


def apply(
    actions: MessageActionRepository, device_id: int, content: mc.Content, sender: str, at: str
) -> bool:
    """Apply ``content``, an action by ``sender`` at ``at`` (ISO), to its target; False when
    it is no action or changed nothing (no such target stored, a revoked one).

    Error handling: nothing of its own (storage errors propagate).
    """
    match content:
        case mc.Reaction(target_id=target, emoji=emoji):
            return actions.react(device_id, target, sender=sender, emoji=emoji)
        case mc.Edit(target_id=target, text=text):
            return actions.edit(device_id, target, text, at=at)
        case mc.Revoke(target_id=target):
            return actions.revoke(device_id, target, at=at)
    return False


def apply_incoming(
    actions: MessageActionRepository, device_id: int, ev: eng.MessageReceived, at: str
) -> bool:
    """Apply an incoming message that is an action (from someone else, or from the account's
    own phone) to its target; ``at``: when it was stored, the time of an edit or revoke whose
    message carries none."""
    when = iso(ev.timestamp) if ev.timestamp else at
    return apply(actions, device_id, ev.content, ev.sender, when)
