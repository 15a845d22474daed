"""The polls the simulated WhatsApp carried, and votes on them as WhatsApp carries votes.

The simulator's control delivers a vote by option name (``{"type": "poll_vote",
"messageId", "options": ["Yes"]}``); WhatsApp never carries names, only the SHA-256 of each
chosen option's name. :meth:`SimulatedPolls.ballot` makes the vote WhatsApp would deliver:
the names checked against the poll (each one of its options, at most one for a single-choice
poll, none twice: what a phone lets a voter choose) and turned into hashes, so the device
names them after its stored poll with the same code as for the whatsmeow engine
(:mod:`supervisor.polls`). A vote on a poll the simulated WhatsApp did not carry (one the
device's history does not have either, to play a vote on an unknown poll) is hashed as it
is, unchecked.

The polls are those each device sent (:meth:`SimulatedPolls.keep` from the session's send)
or received through the simulator, by WhatsApp's id, at most :data:`POLLS_KEPT` in all (the
least recently used go first).

Error handling: :meth:`SimulatedPolls.ballot` raises :class:`InvalidRequest` (``options``)
for a choice the poll does not allow.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from supervisor.errors import InvalidRequest
from supervisor.message_content import Poll, PollVote
from supervisor.polls import option_hash

#: How many polls the simulated WhatsApp remembers, all devices together.
POLLS_KEPT = 10_000


@attrs.define(eq=False)
class SimulatedPolls:
    """Polls by ``(device_id, WhatsApp's message id)``, least recently used first."""

    cap: int = POLLS_KEPT
    _polls: OrderedDict[tuple[int, str], Poll] = attrs.field(factory=OrderedDict)

    def keep(self, device_id: int, message_id: str, poll: Poll) -> None:
        """Remember a poll the device sent or received."""
        self._polls[(device_id, message_id)] = poll
        self._polls.move_to_end((device_id, message_id))
        while len(self._polls) > self.cap:
            self._polls.popitem(last=False)

    def get(self, device_id: int, message_id: str) -> Poll | None:
        """The device's poll ``message_id``, or None when not remembered."""
        poll = self._polls.get((device_id, message_id))
        if poll is not None:
            self._polls.move_to_end((device_id, message_id))
        return poll

    def forget(self, device_id: int) -> None:
        """Drop every poll of the device."""
        for key in [k for k in self._polls if k[0] == device_id]:
            del self._polls[key]

    def ballot(self, device_id: int, vote: PollVote) -> PollVote:
        """``vote`` as WhatsApp carries it: the chosen ``options`` (names) as hashes. A vote
        without names (hashes already, or none) is returned as it is.

        Error handling: :class:`InvalidRequest` (``options``) for a name that is not one of
        the poll's options, a name given twice, or more than one for a single-choice poll.
        """
        if vote.options is None:
            return vote
        names = vote.options
        if len(set(names)) != len(names):
            raise InvalidRequest("options: each option at most once", "options")
        poll = self.get(device_id, vote.target_id)
        if poll is not None:
            unknown = [n for n in names if n not in poll.options]
            if unknown:
                raise InvalidRequest(
                    f"options: {unknown[0]!r} is not an option of the poll (its options: "
                    f"{', '.join(poll.options)})", "options")
            if not poll.multiple and len(names) > 1:
                raise InvalidRequest(
                    "options: the poll allows one choice only (it is not multiple-choice)",
                    "options")
        return PollVote(vote.target_id, option_hashes=tuple(option_hash(n) for n in names))
