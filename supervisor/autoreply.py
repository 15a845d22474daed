"""AI auto-reply: answer one-to-one text messages through an OpenAI-compatible provider.

Synopsis::

    auto = AutoReply(sup)
    await nursery.start(auto.run)      # subscribed to the event bus once this returns
    auto.statistics()                  # AutoReplyStatistics(replied=..., provider_error=...)

    await nursery.start(run, sup)      # the same, as api.server starts it; service_for(sup)

A device opts in with its AI settings (``PUT /devices/{id}/settings/ai``, stored under the
``"ai"`` settings kind, see :class:`AiSettings`): when they are ``enabled`` with ``autoReply``,
every incoming text message in a one-to-one chat gets a reply generated from
the system prompt and the recent conversation of that chat, sent through the device with
``origin="autoreply"``.

Guard rails, all checked before the provider is called:

- groups, broadcasts (``status@broadcast``, broadcast lists), channels, messages without text,
  the device's own messages and messages older than ``max_message_age`` are ignored;
- at most ``maxRepliesPerMinute`` replies per chat in any sliding 60 s window (a failed
  provider call counts too, so a failing provider is not hammered);
- a message an operator sends through the API to a chat (a ``message_sent`` event with
  ``origin == "api"``) pauses auto-reply in that chat for ``operatorPauseSeconds``; the pause
  is checked again after the provider answered, so a human who stepped in meanwhile wins.

Error handling: provider errors (non-2xx, bad JSON, no content), timeouts and send failures
are logged (never with the API key) and counted in :meth:`AutoReply.statistics` and the
``wasup_autoreply_total`` Prometheus counter; they never end the service. Each reply runs in its
own task, bounded per device and in total by :class:`trio.CapacityLimiter`s, so a slow provider
for one device does not hold up another; beyond ``max_pending`` waiting replies new messages are
dropped (counted as ``busy``) rather than queued without bound. A subscription the bus drops
for being slow is logged and renewed (events in the gap are missed, by design).

Time is read only through ``trio.current_time()`` (rate windows, pauses) and
:mod:`supervisor.clock` (message age).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import httpx
import trio
from prometheus_client import Counter

from common import clock
from supervisor.config import Config
from supervisor.errors import DeviceNotFound, InvalidRequest, WasupError
from supervisor.webhooks import ssrf

log = logging.getLogger("wasup.autoreply")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
PROVIDERS = frozenset({"openai"})
RATE_PERIOD = 60.0  # seconds: the rate cap is "per chat per minute"
MAX_PAUSE_SECONDS = 86400.0
MAX_REPLY_CHARS = 4096  # a longer provider answer is cut here
MAX_RESPONSE_BYTES = 1 << 20  # a provider response body larger than this is an error
MAX_HISTORY_CHARS = 16000  # older turns are dropped first beyond this much history text

OUTCOMES = (
    "replied",
    "ignored_group",
    "ignored_broadcast",
    "ignored_own",
    "ignored_other",
    "ignored_stale",
    "disabled",
    "rate_limited",
    "paused",
    "busy",
    "provider_error",
    "provider_timeout",
    "send_failed",
    "internal_error",
)

AUTOREPLY_TOTAL = Counter(
    "wasup_autoreply_total",
    "Incoming messages considered by auto-reply, by outcome",
    ["outcome"],
)


# --------------------------------------------------------------------------------------------
# Settings


@attrs.frozen
class AiSettings:
    """A device's AI settings (the ``"ai"`` settings kind), in their validated form.

    ``api_key`` is kept out of ``repr`` and out of :meth:`public`; it leaves this object only
    in :meth:`to_stored` (the settings table) and in the provider request's ``Authorization``
    header.
    """

    enabled: bool = False
    provider: str = "openai"
    model: str = DEFAULT_MODEL
    auto_reply: bool = False
    system_prompt: str = ""
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = attrs.field(default=None, repr=False)
    max_replies_per_minute: int = 5
    operator_pause_seconds: float = 600.0
    history_limit: int = 10
    timeout_seconds: float = 30.0
    max_tokens: int | None = None
    temperature: float | None = None
    #: The base URL was set by a device key, not the operator: the provider is then reached
    #: only through the SSRF guard (see ``supervisor.webhooks.ssrf``). Not part of the API.
    guarded: bool = False

    @property
    def active(self) -> bool:
        """True when incoming messages should be answered."""
        return self.enabled and self.auto_reply

    @classmethod
    def from_stored(cls, value: Mapping[str, Any] | None) -> AiSettings:
        """Settings from the stored dict (``None``: the defaults, disabled).

        Error handling: a stored value that no longer validates yields the defaults (disabled)
        and a warning, so a bad row switches auto-reply off instead of breaking it.
        """
        if not value:
            return cls()
        fields = dict(value)
        guarded = fields.pop("guarded", False) is True
        try:
            return attrs.evolve(
                apply_update(cls(), fields), guarded=guarded
            )
        except InvalidRequest as exc:
            log.warning("stored ai settings are invalid (%s), auto-reply is off", exc)
            return cls()

    def to_stored(self) -> dict[str, Any]:
        """The dict stored in the settings table (API field names, ``apiKey`` included)."""
        out = self.public()
        del out["apiKeySet"]
        out["apiKey"] = self.api_key
        out["guarded"] = self.guarded
        return out

    def public(self) -> dict[str, Any]:
        """What the API shows: every field except the key, plus ``apiKeySet``."""
        return {
            "enabled": self.enabled,
            "provider": self.provider,
            "model": self.model,
            "autoReply": self.auto_reply,
            "systemPrompt": self.system_prompt,
            "baseUrl": self.base_url,
            "apiKeySet": self.api_key is not None,
            "maxRepliesPerMinute": self.max_replies_per_minute,
            "operatorPauseSeconds": self.operator_pause_seconds,
            "historyLimit": self.history_limit,
            "timeoutSeconds": self.timeout_seconds,
            "maxTokens": self.max_tokens,
            "temperature": self.temperature,
        }


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HEADER_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{field}: must be true or false", field)
    return value


def _text(field: str, value: Any, *, max_len: int, min_len: int = 0) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be a string", field)
    if len(value) < min_len:
        raise InvalidRequest(f"{field}: must not be empty", field)
    if len(value) > max_len:
        raise InvalidRequest(f"{field}: must be at most {max_len} characters", field)
    if _CONTROL.search(value):
        raise InvalidRequest(f"{field}: must not contain control characters", field)
    return value


def _number(field: str, value: Any, lo: float, hi: float, *, integer: bool) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{field}: must be {kind}", field)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidRequest(f"{field}: must be {kind}", field)
    if integer:
        if not number.is_integer():  # JSON has one number type: 5.0 is the integer 5
            raise InvalidRequest(f"{field}: must be {kind}", field)
        value = int(value)
    if not lo <= number <= hi:
        raise InvalidRequest(f"{field}: must be between {lo:g} and {hi:g}", field)
    return value


def _provider(value: Any) -> str:
    if not isinstance(value, str) or value not in PROVIDERS:
        allowed = ", ".join(sorted(PROVIDERS))
        raise InvalidRequest(f"provider: must be one of {allowed}", "provider")
    return str(value)


_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
#: What ``baseUrl`` may look like (docs/openapi.yaml has the same pattern): ASCII only (an
#: IDN host in its punycode form), a host name or IPv4 address (no IPv6 literal: use a name),
#: no credentials, no fragment.
BASE_URL_PATTERN = (
    r"^https?://[A-Za-z0-9.-]+(?::" + _PORT + r")?"
    r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?"
    r"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?$"
)
_BASE_URL_RE = re.compile(BASE_URL_PATTERN)


def _base_url(value: Any) -> str:
    text = _text("baseUrl", value, min_len=1, max_len=2048)
    if _BASE_URL_RE.match(text):
        return text
    if "@" in text.split("//", 1)[-1].split("/", 1)[0]:
        raise InvalidRequest("baseUrl: must not contain credentials (use apiKey)", "baseUrl")
    raise InvalidRequest("baseUrl: must be an http or https url", "baseUrl")


def _api_key(value: Any) -> str:
    # never echo the value in the message
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise InvalidRequest("apiKey: must be a non-empty string", "apiKey")
    if _HEADER_UNSAFE.search(value):
        raise InvalidRequest("apiKey: must not contain spaces or control characters", "apiKey")
    return value


#: API field -> (attribute, validator); ``null`` always means the default
_FIELDS: dict[str, tuple[str, Any]] = {
    "enabled": ("enabled", lambda v: _bool("enabled", v)),
    "provider": ("provider", _provider),
    "model": ("model", lambda v: _text("model", v, min_len=1, max_len=200)),
    "autoReply": ("auto_reply", lambda v: _bool("autoReply", v)),
    "systemPrompt": ("system_prompt", lambda v: _text("systemPrompt", v, max_len=8000)),
    "baseUrl": ("base_url", _base_url),
    "apiKey": ("api_key", _api_key),
    "maxRepliesPerMinute": (
        "max_replies_per_minute",
        lambda v: _number("maxRepliesPerMinute", v, 1, 60, integer=True),
    ),
    "operatorPauseSeconds": (
        "operator_pause_seconds",
        lambda v: _number("operatorPauseSeconds", v, 0, MAX_PAUSE_SECONDS, integer=False),
    ),
    "historyLimit": (
        "history_limit",
        lambda v: _number("historyLimit", v, 0, 100, integer=True),
    ),
    "timeoutSeconds": (
        "timeout_seconds",
        lambda v: _number("timeoutSeconds", v, 1, 300, integer=False),
    ),
    "maxTokens": ("max_tokens", lambda v: _number("maxTokens", v, 1, 32768, integer=True)),
    "temperature": (
        "temperature",
        lambda v: _number("temperature", v, 0, 2, integer=False),
    ),
}
FIELDS = frozenset(_FIELDS)


def apply_update(current: AiSettings, body: Any) -> AiSettings:
    """Apply a ``PUT /settings/ai`` body to the current settings and return the new ones.

    Fields that are absent keep their current value (so switching ``enabled`` off does not
    forget the key); ``null`` resets a field to its default (``"apiKey": null`` removes the
    key). There are no rules across fields: every field has a usable default (the model
    included), so a body is valid or not whatever is stored.

    Error handling: raises :class:`InvalidRequest` naming the first wrong field (unknown
    fields included); the message never contains the API key.
    """
    if not isinstance(body, Mapping):
        raise InvalidRequest("body: must be a JSON object", "body")
    for name in body:
        if name not in _FIELDS:
            raise InvalidRequest(f"{str(name)[:64]}: unknown field", str(name)[:64])
    defaults = AiSettings()
    changes: dict[str, Any] = {}
    for name, value in body.items():
        attr, validate = _FIELDS[name]
        changes[attr] = getattr(defaults, attr) if value is None else validate(value)
    return attrs.evolve(current, **changes)


# --------------------------------------------------------------------------------------------
# Pure parts: chats, rate window, pause book, prompt


def chat_kind(jid: str) -> str:
    """``"direct"``, ``"group"``, ``"broadcast"`` or ``"other"`` (channels, unknown servers).

    A bare phone number counts as direct.
    """
    jid = jid.strip().lower()
    if "@" not in jid:
        return "direct" if any(c.isdigit() for c in jid) else "other"
    server = jid.rsplit("@", 1)[1]
    if server in ("s.whatsapp.net", "c.us", "lid"):
        return "direct"
    if server == "g.us":
        return "group"
    if server == "broadcast":
        return "broadcast"
    return "other"


def chat_key(jid: str) -> str:
    """A canonical form of a chat address, so that ``+1 234``, ``1234@c.us`` and
    ``1234:7@s.whatsapp.net`` all name the same chat."""
    jid = jid.strip().lower()
    if "@" not in jid:
        digits = "".join(c for c in jid if c.isdigit())
        return f"{digits}@s.whatsapp.net"
    user, server = jid.rsplit("@", 1)
    user = user.split(":", 1)[0]
    if server in ("s.whatsapp.net", "c.us"):
        user = user.split(".", 1)[0]
        server = "s.whatsapp.net"
    return f"{user}@{server}"


@attrs.define(eq=False)
class SlidingWindow:
    """At most ``limit`` acquisitions in any ``period`` seconds (times from the caller)."""

    period: float = RATE_PERIOD
    _times: collections.deque[float] = attrs.field(factory=collections.deque)

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()

    def try_acquire(self, now: float, limit: int) -> bool:
        """Take a slot and return True, or return False when ``limit`` are taken."""
        self._expire(now)
        if len(self._times) >= limit:
            return False
        self._times.append(now)
        return True

    def next_free(self, now: float, limit: int) -> float:
        """When the next slot frees up (``now`` if one is free)."""
        self._expire(now)
        if len(self._times) < limit:
            return now
        return self._times[len(self._times) - limit] + self.period

    def idle(self, now: float) -> bool:
        self._expire(now)
        return not self._times


@attrs.define(eq=False)
class PauseBook:
    """When an operator last wrote to each chat; a chat is paused for a while after that."""

    _last: dict[tuple[int, str], float] = attrs.field(factory=dict)

    def operator_sent(self, device_id: int, chat: str, now: float) -> None:
        self._last[(device_id, chat_key(chat))] = now

    def paused_until(self, device_id: int, chat: str, pause: float) -> float | None:
        at = self._last.get((device_id, chat_key(chat)))
        return None if at is None else at + pause

    def is_paused(self, device_id: int, chat: str, now: float, pause: float) -> bool:
        until = self.paused_until(device_id, chat, pause)
        return until is not None and now < until

    def prune(self, now: float, max_pause: float = MAX_PAUSE_SECONDS) -> None:
        for key in [k for k, at in self._last.items() if at + max_pause <= now]:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


@attrs.frozen
class Turn:
    """One message of a conversation, as the prompt sees it."""

    role: str  # "user" | "assistant"
    text: str
    message_id: str | None = None


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return None


def turns_from_history(rows: Iterable[Any]) -> list[Turn]:
    """Turn message rows (``storage.models.MessageRow`` or dicts, oldest first) into turns:
    direction ``in`` is the user, ``out`` the assistant; rows without text are skipped."""
    turns = []
    for row in rows:
        text = _get(row, "text")
        direction = _get(row, "direction")
        if not isinstance(text, str) or not text.strip() or direction not in ("in", "out"):
            continue
        role = "user" if direction == "in" else "assistant"
        mid = _get(row, "message_id", "messageId")
        turns.append(Turn(role, text, mid if isinstance(mid, str) else None))
    return turns


def build_messages(
    system_prompt: str,
    history: Sequence[Turn],
    text: str,
    message_id: str | None = None,
    *,
    history_limit: int = 10,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> list[dict[str, str]]:
    """The chat-completions ``messages``: the system prompt (when set), then up to
    ``history_limit`` earlier turns of the chat (oldest first, the newest kept when the text
    budget runs out), then the incoming message as the last user turn.

    If storage already has the incoming message (found by id), it and everything after it
    are left out of the history.
    """
    ids = [t.message_id for t in history]
    if message_id is not None and message_id in ids:
        # what arrived after the incoming message is not part of the question being answered
        earlier = list(history[: ids.index(message_id)])
    else:
        earlier = list(history)
    if message_id is None and earlier and earlier[-1].role == "user" and earlier[-1].text == text:
        earlier.pop()  # storage already has the incoming message, no id to match it by
    earlier = earlier[-history_limit:] if history_limit > 0 else []
    kept: list[Turn] = []
    budget = max_history_chars
    for turn in reversed(earlier):
        budget -= len(turn.text)
        if budget < 0:
            break
        kept.append(turn)
    kept.reverse()
    messages = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": t.role, "content": t.text} for t in kept)
    messages.append({"role": "user", "content": text})
    return messages


# --------------------------------------------------------------------------------------------
# Provider


class ProviderError(Exception):
    """The provider did not produce a usable reply. The message is safe to log."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class ProviderTimeout(ProviderError):
    """The provider did not answer within the settings' ``timeoutSeconds``."""


