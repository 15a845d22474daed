"""Presence, profile and calls at neonize's boundary: whatsmeow's presence and call events (as
neonize's own protobuf objects, through the Go callback) become ``presence`` and
``call_received`` notices, and the account's requests reach neonize's client with the
arguments its own signatures take, their failures translated."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from neonize.client import NewClient
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, Presence

from supervisor.engine import Notice
from supervisor.engine_account import Profile
from supervisor.engines.whatsmeow_account import notices
from supervisor.errors import EngineError
from supervisor.payloads import CallReceived, PresenceChanged
from tests.test_whatsmeow_engine import (  # noqa: F401
    Sink,
    connected_session,
    event_bytes,
    fake_go,
    from_go,
)
from tests.test_whatsmeow_translate import jid, wire

PEER = "15557654321@s.whatsapp.net"
GROUP = "120363000000000001@g.us"


def test_presence_events_become_presence_notices() -> None:
    online = nz.Presence(From=jid("15557654321"), Unavailable=False, LastSeen=0)
    assert notices(wire(online)) == [Notice(PresenceChanged(PEER, "available"))]
    offline = nz.Presence(From=jid("15557654321"), Unavailable=True, LastSeen=1_750_000_000)
    assert notices(wire(offline)) == [
        Notice(PresenceChanged(PEER, "unavailable", last_seen="2025-06-15T15:06:40.000Z"))]
    hidden = nz.Presence(From=jid("15557654321"), Unavailable=True, LastSeen=0)
    assert notices(wire(hidden)) == [Notice(PresenceChanged(PEER, "unavailable"))]


@pytest.mark.parametrize(("state", "media", "expected"), [
    (nz.ChatPresence.COMPOSING, nz.ChatPresence.TEXT, "typing"),
    (nz.ChatPresence.COMPOSING, nz.ChatPresence.AUDIO, "recording"),
    (nz.ChatPresence.PAUSED, nz.ChatPresence.TEXT, "paused"),
])
def test_chat_presence_events_say_typing_recording_or_paused(state: int, media: int,
                                                              expected: str) -> None:
    source = nz.MessageSource(Chat=jid("120363000000000001", "g.us"), Sender=jid("15557654321"),
                              IsFromMe=False, IsGroup=True)
    event = nz.ChatPresence(MessageSource=source, State=state, Media=media)
    assert notices(wire(event)) == [Notice(PresenceChanged(PEER, expected, chat=GROUP))]


def offer(video: bool) -> nz.CallOffer:
    media = [nz.Node(Tag="audio"), nz.Node(Tag="video")] if video else [nz.Node(Tag="audio")]
    creator = nz.JID(User="15557654321", Server="s.whatsapp.net", Device=3, RawAgent=0,
                     Integrator=0, IsEmpty=False)
    meta = nz.BasicCallMeta(callID="CALL0001", callCreator=creator, timestamp=1_750_000_000,
                            **{"from": creator})
    return nz.CallOffer(basicCallMeta=meta, data=nz.Node(Tag="offer", Nodes=media))


def test_call_offers_become_call_received_notices() -> None:
    assert notices(wire(offer(video=False))) == [Notice(CallReceived("CALL0001", PEER))]
    assert notices(wire(offer(video=True))) == [
        Notice(CallReceived("CALL0001", PEER, video=True))]
    lid = jid("123456789012345", "lid")
    group = nz.CallOfferNotice(
        basicCallMeta=nz.BasicCallMeta(callID="CALL0002", callCreator=lid, **{"from": lid}),
        media="video", type="group")
    assert notices(wire(group)) == [Notice(CallReceived(
        "CALL0002", "123456789012345@lid", video=True, is_group=True))]
    assert notices(wire(nz.Connected(status=True))) is None  # not theirs


async def test_presence_and_calls_arrive_through_the_go_callback(
    tmp_path: Any, fake_go: Any  # noqa: F811
) -> None:
    sink = Sink()
    _session, client = await connected_session(tmp_path, fake_go, sink)
    await from_go(client.on_event, 20, event_bytes(
        nz.Presence(From=jid("15557654321"), Unavailable=False, LastSeen=0)))
    await from_go(client.on_event, 36, event_bytes(offer(video=True)))
    assert sink.events[1:] == [Notice(PresenceChanged(PEER, "available")),
                               Notice(CallReceived("CALL0001", PEER, video=True))]


class Api:
    """neonize's client as far as the account uses it: every call is checked against
    ``NewClient``'s own signature and recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: str | None = None

    def __getattr__(self, name: str) -> Any:
        method = getattr(NewClient, name)

        def call(*args: Any) -> Any:
            inspect.signature(method).bind(None, *args)
            self.calls.append((name, args))
            if self.fail is not None:
                raise RuntimeError(self.fail)
            return RESULTS.get(name)

        return call


