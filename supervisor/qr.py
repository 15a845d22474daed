"""QR attempts: the QR string of one pairing attempt, its expiry, and its PNG rendering.

A :class:`QrAttempt` is a plain value; its PNG data URL is rendered only when somebody asks
for it (``GET /qr``, a ``qr_code`` event), because rendering costs tens of milliseconds of
pure-Python work. Renderings are cached by QR string, so every consumer of the same attempt
shares one. Usage::

    attempt = QrAttempt.expiring(code, attempt=1, max_attempts=3, expires_at_epoch=deadline)
    url = await attempt.render()     # off the Trio thread the first time, cached after
    body = attempt.to_json(url)       # the QR JSON of GET /qr and of the qr_code event

:meth:`QrAttempt.to_json` is the only place that shape is built.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict

import attrs
import qrcode
import qrcode.constants
import trio
from qrcode.image.pure import PyPNGImage

from common.clock import iso
from supervisor import threads

#: Pixels per QR module and the quiet zone in modules (4 is the minimum the standard asks).
BOX_SIZE = 10
BORDER = 4

# Rendering is CPU-bound; one worker thread at a time keeps a burst of new devices from
# occupying every worker thread Trio has. One limiter per Trio run.
_render_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("qr_render")

def render_png(qr_string: str) -> bytes:
    """Encode ``qr_string`` as a QR code and return it as a 1-bit greyscale PNG.

    Error handling: raises ``qrcode.exceptions.DataOverflowError`` if the string does not fit
    in the largest QR version (about 2,900 bytes), which no WhatsApp QR string comes near.
    """
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=BOX_SIZE,
        border=BORDER,
        image_factory=PyPNGImage,
    )
    qr.add_data(qr_string)
    qr.make(fit=True)
    out = io.BytesIO()
    qr.make_image().save(out)
    return out.getvalue()


class _RenderCache:
    """A bounded LRU map from QR string to data URL, shared by threads.

    Not ``functools.lru_cache``: :meth:`QrAttempt.render` must ask "is it cached?" without
    rendering, which lru_cache cannot answer.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


#: Rendered data URLs of the last 1,024 QR strings (about 2 KB each).
render_cache = _RenderCache(maxsize=1024)


def render_data_url(qr_string: str) -> str:
    """``data:image/png;base64,...`` for ``qr_string``, from :data:`render_cache` if there.

    Thread-safe: two threads asking for the same uncached string may both render it; both get
    equal results.
    """
    cached = render_cache.get(qr_string)
    if cached is not None:
        return cached
    png = render_png(qr_string)
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    render_cache.put(qr_string, url)
    return url


async def render_string(qr_string: str) -> str:
    """:func:`render_data_url` from Trio: from :data:`render_cache` at once, else in a worker
    thread, one render at a time.

    Cancellation: if cancelled while rendering, the thread finishes in the background and its
    result still lands in the cache.
    """
    cached = render_cache.get(qr_string)
    if cached is not None:
        return cached
    try:
        limiter = _render_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(1)
        _render_limiter.set(limiter)
    return await threads.run_sync(render_data_url, qr_string, limiter=limiter,
                                  abandon_on_cancel=True)


@attrs.frozen
class QrAttempt:
    """One QR code shown to the user: attempt ``attempt`` of ``max_attempts``.

    ``expires_at`` is the ISO timestamp of ``expires_at_epoch`` (as the API prints it).
    """

    qr_string: str
    attempt: int
    max_attempts: int
    expires_at: str
    expires_at_epoch: float

    @classmethod
    def expiring(
        cls, qr_string: str, *, attempt: int, max_attempts: int, expires_at_epoch: float
    ) -> QrAttempt:
        """Build an attempt from its expiry epoch (the ISO form is derived from it)."""
        return cls(
            qr_string=qr_string,
            attempt=attempt,
            max_attempts=max_attempts,
            expires_at=iso(expires_at_epoch),
            expires_at_epoch=expires_at_epoch,
        )

    @property
    def data_url(self) -> str:
        """The PNG data URL, rendered on first use on the calling thread and cached.

        On the Trio thread prefer ``await attempt.render()`` unless it is known to be cached.
        """
        return render_data_url(self.qr_string)

    @property
    def is_rendered(self) -> bool:
        """Whether :attr:`data_url` would be answered from the cache."""
        return render_cache.get(self.qr_string) is not None

    async def render(self) -> str:
        """The PNG data URL; renders in a worker thread if it is not cached yet.

        Cancellation: if cancelled while rendering, the thread finishes in the background and
        its result still lands in the cache.
        """
        return await render_string(self.qr_string)

    def to_json(self, data_url: str) -> dict[str, str | int]:
        """The QR JSON (``GET /qr`` and the ``qr_code`` event): qrCode, qrString,
        expiresAt, attempt, maxAttempts; ``qrCode`` is ``data_url`` as given (see
        :meth:`render` and :attr:`data_url` for the rendering; the event's
        :class:`~supervisor.payloads.QrShown` reads it only when the event is encoded)."""
        return {
            "qrCode": data_url,
            "qrString": self.qr_string,
            "expiresAt": self.expires_at,
            "attempt": self.attempt,
            "maxAttempts": self.max_attempts,
        }
