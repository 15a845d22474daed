"""Who may edit a message: its sender (by phone number or LID), or the account itself for the
device's own messages; nobody else (supervisor.actions)."""

from __future__ import annotations

from supervisor import engine as eng
from supervisor import message_content as mc
from supervisor.actions import _by_author
from supervisor.outgoing import Target

PEER = "15557654321@s.whatsapp.net"
PEER_LID = "88776655@lid"


def target(*, from_me: bool, sender: str | None) -> Target:
    return Target(wa_id="3A1", chat=PEER, sender=sender, from_me=from_me, message_id="3A1",
                  type="text", at="2026-01-01T00:00:00Z", text="hi")


def edit(sender: str, *, from_me: bool = False, lid: str | None = None,
         pn: str | None = None) -> eng.MessageReceived:
    return eng.MessageReceived(message_id="3A2", chat=PEER, sender=sender, text="new",
                               from_me=from_me, sender_lid=lid, sender_pn=pn,
                               content=mc.Edit("3A1", "new"))


def test_the_sender_edits_their_message_by_phone_number_or_lid() -> None:
    theirs = target(from_me=False, sender=PEER)
    assert _by_author(theirs, edit(PEER))
    assert _by_author(theirs, edit(PEER_LID, lid=PEER_LID, pn=PEER))
    assert _by_author(target(from_me=False, sender=PEER_LID), edit(PEER, lid=PEER_LID))


def test_nobody_else_edits_it() -> None:
    theirs = target(from_me=False, sender=PEER)
    assert not _by_author(theirs, edit("15550001111@s.whatsapp.net"))
    assert not _by_author(theirs, edit("15550001111@s.whatsapp.net", from_me=True))


def test_the_accounts_own_messages_are_edited_from_its_own_phone_only() -> None:
    mine = target(from_me=True, sender=None)
    assert _by_author(mine, edit("15550009999@s.whatsapp.net", from_me=True))
    assert not _by_author(mine, edit(PEER))