ME = nz.Device(JID=nz.JID(User="15550001111", Server="s.whatsapp.net", Device=7, RawAgent=0,
                          Integrator=0, IsEmpty=False), PushName="Shop Ann")
RESULTS: dict[str, Any] = {
    "get_me": ME,
    "get_user_info": [nz.GetUserInfoSingleReturnFunction(
        JID=jid("15550001111"), UserInfo=nz.UserInfo(Status="Open 9-5"))],
    "get_profile_picture": nz.ProfilePictureInfo(URL="https://pps.whatsapp.net/p.jpg",
                                                 ID="1234"),
    "set_profile_photo": "5678",
}


def jid_text(value: nz.JID) -> str:
    return f"{value.User}@{value.Server}"


async def test_account_requests_reach_neonize(tmp_path: Any, fake_go: Any) -> None:  # noqa: F811
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    api = Api()
    client._api = api  # type: ignore[assignment]
    account = session.account
    await account.set_presence("available")
    await account.set_presence("unavailable")
    await account.set_chat_presence(GROUP, "recording")
    await account.set_chat_presence(PEER, "typing")
    await account.set_chat_presence(PEER, "paused")
    await account.subscribe_presence(PEER)
    await account.set_name("Ann's Shop")
    await account.set_about("Open 9-5")
    assert await account.set_picture(b"\xff\xd8\xff jpeg") == "5678"
    await account.reject_call("CALL0001", PEER)
    shown = [(name, tuple(jid_text(a) if isinstance(a, nz.JID) else a for a in args))
             for name, args in api.calls]
    assert shown == [
        ("send_presence", (Presence.AVAILABLE,)),
        ("send_presence", (Presence.UNAVAILABLE,)),
        ("send_chat_presence", (GROUP, ChatPresence.CHAT_PRESENCE_COMPOSING,
                                ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO)),
        ("send_chat_presence", (PEER, ChatPresence.CHAT_PRESENCE_COMPOSING,
                                ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT)),
        ("send_chat_presence", (PEER, ChatPresence.CHAT_PRESENCE_PAUSED,
                                ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT)),
        ("subscribe_presence", (PEER,)),
        ("set_profile_name", ("Ann's Shop",)),
        ("set_status_message", ("Open 9-5",)),
        ("set_profile_photo", (b"\xff\xd8\xff jpeg",)),
        ("reject_call", (PEER, "CALL0001")),  # whatsmeow's RejectCall(callFrom, callID)
    ]
    api.calls.clear()
    assert await account.profile() == Profile(
        jid="15550001111@s.whatsapp.net", name="Shop Ann", about="Open 9-5",
        picture_url="https://pps.whatsapp.net/p.jpg", picture_id="1234")
    # The account's own JID, without its device part, for the about text and the picture.
    assert [(n, jid_text(a[0]) if a else None) for n, a in api.calls] == [
        ("get_me", None), ("get_user_info", "15550001111@s.whatsapp.net"),
        ("get_profile_picture", "15550001111@s.whatsapp.net")]

    api.fail = "RejectCallError: server said no"
    with pytest.raises(EngineError) as info:
        await account.reject_call("CALL0001", PEER)
    assert info.value.reason == "reject_call_failed: RejectCallError: server said no"
    assert not info.value.recoverable
    await session.stop()
    with pytest.raises(EngineError) as info:
        await account.set_presence("available")
    assert info.value.reason == "not_connected" and info.value.recoverable
