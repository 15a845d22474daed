"""Poll votes: the options a vote chose, by name, and the tally a poll keeps.

WhatsApp never carries the names a voter chose: a vote holds, encrypted with the poll's
secret, the SHA-256 of each chosen option's name (whatsmeow's ``HashPollOptions``). An engine
reports those hashes (:attr:`~supervisor.message_content.PollVote.option_hashes`, in hex: the
whatsmeow engine decrypts them with neonize's ``decrypt_poll_vote``, the simulator carries
them the same way), and the device matches them here against the options of the poll it
stored, sent or received (:func:`named`), in the transaction that stores the vote
(:func:`name_vote`). A vote is the voter's whole choice: it replaces the voter's earlier one,
and an empty one withdraws it. Three outcomes, each one ``message_received`` event:

- the poll is stored: ``options`` are the chosen names, in the poll's order (a hash that
  matches no option is left out of them; ``option_hashes`` keeps it), the vote names the poll
  by wasup's id of it (``msg_...`` for the device's own), and the poll's row keeps the choice
  under the voter's JID (``storage.message_actions``: ``poll.votes``);
- wasup has no such poll (never seen, gone with retention, or revoked): ``options`` None,
  ``unknown_poll`` true, the hashes as they came;
- the vote could not be decrypted: ``options`` and ``option_hashes`` None.

:func:`with_tally` is the poll as the history shows it: its ``votes`` and, per option, how
many voters chose it (``tally``). Usage::

    option_hash("Yes")                                   # "85a5..." (hex SHA-256)
    named(PollVote("3EB0...", option_hashes=(option_hash("Yes"),)),
          StoredPoll("msg_...", ("Yes", "No")))
    # PollVote("msg_...", options=("Yes",), option_hashes=(...,))
    with_tally({"question": "Lunch?", "options": ["Yes", "No"],
                "votes": {"1555...@s.whatsapp.net": ["Yes"]}})
    # {..., "votes": {...}, "tally": {"Yes": 1, "No": 0}}
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from storage.message_actions import StoredPoll
from storage.message_interface import MessageActionRepository

from . import engine as eng
from . import message_content as mc


def option_hash(name: str) -> str:
    """The hash a vote carries for the option ``name``: SHA-256 of its UTF-8 bytes, in hex."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def named(vote: mc.PollVote, poll: StoredPoll | None) -> mc.PollVote:
    """``vote`` with its chosen options named after ``poll``'s (None: wasup has no such
    poll), and the poll named by wasup's id of it (``msg_...`` for the device's own poll, which
    WhatsApp names by its own id). A vote that was not decrypted, or is named already, stays as
    it is."""
    if vote.option_hashes is None or vote.options is not None:
        return vote
    if poll is None:
        return attrs.evolve(vote, unknown_poll=True)
    chosen = set(vote.option_hashes)
    return attrs.evolve(
        vote, target_id=poll.message_id, unknown_poll=False,
        options=tuple(o for o in poll.options if option_hash(o) in chosen),
    )


def name_vote(
    actions: MessageActionRepository, device_id: int, ev: eng.MessageReceived
) -> eng.MessageReceived:
    """``ev`` with its vote named (:func:`named`) after the device's stored poll; any other
    message as it is. Runs inside ``Database.run``."""
    if not isinstance(ev.content, mc.PollVote) or ev.content.option_hashes is None:
        return ev
    poll = actions.poll(device_id, ev.content.target_id)
    return attrs.evolve(ev, content=named(ev.content, poll))


def with_tally(poll: dict[str, Any]) -> dict[str, Any]:
    """A stored poll object with its ``votes`` (chosen options by voter JID; ``{}`` before
    the first vote) and ``tally`` (for every option, in the poll's order, how many voters
    chose it)."""
    options = [o for o in poll.get("options") or [] if isinstance(o, str)]
    raw = poll.get("votes")
    votes = raw if isinstance(raw, dict) else {}
    tally = dict.fromkeys(options, 0)
    for chosen in votes.values():
        for option in {o for o in chosen if isinstance(o, str)} if isinstance(
                chosen, list) else ():
            if option in tally:
                tally[option] += 1
    return {**poll, "votes": votes, "tally": tally}
