"""Auto-reply's pure parts: settings validation (at the API edge) and their stored form, chat
addresses, the rate window, the pause book and prompt building. No I/O."""

from __future__ import annotations

import types

import hypothesis
import hypothesis.strategies as st
import pytest
import trio

from api.routes_ai import parse_put_ai
from common import clock
from storage.models import MessageRow
from supervisor.autoreply import guards, prompt, provider, service
from supervisor.autoreply import settings as ai_settings
from supervisor.autoreply.guards import PauseBook, RateBook
from supervisor.autoreply.prompt import Turn
from supervisor.autoreply.settings import AiSettings
from supervisor.config import Config
from supervisor.errors import InvalidRequest
from supervisor.jid import Jid
from supervisor.payloads import MessageReceived
from supervisor.policy import RestartIntensity, SlidingWindow

KEY = "sk-test-SECRET-0123456789"
API_FIELDS = frozenset({
    "enabled", "provider", "model", "autoReply", "systemPrompt", "baseUrl", "apiKey",
    "maxRepliesPerMinute", "operatorPauseSeconds", "historyLimit", "timeoutSeconds",
    "maxTokens", "temperature",
})


def apply_update(current: AiSettings, body: object) -> AiSettings:
    """What PUT /settings/ai does to the stored settings."""
    return parse_put_ai(body).apply(current)


# -- settings ---------------------------------------------------------------------------------


def test_seed_example_is_accepted() -> None:
    s = apply_update(
        AiSettings(),
        {"enabled": True, "provider": "openai", "model": "gpt-3.5-turbo", "autoReply": True},
    )
    assert s.active
    assert s.base_url == ai_settings.DEFAULT_BASE_URL
    assert s.api_key is None
    assert s.public()["apiKeySet"] is False


def test_full_body_round_trips_and_hides_the_key() -> None:
    body = {
        "enabled": True,
        "provider": "openai",
        "model": "llama3",
        "autoReply": True,
        "systemPrompt": "You are helpful.\nBe brief.",
        "baseUrl": "http://127.0.0.1:11434/v1",
        "apiKey": KEY,
        "maxRepliesPerMinute": 3,
        "operatorPauseSeconds": 120,
        "historyLimit": 4,
        "timeoutSeconds": 5.5,
        "maxTokens": 200,
        "temperature": 0.2,
    }
    s = apply_update(AiSettings(), body)
    public = s.public()
    assert "apiKey" not in public
    assert public["apiKeySet"] is True
    assert KEY not in repr(s)
    assert KEY not in repr(public)
    stored = s.to_stored()
    assert stored["apiKey"] == KEY
    assert "apiKeySet" not in stored
    assert AiSettings.from_stored(stored) == s
    assert set(stored) == API_FIELDS | {"guarded"}
    assert AiSettings.from_stored({**stored, "guarded": True}).guarded


