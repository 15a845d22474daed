"""The thin, blocking layer between wasup and neonize's Go library (neonize 0.5.2, pinned;
its private parts are reached only through :mod:`supervisor.engines.neonize_go`).

Everything in this module blocks and is meant to run in a worker thread
(``trio.to_thread.run_sync`` under the engine's limiter), never on the Trio thread.

One :class:`GoClient` is one whatsmeow client: one call of neonize's Go ``Neonize()`` on a
thread of its own, from the connection's start until ``Stop``. wasup calls ``Neonize()``
itself (the same arguments ``NewClient.connect`` passes) rather than through ``connect``,
because ``connect`` parks a second thread per client that polls every 0.2 s, and because wasup
wants its own callbacks. The API calls (send, download, pair phone, logout) go through
neonize's ``NewClient`` methods.

Why :data:`GATE`: the Go side keeps its clients, cancel functions and event channels in plain
maps, shared by every client and guarded by no lock; a Go map written while another goroutine
reads it kills the whole process ("concurrent map read and map write"). Writes happen when a
client starts (the first moments of ``Neonize()``) and in ``Stop``; reads in every other call.
So starting, stopping and logging out take the gate exclusively, the other calls share it
(a stop waits for the sends in flight; a waiting stop goes before new sends). A start holds the
gate until Go signals that it is past its map writes (the first QR code, status, event, or the
call returning) or ``hold`` seconds passed. Right after a successful pairing the Go side reads
the maps once more, outside any call of ours; the status callback for ``success`` fences that
read with the gate too (until the next event, at most :data:`FENCE_SECONDS`).

Known limits of neonize 0.5.2 (not fixable from Python, see docs/engine-events.md):

* a pairing that is stopped before the phone scans never returns from ``Neonize()`` (Go waits
  on a QR channel that whatsmeow does not close after a local disconnect, and then spins in
  ``FetchMe`` while the store has no account): its thread is parked for good. The thread is a
  daemon thread, so it does not hold up the process's exit; :attr:`GoClient.parked` says so.
* every ``Neonize()`` call opens whatsmeow's store (a database pool) and never closes it: one
  file descriptor per connection attempt on SQLite, an idle server connection on PostgreSQL
  (:meth:`~.whatsmeow_store.CredentialStores.release` ends those once the client stopped). The
  engine's preflight (a DNS lookup and TCP connect before calling Go) keeps offline retries
  from reaching Go at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import attrs
from neonize.client import NewClient
from neonize.proto.Neonize_pb2 import JID
from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage
from neonize.utils.enum import ClientName, ClientType, ReceiptType
from neonize.utils.log import log_whatsmeow

from supervisor import message_content as mc
from supervisor.engine import Sent
from supervisor.jid import Jid
from supervisor.outgoing import Outgoing
from supervisor.thumbnails import jpeg_thumbnail

from . import neonize_go
from . import whatsmeow_messages as wm
from . import whatsmeow_outgoing as wo

log = logging.getLogger("wasup.engine.whatsmeow")

T = TypeVar("T")

#: Seconds the gate stays fenced after a pairing succeeded (see the module docstring).
FENCE_SECONDS = 2.0
#: Seconds a logout holds the gate (Go reads its maps at the start of the call).
LOGOUT_HOLD = 1.0
#: whatsmeow's log level for the Go side (its messages reach the ``whatsmeow.*`` loggers).
GO_LOG_LEVEL = b"WARN"

_uuids = itertools.count(1)
_PROCESS = secrets.token_hex(4)

#: Go's loggers keep this callback past the end of ``Neonize()`` (the store's container is never
#: closed, whatsmeow's goroutines may log while shutting down): one for the process, never
#: freed. The other callbacks are only called from within ``Neonize()`` and live with the
#: client (a parked client is kept for good, see :attr:`GoClient.parked`).
_LOG_CB = neonize_go.log_callback(log_whatsmeow)


class GoGate:
    """A readers-writer lock for calls into Go (writers first, so a stop is never starved).

    A plain threading primitive: it is taken only in worker threads and Go callbacks.
    :meth:`release_exclusive` may be called from another thread than the one that acquired.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_exclusive(self, timeout: float | None = None) -> bool:
        with self._cond:
            self._writers_waiting += 1
            try:
                ok = self._cond.wait_for(lambda: not self._writer and self._readers == 0, timeout)
            finally:
                self._writers_waiting -= 1
            if ok:
                self._writer = True
            return ok

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()


