"""The remote simulator engine against a stand-in for the shared simulator's process (a
WebSocket server in the test): closing the engine waits for its connections' tasks; its
controls when the process cannot be reached."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from api.errors import status_and_code
from supervisor import engine as eng
from supervisor.engines import simulator_wire as wire
from supervisor.engines.simulator_remote import RemoteSimulatorEngine
from supervisor.engines.simulator_remote_controls import RemoteControls
from supervisor.errors import EngineError, SimulatorUnreachable


class _Credentials:
    async def get(self, device_id: int) -> bytes | None:
        return None

    async def put(self, device_id: int, blob: bytes) -> None:
        pass

    async def delete(self, device_id: int) -> None:
        pass

    async def has(self, device_id: int) -> bool:
        return False


class _SlowSink:
    """A sink whose commit cannot be cancelled (as a database job in a worker thread)."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.release = trio.Event()
        self.committed = False

    def __call__(self, event: eng.EngineEvent) -> None:
        pass

    async def deliver(self, event: Any) -> None:
        self.started.set()
        with trio.CancelScope(shield=True):
            await self.release.wait()
        self.committed = True


async def test_aclose_waits_for_a_commit_in_flight() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        event = eng.Paired(jid="1555@s.whatsapp.net", phone_number="+1555", push_name=None)
        await ws.send_message(json.dumps({"t": "deliver", "n": 1,
                                          "event": wire.encode_event(event)}))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                     None)
        engine = RemoteSimulatorEngine(f"http://127.0.0.1:{server.port}", _Credentials())
        sink = _SlowSink()
        session = engine.session(1, "s1", sink)
        await session._open()
        with trio.fail_after(10):
            await sink.started.wait()
        closed = trio.Event()

        async def close() -> None:
            await engine.aclose()
            closed.set()

        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()
        try:
            assert not closed.is_set()  # the commit is still running
        finally:
            sink.release.set()
        with trio.fail_after(10):
            await closed.wait()
        assert sink.committed and not engine.links
        nursery.cancel_scope.cancel()


async def test_a_control_with_the_process_unreachable_is_a_503() -> None:
    async def post(path: str, body: object) -> Any:
        raise EngineError("network_unreachable: simulator (refused)", recoverable=True)

    with pytest.raises(SimulatorUnreachable) as info:
        await RemoteControls(post).drop(1)
    assert status_and_code(info.value) == (503, "SERVICE_UNAVAILABLE")
