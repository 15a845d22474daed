"""The device directory and how the facade resolves references: a numeric id is ASCII digits
only, every other reference is a sessionId, and a reference that names no device is
DeviceNotFound (the API's 404), never anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.models import DeviceRow
from supervisor.directory import DeviceDirectory, hash_key, session_id_for
from supervisor.errors import DeviceNotFound, Restarting

from .lifecycle_support import settle, sim_config, simulated, wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py


def _row(device_id: int, alias: str) -> DeviceRow:
    now = "2026-01-01T00:00:00Z"
    return DeviceRow(
        id=device_id, user_id="u1", alias=alias, session_id=session_id_for("u1", alias),
        business_type=None, phone_number=None, description=None, api_key_hash=hash_key(alias),
        status="pending", status_reason=None, paired=False, jid=None, push_name=None,
        platform=None, last_connection=None, last_seen=None, battery=None, messages_sent=0,
        messages_received=0, last_activity=None, created_at=now, updated_at=now,
    )


@pytest.mark.parametrize("ref", ["³", "𝩻3", "٣", "3٣", " 3", "3 ", "+3", "-3", "0x3", "", "4"])
def test_only_ascii_digits_are_numeric_ids(ref: str) -> None:
    directory = DeviceDirectory()
    directory.put(_row(3, "Shop"))
    with pytest.raises(DeviceNotFound):
        directory.resolve(ref)


def test_ids_and_session_ids_resolve() -> None:
    directory = DeviceDirectory()
    directory.put(_row(3, "Shop"))
    assert directory.resolve("3") == directory.resolve(3) == directory.resolve("user_u1_device_shop") == 3
    assert directory.by_key_hash(hash_key("Shop")) is not None
    directory.drop(3)
    with pytest.raises(DeviceNotFound):
        directory.resolve("user_u1_device_shop")
    assert directory.by_key_hash(hash_key("Shop")) is None and len(directory) == 0


async def test_a_command_whose_actor_crashes_is_answered_restarting(autojump_clock, tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    async with simulated(config) as (sup, engine, _rec):
        row, _ = await sup.create_device("u1", "Crashy")
        assert await sup.wait_qr(row.id, 30) is not None
        await engine.inject_fault(row.id, "request_pair_code", times=1)
        with pytest.raises(Restarting):
            await sup.request_pair_code(row.id, "+15551234567")
        await settle()
        # The supervisor restarted the actor from the stored state: pairing starts over.
        await wait_status(sup, row.id, "pending")
        assert await sup.wait_qr(row.id, 30) is not None
        assert sup.crashes == 1
