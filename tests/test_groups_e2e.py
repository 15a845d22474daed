"""Groups end to end: HTTP in, the simulator's world of groups, the WebSocket out.

A whole wasup (simulator engine) with one connected device whose number is known: the device
creates, lists, reads and changes groups, its participants, picture and invite link, joins and
leaves; the simulator's controls play the other members (they create groups, add and remove the
device, promote it, lock the group). The WebSocket must show ``group_joined``,
``group_updated`` and ``group_participants`` for what WhatsApp would tell the device, and
WhatsApp's refusals must answer 403 / 409 with WhatsApp's reason. Real sockets and a real
clock, every wait under a deadline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from supervisor.engines.simulator import SimulatorEngine
from tests.conftest import TEST_TOKEN, api_client, running_server
from tests.media_support import JPEG, PNG, b64
from tests.test_messaging_e2e import create, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

DEADLINE = 20.0
ME = "15550001111@s.whatsapp.net"
ANA = "15557654321@s.whatsapp.net"
BEN = "15550002222@s.whatsapp.net"
CAL = "15550003333@s.whatsapp.net"
EVENTS = "group_joined,group_updated,group_participants"


@attrs.define(eq=False)
class Setup:
    api: httpx.AsyncClient
    sid: str
    engine: SimulatorEngine
    device_id: int
    key: str
    events: list[dict[str, Any]] = attrs.field(factory=list)
    arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def groups(self) -> str:
        return f"/devices/{self.sid}/groups"

    @property
    def sim(self) -> str:
        return f"/simulator/devices/{self.sid}/groups"

    async def collect(self, ws: Any) -> None:
        while True:
            self.events.append(json.loads(await ws.get_message()))
            self.arrived.set()
            self.arrived = trio.Event()

    async def event(self, kind: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th WebSocket event of ``kind`` (waiting for it)."""
        with trio.fail_after(DEADLINE):
            while True:
                seen = [e for e in self.events if e["type"] == kind]
                if len(seen) >= count:
                    return dict(seen[count - 1]["data"])
                await self.arrived.wait()

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e["type"] == kind)


