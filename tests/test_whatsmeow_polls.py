"""Poll votes through the whatsmeow engine, at neonize's boundary.

A vote arrives as neonize's own protobuf event (``Neonize_pb2.Message`` with a
``pollUpdateMessage``), through the Go client's event callback as Go calls it. The engine
decrypts it with neonize's real ``NewClient.decrypt_poll_vote``; only the Go library below it
is stood in (``_NewClient__client``, as tests/test_neonize_contract.py does), and the stand-in
is checked against the real library's declaration of ``DecryptPollVote``. Once, the real Go
library answers too: for a client it does not have, an error, not a crash.
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from neonize import _binder
from neonize.exc import DecryptPollVoteError
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import PollVoteMessage

from supervisor.engine import MessageReceived
from supervisor.engines import neonize_go, whatsmeow_votes
from supervisor.engines import whatsmeow_client as wc
from supervisor.message_content import PollVote
from tests.test_whatsmeow_engine import (  # noqa: F401
    Sink,
    connected_session,
    fake_go,
    from_go,
)
from tests.test_whatsmeow_translate import complete

PEER = "15557654321"


def jid(user: str) -> nz.JID:
    return nz.JID(User=user, Server="s.whatsapp.net" if user else "", Device=0, RawAgent=0,
                  Integrator=0, IsEmpty=not user)


def vote_event(*, as_go_sends_it: bool = True) -> nz.Message:
    """A vote on the device's poll ``3EB0POLL``, as Go hands it over: every field the schema
    requires set (the JIDs of the message source, the empty ones empty), the vote encrypted.
    Not as Go sends it: without ``SenderAlt``, which Go's decoder dereferences."""
    source = nz.MessageSource(Chat=jid(PEER), Sender=jid(PEER), IsFromMe=False, IsGroup=False)
    for name in ("SenderAlt", "RecipientAlt", "BroadcastListOwner"):
        getattr(source, name).CopyFrom(jid(""))
    ev = nz.Message(Info=nz.MessageInfo(ID="3AVOTE1", Timestamp=1_750_000_200, Pushname="Ann",
                                        MessageSource=source))
    update = ev.Message.pollUpdateMessage
    update.pollCreationMessageKey.ID = "3EB0POLL"
    update.pollCreationMessageKey.remoteJID = f"{PEER}@s.whatsapp.net"
    update.pollCreationMessageKey.fromMe = True
    update.vote.encPayload = bytes(range(40))
    update.vote.encIV = bytes(12)
    update.senderTimestampMS = 1_750_000_200_000
    complete(ev)
    if not as_go_sends_it:
        ev.Info.MessageSource.ClearField("SenderAlt")
    return ev


def wire(event: nz.Message) -> bytes:
    """The event's bytes as Go's callback hands them over (missing fields stay missing)."""
    return event.SerializePartialToString()


