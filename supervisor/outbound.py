"""The outbound queue of one device: tracked sends, paced, in order, with a time to live.

The device's actor owns one :class:`Outbound` and drives it: it hands over each accepted send
(:meth:`Outbound.accept`), asks when the queue next needs it (:meth:`Outbound.wake_at`) and lets
it work then (:meth:`Outbound.tick`), and passes on WhatsApp's receipts
(:meth:`Outbound.receipt`). Everything runs on the actor's task, one thing at a time.

- **Any kind.** A send carries an :class:`~supervisor.outgoing.Outgoing` (text, media, location,
  contact, poll, reaction, edit, revoke), stored whole with it (``sends.payload``); the message
  it replies to (``reply_to``) is resolved when it is accepted (an unknown one is refused with
  ``InvalidRequest``, ``field="replyTo"``) and stored with it, so a queued reply survives a
  restart. Its ``messages`` row has its type and content as an incoming one has. A media
  send's file waits pinned in the media store (the API pins it before the send is accepted);
  it is read when the send goes out (a file the store does not have fails the send with
  ``media_missing``) and unpinned once the send is done, sent or failed, or refused, unless
  another queued send still needs it. A reaction, edit or revoke changes its target once
  WhatsApp took it (:mod:`supervisor.actions`, in the transaction that records it sent) and
  does not count in ``messagesSent``. A ``linkPreview`` text gets its card as it leaves
  (:mod:`supervisor.link_preview`; no page, no card).
- **Tracked.** A send is stored (``sends`` and ``messages``, status ``pending``) before anything
  leaves, and answered at once: ``sent`` if it went out straight away, else ``pending``. Its
  status then moves ``pending`` -> ``sent`` -> ``delivered`` -> ``read``, or ``failed`` with a
  reason, each a ``message_status`` event. A send still ``pending`` ``stuck_after`` seconds after
  it was accepted raises one ``message_stuck`` event.
- **Idempotent.** A send made with an ``Idempotency-Key`` is found again by that key (per device,
  stored, so across restarts too): the retry answers the same message and sends nothing.
- **Sends while reconnecting.** A device ``connecting``, or ``disconnected`` with a reason it
  recovers from on its own, accepts sends; they go out in order once it is ``connected``, or fail
  with ``expired`` when their time to live ends. A device that will not come back by itself
  (logged out, QR timed out, pairing, held) refuses new sends (409) and fails the queued ones
  with its status as the reason.
- **Paced.** A token bucket (``ratePerMinute``, ``burst``; the device's ``sending`` settings or
  :class:`~supervisor.config.SendingConfig`): up to ``burst`` sends leave back to back, then one
  per interval, each paced send followed by a random extra pause (``jitter``, a fraction of the
  interval), so a burst from an application leaves as a steady, irregular trickle. The queue holds at most ``queue_size`` sends; one more is refused with
  :class:`~supervisor.errors.QueueFull` (429 with Retry-After).
- **At most once.** A send is marked ``sending`` in its own transaction before the engine is
  asked; a send found ``sending`` after a crash may have left or not, so it fails with
  ``interrupted`` rather than go out twice. Queued sends survive a crash and go out after it.

Error handling: an :class:`EngineError` from the engine's send fails the send with its reason
when it is final; a recoverable one (not connected) puts it back at the head of the queue and
waits a second. A storage outage propagates (the actor retries the work later); anything else is
a crash of the actor, as for every engine call.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Iterable
from typing import Protocol

import attrs
import trio

import storage
from common.clock import iso, now_epoch
from common.ids import new_message_id
from storage.models import DeviceRow, SendRow

from . import actions
from . import message_content as mc
from . import state as sm
from .commands import Send, SentMessage
from .config import SendingConfig
from .engine import EngineSession
from .errors import DeviceConflict, EngineError, InvalidRequest, QueueFull
from .events import Event
from .link_preview import LinkPreviews
from .outgoing import Outgoing, message_of, resolve_target, stored_content
from .pacing import SETTINGS_KIND, Pacing, TokenBucket
from .payloads import MessageSent, MessageStatusChanged, MessageStuck, Payload

log = logging.getLogger("wasup.outbound")

#: Seconds a send put back by a recoverable engine error waits before the next try.
RETRY_PAUSE = 1.0


class OutboundHost(Protocol):
    """What the queue needs of its actor: the device, and how its events are made and sent."""

    @property
    def id(self) -> int: ...

    def event(self, payload: Payload, at: str) -> Event:
        """An event of this device."""
        ...

    def enqueue(self, repos: storage.Repositories, events: list[Event]) -> None:
        """Log ``events`` (each item then carries its log id) and write their webhook outbox
        rows, in the caller's transaction."""
        ...

    def publish(self, events: list[Event]) -> None:
        """Publish ``events`` (after their transaction committed)."""
        ...

    def stored(self, row: DeviceRow) -> None:
        """The device's row as just stored."""
        ...

    @property
    def jid(self) -> str | None:
        """The device's own JID as stored (None before it was paired)."""
        ...