def test_absent_fields_are_kept_and_null_resets() -> None:
    s = apply_update(AiSettings(), {"enabled": True, "model": "m", "apiKey": KEY})
    s2 = apply_update(s, {"enabled": False})
    assert s2.api_key == KEY and s2.model == "m" and not s2.enabled
    s3 = apply_update(s2, {"apiKey": None, "baseUrl": None, "model": None, "enabled": None})
    assert s3.api_key is None
    assert s3.base_url == ai_settings.DEFAULT_BASE_URL
    assert s3.model == ai_settings.DEFAULT_MODEL and s3.enabled is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"provider": "anthropic"}, "provider"),
        ({"provider": {}}, "provider"),
        ({"provider": ["openai"]}, "provider"),
        ({"baseUrl": "https://\u00a8:29/x"}, "baseUrl"),
        ({"baseUrl": "http://[::1]:8080/v1"}, "baseUrl"),
        ({"baseUrl": "http://h/v1#frag"}, "baseUrl"),
        ({"model": ""}, "model"),
        ({"model": 5}, "model"),
        ({"model": "x" * 201}, "model"),
        ({"systemPrompt": 3}, "systemPrompt"),
        ({"systemPrompt": "a\x00b"}, "systemPrompt"),
        ({"baseUrl": "ftp://example.com"}, "baseUrl"),
        ({"baseUrl": "example.com/v1"}, "baseUrl"),
        ({"baseUrl": "https://user:pw@example.com/v1"}, "baseUrl"),
        ({"baseUrl": "https://example.com:99999/v1"}, "baseUrl"),
        ({"baseUrl": "https://exa mple.com/v1"}, "baseUrl"),
        ({"apiKey": ""}, "apiKey"),
        ({"apiKey": 12}, "apiKey"),
        ({"apiKey": "sk-abc\r\nX-Evil: 1"}, "apiKey"),
        ({"maxRepliesPerMinute": 0}, "maxRepliesPerMinute"),
        ({"maxRepliesPerMinute": 2.5}, "maxRepliesPerMinute"),
        ({"maxRepliesPerMinute": True}, "maxRepliesPerMinute"),
        ({"operatorPauseSeconds": -1}, "operatorPauseSeconds"),
        ({"operatorPauseSeconds": float("nan")}, "operatorPauseSeconds"),
        ({"historyLimit": 1000}, "historyLimit"),
        ({"timeoutSeconds": 0}, "timeoutSeconds"),
        ({"maxTokens": 0}, "maxTokens"),
        ({"temperature": 3}, "temperature"),
        ({"surprise": 1}, "surprise"),
        ({"enabled": True, "provider": "openai", "model": "m", "api_key": "x"}, "api_key"),
    ],
)
def test_bad_fields_are_named(body: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        apply_update(AiSettings(), body)
    assert info.value.field == field
    assert str(info.value).startswith(field)


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        apply_update(AiSettings(), body)
    assert info.value.field == "body"


def test_counts_take_json_integers_only() -> None:
    s = apply_update(AiSettings(), {"maxRepliesPerMinute": 4, "historyLimit": 0})
    assert s.max_replies_per_minute == 4 and isinstance(s.max_replies_per_minute, int)
    assert s.history_limit == 0
    for body in [{"maxRepliesPerMinute": 4.0}, {"historyLimit": 0.0}, {"maxTokens": 1e3},
                 {"maxTokens": 10**400}, {"operatorPauseSeconds": 10**400}]:
        with pytest.raises(InvalidRequest) as info:
            apply_update(AiSettings(), body)
        assert info.value.field == next(iter(body))


def test_bad_api_key_is_not_echoed() -> None:
    with pytest.raises(InvalidRequest) as info:
        apply_update(AiSettings(), {"apiKey": "sk-SECRET with space"})
    assert "SECRET" not in str(info.value)


def test_invalid_stored_settings_mean_disabled() -> None:
    assert AiSettings.from_stored({"enabled": "maybe"}) == AiSettings()
    assert AiSettings.from_stored(None) == AiSettings()
    s = AiSettings.from_stored({"enabled": True, "autoReply": True})
    assert s.active and s.model == ai_settings.DEFAULT_MODEL


# -- chats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chat", "outcome"),
    [
        ("491701234567@s.whatsapp.net", None),
        ("491701234567@c.us", None),
        ("12345678901234@lid", None),
        ("+49 170 1234567", None),
        ("120363025246125486@g.us", "ignored_group"),
        ("status@broadcast", "ignored_broadcast"),
        ("1234567890@broadcast", "ignored_broadcast"),
        ("120363xyz@newsletter", "ignored_other"),
        ("120363025246125486@newsletter", "ignored_other"),
        ("nobody", "ignored_other"),
        ("", "ignored_other"),
    ],
)
def test_screen_by_kind_of_chat(chat: str, outcome: str | None) -> None:
    result = guards.screen(received(chat, "hi"), max_age=600.0)
    if outcome is None:
        assert isinstance(result, Jid) and result == Jid.parse(chat)
    else:
        assert result == outcome


def test_screen_flags_and_senders() -> None:
    alice = "491701234567@s.whatsapp.net"
    assert guards.screen(received(alice, "hi", is_group=True), 600) == "ignored_group"
    assert guards.screen(received(alice, "x", sender="1234567890@broadcast"), 600) == (
        "ignored_broadcast"
    )
    assert guards.screen(received(alice, "x", sender="status@broadcast"), 600) == (
        "ignored_broadcast"
    )
    assert guards.screen(received(alice, "x", from_me=True), 600) == "ignored_own"
    assert guards.screen(received(alice, "  "), 600) == "ignored_other"
    assert guards.screen(received(alice, "x", timestamp=clock.iso(1.0)), 600) == "ignored_stale"
    assert guards.screen(received("", "x", sender=alice), 600) == Jid.parse(alice)


