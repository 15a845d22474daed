"""Readiness: whether wasup can serve (``GET /api/whatsapp/ready``), as opposed to liveness.

Usage::

    found = await readiness(devices)
    found.failing            # None when ready, else the first ReadyCheck that does not hold

The conditions, in order: ``database`` (the database takes writes: ``Store.probe``),
``devices`` (every stored device has its actor: restored), ``engine`` (the engine has loaded:
for the whatsmeow engine, neonize's Go library).

Error handling: nothing raises; a condition that does not hold is a :class:`ReadyCheck` with
``ok`` False and a sentence.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

import attrs

from .devices import Devices


@attrs.frozen
class ReadyCheck:
    """One readiness condition: its name, whether it holds, and a sentence."""

    name: str
    ok: bool
    message: str


@attrs.frozen
class Readiness:
    """The readiness conditions, in order: ``database``, ``devices``, ``engine``."""

    checks: tuple[ReadyCheck, ...]

    @property
    def failing(self) -> ReadyCheck | None:
        """The first condition that does not hold, or None when ready."""
        return next((c for c in self.checks if not c.ok), None)


#: The module whose import loads neonize's Go library (the whatsmeow engine imports it).
NEONIZE_ADAPTER = "supervisor.engines.neonize_go"


def engine_check_of(engine_name: str, loaded: Collection[str]) -> ReadyCheck:
    """Whether the engine has loaded, given the ``loaded`` module names: the simulator always
    has; the whatsmeow engine once neonize's Go library is (its adapter module imported)."""
    if engine_name == "whatsmeow" and NEONIZE_ADAPTER not in loaded:
        return ReadyCheck("engine", False, "neonize's Go library is not loaded")
    return ReadyCheck("engine", True, f"the {engine_name} engine is loaded")


def engine_check(engine_name: str) -> ReadyCheck:
    """:func:`engine_check_of` this process's modules."""
    return engine_check_of(engine_name, sys.modules.keys())


async def readiness(devices: Devices) -> Readiness:
    """Whether wasup can serve: the database takes writes (``Store.probe``), every stored
    device has its actor (restored), the engine has loaded.

    Raises: nothing.
    """
    outage = await devices.db.probe()
    database = (
        ReadyCheck("database", True, "the database takes writes") if outage is None
        else ReadyCheck("database", False, f"the database cannot store anything: {outage.reason}")
    )
    rows = list(devices.rows)
    missing = sum(1 for device_id in rows if devices.supervisor.child(device_id) is None)
    restored = (
        ReadyCheck("devices", True, f"{len(rows)} devices restored") if missing == 0
        else ReadyCheck("devices", False, f"{missing} of {len(rows)} devices not restored yet")
    )
    return Readiness((database, restored, engine_check(devices.engine.name)))
