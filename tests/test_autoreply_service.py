"""The AutoReply service against a stand-in supervisor (the real EventBus, in-memory settings
and messages) and a fake OpenAI-compatible provider on 127.0.0.1 (port 0).

Time is a MockClock that jumps only after 20 ms of real idleness, so that real socket I/O on
127.0.0.1 completes before virtual time moves on; rate windows, pauses and provider timeouts
are asserted in virtual time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from common import clock
from storage.models import MessageRow
from supervisor.autoreply import AiSettings, AutoReply
from supervisor.config import AutoReplyConfig, Config
from supervisor.errors import DeviceConflict, DeviceNotFound
from supervisor.events import Event, EventBus
from supervisor.payloads import MessageReceived, MessageSent
from tests.autoreply_support import FakeProvider

KEY = "sk-test-SECRET-0123456789"
ALICE = "491701111111@s.whatsapp.net"
BOB = "491702222222@s.whatsapp.net"
OWN = "491709999999@s.whatsapp.net"


@pytest.fixture
def clock_() -> trio.testing.MockClock:
    """pytest-trio runs a test on a Clock among the *test's* own arguments, so every test
    here takes ``clock_`` (the fixtures' clock dependency alone would not count)."""
    return trio.testing.MockClock(autojump_threshold=0.02)


@attrs.frozen
class Dev:
    id: int
    session_id: str
    jid: str | None


@attrs.define(eq=False)
class FakeSup:
    """What AutoReply needs of the Devices facade: bus, get, get_settings, send_message,
    recent_messages. Sending records the message and publishes ``message_sent``."""

    bus: EventBus = attrs.field(factory=EventBus)
    config: Config = attrs.field(factory=Config)
    devices: dict[str, Dev] = attrs.field(factory=dict)
    settings: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    messages: list[MessageRow] = attrs.field(factory=list)
    sent: list[dict[str, Any]] = attrs.field(factory=list)
    fail_send: bool = False
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _ids: Any = attrs.field(factory=itertools.count)

    def add(self, device_id: int, settings: dict[str, Any] | None = None) -> Dev:
        dev = Dev(device_id, f"user_u_device_d{device_id}", OWN)
        self.devices[dev.session_id] = dev
        if settings is not None:
            self.settings[dev.session_id] = settings
        return dev

    def get(self, ref: str) -> Dev:
        try:
            return self.devices[ref]
        except KeyError:
            raise DeviceNotFound(ref) from None

    async def get_settings(self, ref: str, kind: str) -> dict[str, Any] | None:
        self.get(ref)
        await trio.lowlevel.checkpoint()
        return self.settings.get(ref)

    async def recent_messages(self, device_id: int, chat: str, limit: int) -> list[MessageRow]:
        await trio.lowlevel.checkpoint()
        rows = [m for m in self.messages if m.device_id == device_id and m.chat == chat]
        return rows[-limit:]

    async def send_message(self, ref: str, to: str, text: str, origin: str = "api") -> dict:
        dev = self.get(ref)
        await trio.lowlevel.checkpoint()
        if self.fail_send:
            raise DeviceConflict("device is not connected")
        mid = f"out{next(self._ids)}"
        self.sent.append({"device": dev.id, "to": to, "text": text, "origin": origin})
        self._changed.set()
        self._changed = trio.Event()
        self.messages.append(message(dev.id, mid, to, "out", text))
        self.bus.publish(
            Event(dev.session_id, dev.id, MessageSent(mid, to, text, origin=origin),
                  clock.now_iso())
        )
        return {"messageId": mid, "to": to, "status": "sent"}

    async def wait_sent(self, n: int) -> None:
        while len(self.sent) < n:
            await self._changed.wait()

    def receive(
        self, dev: Dev, chat: str, text: str, *, sender: str | None = None,
        is_group: bool = False, from_me: bool = False, timestamp: str | None = None,
    ) -> str:
        """An incoming message: stored first (as the actor does), then published."""
        mid = f"in{next(self._ids)}"
        self.messages.append(message(dev.id, mid, chat, "in", text))
        now = clock.now_iso()
        data = MessageReceived(mid, sender or chat, chat, text, is_group, from_me, timestamp or now)
        self.bus.publish(Event(dev.session_id, dev.id, data, now))
        return mid


def message(
    device_id: int, message_id: str, chat: str, direction: str, text: str | None
) -> MessageRow:
    return MessageRow(device_id, message_id, chat, direction, text, None, clock.now_iso())


def ai(**overrides: Any) -> dict[str, Any]:
    base = {"enabled": True, "provider": "openai", "model": "test-model", "autoReply": True,
            "systemPrompt": "You are the shop assistant.", "apiKey": KEY,
            "timeoutSeconds": 5}
    base.update(overrides)
    return base


@attrs.define(eq=False)
class Harness:
    sup: FakeSup
    provider: FakeProvider
    auto: AutoReply

    def dev(self, device_id: int = 1, **overrides: Any) -> Dev:
        return self.sup.add(
            device_id, ai(baseUrl=self.provider.base_url, **overrides)
        )

    async def settle(self) -> None:
        """Let the service take every published event, then every reply finish (virtual
        time moves as needed)."""
        await trio.testing.wait_all_tasks_blocked(0.001)
        await self.auto.wait_idle()


@pytest.fixture
async def h(clock_: trio.testing.MockClock) -> AsyncIterator[Harness]:
    assert trio.lowlevel.current_clock() is clock_, "the test must take clock_ itself"
    async with trio.open_nursery() as nursery:
        provider = await FakeProvider().start(nursery)
        sup = FakeSup()
        auto = AutoReply(sup, trust_env=False)
        await nursery.start(auto.run)
        yield Harness(sup, provider, auto)
        nursery.cancel_scope.cancel()


async def test_reply_carries_model_prompt_history(clock_: trio.testing.MockClock, h: Harness, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    dev = h.dev(historyLimit=10)
    h.sup.messages.append(message(1, "old1", ALICE, "in", "hi"))
    h.sup.messages.append(message(1, "old2", ALICE, "out", "hello! how can I help?"))
    h.sup.messages.append(message(1, "x", BOB, "in", "secret bob"))  # another chat: not in it
    h.sup.receive(dev, ALICE, "do you ship to Berlin?")
    await h.settle()

    [req] = h.provider.requests
    assert req["method"] == "POST"
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["json"]["model"] == "test-model"
    assert req["json"]["messages"] == [
        {"role": "system", "content": "You are the shop assistant."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello! how can I help?"},
        {"role": "user", "content": "do you ship to Berlin?"},
    ]
    assert h.sup.sent == [
        {"device": 1, "to": ALICE, "text": "echo: do you ship to Berlin?", "origin": "autoreply"}
    ]
    stats = h.auto.statistics()
    assert (stats.considered, stats.replied) == (1, 1)
    assert KEY not in caplog.text


async def test_rate_cap_per_chat_per_minute(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.dev(maxRepliesPerMinute=3)
    t0 = trio.current_time()
    for i in range(5):
        h.sup.receive(dev, ALICE, f"msg {i}")
    h.sup.receive(dev, BOB, "other chat has its own window")
    await h.settle()
    assert trio.current_time() - t0 < 60
    to_alice = [m for m in h.sup.sent if m["to"] == ALICE]
    assert len(to_alice) == 3
    assert len([m for m in h.sup.sent if m["to"] == BOB]) == 1
    assert h.auto.statistics().rate_limited == 2

    # still inside the minute: refused
    h.sup.receive(dev, ALICE, "again")
    await h.settle()
    assert len([m for m in h.sup.sent if m["to"] == ALICE]) == 3
    assert h.auto.statistics().rate_limited == 3

    await trio.sleep(t0 + 60.1 - trio.current_time())
    h.sup.receive(dev, ALICE, "a minute later")
    await h.settle()
    assert [m["text"] for m in h.sup.sent if m["to"] == ALICE][-1] == "echo: a minute later"
    assert len(h.provider.requests) == 5


async def test_operator_message_pauses_the_chat(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.dev(operatorPauseSeconds=300)
    await h.sup.send_message(dev.session_id, to="+49 170 1111111", text="a human here")
    await trio.sleep(0.1)
    t_op = trio.current_time()
    h.sup.receive(dev, ALICE, "are you a bot?")
    h.sup.receive(dev, BOB, "not paused here")
    await h.settle()
    assert [m["to"] for m in h.sup.sent if m["origin"] == "autoreply"] == [BOB]
    assert h.auto.statistics().paused == 1

    # auto-reply's own messages do not pause anything
    h.sup.receive(dev, BOB, "and again")
    await h.settle()
    assert len([m for m in h.sup.sent if m["to"] == BOB]) == 2

    await trio.sleep(t_op + 300.1 - trio.current_time())
    h.sup.receive(dev, ALICE, "hello?")
    await h.settle()
    assert h.sup.sent[-1] == {"device": 1, "to": ALICE, "text": "echo: hello?",
                              "origin": "autoreply"}


async def test_operator_stepping_in_while_provider_thinks_wins(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.dev()
    h.provider.script.append(("hang",))
    h.sup.receive(dev, ALICE, "question")
    await h.provider.wait_requests(1)
    await h.sup.send_message(dev.session_id, to=ALICE, text="let me answer that myself")
    await h.settle()  # the provider times out anyway; nothing is sent
    assert [m["origin"] for m in h.sup.sent] == ["api"]


async def test_provider_errors_are_counted_and_service_goes_on(
    clock_: trio.testing.MockClock, h: Harness, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    dev = h.dev(timeoutSeconds=7)
    h.provider.script.extend([("status", 500), ("garbage",), ("reply", "  "), ("hang",)])
    for i in range(3):
        h.sup.receive(dev, ALICE, f"m{i}")
    await h.settle()
    t0 = trio.current_time()
    h.sup.receive(dev, ALICE, "m3")
    await h.settle()
    assert 7 <= trio.current_time() - t0 < 8  # the provider timeout, in virtual time
    stats = h.auto.statistics()
    assert stats.provider_error == 3
    assert stats.provider_timeout == 1
    assert h.sup.sent == []

    await trio.sleep(61)
    h.sup.receive(dev, ALICE, "works again?")
    await h.settle()
    assert h.sup.sent[-1]["text"] == "echo: works again?"
    assert KEY not in caplog.text
    assert "status 500" in caplog.text


async def test_unreachable_provider_and_failed_send(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.sup.add(1, ai(baseUrl="http://127.0.0.1:1/v1"))  # nothing listens on port 1
    h.sup.receive(dev, ALICE, "hello")
    await h.settle()
    assert h.auto.statistics().provider_error == 1

    dev2 = h.dev(2)
    h.sup.fail_send = True
    h.sup.receive(dev2, ALICE, "hello")
    await h.settle()
    assert h.auto.statistics().send_failed == 1


async def test_hanging_provider_does_not_block_other_devices(clock_: trio.testing.MockClock, h: Harness) -> None:
    slow = h.dev(1, timeoutSeconds=30)
    fast = h.dev(2)
    h.provider.script.extend([("hang",), ("hang",)])
    for i in range(3):
        h.sup.receive(slow, ALICE, f"slow {i}")
    await h.provider.wait_requests(2)  # per-device concurrency: 2 in flight, 1 waiting
    assert h.auto.statistics().in_flight == 2
    t0 = trio.current_time()
    h.sup.receive(fast, ALICE, "fast")
    await h.sup.wait_sent(1)
    assert trio.current_time() - t0 < 1
    assert h.sup.sent == [{"device": 2, "to": ALICE, "text": "echo: fast", "origin": "autoreply"}]
    await h.settle()
    assert 29 < trio.current_time() - t0 < 31
    assert h.auto.statistics().provider_timeout == 2
    # Trio may start the three reply tasks in any order: whichever waited for a slot is the
    # one answered.
    [answered] = [m for m in h.sup.sent if m["device"] == 1]
    assert answered["text"] in {"echo: slow 0", "echo: slow 1", "echo: slow 2"}
    assert answered["origin"] == "autoreply"


async def test_groups_broadcasts_own_and_disabled_are_ignored(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.dev(1)
    h.sup.receive(dev, "120363025246125486@g.us", "group chat", sender=ALICE)
    h.sup.receive(dev, "status@broadcast", "a status update", sender=ALICE)
    h.sup.receive(dev, "1234567@broadcast", "broadcast list", sender=ALICE)
    h.sup.receive(dev, ALICE, "flagged group", is_group=True)
    h.sup.receive(dev, ALICE, "typed on my phone", from_me=True)
    h.sup.receive(dev, ALICE, "sender is me", sender=OWN)
    h.sup.receive(dev, ALICE, "")
    h.sup.receive(dev, "120363xyz@newsletter", "channel post")
    old = clock.iso(clock.now_epoch() - 3600)
    h.sup.receive(dev, ALICE, "offline backlog", timestamp=old)
    off = h.sup.add(2, ai(enabled=False, baseUrl=h.provider.base_url))
    h.sup.receive(off, ALICE, "disabled device")
    manual = h.sup.add(3, ai(autoReply=False, baseUrl=h.provider.base_url))
    h.sup.receive(manual, ALICE, "autoReply off")
    h.sup.add(4)  # no settings at all
    h.sup.receive(h.sup.get("user_u_device_d4"), ALICE, "no settings")
    await h.settle()
    assert h.provider.requests == []
    assert h.sup.sent == []
    s = h.auto.statistics()
    assert (s.ignored_group, s.ignored_broadcast, s.ignored_own) == (2, 2, 2)
    assert (s.ignored_other, s.ignored_stale, s.disabled) == (2, 1, 3)
    assert s.considered == 12


async def test_resubscribes_after_falling_behind(clock_: trio.testing.MockClock, h: Harness, caplog: Any) -> None:
    dev = h.dev(maxRepliesPerMinute=1)
    for i in range(h.sup.config.autoreply.queue_size + 100):  # no checkpoint: the subscriber's queue overflows
        h.sup.bus.publish(Event(dev.session_id, dev.id,
                                MessageSent(str(i), BOB, "", origin="autoreply"), ""))
    await trio.sleep(0.1)
    assert h.auto.statistics().resubscribes == 1
    h.sup.receive(dev, ALICE, "still there?")
    await h.settle()
    assert h.sup.sent[-1]["text"] == "echo: still there?"
    assert "resubscribing" in caplog.text


async def test_busy_bound_drops_instead_of_queueing(clock_: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        provider = await FakeProvider().start(nursery)
        sup = FakeSup(config=Config(autoreply=AutoReplyConfig(max_pending=2)))
        auto = AutoReply(sup, trust_env=False)
        await nursery.start(auto.run)
        dev = sup.add(1, ai(baseUrl=provider.base_url))
        for i in range(5):
            sup.receive(dev, f"49170000000{i}@s.whatsapp.net", "hi")
        await trio.testing.wait_all_tasks_blocked(0.001)
        await auto.wait_idle()
        s = auto.statistics()
        assert s.busy == 3
        assert len(sup.sent) == 2
        nursery.cancel_scope.cancel()


async def test_deleted_device_is_skipped(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.dev()
    del h.sup.devices[dev.session_id]
    h.sup.receive(dev, ALICE, "hi")
    await h.settle()
    assert h.auto.statistics().disabled == 1


async def test_prune_forgets_idle_state(clock_: trio.testing.MockClock, h: Harness) -> None:
    dev = h.dev(operatorPauseSeconds=10)
    await h.sup.send_message(dev.session_id, to=BOB, text="op")
    h.sup.receive(dev, ALICE, "hi")
    await h.settle()
    assert len(h.auto.rates) == 1 and len(h.auto.pauses) == 1
    clock_.jump(86400 + 120)
    h.auto.prune()
    assert len(h.auto.rates) == 0
    assert len(h.auto.pauses) == 0
    assert h.auto.tracked_devices() == 0


async def test_settings_are_read_once_then_replaced_when_put(
    clock_: trio.testing.MockClock, h: Harness
) -> None:
    dev = h.dev()
    h.sup.receive(dev, ALICE, "one")
    await h.settle()
    # Storage changing behind the service's back is not re-read for every message...
    h.sup.settings[dev.session_id] = ai(baseUrl=h.provider.base_url, model="other-model")
    h.sup.receive(dev, BOB, "two")
    await h.settle()
    assert [r["json"]["model"] for r in h.provider.requests] == ["test-model", "test-model"]
    # ...the API tells the service when it stored new settings.
    new = AiSettings.from_stored(h.sup.settings[dev.session_id])
    h.auto.settings_changed(dev.id, new)
    h.sup.receive(dev, ALICE, "three")
    await h.settle()
    assert h.provider.requests[-1]["json"]["model"] == "other-model"
    h.auto.settings_changed(dev.id, attrs.evolve(new, enabled=False))
    h.sup.receive(dev, BOB, "four")
    await h.settle()
    assert len(h.provider.requests) == 3
    assert h.auto.statistics().disabled == 1