@asynccontextmanager
async def connected(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await create(api, "Shop")
        sid = device["sessionId"]
        await wait_status(api, sid, "pending")
        r = await api.post(f"/simulator/devices/{sid}/scan", json={"phoneNumber": "+15550001111"})
        assert r.status_code == 200, r.text
        row = await wait_status(api, sid, "connected")
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        setup = Setup(api, sid, engine, int(row["id"]), device["apiKey"])
        url = f"{server.ws_url}/?token={TEST_TOKEN}&events={EVENTS}"
        async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:
            nursery.start_soon(setup.collect, ws)
            await trio.sleep(0.05)  # subscribed
            yield setup
            nursery.cancel_scope.cancel()


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is True
    return body["data"]


def refused(r: httpx.Response, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    assert body["reason"] == reason, body
    assert body["code"] == ("FORBIDDEN" if status == 403 else "DEVICE_CONFLICT")


def roles(group: dict[str, Any]) -> dict[str, tuple[bool, bool]]:
    return {p["jid"]: (p["admin"], p["superAdmin"]) for p in group["participants"]}


async def test_the_device_runs_its_own_group(tmp_path: Path) -> None:
    async with connected(tmp_path) as s:
        api = s.api
        group = ok(await api.post(s.groups, json={
            "subject": "Orders", "participants": ["+1 555 765 4321", BEN, "+15557654321"]}), 201)
        gid = group["id"]
        assert gid.endswith("@g.us")
        assert group["subject"] == "Orders" and group["owner"] == ME and group["size"] == 3
        assert roles(group) == {ME: (True, True), ANA: (False, False), BEN: (False, False)}
        joined = await s.event("group_joined")
        assert joined == {"groupId": gid, "subject": "Orders", "participants": [ME, ANA, BEN],
                          "by": None}

        listed = ok(await api.get(s.groups))
        assert [g["id"] for g in listed] == [gid]
        assert ok(await api.get(f"{s.groups}/{gid}")) == group

        changed = ok(await api.patch(f"{s.groups}/{gid}", json={
            "subject": "Orders 2026", "topic": "Only orders\nplease", "announce": True,
            "locked": True}))
        assert (changed["subject"], changed["topic"], changed["announce"], changed["locked"]) \
            == ("Orders 2026", "Only orders\nplease", True, True)
        assert ok(await api.get(f"{s.groups}/{gid}"))["subject"] == "Orders 2026"

        results = ok(await api.post(f"{s.groups}/{gid}/participants",
                                    json={"add": ["+15550003333", ANA]}))
        assert results == [
            {"jid": CAL, "phoneNumber": "+15550003333", "ok": True, "code": None,
             "reason": None},
            {"jid": ANA, "phoneNumber": "+15557654321", "ok": False, "code": 409,
             "reason": "already_participant"},
        ]
        for action, admin in (("promote", True), ("demote", False)):
            results = ok(await api.post(f"{s.groups}/{gid}/participants", json={action: [CAL]}))
            assert [r["ok"] for r in results] == [True]
            assert roles(ok(await api.get(f"{s.groups}/{gid}")))[CAL] == (admin, False)
        results = ok(await api.post(f"{s.groups}/{gid}/participants",
                                    json={"remove": [CAL, "+15550009999"]}))
        assert [(r["ok"], r["code"], r["reason"]) for r in results] == [
            (True, None, None), (False, 404, "not_found")]
        assert CAL not in roles(ok(await api.get(f"{s.groups}/{gid}")))

        link = ok(await api.get(f"{s.groups}/{gid}/invite"))["link"]
        assert link.startswith("https://chat.whatsapp.com/")
        assert ok(await api.get(f"{s.groups}/{gid}/invite"))["link"] == link
        fresh = ok(await api.get(f"{s.groups}/{gid}/invite", params={"revoke": "true"}))
        assert fresh["revoked"] is True and fresh["link"] != link

        picture = ok(await api.put(f"{s.groups}/{gid}/picture",
                                   json={"media": {"data": b64(JPEG)}}))
        assert picture["groupId"] == gid and picture["pictureId"]
        world = s.engine.server.groups.get(s.device_id, gid)
        assert world is not None and world.picture == JPEG
        r = await api.put(f"{s.groups}/{gid}/picture",
                          files={"file": ("me.jpg", JPEG, "image/jpeg")})
        assert ok(r)["pictureId"]
        r = await api.put(f"{s.groups}/{gid}/picture", json={"media": {"data": b64(PNG)}})
        assert r.status_code == 400 and r.json()["field"] == "media", r.text

        # The device's own key may do the same; what it changed itself raised no event.
        async with httpx.AsyncClient(base_url=str(api.base_url),
                                     headers={"X-API-TOKEN": s.key}) as own:
            assert ok(await own.get(s.groups))[0]["id"] == gid
        assert s.count("group_updated") == 0 and s.count("group_participants") == 0

        assert ok(await api.post(f"{s.groups}/{gid}/leave"))["groupId"] == gid
        left = await s.event("group_participants")
        assert left == {"groupId": gid, "action": "remove", "participants": [ME], "by": None}
        refused(await api.get(f"{s.groups}/{gid}"), 409, "not_participant")
        assert ok(await api.get(s.groups)) == []


async def test_other_members_and_whatsapps_rules(tmp_path: Path) -> None:
    async with connected(tmp_path) as s:
        api = s.api
        # Ana's group, the device only has its link.
        made = ok(await api.post(s.sim, json={"owner": ANA, "subject": "Club",
                                              "participants": [BEN], "member": False}), 201)
        gid, link = made["groupId"], made["link"]
        refused(await api.get(f"{s.groups}/{gid}"), 409, "not_participant")
        refused(await api.post(f"{s.groups}/join",
                               json={"link": "https://chat.whatsapp.com/AAAAAAAAAAAAAAAAAAAAAA"}),
                409, "link_invalid")
        assert ok(await api.post(f"{s.groups}/join", json={"link": link}))["groupId"] == gid
        joined = await s.event("group_joined")
        assert joined == {"groupId": gid, "subject": "Club", "participants": [ANA, BEN, ME],
                          "by": None}
        assert roles(ok(await api.get(f"{s.groups}/{gid}")))[ME] == (False, False)

        # Not an admin: settings, participants and the link are refused; the subject is not
        # (the group is not locked) until Ana locks it.
        refused(await api.patch(f"{s.groups}/{gid}", json={"announce": True}), 403, "not_admin")
        refused(await api.post(f"{s.groups}/{gid}/participants", json={"add": [CAL]}),
                403, "not_admin")
        refused(await api.get(f"{s.groups}/{gid}/invite"), 403, "not_admin")
        assert ok(await api.patch(f"{s.groups}/{gid}", json={"subject": "Club!"}))["subject"] \
            == "Club!"
        ok(await api.patch(f"{s.sim}/{gid}", json={"by": ANA, "locked": True,
                                                   "topic": "rules"}))
        updated = await s.event("group_updated")
        assert updated == {"groupId": gid, "by": ANA, "subject": None, "topic": "rules",
                           "announce": None, "locked": True}
        refused(await api.patch(f"{s.groups}/{gid}", json={"subject": "Mine"}), 403, "not_admin")
        refused(await api.put(f"{s.groups}/{gid}/picture", json={"media": {"data": b64(JPEG)}}),
                403, "not_admin")

        # Ana makes the device an admin: now it may.
        ok(await api.post(f"{s.sim}/{gid}/participants", json={"by": ANA, "promote": [ME]}))
        promoted = await s.event("group_participants")
        assert promoted == {"groupId": gid, "action": "promote", "participants": [ME],
                            "by": ANA}
        assert ok(await api.patch(f"{s.groups}/{gid}", json={"announce": True}))["announce"]

        # A full group: adding answers 419 group_full per participant, joining group_full.
        s.engine.server.groups.size_limit = 3
        results = ok(await api.post(f"{s.groups}/{gid}/participants", json={"add": [CAL]}))
        assert [(r["ok"], r["code"], r["reason"]) for r in results] == [
            (False, 419, "group_full")]
        full = ok(await api.post(s.sim, json={"owner": BEN, "subject": "Full",
                                              "participants": [ANA, CAL], "member": False}), 201)
        refused(await api.post(f"{s.groups}/join", json={"link": full["link"]}),
                409, "group_full")
        s.engine.server.groups.size_limit = 1024

        # A revoked link no longer lets anyone in.
        old = ok(await api.get(f"{s.groups}/{gid}/invite"))["link"]
        new = ok(await api.get(f"{s.groups}/{gid}/invite", params={"revoke": "true"}))["link"]
        ok(await api.post(f"{s.sim}/{gid}/participants", json={"by": ANA, "remove": [ME]}))
        removed = await s.event("group_participants", 2)
        assert removed == {"groupId": gid, "action": "remove", "participants": [ME], "by": ANA}
        refused(await api.post(f"{s.groups}/join", json={"link": old}), 409, "link_revoked")
        code = new.rsplit("/", 1)[1]
        assert ok(await api.post(f"{s.groups}/join", json={"link": code}))["groupId"] == gid
        await s.event("group_joined", 2)

        # Ana adds the device to a new group of hers: group_joined by Ana.
        ok(await api.post(s.sim, json={"owner": ANA, "subject": "Team",
                                       "participants": [BEN]}), 201)
        added = await s.event("group_joined", 3)
        assert added["by"] == ANA and added["subject"] == "Team"
        assert sorted(g["subject"] for g in ok(await api.get(s.groups))) == ["Club!", "Team"]


async def test_bad_input_and_a_device_that_is_not_connected(tmp_path: Path) -> None:
    async with connected(tmp_path) as s:
        api = s.api
        gid = ok(await api.post(s.groups, json={"subject": "G", "participants": [ANA]}), 201)["id"]
        cases: list[tuple[str, str, dict[str, Any] | None, str]] = [
            ("GET", f"{s.groups}/not-a-group", None, "groupId"),
            ("GET", f"{s.groups}/15551234567@s.whatsapp.net", None, "groupId"),
            ("POST", s.groups, {"subject": "G", "participants": []}, "participants"),
            ("POST", s.groups, {"subject": "G", "participants": ["+1"]}, "participants"),
            ("POST", s.groups, {"subject": "G", "participants": [gid]}, "participants"),
            ("POST", s.groups, {"subject": "G"}, "participants"),
            ("POST", s.groups, {"subject": "x" * 101, "participants": [ANA]}, "subject"),
            ("POST", s.groups, {"subject": "  ", "participants": [ANA]}, "subject"),
            ("POST", s.groups, {"subject": "G", "participants": [ANA], "x": 1}, "x"),
            ("PATCH", f"{s.groups}/{gid}", {}, "body"),
            ("PATCH", f"{s.groups}/{gid}", {"announce": "yes"}, "announce"),
            ("PATCH", f"{s.groups}/{gid}", {"topic": "t" * 2049}, "topic"),
            ("POST", f"{s.groups}/{gid}/participants", {"add": [ANA], "remove": [BEN]}, "body"),
            ("POST", f"{s.groups}/{gid}/participants", {"add": "x"}, "add"),
            ("POST", f"{s.groups}/{gid}/participants", {"demote": [ANA, "bob"]}, "demote"),
            ("POST", f"{s.groups}/join", {"link": "https://example.com/x"}, "link"),
            ("POST", f"{s.groups}/join", {}, "link"),
            ("POST", f"{s.groups}/{gid}/leave", {"now": True}, "now"),
            ("PUT", f"{s.groups}/{gid}/picture", {"media": {"data": "%%%"}}, "media.data"),
            ("PUT", f"{s.groups}/{gid}/picture", {"caption": "x"}, "caption"),
        ]
        for method, path, body, field in cases:
            r = await api.request(method, path, json=body)
            assert r.status_code == 400, (method, path, body, r.text)
            assert r.json()["field"] == field, (method, path, body, r.text)
        r = await api.get(f"{s.groups}/{gid}/invite", params={"revoke": "maybe"})
        assert r.status_code == 400 and r.json()["field"] == "revoke"
        r = await api.post(s.sim, json={"owner": "me", "subject": "G", "participants": [ANA]})
        assert r.status_code == 400 and r.json()["field"] == "owner"

        r = await api.post(f"/simulator/devices/{s.sid}/unlink", json={})
        assert r.status_code == 200, r.text
        await wait_status(api, s.sid, "logged_out")
        r = await api.get(s.groups)
        assert r.status_code == 409 and r.json()["code"] == "DEVICE_CONFLICT", r.text