class MediaFiles(Protocol):
    """What the queue needs of the media store (:class:`supervisor.media.MediaStore`)."""

    async def get(self, sha256: str) -> bytes | None:
        """The file with this sha256 (hex), None if the store does not have it."""
        ...

    async def unpin(self, sha256: str) -> None:
        """The file is no longer needed by a queued send (it may be evicted); idempotent."""


def accepts_sends(state: sm.DeviceState) -> bool:
    """Whether a device in ``state`` takes sends: connected, or linked and on its way back to
    connected by itself (a device never linked must be paired first)."""
    if state.status is sm.Status.CONNECTED:
        return True
    if not state.paired:
        return False
    if state.status is sm.Status.CONNECTING:
        return True
    return state.status is sm.Status.DISCONNECTED and state.retry is not sm.Retry.HOLD


@attrs.define(eq=False)
class Outbound:
    """One device's outbound queue (see the module doc)."""

    host: OutboundHost
    db: storage.Store
    session: EngineSession
    config: SendingConfig
    rng: random.Random
    media: MediaFiles
    queue: deque[SendRow] = attrs.field(factory=deque)
    previews: LinkPreviews | None = None  # the cards of ``linkPreview`` texts (None: none)
    pacing: Pacing | None = None
    bucket: TokenBucket | None = None
    #: Trio time before which nothing is sent (the jitter pause, a retry pause).
    not_before: float = -math.inf
    #: Trio time before which :meth:`tick` is not due again (after a storage outage).
    paused_until: float = -math.inf
    loaded: bool = False

    # -- what the actor calls ------------------------------------------------------------------

    async def load(self) -> None:
        """Read the queue and the pacing settings from storage (at the start of the actor).

        A send found ``sending`` may have left before the crash: it fails with ``interrupted``.
        """
        device = self.host.id

        def job(r: storage.Repositories) -> tuple[list[SendRow], storage.JsonObject | None]:
            rows = r.sends.open(device)
            lost[:] = [row for row in rows if row.state == "sending"]
            for row in lost:
                r.sends.update(device, row.message_id, state="done", status="failed",
                               reason="interrupted")
                r.messages.update_status(device, row.message_id, "failed")
            events[:] = self._write_failed(r, lost, "interrupted")
            return [row for row in rows if row.state == "queued"], r.settings.get(
                device, SETTINGS_KIND)

        events: list[Event] = []
        lost: list[SendRow] = []
        queued, settings = await self.db.run(job)
        self.queue = deque(queued)
        self.set_pacing(settings)
        self.loaded = True
        self.host.publish(events)
        await self._release(message_of(row) for row in lost)

    def set_pacing(self, settings: storage.JsonObject | None) -> None:
        """Apply the device's ``sending`` settings (None: the defaults); the bucket starts full."""
        self.pacing = Pacing.of(settings, self.config)
        self.bucket = TokenBucket.full(self.pacing, trio.current_time())

    async def accept(self, send: Send, state: sm.DeviceState) -> SentMessage:
        """Store ``send`` and queue it; send it at once if nothing stands in the way.

        Raises: DeviceConflict when the device does not take sends; QueueFull; InvalidRequest
        (``field="replyTo"``) when ``reply_to`` names no message of the device.
        """
        try:
            return await self._accept(send, state)
        except Exception:
            await self._release([send.message])
            raise

    async def _accept(self, send: Send, state: sm.DeviceState) -> SentMessage:
        device = self.host.id
        key = send.idempotency_key
        if key is not None:
            earlier = await self.db.run(lambda r: self._replay(r, key))
            if earlier is not None:
                await self._release([send.message])  # its file is the earlier send's, if any
                return earlier
        if not accepts_sends(state):
            raise DeviceConflict(f"device is {state.status.value}, not connected")
        if not self.loaded:
            await self.load()
        if len(self.queue) >= self.config.queue_size:
            raise QueueFull(retry_after=self._drain_time(1))
        message = send.message
        reply_to = send.reply_to
        if reply_to is not None:
            quoted = await self.db.run(lambda r: resolve_target(r, device, reply_to))
            if quoted is None:
                raise InvalidRequest(f"replyTo: the device has no message {reply_to!r}",
                                     field="replyTo")
            message = attrs.evolve(message, quoted=quoted)
        epoch = now_epoch()
        ttl = self.config.ttl if send.ttl is None else send.ttl
        row = SendRow(
            device_id=device, message_id=new_message_id(), idempotency_key=key, chat=send.to,
            text=mc.text_of(message.content), origin=send.origin, state="queued",
            status="pending", reason=None, wa_id=None, created_at=iso(epoch),
            accepted_epoch=epoch, expires_epoch=epoch + ttl, stuck=False,
            payload=message.to_json(),
        )

        def job(r: storage.Repositories) -> None:
            r.sends.insert(row)
            r.messages.insert(
                device, message_id=row.message_id, chat=row.chat, direction="out",
                text=row.text, status="pending", at=row.created_at,
                type=message.content.type, content=stored_content(message),
                quoted=None if message.quoted is None else message.quoted.message_id,
            )

        await self.db.run(job)
        self.queue.append(row)
        status = "pending"
        if state.status is sm.Status.CONNECTED and len(self.queue) == 1:
            now = trio.current_time()
            if self._send_at(now) <= now and await self._send_head():
                status = "sent"
        return SentMessage(row.message_id, row.chat, status, row.created_at)

    def wake_at(self, state: sm.DeviceState) -> float:
        """The Trio time at which :meth:`tick` has work (``inf``: none)."""
        return max(self._due(state), self.paused_until)

    def _due(self, state: sm.DeviceState) -> float:
        if not self.loaded:
            return trio.current_time()
        if not self.queue:
            return math.inf
        if not accepts_sends(state):
            return trio.current_time()
        now, epoch = trio.current_time(), now_epoch()
        due = min(row.expires_epoch for row in self.queue)
        unflagged = [row.accepted_epoch for row in self.queue if not row.stuck]
        if unflagged:
            due = min(due, min(unflagged) + self.config.stuck_after)
        at = now + (due - epoch)
        if state.status is sm.Status.CONNECTED:
            at = min(at, self._send_at(now))
        return at

    async def tick(self, state: sm.DeviceState) -> None:
        """Do what is due: fail what expired (or cannot go out any more), flag what is stuck,
        send the head of the queue if pacing allows.

        Error handling: a storage outage propagates, and nothing is due until it may be over.
        """
        try:
            await self._tick(state)
        except storage.StorageUnavailable as exc:
            self.paused_until = trio.current_time() + exc.retry_after
            raise

    async def _tick(self, state: sm.DeviceState) -> None:
        if not self.loaded:
            await self.load()
        epoch = now_epoch()
        if not accepts_sends(state):
            await self._fail(list(self.queue), state.reason or state.status.value)
            return
        await self._fail([row for row in self.queue if row.expires_epoch <= epoch], "expired")
        await self._flag_stuck([
            row for row in self.queue
            if not row.stuck and row.accepted_epoch + self.config.stuck_after <= epoch
        ])
        now = trio.current_time()
        if state.status is sm.Status.CONNECTED and self.queue and self._send_at(now) <= now:
            await self._send_head()

    async def receipt(self, wa_id: str, status: str) -> None:
        """WhatsApp's receipt for a message the device sent: its new status, as an event if it
        changed."""
        device = self.host.id
        at = iso(now_epoch())

        def job(r: storage.Repositories) -> list[Event]:
            sent = r.sends.by_wa_id(device, wa_id)
            message_id = wa_id if sent is None else sent.message_id
            before = r.messages.get(device, message_id)
            after = r.messages.update_status(device, message_id, status)
            if before is not None and after is not None and before.status == after.status:
                return []
            events = [self.host.event(MessageStatusChanged(message_id, status), at)]
            self.host.enqueue(r, events)
            return events

        self.host.publish(await self.db.run(job))

    def counts(self) -> tuple[int, int] | None:
        """``(pending, stuck)``: the sends in the queue, and those of them that raised
        ``message_stuck``; None until the queue is loaded."""
        if not self.loaded:
            return None
        return len(self.queue), sum(1 for row in self.queue if row.stuck)

    # -- the work ------------------------------------------------------------------------------

    def _send_at(self, now: float) -> float:
        assert self.bucket is not None  # set by load()
        return max(self.bucket.ready_at(now), self.not_before)

    def _drain_time(self, sends: int) -> float:
        """Seconds until ``sends`` more places are free in a full queue, roughly."""
        assert self.pacing is not None
        return max(1.0, sends * 60.0 / self.pacing.rate_per_minute)

    def _replay(self, r: storage.Repositories, key: str) -> SentMessage | None:
        sent = r.sends.by_key(self.host.id, key)
        if sent is None:
            return None
        message = r.messages.get(self.host.id, sent.message_id)
        status = sent.status if message is None or message.status is None else message.status
        return SentMessage(sent.message_id, sent.chat, status, sent.created_at)

    async def _send_head(self) -> bool:
        """Send the head of the queue; True if it went out."""
        device, row = self.host.id, self.queue[0]
        message = message_of(row)
        if message is None:
            await self._fail([row], "invalid_payload")
            return False
        data: bytes | None = None
        info = message.media
        if info is not None:
            data = await self._file(info.sha256)
            if data is None:
                await self._fail([row], "media_missing")
                return False
        if message.link_preview and self.previews is not None:
            card = await self.previews.card(mc.text_of(message.content))
            message = attrs.evolve(message, card=card)
        await self.db.run(lambda r: r.sends.update(device, row.message_id, state="sending"))
        try:
            sent = await self.session.send(row.chat, message, data)
        except EngineError as exc:
            if exc.recoverable:
                await self.db.run(lambda r: r.sends.update(device, row.message_id, state="queued"))
                self.not_before = trio.current_time() + RETRY_PAUSE
                return False
            await self._fail([row], exc.reason)
            return False
        self.queue.popleft()
        now = trio.current_time()
        assert self.bucket is not None and self.pacing is not None
        self.bucket.take(now)
        if self.bucket.tokens < 1.0:  # the burst is spent: paced from now on, with jitter
            interval = 60.0 / self.pacing.rate_per_minute
            self.not_before = now + self.rng.uniform(0.0, self.config.jitter * interval)
        at = iso(now_epoch())
        events = [
            self.host.event(MessageSent(
                row.message_id, row.chat, row.text, origin=row.origin, content=message.content,
                quoted=None if message.quoted is None else message.quoted.quoted()), at),
            self.host.event(MessageStatusChanged(row.message_id, "sent"), at),
        ]

        me = actions.own_sender(self.host.jid)

        def job(r: storage.Repositories) -> DeviceRow:
            r.sends.update(device, row.message_id, state="done", status="sent",
                           wa_id=sent.message_id)
            r.messages.update_status(device, row.message_id, "sent")
            if sent.media_ref is not None:  # downloaded from WhatsApp once the cache lets go
                r.messages.set_media_ref(device, row.message_id, sent.media_ref)
            actions.apply(r.message_actions, device, message.content, me, at)
            counted = 1 if mc.counted(message.content) else 0  # not reactions, edits, revokes
            stored = r.devices.increment_stats(device, sent=counted, at=at)
            self.host.enqueue(r, events)
            return stored

        self.host.stored(await self.db.run(job))
        self.host.publish(events)
        await self._release([message])
        return True

    async def _fail(self, rows: list[SendRow], reason: str) -> None:
        """Fail queued ``rows`` with ``reason``: stored, taken off the queue, one event each."""
        if not rows:
            return
        device = self.host.id
        events: list[Event] = []

        def job(r: storage.Repositories) -> None:
            for row in rows:
                r.sends.update(device, row.message_id, state="done", status="failed",
                               reason=reason)
                r.messages.update_status(device, row.message_id, "failed")
            events[:] = self._write_failed(r, rows, reason)

        await self.db.run(job)
        gone = {row.message_id for row in rows}
        self.queue = deque(row for row in self.queue if row.message_id not in gone)
        self.host.publish(events)
        await self._release(message_of(row) for row in rows)

    async def _file(self, sha256: str | None) -> bytes | None:
        """The media file named ``sha256``, None if the store does not have it."""
        try:
            return None if sha256 is None else await self.media.get(sha256)
        except ValueError:  # not a sha256: no such file
            return None

    async def _release(self, messages: Iterable[Outgoing | None]) -> None:
        """Unpin the files of ``messages`` that no send in the queue still needs (nothing
        before the queue is loaded: a queued send on disk may need them)."""
        files = {m.media.sha256 for m in messages
                 if m is not None and m.media is not None and m.media.sha256}
        if not files or not self.loaded:
            return
        for row in self.queue:
            queued = message_of(row) if row.payload is not None else None
            if queued is not None and queued.media is not None:
                files.discard(queued.media.sha256)
        for sha256 in sorted(f for f in files if f is not None):
            try:
                await self.media.unpin(sha256)
            except (ValueError, OSError) as exc:  # not a file name; a full disk: stays pinned
                log.warning("media %s of device %s stays pinned: %s", sha256, self.host.id, exc)

    def _write_failed(
        self, r: storage.Repositories, rows: Iterable[SendRow], reason: str
    ) -> list[Event]:
        """Log (and queue for webhooks) one ``message_status`` ``failed`` event per row; the
        events, with their ids (a job may run twice: the caller keeps the last ones)."""
        at = iso(now_epoch())
        made = [self.host.event(MessageStatusChanged(row.message_id, "failed", reason), at)
                for row in rows]
        self.host.enqueue(r, made)
        return made

    async def _flag_stuck(self, rows: list[SendRow]) -> None:
        if not rows:
            return
        device = self.host.id
        at = iso(now_epoch())
        events = [self.host.event(MessageStuck(row.message_id, row.chat, "pending", row.created_at),
                                  at) for row in rows]

        def job(r: storage.Repositories) -> None:
            for row in rows:
                r.sends.mark_stuck(device, row.message_id)
            self.host.enqueue(r, events)

        await self.db.run(job)
        flagged = {row.message_id for row in rows}
        self.queue = deque(
            attrs.evolve(row, stuck=True) if row.message_id in flagged else row
            for row in self.queue
        )
        self.host.publish(events)
