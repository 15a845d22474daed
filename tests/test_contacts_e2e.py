"""Contacts end to end over HTTP with the simulator: checking numbers (batched, cached, capped
per hour with Retry-After), the address book by pages, one person's profile, the LID mapping
both ways, blocking and unblocking, who may call, and bad input named by field. Real sockets
and a real clock; the simulator's controls (``/simulator/devices/{id}/contacts``) set who is
on WhatsApp and count what the device asked it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.config import ContactsConfig
from supervisor.engines.simulator import SimulatorEngine
from supervisor.engines.simulator_contacts import ADDRESS_BOOK_SIZE

from .conftest import api_client, running_server
from .test_messaging_e2e import create, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

ON, OFF = "+15550100001", "+15550100002"


async def connected(api: httpx.AsyncClient, alias: str = "Shop") -> dict[str, Any]:
    device = await create(api, alias)
    sid = device["sessionId"]
    await wait_status(api, sid, "pending")
    r = await api.post(f"/simulator/devices/{sid}/scan", json={})
    assert r.status_code == 200, r.text
    await wait_status(api, sid, "connected")
    return device


async def world(api: httpx.AsyncClient, sid: str, phone: str, **body: Any) -> dict[str, Any]:
    r = await api.post(f"/simulator/devices/{sid}/contacts", json={"phoneNumber": phone, **body})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def asked(api: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    r = await api.get(f"/simulator/devices/{sid}/contacts")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def refused(r: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert (body["success"], body["code"], body.get("field")) == (False, code, field), body


async def test_check_says_who_is_on_whatsapp_and_answers_again_from_the_cache(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        device = await connected(api)
        sid = device["sessionId"]
        await world(api, sid, ON, onWhatsApp=True)
        await world(api, sid, OFF, onWhatsApp=False)
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)
        derived = "+15550100003"
        expected = engine.server.contacts.on_whatsapp(derived[1:])

        body = {"phoneNumbers": [ON, OFF[1:], derived, ON]}
        r = await api.post(f"/devices/{sid}/contacts/check", json=body)
        assert r.status_code == 200, r.text
        first = r.json()["data"]
        assert [(c["phoneNumber"], c["onWhatsApp"], c["jid"], c["cached"]) for c in first] == [
            (ON, True, "15550100001@s.whatsapp.net", False),
            (OFF, False, None, False),
            (derived, expected, "15550100003@s.whatsapp.net" if expected else None, False),
        ]
        assert (await asked(api, sid))["checkRequests"] == 1  # one request for the batch
        assert (await asked(api, sid))["checkedNumbers"] == 3  # each number once

        # Again, with one new number: the cached ones cost WhatsApp nothing.
        r = await api.post(f"/devices/{sid}/contacts/check",
                           json={"phoneNumbers": [OFF, ON, "+15550100004"]})
        assert r.status_code == 200, r.text
        again = r.json()["data"]
        assert [(c["phoneNumber"], c["cached"]) for c in again] == [
            (OFF, True), (ON, True), ("+15550100004", False)]
        assert (again[0]["onWhatsApp"], again[1]["onWhatsApp"]) == (False, True)
        assert (await asked(api, sid))["checkedNumbers"] == 4
        r = await api.post(f"/devices/{sid}/contacts/check", json={"phoneNumbers": [ON]})
        assert r.json()["data"][0]["cached"] is True
        assert (await asked(api, sid))["checkRequests"] == 2  # all cached: no request at all

        # The device's own key may check; another device's key sees no such device.
        other = await connected(api, "Other")
        async with api_client(server, token=device["apiKey"]) as own:
            r = await own.post(f"/devices/{sid}/contacts/check", json={"phoneNumbers": [ON]})
            assert r.status_code == 200, r.text
            r = await own.post(f"/devices/{other['sessionId']}/contacts/check",
                               json={"phoneNumbers": [ON]})
            refused(r, 404, "DEVICE_NOT_FOUND")

        for bad in ({}, {"phoneNumbers": []}, {"phoneNumbers": "+15550100001"},
                    {"phoneNumbers": ["+15550100001", "hello"]}, {"phoneNumbers": [15550100001]},
                    {"phoneNumbers": ["15550100001@g.us"]}, {"phoneNumbers": ["+1 555-010-0001"]},
                    {"phoneNumbers": [f"+1555010{i:04d}" for i in range(51)]}):
            r = await api.post(f"/devices/{sid}/contacts/check", json=bad)
            refused(r, 400, "INVALID_REQUEST", "phoneNumbers")
        r = await api.post(f"/devices/{sid}/contacts/check", json={"phoneNumbers": [ON], "x": 1})
        refused(r, 400, "INVALID_REQUEST", "x")
        r = await api.post(f"/devices/{sid}/contacts/check", json=[ON])
        refused(r, 400, "INVALID_REQUEST", "body")
        assert (await asked(api, sid))["checkRequests"] == 2  # bad requests asked nothing


async def test_the_hourly_cap_answers_429_with_when_room_frees_up(tmp_path: Path) -> None:
    config = ContactsConfig(checks_per_hour=3, check_batch_max=3)
    async with running_server(tmp_path / "data", contacts=config) as server, \
            api_client(server) as api:
        sid = (await connected(api))["sessionId"]
        three = ["+15550100001", "+15550100002", "+15550100003"]
        r = await api.post(f"/devices/{sid}/contacts/check", json={"phoneNumbers": three})
        assert r.status_code == 200, r.text
        r = await api.post(f"/devices/{sid}/contacts/check",
                           json={"phoneNumbers": ["+15550100001", "+15550100009"]})
        refused(r, 429, "RATE_LIMIT_EXCEEDED")
        assert 3590 <= int(r.headers["Retry-After"]) <= 3600
        assert (await asked(api, sid))["checkedNumbers"] == 3  # the refused one asked nothing
        # What is cached still answers.
        r = await api.post(f"/devices/{sid}/contacts/check", json={"phoneNumbers": three[:2]})
        assert r.status_code == 200, r.text
        assert all(c["cached"] for c in r.json()["data"])
        # More than the batch maximum is a bad request, not a rate limit.
        r = await api.post(f"/devices/{sid}/contacts/check",
                           json={"phoneNumbers": [*three, "+15550100004"]})
        refused(r, 400, "INVALID_REQUEST", "phoneNumbers")


async def test_address_book_profile_lids_and_blocking(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        sid = (await connected(api))["sessionId"]
        engine = server.sup.engine
        assert isinstance(engine, SimulatorEngine)

        # The synced address book, by pages.
        r = await api.get(f"/devices/{sid}/contacts", params={"limit": 5, "page": 3})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["pagination"] == {"total": ADDRESS_BOOK_SIZE, "page": 3, "limit": 5}
        assert len(page["data"]) == ADDRESS_BOOK_SIZE - 10
        await world(api, sid, ON, onWhatsApp=True, name="Zoe Quinn")
        r = await api.get(f"/devices/{sid}/contacts", params={"limit": 100})
        book = r.json()["data"]
        assert len(book) == ADDRESS_BOOK_SIZE + 1
        assert [c["jid"] for c in book] == sorted(c["jid"] for c in book)
        zoe = next(c for c in book if c["phoneNumber"] == ON)
        assert (zoe["name"], zoe["firstName"], zoe["jid"]) == (
            "Zoe Quinn", "Zoe", "15550100001@s.whatsapp.net")
        assert zoe["pushName"]

        # One person: the saved name, their own profile, their LID.
        person = engine.server.contacts.person(ON[1:])
        r = await api.get(f"/devices/{sid}/contacts/{ON}")
        assert r.status_code == 200, r.text
        info = r.json()["data"]
        assert info == {
            "jid": "15550100001@s.whatsapp.net", "phoneNumber": ON, "lid": f"{person.lid}@lid",
            "name": "Zoe Quinn", "firstName": "Zoe", "pushName": person.push_name,
            "about": person.about, "businessName": person.business_name,
            "pictureUrl": person.picture_url, "blocked": False,
        }
        # The same person by their LID; one who is not on WhatsApp is not found.
        r = await api.get(f"/devices/{sid}/contacts/{person.lid}@lid")
        assert r.json()["data"]["jid"] == "15550100001@s.whatsapp.net"
        await world(api, sid, OFF, onWhatsApp=False)
        refused(await api.get(f"/devices/{sid}/contacts/{OFF}"), 404, "NOT_FOUND")

        # The LID mapping, both ways.
        r = await api.get(f"/devices/{sid}/lids/{ON}")
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"jid": "15550100001@s.whatsapp.net", "phoneNumber": ON,
                                    "lid": f"{person.lid}@lid"}
        r = await api.get(f"/devices/{sid}/lids/{person.lid}@lid")
        assert r.json()["data"]["phoneNumber"] == ON
        refused(await api.get(f"/devices/{sid}/lids/999999999999999@lid"), 404, "NOT_FOUND")
        refused(await api.get(f"/devices/{sid}/lids/{OFF}"), 404, "NOT_FOUND")

        # Block and unblock (by phone number or JID; an empty body or {}).
        r = await api.post(f"/devices/{sid}/contacts/{ON}/block")
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"jid": "15550100001@s.whatsapp.net", "blocked": True}
        assert (await asked(api, sid))["blocked"] == ["15550100001@s.whatsapp.net"]
        r = await api.get(f"/devices/{sid}/contacts/15550100001@s.whatsapp.net")
        assert r.json()["data"]["blocked"] is True
        r = await api.post(f"/devices/{sid}/contacts/{ON}/unblock", json={})
        assert r.json()["data"] == {"jid": "15550100001@s.whatsapp.net", "blocked": False}
        assert (await asked(api, sid))["blocked"] == []

        # Bad input names the field.
        for path, field in ((f"/devices/{sid}/contacts/120363000000000001@g.us", "contact"),
                            (f"/devices/{sid}/contacts/hello", "contact"),
                            (f"/devices/{sid}/lids/status@broadcast", "lidOrPhone"),
                            (f"/devices/{sid}/contacts?page=0", "page"),
                            (f"/devices/{sid}/contacts?limit=101", "limit")):
            refused(await api.get(path), 400, "INVALID_REQUEST", field)
        r = await api.post(f"/devices/{sid}/contacts/{ON}/block", json={"x": 1})
        refused(r, 400, "INVALID_REQUEST", "x")


async def test_a_device_that_is_not_connected_answers_409(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, api_client(server) as api:
        sid = (await connected(api))["sessionId"]
        r = await api.post(f"/sessions/{sid}/cancel", json={})
        assert r.status_code == 200, r.text
        await wait_status(api, sid, "disconnected")
        for method, path in (("POST", "contacts/check"), ("GET", "contacts"),
                             ("GET", f"contacts/{ON}"), ("GET", f"lids/{ON}"),
                             ("POST", f"contacts/{ON}/block")):
            body = {"phoneNumbers": [ON]} if path == "contacts/check" else None
            r = await api.request(method, f"/devices/{sid}/{path}", json=body)
            refused(r, 409, "DEVICE_CONFLICT")
        # The refused check gave its room back: nothing reached WhatsApp.
        assert server.sup.engine.server.contacts.checks(  # type: ignore[attr-defined]
            server.sup.get(sid).id).requests == 0
