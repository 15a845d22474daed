"""Groups through the whatsmeow engine, at the Go boundary, with neonize's own objects.

A session connected through the fake Go (:func:`tests.test_whatsmeow_engine.fake_go`) gets a
stand-in for neonize's client that answers with neonize's protobuf objects (``GroupInfo``,
``GroupParticipant``, a ``JID``) or raises neonize's exceptions carrying whatsmeow's error
texts; the group events come from the fake Go's callback as serialized neonize events
(``JoinedGroup``, ``GroupInfoEvent``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from neonize.client import NewClient
from neonize.exc import (
    CreateGroupError,
    GetGroupInfoError,
    GetGroupInviteLinkError,
    InviteLinkError,
    SetGroupNameError,
    SetGroupPhotoError,
    UpdateGroupParticipantsError,
)
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ParticipantChange

from supervisor.engine import Notice
from supervisor.engine_groups import GroupInfo, Participant, ParticipantResult
from supervisor.engines.whatsmeow_groups import group_notices, refusal
from supervisor.errors import EngineError, WasupError, WhatsAppForbidden, WhatsAppRefused
from supervisor.payloads import GroupJoined, GroupParticipants, GroupUpdated

from .test_whatsmeow_engine import Sink, connected_session, event_bytes, fake_go, from_go
from .test_whatsmeow_translate import wire

__all__ = ["fake_go"]  # the fixture, used by name

GROUP = nz.JID(User="120363025246125244", Server="g.us")
ME = nz.JID(User="15551234567", Server="s.whatsapp.net")
ANA = nz.JID(User="15557654321", Server="s.whatsapp.net")
ANA_LID = nz.JID(User="987654321012345", Server="lid")
BEN = nz.JID(User="15550002222", Server="s.whatsapp.net", Device=3)


def neonize_group() -> nz.GroupInfo:
    return nz.GroupInfo(
        JID=GROUP, OwnerJID=ME, GroupCreated=1_750_000_000.0,
        GroupName=nz.GroupName(Name="Orders"),
        GroupTopic=nz.GroupTopic(Topic="Only orders"),
        GroupLocked=nz.GroupLocked(isLocked=True),
        GroupAnnounce=nz.GroupAnnounce(IsAnnounce=False),
        Participants=[
            nz.GroupParticipant(JID=ME, IsAdmin=True, IsSuperAdmin=True),
            nz.GroupParticipant(JID=ANA_LID, PhoneNumber=ANA, IsAdmin=True),
            nz.GroupParticipant(JID=BEN),
        ],
    )


ORDERS = GroupInfo(
    id="120363025246125244@g.us", subject="Orders", topic="Only orders",
    owner="15551234567@s.whatsapp.net", created=1_750_000_000.0, announce=False, locked=True,
    participants=(
        Participant("15551234567@s.whatsapp.net", admin=True, super_admin=True),
        Participant("15557654321@s.whatsapp.net", admin=True),
        Participant("15550002222@s.whatsapp.net"),
    ),
)


class FakeClient:
    """neonize's client as far as groups go: answers recorded, errors raised as neonize does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    def _answer(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail is not None:
            raise self.fail

    def get_joined_groups(self) -> list[nz.GroupInfo]:
        self._answer("joined")
        return [wire(neonize_group())]

    def get_group_info(self, jid: nz.JID) -> nz.GroupInfo:
        self._answer("info", f"{jid.User}@{jid.Server}")
        return wire(neonize_group())

    def create_group(self, name: str, participants: list[nz.JID]) -> nz.GroupInfo:
        self._answer("create", name, [f"{j.User}@{j.Server}" for j in participants])
        return wire(neonize_group())

    def set_group_name(self, jid: nz.JID, name: str) -> None:
        self._answer("name", name)

    def set_group_topic(self, jid: nz.JID, previous: str, new: str, topic: str) -> None:
        self._answer("topic", previous, new, topic)

    def set_group_announce(self, jid: nz.JID, announce: bool) -> None:
        self._answer("announce", announce)

    def set_group_locked(self, jid: nz.JID, locked: bool) -> None:
        self._answer("locked", locked)

    def set_group_photo(self, jid: nz.JID, data: bytes) -> str:
        self._answer("photo", data)
        return "1750000001"

    def update_group_participants(self, jid: nz.JID, jids: list[nz.JID],
                                  change: ParticipantChange) -> list[nz.GroupParticipant]:
        self._answer("participants", change, [f"{j.User}@{j.Server}" for j in jids])
        answer = nz.UpdateGroupParticipantsReturnFunction(participants=[
            nz.GroupParticipant(JID=ANA_LID, PhoneNumber=ANA),
            nz.GroupParticipant(JID=nz.JID(User="15550003333", Server="s.whatsapp.net"),
                                Error=403),
            nz.GroupParticipant(JID=nz.JID(User="15550004444", Server="s.whatsapp.net"),
                                Error=409),
        ])
        return list(wire(answer).participants)

    def get_group_invite_link(self, jid: nz.JID, revoke: bool) -> str:
        self._answer("invite", revoke)
        return "https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv"

    def join_group_with_link(self, code: str) -> nz.JID:
        self._answer("join", code)
        return wire(nz.JoinGroupWithLinkReturnFunction(Jid=GROUP)).Jid

    def leave_group(self, jid: nz.JID) -> None:
        self._answer("leave", f"{jid.User}@{jid.Server}")


