"""Hypothesis-generated sequences of commands and engine events drive real actors (simulator
engine, temporary SQLite, MockClock). After every step:

- the persisted state equals the actor's state (and the supervisor's in-memory record);
- only legal transitions happened (read back from the state history table);
- never more than ``max_concurrent_logins`` handshakes ran at once;
- QR attempts never exceeded maxAttempts;
- ``connected`` implies stored credentials and a lastConnection, ``logged_out`` implies none;
- credentials are wiped only on the ``logged_out`` rows: a paired device always has them, and
  every engine logout left its device ``logged_out``.

The engine's failures (a failed scan, an outdated client, a replaced session, a pair code)
are among the generated steps.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import storage
from supervisor import engine as eng
from supervisor.devices import Devices
from supervisor.engines.simulator import SimulatorEngine
from supervisor.engines.simulator_session import SimulatorSession
from supervisor.errors import WasupError
from supervisor.state import LEGAL, Status
from supervisor.supervisor import DbCredentialStore, open_supervisor

from .lifecycle_support import Recorder, settle, sim_config

MAX_LOGINS = 2
DEVICES = 3


@attrs.define
class HandshakeCounter:
    """Counts login handshakes (pairing starts and connects) in flight across all devices."""

    current: int = 0
    peak: int = 0
    wipes: list[int] = attrs.field(factory=list)  # devices whose credentials a logout wiped


@attrs.define(eq=False)
class CountingSession:
    inner: Any
    counter: HandshakeCounter

    async def _counted(self, fn: Any) -> None:
        self.counter.current += 1
        self.counter.peak = max(self.counter.peak, self.counter.current)
        try:
            await fn()
        finally:
            self.counter.current -= 1

    async def start_pairing(self) -> None:
        await self._counted(self.inner.start_pairing)

    async def connect(self) -> None:
        await self._counted(self.inner.connect)

    async def logout(self) -> None:
        assert isinstance(self.inner, SimulatorSession)
        await self.inner.logout()  # an injected fault raises before anything is wiped
        self.counter.wipes.append(self.inner.device_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@attrs.define(eq=False)
class CountingEngine:
    """The simulator, with every handshake counted."""

    inner: SimulatorEngine
    counter: HandshakeCounter = attrs.field(factory=HandshakeCounter)
    name: str = "simulator"

    def session(self, device_id: int, session_id: str, sink: eng.Sink) -> Any:
        return CountingSession(self.inner.session(device_id, session_id, sink), self.counter)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


step = st.one_of(
    st.tuples(st.just("create"), st.integers(0, DEVICES - 1)),
    st.tuples(st.just("pair"), st.integers(0, DEVICES - 1)),
    st.tuples(st.sampled_from(["login", "logout", "cancel", "delete"]), st.integers(0, DEVICES - 1)),
    st.tuples(st.sampled_from(["scan", "drop", "unlink", "message", "crash"]), st.integers(0, DEVICES - 1)),
    st.tuples(
        st.sampled_from(["pair_error", "passkey", "outdated", "replaced", "pair_code"]),
        st.integers(0, DEVICES - 1),
    ),
    st.tuples(st.just("reachable"), st.booleans()),
    st.tuples(st.just("sleep"), st.sampled_from([0.1, 0.5, 2.0, 15.0, 25.0, 61.0, 300.0])),
)


#: Failures a step makes the engine report.
REPORTS: dict[str, eng.EngineEvent] = {
    "pair_error": eng.PairingFailed("pair_error", restart=True),
    "passkey": eng.PairingFailed("passkey_required"),
    "outdated": eng.Disconnected("client_outdated", retry=eng.Retry.SLOW),
    "replaced": eng.Disconnected("stream_replaced", retry=eng.Retry.HOLD),
}


async def check_invariants(
    sup: Devices, engine: CountingEngine, rec: Recorder, max_attempts: int
) -> None:
    assert engine.counter.peak <= MAX_LOGINS
    for _, event in rec.events:
        if event.type == "qr_code":
            assert 1 <= event.data.qr.attempt <= max_attempts

    def read(
        r: storage.Repositories,
    ) -> list[tuple[storage.DeviceRow, list[storage.HistoryRow], bytes | None]]:
        return [
            (row, r.history.of(row.id), r.credentials.get(row.id))
            for row in r.devices.all()
        ]

    stored = await sup.db.run(read)
    status = {row.id: row.status for row, _, _ in stored}
    for device in engine.counter.wipes:
        assert status.get(device, "logged_out") == "logged_out", ("wiped outside logged_out", device)
    engine.counter.wipes.clear()
    assert {row.id for row, _, _ in stored} == set(sup.rows)
    for row, history, credentials in stored:
        child = sup.supervisor.children[row.id]
        actor = child.actor
        assert row.status == sup.rows[row.id].status
        if actor is not None:  # None while a crashed actor waits for its restart
            assert actor.state.status.value == row.status
            assert actor.state.reason == row.status_reason
            assert actor.state.paired == row.paired
            assert 0 <= actor.state.qr_attempt <= max_attempts
        assert row.status in {s.value for s in Status}
        previous = None
        for h in history:
            assert h.from_status == previous or (previous is None and h.from_status is None)
            if h.from_status is not None:
                assert (Status(h.from_status), Status(h.to_status)) in LEGAL, h
            previous = h.to_status
        assert previous == row.status
        if row.status == "connected":
            assert credentials is not None and row.last_connection is not None
        if row.status == "logged_out":
            assert credentials is None and not row.paired
        if row.paired:
            assert credentials is not None, ("paired without credentials", row)


async def run_steps(steps: list[tuple[str, Any]], data_dir: Path) -> None:
    config = sim_config(data_dir, max_concurrent_logins=MAX_LOGINS, restart_intensity=3)
    rec = Recorder()
    async with storage.open_database(config.database_path) as db:
        engine = CountingEngine(SimulatorEngine(DbCredentialStore(db), seed=3, handshake_latency=0.5))
        async with open_supervisor(config, engine=engine) as sup:  # type: ignore[arg-type]
            sup.bus.tap(rec)
            ids: dict[int, int] = {}
            for op, arg in steps:
                device = ids.get(arg) if isinstance(arg, int) and not isinstance(arg, bool) else None
                if device is not None and device not in sup.rows:
                    del ids[arg]
                    device = None
                try:
                    if op == "create":
                        if device is None:
                            row, _ = await sup.create_device("u", f"device {arg}")
                            ids[arg] = row.id
                    elif op == "sleep":
                        await trio.sleep(arg)
                    elif op == "reachable":
                        await engine.set_reachable(arg)
                    elif device is None:
                        pass
                    elif op == "login":
                        await sup.login(device)
                    elif op == "logout":
                        await sup.logout(device)
                    elif op == "cancel":
                        await sup.cancel(device)
                    elif op == "delete":
                        await sup.delete_device(device)
                    elif op == "scan":
                        await engine.scan(device)
                    elif op == "pair":  # wait for the QR code on show, then scan it
                        await sup.wait_qr(device, 5)
                        await engine.scan(device)
                    elif op == "drop":
                        await engine.drop(device)
                    elif op == "unlink":
                        await engine.unlink(device)
                    elif op == "message":
                        await engine.incoming_message(device, "+15551234567", "hi")
                    elif op == "crash":
                        await engine.inject_fault(device, "any", times=1)
                    elif op == "pair_code":
                        await sup.request_pair_code(device, "+15550001111")
                    elif op in REPORTS:  # the engine reports it, as a session's sink does
                        sup.supervisor.children[device].inbox.put_event(REPORTS[op])
                except WasupError:
                    pass  # a refused command (409, 404...) is a legal answer
                await settle()
                await check_invariants(sup, engine, rec, config.qr_max_attempts)
    # The database, reopened cold, agrees with what the actors last persisted.
    async with storage.open_database(config.database_path) as db:
        rows = await db.run(lambda r: r.devices.all())
        assert {r.id: r.status for r in rows} == {r.id: r.status for r in sup.rows.values()}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(step, min_size=1, max_size=30))
def test_random_command_sequences_keep_the_invariants(steps: list[tuple[str, Any]]) -> None:
    note(repr(steps))
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(run_steps, steps, Path(tmp), clock=trio.testing.MockClock(autojump_threshold=0))


def test_many_devices_logging_in_at_once_respect_the_limiter() -> None:
    async def main(data_dir: Path) -> None:
        config = sim_config(data_dir, max_concurrent_logins=MAX_LOGINS)
        async with storage.open_database(config.database_path) as db:
            engine = CountingEngine(SimulatorEngine(DbCredentialStore(db), handshake_latency=1.0))
            async with open_supervisor(config, engine=engine) as sup:  # type: ignore[arg-type]
                rows = [(await sup.create_device("u", f"d{i}"))[0] for i in range(10)]
                await trio.sleep(10)
                assert engine.counter.peak == MAX_LOGINS
                assert all(sup.rows[r.id].status == "pending" for r in rows)
                assert all(sup.current_qr(r.id).attempt == 1 for r in rows)

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp), clock=trio.testing.MockClock(autojump_threshold=0))