def sha(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


class Go:
    """neonize's Go library as ``NewClient`` calls it for ``decrypt_poll_vote``: what the real
    function returns once its errcheck copied the result (``bytes`` of a
    ``ReturnFunctionWithError``)."""

    def __init__(self, chosen: list[bytes] | None = None, error: str = "") -> None:
        self.chosen = chosen or []
        self.error = error
        self.got: list[tuple[bytes, nz.Message]] = []
        self.threads: set[int] = set()
        self.hold: threading.Event | None = None

    def DecryptPollVote(self, uuid: bytes, message: bytes, size: int) -> bytes:
        assert isinstance(uuid, bytes) and isinstance(message, bytes) and size == len(message)
        ctypes.c_char_p(uuid), ctypes.c_char_p(message), ctypes.c_int(size)  # the argtypes
        self.threads.add(threading.get_ident())
        self.got.append((uuid, nz.Message.FromString(message[:size])))
        if self.hold is not None:
            self.hold.wait(10)
        if self.error:
            return nz.ReturnFunctionWithError(Error=self.error).SerializeToString()
        vote = PollVoteMessage(selectedOptions=self.chosen)
        return nz.ReturnFunctionWithError(PollVoteMessage=vote).SerializeToString()


def test_the_stand_in_matches_neonizes_declaration() -> None:
    go = _binder.gocode.DecryptPollVote
    assert go.argtypes == [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    assert go.restype == ctypes.POINTER(_binder.Bytes)
    # neonize 0.5.2 leaves the errcheck off; wasup's neonize_go puts it on (so the real call
    # returns bytes, as the stand-in does)
    assert go.errcheck is _binder.consume_bytes_struct
    params = list(inspect.signature(Go().DecryptPollVote).parameters)
    assert len(params) == len(go.argtypes)
    neonize_go.mend_decrypt_poll_vote()  # idempotent
    assert go.errcheck is _binder.consume_bytes_struct


def test_the_real_go_library_answers_a_vote_for_a_client_it_does_not_have(
    tmp_path: Path,
) -> None:
    """Through neonize's real ``decrypt_poll_vote`` and the real Go function: Go decodes the
    whole event (a nil field would crash the process) and answers with an error."""
    event = vote_event()
    assert whatsmeow_votes.safe_for_go(event)
    client = neonize_go.api_client(str(tmp_path / "none.db"), "wasup-polls-nobody")
    with pytest.raises(DecryptPollVoteError, match="client is nil"):
        client.decrypt_poll_vote(event)
    assert not whatsmeow_votes.safe_for_go(vote_event(as_go_sends_it=False))


async def deliver_vote(tmp_path: Path, started: list[wc.GoClient], go: Go,
                       event: nz.Message | None = None) -> tuple[list[MessageReceived], Any]:
    sink = Sink()
    session, client = await connected_session(tmp_path, started, sink)
    api = neonize_go.api_client(str(tmp_path / "api.db"), client.uuid.decode())
    api._NewClient__client = go  # type: ignore[attr-defined]  # the Go library, stood in
    client._api = api
    await from_go(client.on_event, 17, wire(event or vote_event()))
    await session.stop()
    got = [e for e in sink.delivered if isinstance(e, MessageReceived)]
    assert len(got) == 1  # one event, decrypted or not
    return got, client


async def test_a_vote_is_decrypted_into_its_options_hashes(tmp_path: Path, fake_go: Any) -> None:  # noqa: F811
    go = Go(chosen=[sha("Yes"), sha("Maybe")])
    (ev,), client = await deliver_vote(tmp_path, fake_go, go)
    assert ev.message_id == "3AVOTE1" and ev.sender == f"{PEER}@s.whatsapp.net"
    assert ev.content == PollVote(
        "3EB0POLL", option_hashes=(sha("Yes").hex(), sha("Maybe").hex()))
    ((uuid, handed),) = go.got
    assert uuid == client.uuid  # the device's own Go client
    assert handed == vote_event()  # the whole event, as Go sent it
    assert threading.get_ident() not in go.threads  # on a worker thread, not Trio's


async def test_a_withdrawn_vote_chose_nothing(tmp_path: Path, fake_go: Any) -> None:  # noqa: F811
    (ev,), _ = await deliver_vote(tmp_path, fake_go, Go(chosen=[]))
    assert ev.content == PollVote("3EB0POLL", option_hashes=())


async def test_a_vote_go_cannot_decrypt_is_delivered_undecrypted(
    tmp_path: Path, fake_go: Any, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.WARNING, logger="wasup.engine.whatsmeow")
    go = Go(error="failed to decrypt poll vote: original message secret key not found")
    (ev,), _ = await deliver_vote(tmp_path, fake_go, go)
    assert ev.content == PollVote("3EB0POLL")  # option_hashes None: not decrypted
    assert "not decrypted" in caplog.text and "secret key not found" in caplog.text


async def test_an_incomplete_event_is_not_handed_to_go(tmp_path: Path, fake_go: Any) -> None:  # noqa: F811
    go = Go(chosen=[sha("Yes")])
    (ev,), _ = await deliver_vote(tmp_path, fake_go, go, vote_event(as_go_sends_it=False))
    assert ev.content == PollVote("3EB0POLL") and go.got == []


async def test_a_wrapped_vote_is_handed_to_go_unwrapped(tmp_path: Path, fake_go: Any) -> None:  # noqa: F811
    """whatsmeow unwraps a message before its event; one it left wrapped (an ephemeral
    wrapper here) goes to Go unwrapped: its DecryptPollVote reads the top level only."""
    event = vote_event()
    update = event.Message.pollUpdateMessage
    wrapped = nz.Message()
    wrapped.CopyFrom(event)
    wrapped.Message.ClearField("pollUpdateMessage")
    wrapped.Message.ephemeralMessage.message.pollUpdateMessage.CopyFrom(update)
    go = Go(chosen=[sha("Yes")])
    (ev,), _ = await deliver_vote(tmp_path, fake_go, go, wrapped)
    assert ev.content == PollVote("3EB0POLL", option_hashes=(sha("Yes").hex(),))
    ((_, handed),) = go.got
    assert handed == event  # the vote at the top level, the rest of the event as it was


async def test_a_slow_decryption_delivers_the_vote_undecrypted(
    tmp_path: Path, fake_go: Any, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setattr(whatsmeow_votes, "DECRYPT_SECONDS", 0.05)
    go = Go(chosen=[sha("Yes")])
    go.hold = threading.Event()
    try:
        (ev,), _ = await deliver_vote(tmp_path, fake_go, go)
    finally:
        go.hold.set()
    assert ev.content == PollVote("3EB0POLL")


async def test_a_stopped_client_delivers_the_vote_undecrypted(tmp_path: Path,
                                                              fake_go: Any) -> None:  # noqa: F811
    go = Go(chosen=[sha("Yes")])
    sink = Sink()
    _session, client = await connected_session(tmp_path, fake_go, sink)
    api = neonize_go.api_client(str(tmp_path / "api.db"), client.uuid.decode())
    api._NewClient__client = go  # type: ignore[attr-defined]
    client._api = api
    received = MessageReceived(message_id="3AVOTE1", chat="c", sender="s", text="",
                               is_group=False, from_me=False, timestamp=1.0,
                               content=PollVote("3EB0POLL"))
    client.stopped = True  # Go's client is gone: the call is refused, not made
    ev = await whatsmeow_votes.decrypted(client, wire(vote_event()), received)
    assert ev is received and go.got == []
    assert isinstance(client, wc.GoClient)