def completions_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return base + "/chat/completions"


async def chat_completion(
    client: httpx.AsyncClient, settings: AiSettings, messages: list[dict[str, str]]
) -> str:
    """POST the conversation to ``{baseUrl}/chat/completions`` and return the reply text.

    The whole exchange, body included, runs under one deadline of ``timeout_seconds``.
    Redirects are not followed.

    Error handling: raises :class:`ProviderTimeout` on the deadline or an httpx timeout, and
    :class:`ProviderError` for a refused connection, a non-2xx status, a body over 1 MiB, bad
    JSON or a response without text content. No message contains the API key or the URL.
    """
    body: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    headers = {"Accept": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    with trio.move_on_after(settings.timeout_seconds) as scope:
        try:
            async with client.stream(
                "POST",
                completions_url(settings.base_url),
                json=body,
                headers=headers,
                timeout=settings.timeout_seconds,
                follow_redirects=False,
            ) as response:
                status = response.status_code
                chunks = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise ProviderError("response too large", status)
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise ProviderTimeout("timed out") from None
        except httpx.HTTPError as exc:
            # httpx messages may carry the url; the exception type is enough to act on
            raise ProviderError(f"request failed ({type(exc).__name__})") from None
    if scope.cancelled_caught:
        raise ProviderTimeout("timed out")
    if not 200 <= status < 300:
        raise ProviderError(f"status {status}", status)
    try:
        data = json.loads(b"".join(chunks))
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProviderError("malformed response", status) from None
    if not isinstance(content, str) or not content.strip():
        raise ProviderError("empty reply", status)
    return content.strip()[:MAX_REPLY_CHARS]


# --------------------------------------------------------------------------------------------
# The service


class SupervisorLike(Protocol):
    """The part of ``DeviceSupervisor`` auto-reply uses."""

    @property
    def bus(self) -> Any: ...

    @property
    def config(self) -> Config: ...

    def get(self, ref: str) -> Any: ...

    async def get_settings(self, ref: str, kind: str) -> Any: ...

    async def send_message(self, ref: str, to: str, text: str, origin: str = ...) -> Any: ...

    async def recent_messages(self, device_id: int, chat: str, limit: int) -> Any: ...


if TYPE_CHECKING:
    from supervisor.devices import Devices

    def _conforms(sup: Devices) -> SupervisorLike:  # mypy checks the protocol
        return sup


@attrs.frozen
class AutoReplyStatistics:
    """Counters since the service was made (``in_flight``/``pending``: right now)."""

    considered: int
    replied: int
    ignored_group: int
    ignored_broadcast: int
    ignored_own: int
    ignored_other: int
    ignored_stale: int
    disabled: int
    rate_limited: int
    paused: int
    busy: int
    provider_error: int
    provider_timeout: int
    send_failed: int
    internal_error: int
    resubscribes: int
    pending: int
    in_flight: int


_EVENT_TYPES = frozenset({"message_received", "message_sent"})
_QUEUE_SIZE = 4096


@attrs.define(eq=False)
class AutoReply:
    """Answers incoming messages for devices whose AI settings ask for it (see module doc).

    ``max_concurrent`` provider calls in total, ``per_device`` per device; at most
    ``max_pending`` replies waiting or running before new messages are dropped as ``busy``.
    Messages older than ``max_message_age`` seconds (offline backlog after a reconnect) are not
    answered.
    """

    sup: SupervisorLike
    max_concurrent: int = 16
    per_device: int = 2
    max_pending: int = 256
    max_message_age: float = 600.0
    trust_env: bool = True
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _device_limiters: dict[int, trio.CapacityLimiter] = attrs.field(init=False, factory=dict)
    _windows: dict[tuple[int, str], SlidingWindow] = attrs.field(init=False, factory=dict)
    _pauses: PauseBook = attrs.field(init=False, factory=PauseBook)
    _counts: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _pending: int = attrs.field(init=False, default=0)
    _in_flight: int = attrs.field(init=False, default=0)
    _client: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _guarded_client: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _idle: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.max_concurrent)
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no reply is waiting or under way (messages still queued on the bus
        subscription are not counted)."""
        await self._idle.wait()

    # -- observation -------------------------------------------------------------------------

    def statistics(self) -> AutoReplyStatistics:
        c = self._counts
        return AutoReplyStatistics(
            considered=c["considered"],
            **{name: c[name] for name in OUTCOMES},
            resubscribes=c["resubscribes"],
            pending=self._pending,
            in_flight=self._in_flight,
        )

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        if outcome in OUTCOMES:
            AUTOREPLY_TOTAL.labels(outcome).inc()

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe to the bus and answer messages until cancelled.

        ``task_status.started()`` is called once the first subscription is active, so a message
        published after ``await nursery.start(auto.run)`` is seen.

        Error handling: a subscription dropped for being slow is renewed (with a warning); the
        events in between are missed. Failures of single replies are counted, never raised.
        If the bus ends the subscription for another reason (shutdown), run waits for the
        replies under way and returns.
        """
        allow = self.sup.config.allow_networks
        async with httpx.AsyncClient(
            follow_redirects=False,
            trust_env=self.trust_env,
            limits=httpx.Limits(max_connections=self.max_concurrent, max_keepalive_connections=8),
        ) as client, ssrf.open_client(allow, max_connections=self.max_concurrent) as guarded:
            self._client, self._guarded_client = client, guarded
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._prune_loop)
                    await self._consume(task_status)
                    nursery.cancel_scope.cancel()  # only the prune loop is left
            finally:
                self._client = self._guarded_client = None

    async def _consume(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        async with trio.open_nursery() as replies:
            while True:
                # Every device's messages come through this one subscriber: give it room for
                # bursts (it only hands each event to a task, so it drains fast).
                subscription = self.sup.bus.subscribe(
                    device_ids=None, types=_EVENT_TYPES, maxsize=_QUEUE_SIZE
                )
                async with subscription:
                    if not started:
                        task_status.started()
                        started = True
                    async for event in subscription:
                        self._dispatch(event, replies)
                if not getattr(subscription, "overflowed", False):
                    log.info("event bus closed, auto-reply stops taking messages")
                    return
                self._count("resubscribes")
                log.warning("auto-reply fell behind the event bus; resubscribing (events missed)")

    async def _prune_loop(self) -> None:
        while True:
            await trio.sleep(RATE_PERIOD)
            self.prune()

    def prune(self) -> None:
        """Forget idle rate windows, expired pauses and unused per-device limiters."""
        now = trio.current_time()
        for key in [k for k, w in self._windows.items() if w.idle(now)]:
            del self._windows[key]
        self._pauses.prune(now)
        for device_id in [
            d
            for d, lim in self._device_limiters.items()
            if lim.borrowed_tokens == 0 and lim.statistics().tasks_waiting == 0
        ]:
            del self._device_limiters[device_id]

    # -- per event (synchronous: never blocks the subscription) ------------------------------

    def _dispatch(self, event: Any, nursery: trio.Nursery) -> None:
        data = event.data if isinstance(event.data, Mapping) else {}
        if event.type == "message_sent":
            to = data.get("to")
            if data.get("origin") == "api" and isinstance(to, str):
                self._pauses.operator_sent(event.device_id, to, trio.current_time())
            return
        if event.type != "message_received":
            return
        self._count("considered")
        outcome = self._screen(data)
        if outcome is not None:
            self._count(outcome)
            return
        if self._pending >= self.max_pending:
            self._count("busy")
            log.warning("auto-reply busy, dropping message for device %s", event.session_id)
            return
        chat: str = data.get("chat") or data["from"]  # _screen checked it is a string
        sender = data.get("from")
        message_id = data.get("messageId")
        if self._pending == 0:
            self._idle = trio.Event()
        self._pending += 1
        nursery.start_soon(
            self._reply_task,
            event.device_id,
            event.session_id,
            chat,
            sender if isinstance(sender, str) else None,
            str(data["text"]),
            message_id if isinstance(message_id, str) else None,
        )

    def _screen(self, data: Mapping[str, Any]) -> str | None:
        """Why a received message is not answered, or None if it may be (settings aside)."""
        chat = data.get("chat") or data.get("from")
        text = data.get("text")
        if not isinstance(chat, str) or not chat.strip():
            return "ignored_other"
        if data.get("fromMe") is True:
            return "ignored_own"
        kind = chat_kind(chat)
        sender = data.get("from")
        if isinstance(sender, str) and chat_kind(sender) == "broadcast":
            kind = "broadcast"
        if data.get("isGroup") is True:
            kind = "group"
        if data.get("isBroadcast") is True:
            kind = "broadcast"
        if kind == "group":
            return "ignored_group"
        if kind == "broadcast":
            return "ignored_broadcast"
        if kind != "direct" or not isinstance(text, str) or not text.strip():
            return "ignored_other"
        age = _age(data.get("timestamp"))
        if age is not None and age > self.max_message_age:
            return "ignored_stale"
        return None

    # -- per reply (own task) ----------------------------------------------------------------

    async def _reply_task(
        self,
        device_id: int,
        session_id: str,
        chat: str,
        sender: str | None,
        text: str,
        message_id: str | None,
    ) -> None:
        try:
            outcome = await self._reply(device_id, session_id, chat, sender, text, message_id)
        except Exception:
            outcome = "internal_error"
            log.exception("auto-reply failed for device %s", session_id)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()
        self._count(outcome)

    async def _reply(
        self,
        device_id: int,
        session_id: str,
        chat: str,
        sender: str | None,
        text: str,
        message_id: str | None,
    ) -> str:
        try:
            stored = await self.sup.get_settings(session_id, "ai")
            device = self.sup.get(session_id)
        except DeviceNotFound:
            return "disabled"  # deleted meanwhile
        settings = AiSettings.from_stored(stored)
        if not settings.active:
            return "disabled"
        own = _get(device, "jid")
        if isinstance(own, str) and own and sender and chat_key(sender) == chat_key(own):
            return "ignored_own"

        now = trio.current_time()
        if self._pauses.is_paused(device_id, chat, now, settings.operator_pause_seconds):
            return "paused"
        key = (device_id, chat_key(chat))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow()
        if not window.try_acquire(now, settings.max_replies_per_minute):
            log.info(
                "auto-reply rate cap reached for device %s chat %s (%d per minute)",
                session_id,
                chat,
                settings.max_replies_per_minute,
            )
            return "rate_limited"

        device_limiter = self._device_limiters.get(device_id)
        if device_limiter is None:
            device_limiter = self._device_limiters[device_id] = trio.CapacityLimiter(
                self.per_device
            )
        async with device_limiter, self._limiter:
            self._in_flight += 1
            try:
                history = await self._history(device_id, chat, settings.history_limit)
                messages = build_messages(
                    settings.system_prompt,
                    history,
                    text,
                    message_id,
                    history_limit=settings.history_limit,
                )
                client = self._guarded_client if settings.guarded else self._client
                assert client is not None, "AutoReply.run is not running"
                reply = await chat_completion(client, settings, messages)
            except ProviderTimeout:
                log.warning(
                    "ai provider timed out after %gs for device %s (model %s)",
                    settings.timeout_seconds,
                    session_id,
                    settings.model,
                )
                return "provider_timeout"
            except ProviderError as exc:
                log.warning(
                    "ai provider failed for device %s (model %s): %s",
                    session_id,
                    settings.model,
                    exc.reason,
                )
                return "provider_error"
            finally:
                self._in_flight -= 1

        if self._pauses.is_paused(
            device_id, chat, trio.current_time(), settings.operator_pause_seconds
        ):
            return "paused"  # an operator stepped in while the provider was thinking
        try:
            await self.sup.send_message(session_id, to=chat, text=reply, origin="autoreply")
        except WasupError as exc:
            log.warning(
                "auto-reply could not be sent for device %s: %s (%s)", session_id, exc, type(exc).__name__
            )
            return "send_failed"
        log.info("auto-replied for device %s in chat %s", session_id, chat)
        return "replied"

    async def _history(self, device_id: int, chat: str, limit: int) -> list[Turn]:
        """The chat's recent turns, oldest first (one more than ``limit``: the incoming
        message may be among them)."""
        if limit <= 0:
            return []
        return turns_from_history(await self.sup.recent_messages(device_id, chat, limit + 1))


_services: weakref.WeakKeyDictionary[Any, AutoReply] = weakref.WeakKeyDictionary()


async def run(
    sup: SupervisorLike, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run auto-reply for ``sup`` until cancelled (``api.server.serve`` starts this next to
    Hypercorn). The running service is found again with :func:`service_for`."""
    service = AutoReply(sup)
    _services[sup] = service
    try:
        await service.run(task_status=task_status)
    finally:
        if _services.get(sup) is service:
            del _services[sup]


def service_for(sup: Any) -> AutoReply | None:
    """The :class:`AutoReply` that :func:`run` is running for ``sup``, if any."""
    return _services.get(sup)


def _age(timestamp: Any) -> float | None:
    """Seconds since a message timestamp (epoch seconds or ISO string), None if unknown."""
    if isinstance(timestamp, bool):
        return None
    if isinstance(timestamp, int | float):
        epoch = float(timestamp)
        if epoch > 1e12:  # milliseconds
            epoch /= 1000.0
    elif isinstance(timestamp, str) and timestamp:
        try:
            epoch = clock.parse_iso(timestamp)
        except ValueError:
            return None
    else:
        return None
    if epoch <= 0:
        return None
    return clock.now_epoch() - epoch
