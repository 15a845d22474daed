"""The auto-reply service: answer one-to-one text messages through an OpenAI-compatible provider.

Synopsis::

    auto = AutoReply(sup)                  # knobs from sup.config.autoreply
    await nursery.start(auto.run)          # subscribed to the event bus once this returns
    auto.settings_changed(device_id, new)  # the API stored new AI settings for a device
    auto.statistics()                      # AutoReplyStatistics(replied=..., provider_error=...)

A device opts in with its AI settings (``PUT /devices/{id}/settings/ai``, stored under the
``"ai"`` settings kind, see :class:`~supervisor.autoreply.settings.AiSettings`): when they are
``enabled`` with ``autoReply``, every incoming text message in a one-to-one chat gets a reply
generated from the system prompt and the recent conversation of that chat, sent through the
device with ``origin="autoreply"``. The service keeps each device's settings in memory, read
from storage the first time a device's message arrives and replaced by
:meth:`AutoReply.settings_changed` when new ones are stored (never re-validated per message).

Guard rails (:mod:`supervisor.autoreply.guards`), all checked before the provider is called:

- groups, broadcasts (``status@broadcast``, broadcast lists), channels, messages without text,
  the device's own messages and messages older than ``max_message_age`` are ignored;
- at most ``maxRepliesPerMinute`` replies per chat in any sliding 60 s window (a failed
  provider call counts too, so a failing provider is not hammered);
- a message an operator sends through the API to a chat (a ``message_sent`` event with
  ``origin == "api"``) pauses auto-reply in that chat for ``operatorPauseSeconds``; the pause
  is checked again after the provider answered, so a human who stepped in meanwhile wins.

Error handling: provider errors (non-2xx, bad JSON, no content), timeouts and send failures
are logged (never with the API key) and counted in :meth:`AutoReply.statistics` and the
``wasup_autoreply_total`` Prometheus counter; they never end the service.

Resource handling: each reply runs in its own task, bounded per device (``per_device``) and
in total (``max_concurrent``) by :class:`trio.CapacityLimiter`s, so a slow provider for one
device does not hold up another; beyond ``max_pending`` waiting replies new messages are
dropped (counted as ``busy``) rather than queued without bound. The bus subscription holds at
most ``queue_size`` events; a subscription the bus drops for being slow is logged and renewed
(events in the gap are missed, by design).

Time is read only through ``trio.current_time()`` (rate windows, pauses) and
:mod:`common.clock` (message age, in :func:`~supervisor.autoreply.guards.screen`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Protocol

import attrs
import httpx
import trio
from prometheus_client import Counter

from storage.errors import StorageUnavailable
from storage.models import MessageRow
from supervisor.autoreply.guards import RATE_PERIOD, PauseBook, RateBook, parse_address, screen
from supervisor.autoreply.prompt import Turn, build_messages, turns_from_history
from supervisor.autoreply.provider import ProviderError, ProviderTimeout, chat_completion
from supervisor.autoreply.settings import AiSettings
from supervisor.config import Config
from supervisor.errors import DeviceNotFound, WasupError
from supervisor.events import Event, EventBus
from supervisor.jid import Jid
from supervisor.payloads import MessageReceived, MessageSent
from supervisor.webhooks import ssrf

log = logging.getLogger("wasup.autoreply")

#: The settings kind auto-reply reads.
AI_KIND = "ai"

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


class Device(Protocol):
    """What auto-reply reads of a device row."""

    @property
    def jid(self) -> str | None: ...


class DeviceAccess(Protocol):
    """The part of the device facade auto-reply uses."""

    @property
    def bus(self) -> EventBus: ...

    @property
    def config(self) -> Config: ...

    def get(self, ref: str) -> Device: ...

    async def get_settings(self, ref: str, kind: str) -> Mapping[str, object] | None: ...

    async def send_message(self, ref: str, to: str, text: str, origin: str = ...) -> object: ...

    async def recent_messages(self, device_id: int, chat: str, limit: int) -> list[MessageRow]: ...


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


@attrs.frozen
class Incoming:
    """A received message that may be answered: ``chat`` as the event named it (the reply goes
    there), ``jid`` the same chat parsed."""

    device_id: int
    session_id: str
    chat: str
    jid: Jid
    sender: Jid | None
    text: str
    message_id: str | None


_EVENT_TYPES = frozenset({MessageReceived.type, MessageSent.type})


@attrs.define(eq=False)
class AutoReply:
    """Answers incoming messages for devices whose AI settings ask for it (see module doc).

    The knobs come from ``sup.config.autoreply``: ``max_concurrent`` provider calls in total,
    ``per_device`` per device; at most ``max_pending`` replies waiting or running before new
    messages are dropped as ``busy``; messages older than ``max_message_age`` seconds (offline
    backlog after a reconnect) are not answered. ``trust_env``: whether the provider client
    honours proxy variables of the environment.
    """

    sup: DeviceAccess
    trust_env: bool = attrs.field(default=True, kw_only=True)
    #: Rate windows per chat (see :mod:`supervisor.autoreply.guards`).
    rates: RateBook = attrs.field(init=False, factory=RateBook)
    #: Operator pauses per chat.
    pauses: PauseBook = attrs.field(init=False, factory=PauseBook)
    _settings: dict[int, AiSettings] = attrs.field(init=False, factory=dict)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _device_limiters: dict[int, trio.CapacityLimiter] = attrs.field(init=False, factory=dict)
    _counts: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _pending: int = attrs.field(init=False, default=0)
    _in_flight: int = attrs.field(init=False, default=0)
    _client: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _guarded_client: httpx.AsyncClient | None = attrs.field(init=False, default=None)
    _idle: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.sup.config.autoreply.max_concurrent)
        self._idle.set()

    def settings_changed(self, device_id: int, settings: AiSettings) -> None:
        """The device's AI settings were stored: use ``settings`` from the next message on."""
        self._settings[device_id] = settings

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

        Resource handling: the two provider clients (direct, and through the SSRF guard) live
        as long as this call.
        """
        config = self.sup.config
        connections = config.autoreply.max_concurrent
        async with httpx.AsyncClient(
            follow_redirects=False,
            trust_env=self.trust_env,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=8),
        ) as client, ssrf.open_client(
            config.allow_networks, max_connections=connections
        ) as guarded:
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
                    device_ids=None,
                    types=_EVENT_TYPES,
                    maxsize=self.sup.config.autoreply.queue_size,
                )
                async with subscription:
                    if not started:
                        task_status.started()
                        started = True
                    async for event in subscription:
                        self._dispatch(event, replies)
                if not subscription.overflowed:
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
        self.rates.prune(now)
        self.pauses.prune(now)
        for device_id in [
            d
            for d, lim in self._device_limiters.items()
            if lim.borrowed_tokens == 0 and lim.statistics().tasks_waiting == 0
        ]:
            del self._device_limiters[device_id]

    def tracked_devices(self) -> int:
        """Devices with a per-device limiter right now (replies under way or waiting)."""
        return len(self._device_limiters)

    # -- per event (synchronous: never blocks the subscription) ------------------------------

    def _dispatch(self, event: Event, nursery: trio.Nursery) -> None:
        match event.data:
            case MessageSent(to=to, origin="api"):
                chat = parse_address(to)
                if chat is not None:
                    self.pauses.operator_sent(event.device_id, chat, trio.current_time())
            case MessageReceived() as received:
                self._consider(event, received, nursery)

    def _consider(self, event: Event, received: MessageReceived, nursery: trio.Nursery) -> None:
        self._count("considered")
        jid = screen(received, self.sup.config.autoreply.max_message_age)
        if isinstance(jid, str):
            self._count(jid)
            return
        if self._pending >= self.sup.config.autoreply.max_pending:
            self._count("busy")
            log.warning("auto-reply busy, dropping message for device %s", event.session_id)
            return
        incoming = Incoming(
            device_id=event.device_id,
            session_id=event.session_id,
            chat=received.chat or received.sender,
            jid=jid,
            sender=parse_address(received.sender),
            text=received.text,
            message_id=received.message_id or None,
        )
        if self._pending == 0:
            self._idle = trio.Event()
        self._pending += 1
        nursery.start_soon(self._reply_task, incoming)

    # -- per reply (own task) ----------------------------------------------------------------

    async def _reply_task(self, incoming: Incoming) -> None:
        try:
            outcome = await self._reply(incoming)
        except Exception:
            outcome = "internal_error"
            log.exception("auto-reply failed for device %s", incoming.session_id)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()
        self._count(outcome)

    async def _settings_of(self, device_id: int, session_id: str) -> AiSettings:
        """The device's settings: from memory, else read from storage once.

        Raises: DeviceNotFound if the device is gone.
        """
        settings = self._settings.get(device_id)
        if settings is None:
            loaded = AiSettings.from_stored(await self.sup.get_settings(session_id, AI_KIND))
            # settings_changed() may have run while storage was read: the newer value wins.
            settings = self._settings.setdefault(device_id, loaded)
        return settings

    async def _reply(self, incoming: Incoming) -> str:
        device_id, session_id, chat = incoming.device_id, incoming.session_id, incoming.chat
        try:
            settings = await self._settings_of(device_id, session_id)
            device = self.sup.get(session_id)
        except DeviceNotFound:
            self._settings.pop(device_id, None)  # deleted: ids are never handed out again
            return "disabled"
        if not settings.active:
            return "disabled"
        own = parse_address(device.jid)
        if own is not None and incoming.sender == own:
            return "ignored_own"

        now = trio.current_time()
        if self.pauses.is_paused(device_id, incoming.jid, now, settings.operator_pause_seconds):
            return "paused"
        if not self.rates.try_acquire(
            device_id, incoming.jid, now, settings.max_replies_per_minute
        ):
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
                self.sup.config.autoreply.per_device
            )
        async with device_limiter, self._limiter:
            self._in_flight += 1
            try:
                history = await self._history(device_id, chat, settings.history_limit)
                messages = build_messages(
                    settings.system_prompt,
                    history,
                    incoming.text,
                    incoming.message_id,
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

        if self.pauses.is_paused(
            device_id, incoming.jid, trio.current_time(), settings.operator_pause_seconds
        ):
            return "paused"  # an operator stepped in while the provider was thinking
        try:
            await self.sup.send_message(session_id, to=chat, text=reply, origin="autoreply")
        except (WasupError, StorageUnavailable) as exc:
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
