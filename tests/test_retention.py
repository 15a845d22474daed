"""Message retention on Trio's MockClock: a pass at start, then one per interval, deleting by
age and by count per device in small batches; storage failures are retried next interval."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import storage
from common.clock import iso, now_epoch
from storage import Repositories
from supervisor.retention import DAY, MessageRetention, RetentionStatistics
from supervisor.supervisor import open_store
from tests.lifecycle_support import sim_config
from tests.test_storage import new_device

pytestmark = pytest.mark.both_backends  # tests/store_support.py

CHAT = "15550000001@s.whatsapp.net"


def add(r: Repositories, device: int, n: int, age_days: float, now: float) -> None:
    r.messages.insert(
        device, message_id=f"m{device}-{n}", chat=CHAT, direction="in", text="x",
        status="received", at=iso(now - age_days * DAY),
    )


async def stored(db: storage.Store, device: int) -> list[str]:
    page = await db.run(lambda r: r.message_history.page(device, CHAT, limit=100))
    return [m.message_id for m in page.items]


async def test_prunes_by_age_and_count_at_start_and_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        now = now_epoch()

        def fill(r: Repositories) -> tuple[int, int]:
            d1, d2 = new_device(r).id, new_device(r, 2).id
            for n in range(10):  # d1: 4 older than 30 days, 6 recent
                add(r, d1, n, 40 - n if n < 4 else 1, now)
            for n in range(12):  # d2: recent, over the count of 5
                add(r, d2, n, 0.5, now)
            return d1, d2

        d1, d2 = await db.run(fill)
        retention = MessageRetention(db, days=30, count=5, interval=600.0, batch=3)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            await nursery.start(retention.run)
            await trio.sleep(1)
            # The pass at start: d1 loses its 4 old ones (then 1 over the count), d2 all but 5.
            assert await stored(db, d1) == [f"m{d1}-{n}" for n in range(9, 4, -1)]
            assert await stored(db, d2) == [f"m{d2}-{n}" for n in range(11, 6, -1)]
            assert retention.statistics() == RetentionStatistics(runs=1, deleted=12, failures=0)

            # Messages age: 432 s short of 30 days now, over 30 days at the next pass.
            await db.run(lambda r: add(r, d1, 100, 30 - 0.005, now_epoch()))
            await trio.sleep(300)
            assert f"m{d1}-100" in await stored(db, d1)
            await trio.sleep(301)
            assert retention.statistics().runs == 2
            assert f"m{d1}-100" not in await stored(db, d1)
            assert trio.current_time() - start == pytest.approx(602)
            nursery.cancel_scope.cancel()


async def test_limits_of_zero_keep_everything(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        now = now_epoch()
        d = await db.run(lambda r: new_device(r).id)
        await db.run(lambda r: [add(r, d, n, 1000.0, now) for n in range(7)])
        retention = MessageRetention(db, days=0, count=0)
        assert await retention.prune() == 0
        assert len(await stored(db, d)) == 7
        assert await MessageRetention(db, days=0, count=2, batch=2).prune() == 5
        assert await stored(db, d) == [f"m{d}-6", f"m{d}-5"]


async def test_a_storage_failure_is_retried_next_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store(sim_config(tmp_path)) as db:
        now = now_epoch()
        d = await db.run(lambda r: new_device(r).id)
        await db.run(lambda r: [add(r, d, n, 100.0, now) for n in range(3)])

        class Failing:
            """The database, failing its first job as a full disk would."""

            failed = False

            async def run(self, job):  # type: ignore[no-untyped-def]  # a test double
                if not self.failed:
                    self.failed = True
                    raise storage.StorageUnavailable("database or disk is full", retry_after=1.0)
                return await db.run(job)

        retention = MessageRetention(Failing(), days=30, count=0, interval=60.0)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(retention.run)
            await trio.sleep(1)
            assert retention.statistics() == RetentionStatistics(runs=0, deleted=0, failures=1)
            assert len(await stored(db, d)) == 3
            await trio.sleep(60)
            assert retention.statistics() == RetentionStatistics(runs=1, deleted=3, failures=1)
            assert await stored(db, d) == []
            nursery.cancel_scope.cancel()


def test_serve_options_set_the_retention() -> None:
    from api.cli import parse_options, serve_config

    config = serve_config(parse_options(["serve"], {}))
    assert (config.message_retention_days, config.message_retention_count) == (90, 100_000)
    env = {"WASUP_MESSAGE_RETENTION_DAYS": "7", "WASUP_MESSAGE_RETENTION_COUNT": "0"}
    config = serve_config(parse_options(["serve"], env))
    assert (config.message_retention_days, config.message_retention_count) == (7, 0)
    options = parse_options(["serve", "--message-retention-days", "0"], env)
    assert serve_config(options).message_retention_days == 0
    for argv, bad_env in (
        (["--message-retention-days", "-1"], {}),
        (["--message-retention-count", "1.5"], {}),
        ([], {"WASUP_MESSAGE_RETENTION_DAYS": "forever"}),
    ):
        with pytest.raises(SystemExit):
            parse_options(["serve", *argv], bad_env)
