"""The webhook dispatcher against a scripted receiver on 127.0.0.1, in virtual time.

Rules: servers on 127.0.0.1, port 0; time is the autojump MockClock, so the retry schedule
(27 hours of it) runs in well under a second and is asserted to the millisecond.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from standardwebhooks.webhooks import Webhook

from common import clock
from supervisor.config import Config
from supervisor.webhooks import settings as webhook_settings
from supervisor.webhooks.delivery import MAX_RETRY_AFTER, parse_retry_after
from supervisor.webhooks.dispatcher import SCHEDULE, WebhookDispatcher, retry_delay
from tests.store_support import Backend
from tests.webhook_support import (
    add_device,
    configure,
    enqueue,
    envelope,
    signed_by,
    start_receiver,
    stored_settings,
)

ALLOW_LOOPBACK = Config(allow_networks=("127.0.0.0/8",))


class FakeBus:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def publish(self, event: Any) -> None:
        self.events.append(event)


@asynccontextmanager
async def running(
    db: Any, *, jitter: float = 0.0, bus: Any = None, **kwargs: Any
) -> AsyncIterator[WebhookDispatcher]:
    dispatcher = WebhookDispatcher(db, ALLOW_LOOPBACK, jitter=jitter, bus=bus, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        yield dispatcher
        nursery.cancel_scope.cancel()


async def wait_for(predicate: Any, step: float = 1.0) -> None:
    """Poll ``predicate`` every ``step`` seconds of virtual time (the database has no
    change notification to wait on)."""
    while not await predicate():  # noqa: ASYNC110
        await trio.sleep(step)


async def delivery(db: Any, device_id: int, outbox_id: str) -> dict[str, Any]:
    item = await db.run(lambda r: r.outbox.get_delivery(device_id, outbox_id))
    assert item is not None
    return item


async def only_id(db: Any, device_id: int) -> str:
    items, total = await db.run(lambda r: r.outbox.list_deliveries(device_id))
    assert total == 1
    return str(items[0]["id"])


async def test_delivery_is_signed_per_standard_webhooks(backend: Backend, autojump_clock: Any) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        device_id, session_id = await add_device(db)
        _, secret = await configure(db, device_id, receiver.url)
        assert secret is not None and secret.startswith("whsec_")
        event = envelope(session_id, text="héllo")
        async with running(db) as dispatcher:
            assert await enqueue(db, device_id, event) == 1
            dispatcher.notify()
            await receiver.wait_requests(1)
            outbox_id = await only_id(db, device_id)
            await wait_for(lambda: _status_is(db, device_id, outbox_id, "delivered"))
        request = receiver.requests[0]
        assert request.method == "POST" and request.target == "/hook"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == outbox_id
        # No virtual time has passed: the package's full verify (timestamp window included).
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload == {
            "type": "message_received",
            "timestamp": event["timestamp"],
            "sessionId": session_id,
            "data": {"text": "héllo"},
        }
        item = await delivery(db, device_id, outbox_id)
        assert item["attempts"] == 1
        assert [a["statusCode"] for a in item["attemptLog"]] == [200]
        nursery.cancel_scope.cancel()


async def _status_is(db: Any, device_id: int, outbox_id: str, status: str) -> bool:
    return (await delivery(db, device_id, outbox_id))["status"] == status


async def test_rotation_window_signs_with_old_and_new(backend: Backend, autojump_clock: Any) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        device_id, session_id = await add_device(db)
        _, old = await configure(db, device_id, receiver.url)
        _, new = await configure(db, device_id, receiver.url, rotateSecret=True)
        user_secret = "webhook_secret"  # the seed's example: a plain string, signs as UTF-8
        assert old and new and old != new
        async with running(db) as dispatcher:
            await enqueue(db, device_id, envelope(session_id))
            dispatcher.notify()
            await receiver.wait_requests(1)
            assert len(receiver.requests[0].headers["webhook-signature"].split(" ")) == 2
            assert signed_by(old, receiver.requests[0])
            assert signed_by(new, receiver.requests[0])
            # A day later the old secret has expired: only the new one signs.
            await trio.sleep(24 * 3600 + 1)
            await enqueue(db, device_id, envelope(session_id))
            dispatcher.notify()
            await receiver.wait_requests(2)
            assert len(receiver.requests[1].headers["webhook-signature"].split(" ")) == 1
            assert signed_by(new, receiver.requests[1])
            assert not signed_by(old, receiver.requests[1])
            # A caller-chosen plain secret.
            await configure(db, device_id, receiver.url, secret=user_secret)
            await enqueue(db, device_id, envelope(session_id))
            dispatcher.notify()
            await receiver.wait_requests(3)
            assert signed_by(user_secret.encode(), receiver.requests[2])
            assert signed_by(new, receiver.requests[2])  # still inside its rotation window
        nursery.cancel_scope.cancel()


async def test_retry_schedule_in_virtual_time(backend: Backend, autojump_clock: Any) -> None:
    """5xx, timeout, 3xx (to the metadata address), 429 with Retry-After, connection refused,
    then success: each retry at exactly the scheduled time, and the event arrives signed."""
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(
            nursery,
            500,
            "hang",
            (302, {"location": "http://169.254.169.254/latest/meta-data/"}),
            (429, {"retry-after": "9000"}),
            200,
        )
        device_id, session_id = await add_device(db)
        _, secret = await configure(db, device_id, receiver.url)
        assert secret is not None
        event = envelope(session_id, "device_status", **{"from": "connecting", "to": "connected"})
        async with running(db) as dispatcher:
            await enqueue(db, device_id, event)
            t0 = trio.current_time()
            dispatcher.notify()
            await receiver.wait_requests(4)
            await receiver.down()  # the fifth attempt finds the port closed
            await wait_for(_attempts_at_least(dispatcher, 5), step=60)
            await receiver.up()
            outbox_id = await only_id(db, device_id)
            await wait_for(lambda: _status_is(db, device_id, outbox_id, "delivered"), step=60)

        # Attempt 1 at once; 500 -> 5 s; timeout after 15 s -> 5 min; 302 -> 30 min;
        # 429 Retry-After 9000 s beats the 2 h step; refused -> 5 h; then 200.
        expected = [0.0, 5.0, 5 + 15 + 300, 320 + 1800, 2120 + 9000, 11120 + 18000]
        arrived = [r.at - t0 for r in receiver.requests]
        assert arrived == pytest.approx([t for i, t in enumerate(expected) if i != 4], abs=1e-6)
        item = await delivery(db, device_id, outbox_id)
        log = item["attemptLog"]
        assert [a["statusCode"] for a in log] == [500, None, 302, 429, None, 200]
        assert "timed out" in log[1]["error"]
        assert "redirect not followed" in log[2]["error"]
        assert "169.254.169.254" in log[2]["error"]
        assert log[4]["error"]  # connection refused
        starts = [clock.parse_iso(a["at"]) for a in log]
        assert [s - starts[0] for s in starts] == pytest.approx(expected, abs=0.002)
        # Every attempt carried the same webhook-id and body, each signed for its own time.
        assert {r.headers["webhook-id"] for r in receiver.requests} == {outbox_id}
        assert {r.body for r in receiver.requests} == {receiver.requests[0].body}
        assert all(signed_by(secret, r) for r in receiver.requests)
        stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
        assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 29000
        assert json.loads(receiver.requests[-1].body)["data"] == {
            "from": "connecting",
            "to": "connected",
        }
        nursery.cancel_scope.cancel()


def _attempts_at_least(dispatcher: WebhookDispatcher, n: int) -> Any:
    async def check() -> bool:
        return dispatcher.statistics().attempts >= n

    return check


async def test_schedule_exhausted_marks_failed(backend: Backend, autojump_clock: Any) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, *[503] * 20)
        device_id, session_id = await add_device(db)
        await configure(db, device_id, receiver.url)
        async with running(db) as dispatcher:
            await enqueue(db, device_id, envelope(session_id))
            t0 = trio.current_time()
            dispatcher.notify()
            outbox_id = await only_id(db, device_id)
            await wait_for(lambda: _status_is(db, device_id, outbox_id, "failed"), step=600)
        assert len(receiver.requests) == len(SCHEDULE) == 8
        gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
        assert gaps == pytest.approx(list(SCHEDULE[1:]), abs=1e-6)
        assert receiver.requests[-1].at - t0 == pytest.approx(sum(SCHEDULE))
        nursery.cancel_scope.cancel()


def test_jitter_stays_within_bounds() -> None:
    import random

    rng = random.Random(1)
    for failures in range(1, len(SCHEDULE)):
        for _ in range(50):
            delay = retry_delay(failures, jitter=0.1, rng=rng)
            assert delay is not None
            assert SCHEDULE[failures] * 0.9 <= delay <= SCHEDULE[failures] * 1.1
    assert retry_delay(0, jitter=0.1) == 0.0
    assert retry_delay(len(SCHEDULE)) is None
    assert retry_delay(1, retry_after=60.0, jitter=0.0) == 60.0


async def test_gone_disables_endpoint_with_event(backend: Backend, autojump_clock: Any) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, "hang", 410)
        device_id, session_id = await add_device(db)
        await configure(db, device_id, receiver.url)
        bus = FakeBus()
        async with running(db, bus=bus, concurrency=1) as dispatcher:
            # Two events: the first hangs (and times out), then the second gets 410.
            await enqueue(db, device_id, envelope(session_id), envelope(session_id))
            dispatcher.notify()
            await wait_for(_attempts_at_least(dispatcher, 2))
            await trio.sleep(1)
        items, _ = await db.run(lambda r: r.outbox.list_deliveries(device_id))
        assert sorted(i["status"] for i in items) == ["disabled", "disabled"]
        settings = await stored_settings(db, device_id)
        assert settings.enabled is False
        assert "410" in (settings.disabled_reason or "")
        assert [e.type for e in bus.events] == ["webhook_disabled"]
        assert bus.events[0].session_id == session_id
        # A disabled webhook takes no new events.
        assert await enqueue(db, device_id, envelope(session_id)) == 0
        nursery.cancel_scope.cancel()


async def test_endpoint_failing_for_five_days_is_disabled(
    backend: Backend, autojump_clock: Any
) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        await receiver.down()
        device_id, session_id = await add_device(db)
        await configure(db, device_id, receiver.url)
        bus = FakeBus()
        async with running(db, bus=bus) as dispatcher:
            for _day in range(7):
                await enqueue(db, device_id, envelope(session_id))
                dispatcher.notify()
                await trio.sleep(24 * 3600)
        settings = await stored_settings(db, device_id)
        assert settings.enabled is False
        assert "5 days" in (settings.disabled_reason or "")
        assert [e.type for e in bus.events] == ["webhook_disabled"]
        assert settings.disabled_at is not None and settings.failing_since is not None
        disabled_at = clock.parse_iso(settings.disabled_at)
        assert disabled_at - settings.failing_since >= 5 * 24 * 3600 - 0.01
        items, _ = await db.run(lambda r: r.outbox.list_deliveries(device_id))
        assert "pending" not in {i["status"] for i in items}
        nursery.cancel_scope.cancel()


async def test_success_resets_failure_clock(backend: Backend, autojump_clock: Any) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, 500)
        device_id, session_id = await add_device(db)
        await configure(db, device_id, receiver.url)
        async with running(db) as dispatcher:
            await enqueue(db, device_id, envelope(session_id))
            dispatcher.notify()
            await receiver.wait_requests(1)
            await trio.sleep(1)
            settings = await stored_settings(db, device_id)
            assert settings.failing_since is not None
            await receiver.wait_requests(2)
            await trio.sleep(1)
        settings = await stored_settings(db, device_id)
        assert settings.failing_since is None and settings.enabled is True
        nursery.cancel_scope.cancel()


async def test_bounded_concurrency_and_all_arrive_after_recovery(
    backend: Backend, autojump_clock: Any
) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, *["hang"] * 10)
        device_id, session_id = await add_device(db)
        _, secret = await configure(db, device_id, receiver.url)
        assert secret is not None
        events = [envelope(session_id, n=i) for i in range(25)]
        async with running(db, concurrency=4, timeout=15.0) as dispatcher:
            await enqueue(db, device_id, *events)
            dispatcher.notify()
            outbox_ids = {
                i["id"]
                for i in (await db.run(lambda r: r.outbox.list_deliveries(device_id)))[0]
            }

            async def all_delivered() -> bool:
                _, n = await db.run(
                    lambda r: r.outbox.list_deliveries(device_id, status="delivered")
                )
                return bool(n == 25)

            await wait_for(all_delivered, step=5)
        assert receiver.max_in_progress <= 4
        delivered = {r.headers["webhook-id"]: r for r in receiver.requests}
        assert set(delivered) == outbox_ids
        assert all(signed_by(secret, r) for r in receiver.requests)
        assert sorted(json.loads(r.body)["data"]["n"] for r in delivered.values()) == list(
            range(25)
        )
        nursery.cancel_scope.cancel()


async def test_restart_resumes_in_flight_and_pending(backend: Backend, autojump_clock: Any) -> None:
    """A dispatcher stopped mid-delivery (as in a crash) leaves the rows due; the next one
    delivers them all: nothing is lost, at-least-once."""
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, "hang", "hang", "hang")
        async with backend.open() as db:
            device_id, session_id = await add_device(db)
            await configure(db, device_id, receiver.url)
            async with running(db) as dispatcher:
                await enqueue(db, device_id, *[envelope(session_id, n=i) for i in range(3)])
                dispatcher.notify()
                await receiver.wait_requests(3)
            # cancelled while all three were waiting for an answer
        async with backend.open() as db:
            items, _ = await db.run(lambda r: r.outbox.list_deliveries(device_id))
            assert {i["status"] for i in items} == {"pending"}
            async with running(db) as dispatcher:

                async def done() -> bool:
                    _, n = await db.run(
                        lambda r: r.outbox.list_deliveries(device_id, status="delivered")
                    )
                    return bool(n == 3)

                await wait_for(done)
        ids = [r.headers["webhook-id"] for r in receiver.requests]
        assert len(ids) == 6 and set(ids[:3]) == set(ids[3:])
        nursery.cancel_scope.cancel()


async def test_removed_settings_and_deleted_device(backend: Backend, autojump_clock: Any) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, "hang")
        device_id, session_id = await add_device(db)
        await configure(db, device_id, receiver.url, enabled=True)
        async with running(db) as dispatcher:
            await enqueue(db, device_id, envelope(session_id))
            dispatcher.notify()
            await receiver.wait_requests(1)
            # The device is deleted while its delivery is in flight: no crash, row gone.
            await db.run(lambda r: r.devices.delete(device_id))
            await trio.sleep(30)
            assert dispatcher.statistics().in_flight == 0
        nursery.cancel_scope.cancel()


async def test_enqueue_filters_by_settings(backend: Backend) -> None:
    async with backend.open() as db:
        device_id, session_id = await add_device(db)
        # No settings: nothing written.
        assert await enqueue(db, device_id, envelope(session_id)) == 0
        await configure(db, device_id, "https://hooks.example/x", events=["status"])
        kinds = ["message_received", "device_status", "device_connected", "message_status"]
        assert await enqueue(db, device_id, *[envelope(session_id, k) for k in kinds]) == 2
        await configure(db, device_id, "https://hooks.example/x", events=["message"])
        assert await enqueue(db, device_id, *[envelope(session_id, k) for k in kinds]) == 2

        class Lazy:
            """An Event-like object: to_json is only called for wanted events."""

            calls = 0
            id = None  # not logged: the row keeps its body
            logged_whole = False

            def __init__(self, type_: str) -> None:
                self.type = type_

            def to_json(self) -> dict[str, Any]:
                Lazy.calls += 1
                return envelope(session_id, self.type)

        assert await db.run(
            lambda r: webhook_settings.enqueue(r, device_id, [Lazy("qr_code"), Lazy("message_sent")])
        ) == 1
        assert Lazy.calls == 1
        await configure(db, device_id, "https://hooks.example/x", enabled=False)
        assert await enqueue(db, device_id, envelope(session_id)) == 0


def test_parse_retry_after() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("99999999", now) == MAX_RETRY_AFTER
    http_date = "Sun, 15 Jun 2025 15:08:20 GMT"  # now + 100 s
    assert parse_retry_after(http_date, now) == pytest.approx(100.0)
    assert parse_retry_after(http_date, now + 200) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after(None, now) is None


async def test_a_slow_endpoint_does_not_starve_the_others(
    backend: Backend, autojump_clock: Any
) -> None:
    async with backend.open() as db, trio.open_nursery() as nursery:
        slow = await start_receiver(nursery, *["hang"] * 100)
        fast = await start_receiver(nursery)
        slow_id, slow_sid = await add_device(db, "slow")
        fast_id, fast_sid = await add_device(db, "fast")
        await configure(db, slow_id, slow.url)
        await configure(db, fast_id, fast.url)
        async with running(db, concurrency=4, per_device=2) as dispatcher:
            await enqueue(db, slow_id, *[envelope(slow_sid, n=i) for i in range(20)])
            await trio.sleep(0.01)  # the slow device's rows are due first
            await enqueue(db, fast_id, *[envelope(fast_sid, n=i) for i in range(3)])
            t0 = trio.current_time()
            dispatcher.notify()
            await fast.wait_requests(3)
            # Served at once, while the slow endpoint holds its two slots for 15 s each.
            assert trio.current_time() - t0 < 1.0
            assert slow.max_in_progress == 2
        nursery.cancel_scope.cancel()
