"""The simulator's groups on real actors (MockClock): requests through the devices facade,
notices published on the bus, the world derived from the seed, forgotten with the device, and
refused while the device is not connected."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import groups
from supervisor.errors import DeviceConflict, InvalidRequest, WhatsAppRefused

from .lifecycle_support import connected_device, settle, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

ANA = "15557654321@s.whatsapp.net"
BEN = "15550002222@s.whatsapp.net"


async def made_group(tmp_path: Path) -> tuple[str, str, list[str]]:
    """A group made by a fresh device of a fresh wasup (seed 1): its id, link and events."""
    async with simulated(sim_config(tmp_path)) as (sup, engine, rec):
        device = await connected_device(sup, engine)
        created = await groups.create(sup, device, "Orders", [ANA, BEN])
        link = await groups.invite_link(sup, device, created["id"])
        await settle()
        kinds = [e.type for _, e in rec.of(device, "group_joined", "group_participants")]
        return created["id"], link["link"], kinds


async def test_the_world_derives_from_the_seed(autojump_clock, tmp_path: Path) -> None:
    first = await made_group(tmp_path / "a")
    second = await made_group(tmp_path / "b")
    assert first == second
    gid, link, kinds = first
    assert gid.startswith("120363") and link.startswith("https://chat.whatsapp.com/")
    assert kinds == ["group_joined"]


async def test_groups_are_the_devices_own_and_forgotten_with_it(autojump_clock,
                                                                 tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        shop = await connected_device(sup, engine, "Shop")
        desk = await connected_device(sup, engine, "Desk")
        created = await groups.create(sup, shop, "Orders", [ANA])
        assert [g["id"] for g in await groups.joined(sup, shop)] == [created["id"]]
        assert await groups.joined(sup, desk) == []
        with pytest.raises(WhatsAppRefused) as caught:
            await groups.info(sup, desk, created["id"])
        assert caught.value.reason == "group_not_found"
        # Another member's control acts on the device's own world only.
        session = engine.get_session(desk)
        with pytest.raises(InvalidRequest):
            await session.groups.others_change(created["id"], ANA, subject="x")
        await sup.delete_device(shop)
        assert engine.server.groups.groups.get(shop) is None
        assert not any(key[0] == shop for key in engine.server.groups.links)


async def test_nothing_is_asked_of_a_device_that_is_not_connected(autojump_clock,
                                                                   tmp_path: Path) -> None:
    async with simulated(sim_config(tmp_path)) as (sup, engine, _rec):
        device = await connected_device(sup, engine)
        created = await groups.create(sup, device, "Orders", [ANA])
        session = engine.get_session(device)
        await engine.unlink(device)
        await wait_status(sup, device, "logged_out")
        with pytest.raises(DeviceConflict):
            await groups.info(sup, device, created["id"])
        with pytest.raises(DeviceConflict):
            await session.groups.others_change(created["id"], ANA, subject="x")
