"""The webhook dispatcher: the actor that drains the persisted outbox.

Synopsis::

    dispatcher = WebhookDispatcher(sup.db, sup.config, bus=sup.bus)
    sup.outbox_listeners.append(dispatcher.notify)
    await nursery.start(dispatcher.run)

How it works: the outbox table (``storage.outbox``) is the only state. The loop claims the
rows that are due, delivers each in its own task (at most ``concurrency`` at once, a
``trio.CapacityLimiter``), records the attempt and the row's next state in one transaction,
then sleeps until the next row is due or :meth:`WebhookDispatcher.notify` says new rows were
committed. A row in flight is remembered in memory only: if the process dies, the row is
still due at the next start and is sent again (at-least-once; receivers deduplicate on
``webhook-id``, which is the same on every attempt).

In a cluster (``config.cluster``, PostgreSQL) every node runs a dispatcher over the one outbox.
A scan claims the rows it takes (``storage.outbox.Claim``: ``claimed_by``/``claimed_until`` in
the scan's transaction, with ``FOR UPDATE SKIP LOCKED``) for the attempt's timeout plus
:data:`CLAIM_MARGIN`, so two nodes never deliver a row at once; a node that dies mid-delivery
leaves claims that expire, and another node takes those rows again then; a node that stops
releases its claims at once. ``wasup_outbox`` notifications wake every node's dispatcher when
any node enqueues rows.

Outcome of one attempt (made by :func:`supervisor.webhooks.delivery.attempt`, judged by
:func:`classify`):

- 2xx: delivered.
- 410 Gone: the endpoint is disabled (its pending rows become ``disabled``), with a
  ``webhook_disabled`` event.
- anything else (other statuses, 3xx — redirects are never followed —, timeouts, refused or
  failed connections, a refused address): retried on :data:`SCHEDULE` (Svix's: immediately,
  5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; each delay with ±``jitter``), not before a
  ``Retry-After`` the endpoint sent; after the last attempt the row is ``failed``.
- an endpoint that has been failing without a single success for :data:`DISABLE_AFTER`
  (5 days) is disabled, with a ``webhook_disabled`` event.

Each endpoint's failure clock and its disabling are kept in its
:class:`~supervisor.webhooks.settings.WebhookSettings`, written in the attempt's transaction.

Time comes from Trio's clock only (:mod:`common.clock`), so tests run the whole schedule on
the MockClock.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
from collections.abc import Callable

import attrs
import httpx
import trio

import storage.outbox as outbox
from common import clock
from storage.errors import StorageUnavailable
from storage.interface import Repositories, Store
from storage.models import DeliveryTarget
from storage.pg import PgStore
from supervisor import event_log
from supervisor.config import Config
from supervisor.events import Event, EventBus
from supervisor.payloads import WebhookDisabled
from supervisor.webhooks import settings as webhook_settings
from supervisor.webhooks import ssrf
from supervisor.webhooks.delivery import AttemptResult, attempt

log = logging.getLogger("wasup.webhooks")

#: Delay before attempt n+1 after n failed attempts (seconds): Svix's schedule.
SCHEDULE: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: An endpoint failing this long with no success in between is disabled (seconds).
DISABLE_AFTER = 5 * 24 * 3600.0
#: How long a row whose attempt could not be recorded stays out of the scans (seconds).
ERROR_PAUSE = 30.0
DEFAULT_CONCURRENCY = 32
#: At most this many deliveries to one device's endpoint at once.
DEFAULT_PER_DEVICE = 8
#: Seconds a cluster node's claim on a row outlasts the attempt's timeout (time to record it).
CLAIM_MARGIN = 15.0
#: The notification channel of enqueued deliveries (cluster mode).
OUTBOX_CHANNEL = "wasup_outbox"


@attrs.frozen
class DispatcherStatistics:
    """``WebhookDispatcher.statistics()``: attempts made, by outcome, and rows in flight."""

    in_flight: int
    attempts: int
    delivered: int
    failed_attempts: int
    disabled_endpoints: int


def retry_delay(
    failed_attempts: int,
    *,
    retry_after: float | None = None,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float | None:
    """Delay before the next attempt after ``failed_attempts`` failures, or None when the
    schedule is exhausted. Jitter spreads the delay by ±``jitter`` of itself; a Retry-After
    makes it at least that long."""
    if failed_attempts >= len(SCHEDULE):
        return None
    delay = SCHEDULE[failed_attempts]
    if delay and jitter:
        delay *= 1.0 + (rng or random).uniform(-jitter, jitter)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def classify(result: AttemptResult) -> str:
    """``"delivered"``, ``"gone"`` (410: disable the endpoint) or ``"retry"``."""
    if result.ok:
        return "delivered"
    if result.status_code == 410:
        return "gone"
    return "retry"


def _host(url: str) -> str:
    """The host part of a URL, for logs (a query string can carry a token)."""
    try:
        return httpx.URL(url).host
    except Exception:
        return "?"


@attrs.define(eq=False)
class WebhookDispatcher:
    """Delivers the outbox. Start :meth:`run` in a nursery; call :meth:`notify` after a commit
    that wrote outbox rows.

    ``http_client_factory`` builds the ``httpx.AsyncClient`` (default: :func:`ssrf.open_client`
    with ``config.allow_networks``); tests pass one with a fake resolver. ``bus``: an
    ``EventBus`` for ``webhook_disabled`` events. ``timeout`` (per attempt), ``concurrency``
    (deliveries at once), ``per_device`` (at once to one device's endpoint) and ``jitter``
    default to ``config.webhooks``.
    """

    db: Store
    config: Config
    http_client_factory: Callable[[], httpx.AsyncClient] | None = attrs.field(
        default=None, kw_only=True
    )
    bus: EventBus | None = attrs.field(default=None, kw_only=True)
    #: Told, after each successful delivery, how long after its event it came (seconds).
    lag_observer: Callable[[float], None] | None = attrs.field(default=None, kw_only=True)
    timeout: float | None = attrs.field(default=None, kw_only=True)
    concurrency: int | None = attrs.field(default=None, kw_only=True)
    jitter: float | None = attrs.field(default=None, kw_only=True)
    per_device: int | None = attrs.field(default=None, kw_only=True)
    rng: random.Random = attrs.field(factory=random.Random, kw_only=True)
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)
    _in_flight: set[str] = attrs.field(factory=set, init=False)
    _busy: dict[int, int] = attrs.field(factory=dict, init=False)  # device -> rows in flight
    _attempts: int = attrs.field(default=0, init=False)
    _delivered: int = attrs.field(default=0, init=False)
    _failed: int = attrs.field(default=0, init=False)
    _disabled: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        knobs = self.config.webhooks
        if self.timeout is None:
            self.timeout = knobs.timeout
        if self.concurrency is None:
            self.concurrency = knobs.concurrency
        if self.jitter is None:
            self.jitter = knobs.jitter
        if self.per_device is None:
            self.per_device = knobs.endpoint_concurrency

    @property
    def claim(self) -> outbox.Claim | None:
        """This node's claim on the rows it takes (a cluster node), or None (one node)."""
        cluster = self.config.cluster
        if cluster is None or not isinstance(self.db, PgStore):
            return None
        assert self.timeout is not None
        return outbox.Claim(cluster.node_id, self.timeout + CLAIM_MARGIN)

    @property
    def allow_networks(self) -> tuple[ssrf.IPNetwork, ...]:
        return self.config.allow_networks

    def make_client(self) -> httpx.AsyncClient:
        if self.http_client_factory is not None:
            return self.http_client_factory()
        assert self.timeout is not None and self.concurrency is not None
        return ssrf.open_client(
            self.allow_networks, timeout=self.timeout, max_connections=self.concurrency
        )

    def notify(self) -> None:
        """New outbox rows were committed: look now. Sync, never blocks; safe before ``run``."""
        self._wake.set()

    def statistics(self) -> DispatcherStatistics:
        return DispatcherStatistics(
            in_flight=len(self._in_flight),
            attempts=self._attempts,
            delivered=self._delivered,
            failed_attempts=self._failed,
            disabled_endpoints=self._disabled,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled.

        Error handling: a failed delivery is recorded, never raised. A database error in the
        loop is logged and the loop tries again a second later (a storage outage is not logged
        here, and the loop tries again after its ``retry_after``); a delivery cancelled by
        shutdown leaves its row due, to be sent after the next start.
        """
        assert self.concurrency is not None
        try:
            await self._run(task_status)
        finally:
            claim = self.claim
            if claim is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self._release(claim)

    async def _release(self, claim: outbox.Claim) -> None:
        """Give up this node's claims (it stops): another node may take the rows at once."""
        try:
            released = await self.db.run(lambda r: r.outbox.release(claim))
        except Exception as exc:  # the claims expire by themselves
            log.warning("webhook claims not released (%s): they expire by themselves", exc)
            return
        if released:
            log.info("webhook deliveries released to the other nodes: %d", released)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.concurrency is not None
        limiter = trio.CapacityLimiter(self.concurrency)
        async with self.make_client() as client, trio.open_nursery() as nursery:
            if self.claim is not None and isinstance(self.db, PgStore):
                await nursery.start(self._listen, self.db)
            task_status.started()
            while True:
                # A fresh Event before looking, so a notify() during the scan is not lost.
                self._wake = trio.Event()
                free = self.concurrency - len(self._in_flight)
                now = clock.now_epoch()
                in_flight = set(self._in_flight)
                busy = dict(self._busy)
                try:
                    due, upcoming = await self.db.run(
                        functools.partial(
                            self._scan, now=now, free=free, in_flight=in_flight, busy=busy
                        )
                    )
                except StorageUnavailable as exc:
                    await trio.sleep(exc.retry_after)  # an outage: the database logs it, once
                    continue
                except Exception:
                    log.exception("webhook outbox scan failed; retrying in 1 s")
                    await trio.sleep(1.0)
                    continue
                for row in due:
                    self._in_flight.add(row.id)
                    self._busy[row.device_id] = self._busy.get(row.device_id, 0) + 1
                    nursery.start_soon(self._deliver, client, limiter, row)
                if len(due) < free and upcoming is None:
                    wait = math.inf
                elif len(due) < free and upcoming is not None:
                    wait = max(upcoming - clock.now_epoch(), 0.0)
                else:
                    # Every slot is busy: a finishing delivery wakes us.
                    wait = math.inf
                if due and wait == 0:
                    await trio.lowlevel.checkpoint()
                    continue
                if wait == 0:
                    # Due rows exist but every one of them is in flight.
                    wait = 1.0
                with trio.move_on_after(wait):
                    await self._wake.wait()

    async def _listen(self, db: PgStore, *, task_status: trio.TaskStatus[None]) -> None:
        """Look whenever any node enqueued rows (cluster mode)."""
        async with db.listen(OUTBOX_CHANNEL) as notes:
            task_status.started()
            async for _ in notes:
                self.notify()

    def _scan(
        self,
        repos: Repositories,
        *,
        now: float,
        free: int,
        in_flight: set[str],
        busy: dict[int, int],
    ) -> tuple[list[outbox.Due], float | None]:
        def target(device_id: int) -> DeliveryTarget | None:
            settings = webhook_settings.read(repos, device_id)
            return None if settings is None else settings.target(now)

        claim = self.claim
        due = repos.outbox.claim_due(
            now=now,
            limit=free,
            exclude=in_flight,
            busy=busy,
            per_device=self.per_device,
            target=target,
            claim=claim,
        )
        taken = dict(busy)
        for row in due:
            taken[row.device_id] = taken.get(row.device_id, 0) + 1
        assert self.per_device is not None
        full = [d for d, n in taken.items() if n >= self.per_device]
        upcoming = repos.outbox.next_due(
            exclude=in_flight | {d.id for d in due}, exclude_devices=full, claim=claim
        )
        return due, upcoming

    async def _deliver(
        self, client: httpx.AsyncClient, limiter: trio.CapacityLimiter, row: outbox.Due
    ) -> None:
        try:
            async with limiter:
                assert self.timeout is not None
                result = await attempt(
                    client,
                    row.url,
                    row.id,
                    row.payload.encode("utf-8"),
                    row.secrets,
                    attempt_timeout=self.timeout,
                )
                await self._record(row, result)
        except StorageUnavailable:
            # The attempt could not be recorded: the row is still due, and sent again once the
            # storage is back (the database logs the outage, once).
            await trio.sleep(ERROR_PAUSE)
        except Exception:
            # Recording failed (the database is closing or broken): the row is still due.
            # Keep it out of the scans for a while, or it would be sent again at once, and
            # again, as fast as the loop can go.
            log.exception("webhook delivery %s failed unexpectedly", row.id)
            await trio.sleep(ERROR_PAUSE)
        finally:
            self._in_flight.discard(row.id)
            left = self._busy.get(row.device_id, 1) - 1
            if left > 0:
                self._busy[row.device_id] = left
            else:
                self._busy.pop(row.device_id, None)
            self._wake.set()

    async def _record(self, row: outbox.Due, result: AttemptResult) -> None:
        self._attempts += 1
        now = clock.now_epoch()
        at = clock.iso(now - result.duration_ms / 1000.0)
        verdict = classify(result)
        delay: float | None = None
        if verdict == "delivered":
            status, self._delivered = "delivered", self._delivered + 1
            if self.lag_observer is not None:
                self.lag_observer(now - clock.parse_iso(row.created_at))
        elif verdict == "gone":
            status, self._failed = "disabled", self._failed + 1
        else:
            self._failed += 1
            assert self.jitter is not None
            delay = retry_delay(
                row.attempts + 1, retry_after=result.retry_after, jitter=self.jitter, rng=self.rng
            )
            status = "failed" if delay is None else "pending"
        next_at = None if delay is None else now + delay
        announced: list[Event] = []

        def write(repos: Repositories) -> str | None:
            announced.clear()
            if not repos.outbox.record_attempt(
                row.id,
                at=at,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
                status=status,
                next_attempt_at=next_at,
            ):
                return None
            settings = webhook_settings.read(repos, row.device_id)
            if settings is None:
                return None  # the webhook was removed meanwhile
            if verdict == "gone":
                reason = "endpoint answered 410 gone"
            else:
                noted = settings.note_result(ok=result.ok, now=now)
                if noted != settings:
                    repos.outbox.put_webhook_settings(row.device_id, noted.to_stored())
                    settings = noted
                since = settings.failing_since
                if since is None or now - since < DISABLE_AFTER:
                    return None
                reason = "endpoint failing for 5 days"
            if not settings.enabled:
                return None  # disabled already
            off = settings.disabled(reason, clock.iso(now))
            repos.outbox.put_webhook_settings(row.device_id, off.to_stored())
            repos.outbox.disable_pending(row.device_id)
            announced.append(Event(
                session_id=_session_of(row), device_id=row.device_id,
                data=WebhookDisabled(url=row.url, reason=reason), timestamp=clock.iso(now),
            ))
            event_log.append(repos, announced)  # logged with the settings that disable it
            return reason

        # Shielded: the attempt happened, so its record must not be lost to a cancellation
        # between submitting the write and learning that it committed.
        with trio.CancelScope(shield=True):
            disabled_reason = await self.db.run(write)
        if result.ok:
            log.info("webhook %s delivered to %s (%s)", row.id, _host(row.url), result.status_code)
        else:
            log.warning(
                "webhook %s to %s failed (attempt %d): %s%s",
                row.id,
                _host(row.url),
                row.attempts + 1,
                result.error or result.status_code,
                "" if delay is None else f"; next in {delay:.0f} s",
            )
        if disabled_reason is not None:
            self._disabled += 1
            log.warning(
                "webhook of device %s (%s) disabled: %s", row.device_id, _host(row.url),
                disabled_reason,
            )
            if self.bus is not None:
                for event in announced:
                    self.bus.publish(event)


def _session_of(row: outbox.Due) -> str:
    """The session id in a delivery's body ("" if it has none)."""
    try:
        return str(json.loads(row.payload).get("sessionId") or "")
    except ValueError:
        return ""
