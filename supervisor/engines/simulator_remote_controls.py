"""The simulator controls of a node on the shared simulator: HTTP requests to its process.

:class:`RemoteControls` is :class:`~supervisor.engines.simulator_controls.SimulatorControls`
for the remote engine (:attr:`~supervisor.engines.simulator_remote.RemoteSimulatorEngine.
controls`): each control is ``POST /controls/<name>`` with its arguments in the wire format
(:mod:`supervisor.engines.simulator_wire`); the process answers it with its own
:class:`~supervisor.engines.simulator_controls.LocalControls`.

Error handling: the process's error as its exception, except :class:`DeviceNotFound` (the
process does not know the device: it has no connection there), which is a
:class:`DeviceConflict`; :class:`SimulatorUnreachable` when the process cannot be reached
(the API's 503, as for a cluster node that cannot be reached).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from supervisor.errors import DeviceConflict, DeviceNotFound, EngineError, SimulatorUnreachable

from . import simulator_wire as wire

#: POST a JSON body to a path of the process; its JSON answer (``RemoteSimulatorEngine.post``).
Post = Callable[[str, object], Awaitable[Mapping[str, Any]]]


@attrs.define(eq=False)
class RemoteControls:
    """:class:`SimulatorControls` as HTTP requests to the process (see the module)."""

    post: Post

    def __getattr__(self, name: str) -> Any:
        if name not in wire.CONTROL_METHODS:
            raise AttributeError(name)

        async def call(*args: object, **kwargs: object) -> object:
            named = wire.named_args(wire.CONTROL_METHODS, name, args, kwargs)
            body = {"args": wire.encode_args(wire.CONTROL_METHODS, name, named)}
            try:
                reply = await self.post(f"/controls/{name}", body)
            except EngineError as exc:
                raise SimulatorUnreachable(
                    f"the simulated WhatsApp is unreachable ({exc}): try again") from None
            if "error" in reply:
                error = wire.decode_error(reply)
                if isinstance(error, DeviceNotFound):
                    raise DeviceConflict(
                        f"device {named.get('device_id')} has no connection to the simulated "
                        "WhatsApp") from None
                raise error
            return wire.decode_result(wire.CONTROL_METHODS, name, reply.get("value"))

        return call
