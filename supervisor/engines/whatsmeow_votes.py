"""A poll vote as whatsmeow delivers it, decrypted: the hashes of the options it chose.

A vote (``pollUpdateMessage``) carries the voter's choice encrypted with the poll's secret,
which whatsmeow keeps in its store for every poll it sent or received. neonize's
``NewClient.decrypt_poll_vote`` hands the whole message event (``Neonize_pb2.Message``, Info
and Message) to whatsmeow's ``DecryptPollVote`` and returns a ``PollVoteMessage`` whose
``selectedOptions`` are the SHA-256 of each chosen option's name (empty: the vote was
withdrawn); whatsmeow reads the vote at the event's top level, so one a wrapper still holds
(whatsmeow unwraps its events itself) is handed over unwrapped. :func:`decrypted` puts the
hashes, in hex, into the vote's
:class:`~supervisor.message_content.PollVote` (``option_hashes``); the device names them
after its stored poll (:mod:`supervisor.polls`). A vote that cannot be decrypted (whatsmeow
lacks the poll's secret, the call fails or takes longer than :data:`DECRYPT_SECONDS`) keeps
``option_hashes`` None and is delivered all the same: never dropped.

Go's decoding of the event dereferences its fields without a check (the message source's
JIDs, the info's ``ServerID``, ...): a missing one takes the whole process down. Go's own
events always carry them, but protobuf's parser does not insist on ``required`` fields, so
:func:`safe_for_go` checks before the call (every required field, and the source's JIDs by
name, in case a release makes them optional). The call runs on a worker thread through
:meth:`GoClient.call` (the shared gate).
"""

from __future__ import annotations

import logging

import attrs
import trio
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import PollVoteMessage

from supervisor.engine import MessageReceived
from supervisor.message_content import PollVote

from .whatsmeow_client import GoClient
from .whatsmeow_messages import unwrap

log = logging.getLogger("wasup.engine.whatsmeow")

#: Seconds a decryption may take (a read of whatsmeow's store and an AES-GCM open) before the
#: vote is delivered undecrypted; the worker thread is abandoned, not killed.
DECRYPT_SECONDS = 10.0

#: The message source's JIDs Go's decoder dereferences.
_GO_NEEDS = ("Chat", "Sender", "SenderAlt", "RecipientAlt", "BroadcastListOwner")


def safe_for_go(event: nz.Message) -> bool:
    """Whether Go can decode ``event`` without a nil dereference (see the module doc)."""
    source = event.Info.MessageSource
    return event.IsInitialized() and all(source.HasField(name) for name in _GO_NEEDS)


def unwrapped(message: WAMessage) -> WAMessage | None:
    """The message holding the ``pollUpdateMessage``: ``message`` itself, or the one inside
    the wrappers whatsmeow may leave around it (:func:`.whatsmeow_messages.unwrap`, as
    :func:`.whatsmeow_messages.content_of` reads the vote); None when there is none."""
    inner, _ = unwrap(message)
    return inner if inner.HasField("pollUpdateMessage") else None


def option_hashes(vote: PollVoteMessage) -> tuple[str, ...]:
    """The chosen options' hashes of a decrypted vote, in hex."""
    return tuple(bytes(h).hex() for h in vote.selectedOptions)


async def decrypted(
    client: GoClient, data: bytes, received: MessageReceived,
    limiter: trio.CapacityLimiter | None = None,
) -> MessageReceived:
    """``received``, a poll vote, with the hashes of its choice (``data``: the event as Go
    sent it); as it is when it cannot be decrypted (logged). Never raises."""
    vote = received.content
    if not isinstance(vote, PollVote):
        return received
    try:
        event = nz.Message.FromString(data)
    except Exception:
        log.warning("poll vote %s: not a message event", received.message_id)
        return received
    inner = unwrapped(event.Message)
    if inner is None:
        log.warning("poll vote %s: not decrypted (no pollUpdateMessage)", received.message_id)
        return received
    if inner is not event.Message:  # Go reads the vote at the top level only
        vote_message = WAMessage()
        vote_message.CopyFrom(inner)  # a copy first: inner lives inside event.Message
        event.Message.CopyFrom(vote_message)
    if not safe_for_go(event):
        log.warning("poll vote %s: not decrypted (the event misses fields Go needs)",
                    received.message_id)
        return received
    result: PollVoteMessage | None = None
    with trio.move_on_after(DECRYPT_SECONDS):
        try:
            result = await trio.to_thread.run_sync(
                lambda: client.call(lambda api: api.decrypt_poll_vote(event)),
                limiter=limiter, abandon_on_cancel=True,
            )
        except Exception as exc:  # neonize's DecryptPollVoteError, a stopped client
            log.warning("poll vote %s on %s: not decrypted: %s", received.message_id,
                        vote.target_id, exc)
            return received
    if result is None:
        log.warning("poll vote %s: decryption took over %g s", received.message_id,
                    DECRYPT_SECONDS)
        return received
    return attrs.evolve(received, content=attrs.evolve(vote, option_hashes=option_hashes(result)))