def received(
    chat: str, text: str, *, sender: str | None = None, is_group: bool = False,
    from_me: bool = False, timestamp: str | None = None,
) -> MessageReceived:
    """A message_received payload as the actor builds it (sent now unless ``timestamp``)."""
    return MessageReceived(
        message_id="m1", sender=chat if sender is None else sender, chat=chat, text=text,
        is_group=is_group, from_me=from_me, timestamp=timestamp or clock.now_iso(),
    )


def test_one_chat_whatever_its_spelling() -> None:
    forms = ["+49 170 1234567", "491701234567@c.us", "491701234567:12@s.whatsapp.net",
             "491701234567@S.WHATSAPP.NET"]
    assert {guards.parse_address(f) for f in forms} == {Jid.parse("491701234567@s.whatsapp.net")}
    assert guards.parse_address("12345@g.us") != guards.parse_address("12345@s.whatsapp.net")
    assert guards.parse_address("nobody") is None and guards.parse_address(None) is None


# -- rate window ------------------------------------------------------------------------------


def test_sliding_window_exact_times() -> None:
    w = SlidingWindow(guards.RATE_PERIOD)
    assert [w.try_acquire(t, 3) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert w.next_free(3.0, 3) == 60.0
    assert not w.try_acquire(59.999, 3)
    assert w.try_acquire(60.0, 3)  # the slot taken at 0 expired
    assert not w.try_acquire(60.5, 3)
    assert w.try_acquire(61.0, 3)
    assert not w.idle(62.0)
    assert w.idle(200.0)


def test_sliding_window_limit_change_applies_at_once() -> None:
    w = SlidingWindow(guards.RATE_PERIOD)
    for t in range(5):
        assert w.try_acquire(float(t), 10)
    assert not w.try_acquire(6.0, 5)
    assert w.try_acquire(6.0, 6)


# -- pause ------------------------------------------------------------------------------------


def test_pause_book() -> None:
    p = PauseBook()
    p.operator_sent(1, Jid.parse("+49 170 1234567"), now=100.0)
    assert p.is_paused(1, Jid.parse("491701234567@s.whatsapp.net"), 100.0, 600)
    assert p.is_paused(1, Jid.parse("491701234567@s.whatsapp.net"), 699.9, 600)
    assert not p.is_paused(1, Jid.parse("491701234567@s.whatsapp.net"), 700.0, 600)
    assert not p.is_paused(2, Jid.parse("491701234567@s.whatsapp.net"), 200.0, 600)  # other device
    assert not p.is_paused(1, Jid.parse("491709999999@s.whatsapp.net"), 200.0, 600)  # other chat
    assert not p.is_paused(1, Jid.parse("491701234567@s.whatsapp.net"), 100.0, 0)  # pause off
    p.prune(now=100.0 + ai_settings.MAX_PAUSE_SECONDS)
    assert len(p) == 0


# -- prompt -----------------------------------------------------------------------------------


def test_build_messages_roles_order_and_dedup() -> None:
    rows = [
        MessageRow(1, "a", "c", "in", "hi", None, ""),
        MessageRow(1, "b", "c", "out", "hello, how can I help?", "sent", ""),
        MessageRow(1, "c", "c", "out", None, "sent", ""),  # media: skipped
        MessageRow(1, "d", "c", "in", "price?", None, ""),
    ]
    turns = prompt.turns_from_history(rows)
    msgs = prompt.build_messages("Be brief.", turns, "price?", "d")
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello, how can I help?"},
        {"role": "user", "content": "price?"},
    ]


def test_build_messages_cuts_history_at_the_incoming_message() -> None:
    turns = [Turn("user", "a", "1"), Turn("user", "b", "2"), Turn("user", "c", "3")]
    msgs = prompt.build_messages("", turns, "b", "2")
    assert [m["content"] for m in msgs] == ["a", "b"]


