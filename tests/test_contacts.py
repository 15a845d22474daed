"""Contact checks on real actors in virtual time (simulator engine, MockClock): the cache
answers a number until ``check_cache_seconds`` have passed and spares WhatsApp the request;
the hourly cap counts only numbers asked of WhatsApp, per device, in a sliding hour, and its
refusal says when room frees up; a check that never reached WhatsApp gives its room back.
And the validation of check bodies and of people named in paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from supervisor.config import ContactsConfig
from supervisor.contacts import Contacts, person, phone_numbers
from supervisor.devices import Devices
from supervisor.engines.simulator import SimulatorEngine
from supervisor.errors import DeviceConflict, InvalidRequest, RateLimited

from .lifecycle_support import connected_device, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py


def numbers(start: int, count: int) -> list[str]:
    return [f"1555020{n:04d}" for n in range(start, start + count)]


@asynccontextmanager
async def checking(tmp_path: Path, **knobs: Any) -> AsyncIterator[
    tuple[Devices, SimulatorEngine, int, Contacts]
]:
    """A supervisor with ``ContactsConfig(**knobs)``, a connected device and its Contacts."""
    config = sim_config(tmp_path, contacts=ContactsConfig(**knobs))
    async with simulated(config) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        yield sup, engine, device, Contacts(sup)


async def test_the_cache_spares_whatsapp_until_it_expires(autojump_clock: Any,
                                                          tmp_path: Path) -> None:
    async with checking(tmp_path, check_cache_seconds=600) as (_sup, engine, device, contacts):
        world = engine.server.contacts
        world.set_on_whatsapp("15550200000", True)

        first = await contacts.check(device, numbers(0, 3))
        assert [c.cached for c in first] == [False] * 3
        assert first[0].result.on_whatsapp is True
        assert world.checks(device).requests == 1

        await trio.sleep(599)
        world.set_on_whatsapp("15550200000", False)  # WhatsApp changed; the cache still says
        again = await contacts.check(device, numbers(0, 3))
        assert [c.cached for c in again] == [True] * 3
        assert again[0].result.on_whatsapp is True
        assert world.checks(device).requests == 1  # no request at all

        await trio.sleep(2)  # expired: asked again, and the new answer is kept
        later = await contacts.check(device, numbers(0, 1))
        assert (later[0].cached, later[0].result.on_whatsapp) == (False, False)
        assert world.checks(device) == type(world.checks(device))(2, 4)


async def test_the_cap_counts_numbers_asked_in_a_sliding_hour_per_device(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with checking(tmp_path, checks_per_hour=10, check_batch_max=10) as (
            sup, engine, device, contacts):
        other = await connected_device(sup, engine, "Other")
        start = trio.current_time()

        await contacts.check(device, numbers(0, 6))
        await trio.sleep(1200)
        await contacts.check(device, numbers(6, 4))  # 10 of 10 used
        assert contacts.room(device) == 0

        # Cached numbers still answer; a request with one new number does not fit.
        assert len(await contacts.check(device, numbers(0, 10))) == 10
        with pytest.raises(RateLimited) as refused:
            await contacts.check(device, [*numbers(0, 2), *numbers(100, 1)])
        # The first 6 leave the window an hour after they were asked.
        assert refused.value.retry_after == pytest.approx(start + 3600 - trio.current_time())
        assert engine.server.contacts.checks(device).numbers == 10  # nothing asked

        # Another device has its own hour.
        assert len(await contacts.check(other, numbers(100, 10))) == 10

        # Needing 5: the first batch (6) must leave; needing 7: the second (4) too.
        await trio.sleep(refused.value.retry_after - 1)
        with pytest.raises(RateLimited):
            await contacts.check(device, numbers(100, 5))
        await trio.sleep(1)
        assert contacts.room(device) == 6
        with pytest.raises(RateLimited) as later:
            await contacts.check(device, numbers(100, 7))
        assert later.value.retry_after == pytest.approx(1200)
        fresh = await contacts.check(device, numbers(100, 6))
        assert [c.cached for c in fresh] == [False] * 6  # the other device's cache is its own
        assert contacts.room(device) == 0


async def test_a_check_that_never_reached_whatsapp_gives_its_room_back(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with checking(tmp_path, checks_per_hour=5, check_batch_max=5) as (
            sup, _engine, device, contacts):
        await sup.cancel(device)
        await wait_status(sup, device, "disconnected")
        with pytest.raises(DeviceConflict):
            await contacts.check(device, numbers(0, 5))
        assert contacts.room(device) == 5


async def test_concurrent_checks_cannot_pass_the_cap_together(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with checking(tmp_path, checks_per_hour=5, check_batch_max=5) as (
            _sup, engine, device, contacts):
        outcomes: list[str] = []

        async def check(start: int) -> None:
            try:
                await contacts.check(device, numbers(start, 3))
                outcomes.append("ok")
            except RateLimited:
                outcomes.append("429")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check, 0)
            nursery.start_soon(check, 10)
        assert sorted(outcomes) == ["429", "ok"]
        assert engine.server.contacts.checks(device).numbers == 3


def test_check_bodies_and_people_are_validated() -> None:
    assert phone_numbers(["+15550200000", "15550200000", "+15550200001"], 5) == [
        "15550200000", "15550200001"]
    for value in (None, {}, "+15550200000", [], ["+15550200000"] * 6, [None], ["+0555"],
                  ["+1 555 020 0000"], ["12345@lid"], [["+15550200000"]]):
        with pytest.raises(InvalidRequest) as bad:
            phone_numbers(value, 5)
        assert bad.value.field == "phoneNumbers"
    assert person("contact", "+15550200000").canonical == "15550200000@s.whatsapp.net"
    assert person("contact", "123456789012345@lid").canonical == "123456789012345@lid"
    for raw in ("120363000000000001@g.us", "status@broadcast", "1@newsletter", "x", "15550200000@c.us",
                "+1 555 020 0000", "123-456@s.whatsapp.net"):
        with pytest.raises(InvalidRequest) as bad:
            person("lidOrPhone", raw)
        assert bad.value.field == "lidOrPhone"


def test_contact_check_knobs_come_from_flags_and_the_environment() -> None:
    from api.cli import parse_options, serve_config

    assert serve_config(parse_options(["serve"], {})).contacts == ContactsConfig()
    options = parse_options(
        ["serve", "--contacts-checks-per-hour", "40"],
        {"WASUP_CONTACTS_CHECK_CACHE_SECONDS": "600", "WASUP_CONTACTS_CHECKS_PER_HOUR": "9",
         "WASUP_CONTACTS_CHECK_BATCH_MAX": "5"},
    )
    assert serve_config(options).contacts == ContactsConfig(
        check_cache_seconds=600.0, checks_per_hour=40, check_batch_max=5)
    for bad in ({"WASUP_CONTACTS_CHECKS_PER_HOUR": "0"},
                {"WASUP_CONTACTS_CHECK_CACHE_SECONDS": "-1"},
                {"WASUP_CONTACTS_CHECK_BATCH_MAX": "many"}):
        with pytest.raises(SystemExit):
            parse_options(["serve"], bad)
