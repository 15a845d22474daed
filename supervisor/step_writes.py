"""What a device's steps write to its row: the columns and history rows of the one database job
the actor runs for them (:meth:`supervisor.actor.DeviceActor._persist`).

Usage (inside that job)::

    row = step_writes.write(repos, device_id, steps, final_state, at)

:func:`columns` is pure: what the engine reported in the steps, the fields of the final state
that survive a restart (:meth:`supervisor.state.DeviceState.restore` reads them back), the
connection stamps when a step reached ``connected``, and no JID once logged out.
"""

from __future__ import annotations

from collections.abc import Sequence

import storage
from storage.models import DeviceRow

from .state import DeviceState, Status, Step


def columns(steps: Sequence[Step], final: DeviceState, at: str) -> dict[str, storage.ColumnValue]:
    """The device columns ``steps`` (ending in ``final``) set at ``at``, besides its status."""
    fields: dict[str, storage.ColumnValue] = {}
    for step in steps:
        if step.reported is not None:
            fields.update(step.reported.columns())
    fields.update(
        paired=final.paired,
        status_reason=final.reason,
        ban_until=final.ban_until,
        reconnect_attempt=final.reconnect_attempt,
    )
    if any(s.change is not None and s.change.after is Status.CONNECTED for s in steps):
        fields.update(last_connection=at, last_seen=at)
    if final.status is Status.LOGGED_OUT:
        fields.update(jid=None)
    return fields


def write(
    repos: storage.Repositories, device_id: int, steps: Sequence[Step], final: DeviceState,
    at: str,
) -> DeviceRow:
    """Store the steps' columns, with a history row for each change of status; the row as
    stored.

    Raises: ``NotFound`` (the device is gone).
    """
    fields = columns(steps, final, at)
    row = None
    for step in steps:
        if (change := step.change) is not None:
            row = repos.devices.record_transition(
                device_id, from_status=change.before.value, to_status=change.after.value,
                reason=change.reason, at=at, **fields,
            )
    if row is None:
        row = repos.devices.update(device_id, updated_at=at, **fields)
    return row