def test_build_messages_limits() -> None:
    turns = [Turn("user" if i % 2 == 0 else "assistant", f"m{i}", str(i)) for i in range(20)]
    msgs = prompt.build_messages("", turns, "now", "x", history_limit=3)
    assert [m["content"] for m in msgs] == ["m17", "m18", "m19", "now"]  # no system prompt
    assert prompt.build_messages("s", turns, "now", history_limit=0) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "now"},
    ]
    big = [Turn("user", "x" * 600, str(i)) for i in range(5)]
    msgs = prompt.build_messages("", big, "now", history_limit=5, max_history_chars=1300)
    assert len(msgs) == 3  # only the two newest fit


def test_build_messages_drops_incoming_without_id() -> None:
    turns = [Turn("assistant", "hello"), Turn("user", "same text")]
    msgs = prompt.build_messages("", turns, "same text")
    assert [m["content"] for m in msgs] == ["hello", "same text"]


def test_completions_url() -> None:
    assert provider.completions_url("http://h/v1") == "http://h/v1/chat/completions"
    assert provider.completions_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert provider.completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


async def test_message_age_uses_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    now = clock.now_epoch()
    assert guards._age(clock.iso(now)) == pytest.approx(0, abs=0.01)
    assert guards._age(clock.iso(now - 120)) == pytest.approx(120, abs=0.01)
    await trio.sleep(50)
    assert guards._age(clock.iso(now)) == pytest.approx(50, abs=0.01)
    assert guards._age(clock.iso(0)) is None
    assert guards._age("garbage") is None
    assert guards._age("") is None


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    limit=st.integers(1, 6),
    gaps=st.lists(st.floats(0, 40, allow_nan=False), max_size=60),
)
def test_sliding_window_against_a_model(limit: int, gaps: list[float]) -> None:
    """Never more than ``limit`` grants in any 60 s, and a request is refused only when
    ``limit`` grants already fall in the 60 s before it."""
    w = SlidingWindow(guards.RATE_PERIOD)
    granted: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        recent = [t for t in granted if t > now - guards.RATE_PERIOD]
        assert w.try_acquire(now, limit) == (len(recent) < limit)
        if len(recent) < limit:
            granted.append(now)
    for t in granted:
        assert sum(1 for u in granted if t <= u < t + guards.RATE_PERIOD) <= limit


def test_prometheus_counter_counts_outcomes() -> None:
    before = service.AUTOREPLY_TOTAL.labels("paused")._value.get()
    auto = service.AutoReply(sup=types.SimpleNamespace(config=Config()))
    auto._count("paused")
    auto._count("paused")
    assert service.AUTOREPLY_TOTAL.labels("paused")._value.get() == before + 2
    assert auto.statistics().paused == 2


def test_rate_book_keys_chats_by_their_canonical_address() -> None:
    rates = RateBook()
    assert rates.try_acquire(1, Jid.parse("+49 170 1234567"), 0.0, 2)
    assert rates.try_acquire(1, Jid.parse("491701234567@c.us"), 1.0, 2)
    assert not rates.try_acquire(1, Jid.parse("491701234567:3@s.whatsapp.net"), 2.0, 2)
    assert rates.try_acquire(2, Jid.parse("491701234567@c.us"), 2.0, 2)  # another device
    assert len(rates) == 2
    rates.prune(62.0)
    assert len(rates) == 0


def test_restart_intensity_counts_in_the_same_window() -> None:
    intensity = RestartIntensity(intensity=2, period=10.0)
    assert intensity.record(0.0) and intensity.record(1.0)
    assert not intensity.record(2.0)  # a third restart inside 10 s
    assert intensity.record(11.5)  # the restarts at 0 and 1 left the window
    assert intensity.recent == 2
    intensity.reset()
    assert intensity.recent == 0


def test_stored_form_is_type_checked_not_coerced() -> None:
    assert AiSettings.from_stored({"historyLimit": "10"}) == AiSettings()
    assert AiSettings.from_stored({"maxRepliesPerMinute": True}) == AiSettings()
    assert AiSettings.from_stored({"enabled": True, "model": None}).model == (
        ai_settings.DEFAULT_MODEL
    )
    stored = apply_update(AiSettings(), {"operatorPauseSeconds": 120}).to_stored()
    assert stored["operatorPauseSeconds"] == 120 and isinstance(stored["operatorPauseSeconds"], int)