#: One gate for the process: neonize's maps are global to the loaded library.
GATE = GoGate()


# -- recipients --------------------------------------------------------------------------------


def neonize_jid(jid: Jid) -> JID:
    """``jid`` as neonize's protobuf JID (no device: a message goes to every device)."""
    return JID(User=jid.user, Server=jid.server, Device=0, RawAgent=0, Integrator=0,
               IsEmpty=False)


#: The JID of no one: the sender of a one-to-one chat's read receipt (whatsmeow names the
#: sender, ``participant``, in groups only).
NO_JID = JID(User="", Server="", Device=0, RawAgent=0, Integrator=0, IsEmpty=True)


# -- one Go client -----------------------------------------------------------------------------

GoQr = Callable[[str], None]
GoStatus = Callable[[str], None]
GoEvent = Callable[[int, bytes], None]
GoExit = Callable[[str], None]


@attrs.define(eq=False)
class GoClient:
    """One whatsmeow client, alive from :meth:`start` until :meth:`stop`.

    The four callbacks run on Go's threads (``on_exit`` on the client's own thread): they
    must only hand their argument over and return, and never raise.

    Resource handling: the client's thread (``wasup-wm-<device>``, a daemon thread of its
    own) ends when ``Neonize()`` returns, which it does after :meth:`stop` for a connected
    client or at once when the connection fails; :meth:`join` waits for that. A pairing
    stopped before the scan stays parked (see module docstring). The thread is not taken from
    Trio's cache on purpose: the C allocator gives every thread a cache of freed blocks
    (tcache) that the thread keeps until it ends, and Go's store work inside ``Neonize()``
    fills it; a cached thread would carry that memory (measured: about 200 KiB per worker
    thread that ever ran ``Neonize()``) for as long as it idles, while a thread that ends
    hands it back and its arena goes to the next thread.
    """

    device_id: int
    db: str = attrs.field(repr=False)  # the store's address: a path, or a URL with a password
    pairing: bool
    on_qr: GoQr
    on_status: GoStatus
    on_event: GoEvent
    on_exit: GoExit
    proxy: str | None = attrs.field(default=None, repr=False)  # may hold a password
    uuid: bytes = attrs.field(init=False)
    started: threading.Event = attrs.field(init=False, factory=threading.Event)
    exited: threading.Event = attrs.field(init=False, factory=threading.Event)
    stopped: bool = attrs.field(init=False, default=False)
    launched: bool = attrs.field(init=False, default=False)
    _api: NewClient | None = attrs.field(init=False, default=None)
    _refs: tuple[object, ...] = attrs.field(init=False, default=())
    _fenced: bool = attrs.field(init=False, default=False)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _fence_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        # Unique across processes and machines: on PostgreSQL it names the store's connections.
        self.uuid = f"wasup-{self.device_id}-{next(_uuids)}-{_PROCESS}".encode()

    @property
    def parked(self) -> bool:
        """Stopped, but Go never returned from ``Neonize()`` (its thread is left behind)."""
        return self.stopped and not self.exited.is_set()

    @property
    def api(self) -> NewClient:
        if self._api is None:
            # Without neonize's finalizer, which would Stop() this uuid from whichever thread
            # collects it, outside the gate: wasup stops its clients itself.
            self._api = neonize_go.api_client(self.db, self.uuid.decode())
        return self._api

    # -- lifecycle (exclusive) ---------------------------------------------------------------

    def start(self, hold: float, gate: GoGate = GATE) -> None:
        """Start ``Neonize()`` on a new thread; return once Go is past its map writes.

        Error handling: nothing raises here; a failed connection shows up as ``on_exit``.
        """
        props = DeviceProps(os="wasup", platformType=DeviceProps.CHROME).SerializeToString()
        subscribed = bytearray(sorted(SUBSCRIBED_EVENTS))
        qr_cb = neonize_go.string_callback(self._go_qr)
        status_cb = neonize_go.string_callback(self._go_status)
        event_cb = neonize_go.event_callback(self._go_event)
        self._refs = (qr_cb, status_cb, event_cb, subscribed, props)
        db = self.db.encode()

        def run() -> None:
            error = ""
            try:
                error = neonize_go.run_client(
                    db=db, uuid=self.uuid, pairing=self.pairing, log_level=GO_LOG_LEVEL,
                    on_qr=qr_cb, on_status=status_cb, on_event=event_cb, on_log=_LOG_CB,
                    subscribed=subscribed, device_props=props, proxy=self.proxy,
                )
            except Exception as exc:  # a broken library must not kill the thread silently
                error = f"neonize failed: {exc}"
            finally:
                self.exited.set()
                self.started.set()
                self._unfence()
                self._call(self.on_exit, error)

        thread = threading.Thread(target=run, name=f"wasup-wm-{self.device_id}", daemon=True)
        gate.acquire_exclusive()
        try:
            thread.start()
            self._thread = thread
            self.launched = True
            self.started.wait(hold)
        finally:
            gate.release_exclusive()

    def stop(self, gate: GoGate = GATE) -> None:
        """Cancel the client at Go (disconnect, forget it); idempotent."""
        with gate.exclusive():
            if self.stopped or not self.launched:
                self.stopped = True
                return
            self.stopped = True
            neonize_go.stop_client(self.uuid)

    def join(self, timeout: float) -> bool:
        """Wait until ``Neonize()`` returned and its thread ended; False if it did not
        within ``timeout`` (each)."""
        if not self.exited.wait(timeout):
            return False
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def logout(self, gate: GoGate = GATE, hold: float = LOGOUT_HOLD) -> None:
        """Log out at WhatsApp. Raises neonize's LogoutError when WhatsApp refuses.

        The gate is held exclusively while Go looks the client up in its maps (the first
        moments of the call), at most ``hold`` seconds, not while it waits for WhatsApp's
        answer: a stop that gave up waiting for that answer (delete) is not held up by it.
        """
        gate.acquire_exclusive()
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                gate.release_exclusive()

        timer = threading.Timer(hold, release)
        timer.daemon = True
        try:
            if self.stopped:
                raise RuntimeError("client stopped")
            timer.start()
            self.api.logout()
        finally:
            timer.cancel()
            release()

    # -- calls (shared) ----------------------------------------------------------------------

    def send(self, jid: JID, message: Outgoing, media: bytes | None,
             gate: GoGate = GATE) -> Sent:
        """Send ``message`` (its file ``media`` uploaded first, for a media kind); returns
        WhatsApp's id of it and the upload's ``media_ref`` (the sent media part, its URL and
        keys: what a download of it takes). Raises :class:`~.whatsmeow_outgoing.Unsendable` for what cannot
        be built, neonize's UploadError or SendMessageError when WhatsApp refuses."""
        kind = wo.media_type(message)
        thumb = None
        if media is not None and isinstance(message.content, mc.Image):
            thumb = jpeg_thumbnail(media)
        with gate.shared():
            if self.stopped:
                raise RuntimeError("client stopped")
            upload = None
            if kind is not None:
                if media is None:
                    raise wo.Unsendable("media_missing", "the message's file is missing")
                upload = self.api.upload(media, kind)
            me = ""
            if message.quoted is not None and message.quoted.from_me:
                own = self.api.get_me().JID
                me = f"{own.User}@{own.Server}"
            proto = wo.build(message, me=me, upload=upload, now_ms=int(time.time() * 1000),
                             secret=os.urandom(32), thumbnail=None if thumb is None else thumb.data)
            response = self.api.send_message(jid, proto)
        return Sent(str(response.ID), None if upload is None else wm.media_ref(proto))

    def download(self, message: WAMessage, gate: GoGate = GATE) -> bytes:
        """The decrypted file of the media ``message`` (a ``media_ref``'s message). Raises
        neonize's DownloadError (whatsmeow's reason in its text)."""
        with gate.shared():
            if self.stopped:
                raise RuntimeError("client stopped")
            data = self.api.download_any(message)
        return bytes(data)

    def mark_read(self, ids: Sequence[str], chat: JID, sender: JID, gate: GoGate = GATE) -> None:
        """Send read receipts for messages ``ids`` of ``chat`` from ``sender`` (the empty JID
        in a one-to-one chat). Raises neonize's MarkReadError."""
        with gate.shared():
            if self.stopped:
                raise RuntimeError("client stopped")
            self.api.mark_read(*ids, chat=chat, sender=sender, receipt=ReceiptType.READ)

    def pair_phone(self, phone: str, gate: GoGate = GATE) -> str:
        """Ask WhatsApp for a pair code for ``phone`` (digits only). Raises PairPhoneError."""
        with gate.shared():
            if self.stopped:
                raise RuntimeError("client stopped")
            return str(
                self.api.PairPhone(phone, True, ClientName.LINUX, ClientType.CHROME)
            )

    def call(self, fn: Callable[[NewClient], T], gate: GoGate = GATE) -> T:
        """Run ``fn`` on neonize's client: a request (presence, profile, calls...). Raises what
        neonize raises."""
        with gate.shared():
            if self.stopped:
                raise RuntimeError("client stopped")
            return fn(self.api)

    # -- Go callbacks ------------------------------------------------------------------------

    def _go_qr(self, _uuid: int, data: int) -> None:
        self.started.set()
        try:
            code = ctypes.string_at(data).decode(errors="replace")
        except Exception:
            return
        self._call(self.on_qr, code)

    def _go_status(self, _uuid: int, data: int) -> None:
        self.started.set()
        try:
            status = ctypes.string_at(data).decode(errors="replace")
        except Exception:
            return
        if status != "err-scanned-without-multidevice":
            # The QR channel is closing: right after this callback Go leaves the pairing loop
            # and reads its maps (FetchMe). Fence that read with the gate. If wasup already
            # stopped this client, the map entry is gone and Go would dereference nil and
            # take the whole process down: keep this thread here instead (parked).
            if GATE.acquire_exclusive(timeout=10.0):
                if self.stopped:
                    GATE.release_exclusive()
                    self._call(self.on_status, status)
                    threading.Event().wait()  # parked for good, see the module docstring
                with self._fence_lock:
                    self._fenced = True
                timer = threading.Timer(FENCE_SECONDS, self._unfence)
                timer.daemon = True
                timer.start()
        self._call(self.on_status, status)

    def _go_event(self, _uuid: bytes, data: int, size: int, code: int) -> None:
        self.started.set()
        self._unfence()
        try:
            payload = ctypes.string_at(data, size) if size > 0 else b""
        except Exception:
            return
        self._call(self.on_event, code, payload)

    def _unfence(self) -> None:
        with self._fence_lock:
            fenced, self._fenced = self._fenced, False
        if fenced:
            GATE.release_exclusive()

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a callback must never raise into ctypes
            log.exception("whatsmeow callback failed")


#: neonize's event codes wasup subscribes to (see neonize.events.EVENT_TO_INT); 19, 20, 36
#: and 40 are presence and calls (:mod:`.whatsmeow_account`).
SUBSCRIBED_EVENTS = frozenset({2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 17, 18, 19, 20, 21, 22, 36, 40,
                               44})
