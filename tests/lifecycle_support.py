"""Helpers for the lifecycle tests: a supervisor on the simulator, and an event recorder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

import storage
from supervisor.config import Config
from supervisor.devices import Devices
from supervisor.engines.simulator import SimulatorEngine
from supervisor.events import Event
from supervisor.supervisor import open_supervisor
from tests import store_support


def sim_config(data_dir: Path, **overrides: Any) -> Config:
    """The simulator's config on ``data_dir``, on the current test's database
    (``tests/store_support.py``)."""
    base: dict[str, Any] = dict(
        database_url=store_support.database_url_for(data_dir),
        data_dir=data_dir,
        engine="simulator",
        simulator_latency=0.5,
        backoff_jitter=0.0,
        restart_backoff_jitter=0.0,
        seed=1,
    )
    base.update(overrides)
    return Config(**base)


@attrs.define
class Recorder:
    """Every event published on the bus, with the virtual time it was published at."""

    events: list[tuple[float, Event]] = attrs.field(factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append((trio.current_time(), event))

    def of(self, device_id: int, *types: str) -> list[tuple[float, Event]]:
        return [
            (t, e) for t, e in self.events if e.device_id == device_id and (not types or e.type in types)
        ]

    def statuses(self, device_id: int) -> list[tuple[float, str, str | None]]:
        return [(t, e.data.after, e.data.reason) for t, e in self.of(device_id, "device_status")]


@asynccontextmanager
async def simulated(config: Config) -> AsyncIterator[tuple[Devices, SimulatorEngine, Recorder]]:
    recorder = Recorder()
    async with open_supervisor(config) as sup:
        sup.bus.tap(recorder)
        assert isinstance(sup.engine, SimulatorEngine)
        yield sup, sup.engine, recorder


async def settle() -> None:
    """Wait until every task is blocked (virtual time does not move meanwhile)."""
    await trio.testing.wait_all_tasks_blocked()


async def wait_until(
    sup: Devices, device_id: int, check: Callable[[storage.DeviceRow], bool], within: float = 600
) -> None:
    """Wait (in virtual time) until ``check(row)`` holds for the device's record."""
    with trio.fail_after(within):
        async with sup.bus.subscribe(device_ids=frozenset({device_id})) as sub:
            while not check(sup.rows[device_id]):
                await sub.receive()


async def wait_status(sup: Devices, device_id: int, status: str, within: float = 600) -> None:
    """Wait (in virtual time) until the device's status is ``status``."""
    await wait_until(sup, device_id, lambda row: row.status == status, within)


async def connected_device(sup: Devices, engine: SimulatorEngine, alias: str = "Shop") -> int:
    """A new device of user ``u1``, paired through the simulator and connected; its id."""
    row, _ = await sup.create_device("u1", alias)
    await sup.wait_qr(row.id, 30)
    await engine.scan(row.id)
    await wait_status(sup, row.id, "connected")
    return int(row.id)


async def stored_row(sup: Devices, device_id: int) -> storage.DeviceRow | None:
    return await sup.db.run(lambda r: r.devices.get(device_id))
