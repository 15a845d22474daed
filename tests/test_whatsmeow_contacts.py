"""The whatsmeow engine's contacts at the Go boundary: neonize's client is replaced by a stand-in
answering with neonize's own protobuf objects and raising neonize's own errors, and the
session's ``contacts`` must turn them into wasup's records: one ``is_on_whatsapp`` call per
batch matched back by query, the contact store's address book, a person's profile from
``get_user_info``/``get_contact``/``get_profile_picture``/the LID store/the block list, the
LID mapping both ways, blocking; a dropped connection is recoverable, WhatsApp's failures
final, a person without an account not found."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from neonize.exc import (
    GetProfilePictureError,
    IsOnWhatsAppError,
    UpdateBlocklistError,
)
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import BlocklistAction

from supervisor.engine_contacts import Contact, ContactInfo, NumberCheck
from supervisor.engines import whatsmeow_client as wc
from supervisor.engines.whatsmeow_link import LinkState
from supervisor.errors import EngineError, NotFound

from .test_whatsmeow_engine import Sink, connected_session, fake_go

__all__ = ["fake_go"]  # the fixture, used by name

PN = nz.JID(User="15551230001", Server="s.whatsapp.net")
LID = nz.JID(User="200000000000001", Server="lid")
OTHER = nz.JID(User="15551230002", Server="s.whatsapp.net")


def verified(name: str) -> nz.VerifiedName:
    answer = nz.VerifiedName()
    answer.Details.verifiedName = name
    return answer


class FakeContactStore:
    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def get_all_contacts(self) -> list[nz.Contact]:
        return [
            nz.Contact(JID=OTHER, Info=nz.ContactInfo(Found=True, FullName="Ben Okafor",
                                                      FirstName="Ben", PushName="Benny")),
            nz.Contact(JID=PN, Info=nz.ContactInfo(Found=True, PushName="Ana",
                                                   BusinessName="Ana's Bakery")),
        ]

    def get_contact(self, user: nz.JID) -> nz.ContactInfo:
        self.api.calls.append(("get_contact", user.User))
        if user.User == PN.User:
            return nz.ContactInfo(Found=True, FullName="Ana Silva", FirstName="Ana",
                                  PushName="Ana")
        return nz.ContactInfo(Found=False)


class FakeApi:
    """neonize's NewClient, as far as contacts reach it; records its calls and thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.threads: set[int] = set()
        self.contact = FakeContactStore(self)
        self.blocklist: list[nz.JID] = [OTHER]
        self.picture_error = False

    def _called(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        self.threads.add(threading.get_ident())

    def is_on_whatsapp(self, *numbers: str) -> list[nz.IsOnWhatsAppResponse]:
        self._called("is_on_whatsapp", numbers)
        return [  # whatsmeow answers in its own order
            nz.IsOnWhatsAppResponse(Query="+15551230002", JID=OTHER, IsIn=False),
            nz.IsOnWhatsAppResponse(Query="+15551230001", JID=PN, IsIn=True,
                                    VerifiedName=verified("Ana's Bakery")),
        ]

    def get_user_info(self, *jids: nz.JID) -> list[nz.GetUserInfoSingleReturnFunction]:
        self._called("get_user_info", [j.User for j in jids])
        if jids[0].User not in (PN.User, LID.User):
            return []
        return [nz.GetUserInfoSingleReturnFunction(
            JID=PN, UserInfo=nz.UserInfo(Status="At the bakery", PictureID="1",
                                         VerifiedName=verified("Ana's Bakery")))]

    def get_lid_from_pn(self, jid: nz.JID) -> nz.JID:
        self._called("get_lid_from_pn", jid.User)
        return LID if jid.User == PN.User else nz.JID()

    def get_pn_from_lid(self, jid: nz.JID) -> nz.JID:
        self._called("get_pn_from_lid", jid.User)
        return PN if jid.User == LID.User else nz.JID()

    def get_profile_picture(self, jid: nz.JID) -> nz.ProfilePictureInfo:
        self._called("get_profile_picture", jid.User)
        if self.picture_error:
            raise GetProfilePictureError(nz.GetProfilePictureReturnFunction(
                Error="the user doesn't have a profile picture"))
        return nz.ProfilePictureInfo(URL="https://pps.whatsapp.net/v/ana.jpg", ID="1")

    def get_blocklist(self) -> nz.Blocklist:
        self._called("get_blocklist", None)
        return nz.Blocklist(JIDs=self.blocklist)

    def update_blocklist(self, jid: nz.JID, action: BlocklistAction) -> nz.Blocklist:
        self._called("update_blocklist", (jid.User, jid.Server, action))
        if jid.User == "15559999999":
            raise UpdateBlocklistError("server returned error 400")
        return nz.Blocklist(JIDs=self.blocklist)


async def session_with(tmp_path: Path, fake_go: list[wc.GoClient]) -> tuple[Any, wc.GoClient,
                                                                              FakeApi]:
    session, client = await connected_session(tmp_path, fake_go, Sink())
    api = FakeApi()
    client._api = api  # type: ignore[assignment]  # neonize's client, played by the test
    return session, client, api


async def test_check_is_one_request_matched_back_by_query(tmp_path: Path, fake_go: Any) -> None:
    session, _client, api = await session_with(tmp_path, fake_go)
    results = await session.contacts.check(["15551230001", "15551230002", "15551230003"])
    assert results == [
        NumberCheck("15551230001", True, "15551230001@s.whatsapp.net", "Ana's Bakery"),
        NumberCheck("15551230002", False),
        NumberCheck("15551230003", False),  # not answered: not on WhatsApp
    ]
    assert api.calls == [("is_on_whatsapp", ("+15551230001", "+15551230002", "+15551230003"))]
    assert threading.get_ident() not in api.threads  # Go is called on a worker thread
    await session.stop()


async def test_the_address_book_comes_from_the_contact_store(tmp_path: Path,
                                                              fake_go: Any) -> None:
    session, _client, _api = await session_with(tmp_path, fake_go)
    assert await session.contacts.list() == [
        Contact("15551230001@s.whatsapp.net", push_name="Ana", business_name="Ana's Bakery"),
        Contact("15551230002@s.whatsapp.net", name="Ben Okafor", first_name="Ben",
                push_name="Benny"),
    ]
    await session.stop()


async def test_info_gathers_a_person_by_phone_or_by_lid(tmp_path: Path, fake_go: Any) -> None:
    session, _client, api = await session_with(tmp_path, fake_go)
    expected = ContactInfo(
        "15551230001@s.whatsapp.net", name="Ana Silva", first_name="Ana", push_name="Ana",
        about="At the bakery", business_name="Ana's Bakery",
        picture_url="https://pps.whatsapp.net/v/ana.jpg", lid="200000000000001@lid",
        blocked=False)
    assert await session.contacts.info("15551230001@s.whatsapp.net") == expected
    assert await session.contacts.info("200000000000001@lid") == expected
    assert ("get_pn_from_lid", LID.User) in api.calls

    # No picture set (or not shown): no URL, no error. A blocked person says so.
    api.picture_error = True
    api.blocklist = [PN]
    info = await session.contacts.info("15551230001@s.whatsapp.net")
    assert (info.picture_url, info.blocked) == (None, True)

    with pytest.raises(NotFound):
        await session.contacts.info("15551239999@s.whatsapp.net")
    await session.stop()


async def test_lid_mapping_and_block_list(tmp_path: Path, fake_go: Any) -> None:
    session, _client, api = await session_with(tmp_path, fake_go)
    assert await session.contacts.lid_of("15551230001@s.whatsapp.net") == "200000000000001@lid"
    assert await session.contacts.lid_of("15551230002@s.whatsapp.net") is None  # not known
    assert await session.contacts.pn_of("200000000000001@lid") == "15551230001@s.whatsapp.net"
    assert await session.contacts.pn_of("200000000000009@lid") is None

    await session.contacts.block("15551230001@s.whatsapp.net")
    await session.contacts.unblock("200000000000001@lid")
    assert [c[1] for c in api.calls if c[0] == "update_blocklist"] == [
        ("15551230001", "s.whatsapp.net", BlocklistAction.BLOCK),
        ("200000000000001", "lid", BlocklistAction.UNBLOCK),
    ]
    assert await session.contacts.blocked() == ["15551230002@s.whatsapp.net"]

    with pytest.raises(EngineError) as refused:
        await session.contacts.block("15559999999@s.whatsapp.net")
    assert refused.value.reason.startswith("contacts_failed: ")
    assert not refused.value.recoverable
    await session.stop()


async def test_not_connected_and_a_connection_lost_midway_are_recoverable(
    tmp_path: Path, fake_go: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, _client, api = await session_with(tmp_path, fake_go)
    link = session._link

    def dropped(*numbers: str) -> list[nz.IsOnWhatsAppResponse]:
        link.state = LinkState.STARTING  # the connection went down meanwhile
        raise IsOnWhatsAppError("websocket disconnected before info query returned response")

    monkeypatch.setattr(api, "is_on_whatsapp", dropped)
    with pytest.raises(EngineError) as lost:
        await session.contacts.check(["15551230001"])
    assert (lost.value.reason, lost.value.recoverable) == ("not_connected", True)

    await session.stop()
    with pytest.raises(EngineError) as idle:
        await session.contacts.list()
    assert (idle.value.reason, idle.value.recoverable) == ("not_connected", True)