async def test_requests_reach_neonize_and_its_answers_are_translated(
    tmp_path: Path, fake_go: Any
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    fake = FakeClient()
    client._api = fake
    groups = session.groups
    gid = "120363025246125244@g.us"
    assert await groups.joined() == [ORDERS]
    assert await groups.info(gid) == ORDERS
    assert await groups.create("Orders", ["15557654321@s.whatsapp.net"]) == ORDERS
    await groups.set_subject(gid, "Orders 2026")
    await groups.set_topic(gid, "")
    await groups.set_announce(gid, True)
    await groups.set_locked(gid, False)
    assert await groups.set_picture(gid, b"\xff\xd8\xff") == "1750000001"
    asked = ["15557654321@s.whatsapp.net", "15550003333@s.whatsapp.net",
             "15550004444@s.whatsapp.net", "15550005555@s.whatsapp.net"]
    assert await groups.update_participants(gid, "add", asked) == [
        ParticipantResult("15557654321@s.whatsapp.net", True),
        ParticipantResult("15550003333@s.whatsapp.net", False, 403, "privacy_restricted"),
        ParticipantResult("15550004444@s.whatsapp.net", False, 409, "already_participant"),
        ParticipantResult("15550005555@s.whatsapp.net", False, 404, "not_found"),
    ]
    assert await groups.invite_link(gid, revoke=True) == \
        "https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv"
    assert await groups.join("AbCdEfGhIjKlMnOpQrStUv") == gid
    await groups.leave(gid)
    assert [name for name, _ in fake.calls] == [
        "joined", "info", "create", "name", "topic", "announce", "locked", "photo",
        "participants", "invite", "join", "leave"]
    assert fake.calls[2] == ("create", ("Orders", ["15557654321@s.whatsapp.net"]))
    assert fake.calls[4] == ("topic", ("", "", ""))  # whatsmeow finds the previous id itself
    assert fake.calls[8][1][0] is ParticipantChange.ADD
    assert fake.calls[9] == ("invite", (True,))
    await session.stop()


@pytest.mark.parametrize(
    ("raised", "answered", "reason"),
    [
        (GetGroupInfoError("that group does not exist"), WhatsAppRefused, "group_not_found"),
        (GetGroupInfoError("you're not participating in that group"), WhatsAppRefused,
         "not_participant"),
        (InviteLinkError("that group invite link has been revoked"), WhatsAppRefused,
         "link_revoked"),
        (InviteLinkError("that group invite link is not valid"), WhatsAppRefused,
         "link_invalid"),
        (GetGroupInviteLinkError("you don't have the permission to get the group's invite "
                                 "link"), WhatsAppForbidden, "not_admin"),
        (SetGroupNameError("info query returned status 403: forbidden"), WhatsAppForbidden,
         "not_admin"),
        (SetGroupNameError("info query returned status 401: not-authorized"),
         WhatsAppForbidden, "not_admin"),
        (UpdateGroupParticipantsError("info query returned status 419: resource-limit"),
         WhatsAppRefused, "group_full"),
        (SetGroupPhotoError("the given data is not a valid image"), WhatsAppRefused,
         "invalid_image"),
        (CreateGroupError("info query returned status 500: internal-server-error"),
         EngineError, "groups_failed: info query returned status 500: internal-server-error"),
        (GetGroupInfoError("websocket disconnected before info query returned response"),
         EngineError, "not_connected"),
    ],
)
async def test_whatsmeows_errors_become_whatsapps_refusals(
    tmp_path: Path, fake_go: Any, raised: Exception, answered: type[WasupError], reason: str
) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    fake = FakeClient()
    fake.fail = raised
    client._api = fake
    with pytest.raises(answered) as caught:
        await session.groups.info("120363025246125244@g.us")
    assert getattr(caught.value, "reason", None) == reason
    await session.stop()


def test_an_invite_link_that_is_not_acceptable_is_invalid_only_when_joining() -> None:
    text = "info query returned status 406: not-acceptable"
    joined = refusal(text, "join group", joining=True)
    other = refusal(text, "group info")
    assert isinstance(joined, WhatsAppRefused) and joined.reason == "link_invalid"
    assert isinstance(other, WhatsAppRefused) and other.reason == "not_acceptable"


async def test_a_request_while_not_connected_is_recoverable(tmp_path: Path,
                                                            fake_go: Any) -> None:
    sink = Sink()
    session, _client = await connected_session(tmp_path, fake_go, sink)
    await session.stop()
    with pytest.raises(EngineError) as caught:
        await session.groups.joined()
    assert caught.value.reason == "not_connected" and caught.value.recoverable


async def test_group_events_reach_the_sink_as_notices(tmp_path: Path, fake_go: Any) -> None:
    sink = Sink()
    session, client = await connected_session(tmp_path, fake_go, sink)
    gid = "120363025246125244@g.us"
    await from_go(client.on_event, 0, event_bytes(nz.Device(JID=ME)))
    joined = nz.JoinedGroup(Reason="", Type="new", GroupInfo=neonize_group(), Sender=ANA_LID,
                            SenderPN=ANA)
    await from_go(client.on_event, 21, event_bytes(joined))
    assert sink.events[-1] == Notice(GroupJoined(gid, "Orders", [
        "15551234567@s.whatsapp.net", "15557654321@s.whatsapp.net",
        "15550002222@s.whatsapp.net"], by="15557654321@s.whatsapp.net"))
    changed = nz.GroupInfoEvent(
        JID=GROUP, Sender=ANA, Name=nz.GroupName(Name="Orders 2026"),
        Topic=nz.GroupTopic(TopicDeleted=True), Locked=nz.GroupLocked(isLocked=True),
        Join=[BEN], Leave=[nz.JID(User="15550003333", Server="s.whatsapp.net")],
        Promote=[ME])
    await from_go(client.on_event, 22, event_bytes(changed))
    assert sink.events[-4:] == [
        Notice(GroupParticipants(gid, "add", ["15550002222@s.whatsapp.net"],
                                 by="15557654321@s.whatsapp.net")),
        Notice(GroupParticipants(gid, "remove", ["15550003333@s.whatsapp.net"],
                                 by="15557654321@s.whatsapp.net")),
        Notice(GroupParticipants(gid, "promote", ["15551234567@s.whatsapp.net"],
                                 by="15557654321@s.whatsapp.net")),
        Notice(GroupUpdated(gid, "15557654321@s.whatsapp.net", subject="Orders 2026",
                            topic="", locked=True)),
    ]
    # What the account did itself: no one to name.
    own = nz.GroupInfoEvent(JID=GROUP, Sender=ME, Announce=nz.GroupAnnounce(IsAnnounce=True))
    await from_go(client.on_event, 22, event_bytes(own))
    assert sink.events[-1] == Notice(GroupUpdated(gid, None, announce=True))
    await session.stop()


def test_a_group_event_with_nothing_wasup_reports_is_dropped() -> None:
    ephemeral = nz.GroupInfoEvent(JID=GROUP, Sender=ANA,
                                  Ephemeral=nz.GroupEphemeral(IsEphemeral=True))
    assert group_notices(wire(ephemeral)) == []
    assert group_notices(wire(nz.Connected(status=True))) == []


@pytest.mark.parametrize(("method", "params"), [
    ("get_joined_groups", []),
    ("get_group_info", ["jid"]),
    ("create_group", ["name", "participants", "linked_parent", "group_parent"]),
    ("set_group_name", ["jid", "name"]),
    ("set_group_topic", ["jid", "previous_id", "new_id", "topic"]),
    ("set_group_announce", ["jid", "announce"]),
    ("set_group_locked", ["jid", "locked"]),
    ("set_group_photo", ["jid", "file_or_bytes"]),
    ("update_group_participants", ["jid", "participants_changes", "action"]),
    ("get_group_invite_link", ["jid", "revoke"]),
    ("join_group_with_link", ["code"]),
    ("leave_group", ["jid"]),
])
def test_the_stand_in_calls_neonizes_client_as_it_is(method: str, params: list[str]) -> None:
    """The stand-in above answers the calls wasup makes; neonize's client takes them so."""
    signature = inspect.signature(getattr(NewClient, method))
    assert list(signature.parameters)[1:] == params
    assert {p.value for p in ParticipantChange} == {"add", "remove", "promote", "demote"}
