"""Actions on a message: reactions, edits and revokes, incoming and sent by the device.

An action is a message of its own (stored and published as any other, type ``reaction``,
``edit`` or ``revoke``) that changes its target: :func:`apply` hands that change to storage
(:mod:`storage.message_actions`: an edit replaces the target's text and marks it edited, a
revoke clears it and marks it revoked, a reaction sets or removes the sender's emoji; an
incoming poll vote, once named (:mod:`supervisor.polls`), sets or removes the voter's
choice on the poll). The device's actor applies an incoming action in the transaction that
stores it (:func:`apply_incoming`; an edit that does not come from the sender of the message
it edits changes nothing and is logged, still published as received); the outbound queue
applies one the device sent once WhatsApp took it (:func:`apply`, with the device's own JID
as the sender).

The device's own actions are checked first (:func:`action_target`), with WhatsApp's rules:
the target must be a message the device has, that left (WhatsApp knows it by an id), that is
a message (not itself a reaction, edit, revoke, vote or undecryptable one) and not revoked; an
edit or revoke only on the device's own messages; an edit only of a text or a caption, and
only within :data:`EDIT_WINDOW` of its sending; a revoke only within :data:`REVOKE_WINDOW`
(WhatsApp refuses to delete older messages for everyone). Then the action is sent as any
message::

    target = await action_target(db, device_id, "msg_...", "edit")   # NotFound, DeviceConflict
    await devices.send(device_id, target.chat, Outgoing(Edit(target.wa_id, "new"), target=target))
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import storage
from common.clock import iso, now_epoch, parse_iso
from storage.message_actions import EDITABLE_TYPES
from storage.message_interface import MessageActionRepository
from storage.models import MessageRow

from . import engine as eng
from . import message_content as mc
from .errors import DeviceConflict, NotFound
from .jid import InvalidJid, Jid
from .outgoing import Target, resolve_target

#: How long after sending WhatsApp lets the sender edit a message (seconds).
EDIT_WINDOW = 15 * 60.0

#: How long after sending WhatsApp lets the sender delete a message for everyone (seconds).
REVOKE_WINDOW = 2 * 24 * 3600.0

log = logging.getLogger("wasup.actions")

#: What the device does to a message.
Action = Literal["reaction", "edit", "revoke"]


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
        case mc.PollVote(target_id=target, options=options) if options is not None:
            return actions.vote(device_id, target, voter=sender, options=options)
    return False


def own_sender(jid: str | None) -> str:
    """Who the device's own reactions are by: its JID without the device part (as a message
    from its phone names it), ``"me"`` for a device that was never paired."""
    if jid is None:
        return "me"
    try:
        return Jid.parse(jid).canonical
    except InvalidJid:
        return jid


def apply_incoming(
    r: storage.Repositories, device_id: int, ev: eng.MessageReceived, at: str
) -> bool:
    """Apply an incoming message that is an action (from someone else, or from the account's
    own phone) to its target; ``at``: when it was stored, the time of an edit or revoke whose
    message carries none. An edit of a stored message by someone other than its sender
    changes nothing (logged). Runs inside ``Database.run``."""
    if isinstance(ev.content, mc.Edit):
        target = resolve_target(r, device_id, ev.content.target_id)
        if target is not None and not _by_author(target, ev):
            log.warning("device %s: ignored an edit of %s by %s, who did not send it",
                        device_id, target.message_id, ev.sender)
            return False
    when = iso(ev.timestamp) if ev.timestamp else at
    return apply(r.message_actions, device_id, ev.content, ev.sender, when)


def _by_author(target: Target, ev: eng.MessageReceived) -> bool:
    """Whether ``ev`` comes from whoever sent ``target`` (the account itself, from its phone,
    for the device's own messages; else the same sender, by phone number or LID)."""
    if target.from_me or ev.from_me:
        return target.from_me and ev.from_me
    senders = {ev.sender, ev.sender_pn, ev.sender_lid} - {None}
    return target.sender in senders


def _revoked(row: MessageRow | None) -> bool:
    if row is None or row.content is None:
        return False
    content = json.loads(row.content)
    return isinstance(content, dict) and bool(content.get("revoked"))


async def action_target(
    db: storage.Store, device_id: int, message_id: str, action: Action
) -> Target:
    """The device's message ``message_id`` (wasup's id, or WhatsApp's id of an own send) as the
    target of the device's ``action`` on it, checked against WhatsApp's rules (module doc).

    Raises: NotFound (the device has no such message); DeviceConflict saying which rule the
    action breaks.
    """

    def job(r: storage.Repositories) -> tuple[Target | None, MessageRow | None]:
        target = resolve_target(r, device_id, message_id)
        row = r.messages.get(device_id, message_id if target is None else target.message_id)
        return target, row

    target, row = await db.run(job)
    if target is None:
        if row is None:
            raise NotFound("no such message")
        if row.status == "failed":
            raise DeviceConflict("the message was never sent (it failed): nothing to act on")
        raise DeviceConflict("the message has not been sent yet (pending): try again once it is")
    if target.type in mc.ACTIONS:
        raise DeviceConflict(f"the message is a {target.type}, not a message to act on")
    if _revoked(row):
        raise DeviceConflict("the message was revoked (deleted for everyone)")
    if action == "reaction":
        return target
    verb = "edited" if action == "edit" else "revoked"
    if not target.from_me:
        raise DeviceConflict(f"only the device's own messages can be {verb}: this one is not")
    if action == "revoke" and now_epoch() - parse_iso(target.at) > REVOKE_WINDOW:
        raise DeviceConflict(
            "WhatsApp lets a message be deleted for everyone for 2 days after it was sent: "
            "this one is older"
        )
    if action == "edit":
        if target.type not in EDITABLE_TYPES:
            raise DeviceConflict(
                f"only a text or the caption of an image, video or document can be edited: "
                f"this message is a {target.type}"
            )
        if now_epoch() - parse_iso(target.at) > EDIT_WINDOW:
            raise DeviceConflict(
                "WhatsApp lets a message be edited for 15 minutes after it was sent: "
                "this one is older"
            )
    return target

