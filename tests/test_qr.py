"""QR attempts: the PNG shows the QR code of the string, rendering is lazy and cached.

The PNG is decoded back with zxing-cpp (a test dependency; the test skips without it), and
checked independently against the module matrix qrcode computes for the string, pixel for
pixel.
"""

from __future__ import annotations

import base64
import struct

import png
import pytest
import qrcode
import qrcode.constants
import trio

from common.clock import iso
from supervisor import qr as qr_module
from supervisor.qr import BORDER, BOX_SIZE, QrAttempt, render_cache

QR_STRING = (  # the form neonize 0.5.2 emits
    "https://wa.me/settings/linked_devices#"
    "2@Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4,"
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,"
    "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=,"
    "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=,1"
)


def attempt(qr_string: str = QR_STRING) -> QrAttempt:
    return QrAttempt.expiring(qr_string, attempt=1, max_attempts=3, expires_at_epoch=1750334700.0)


@pytest.fixture(autouse=True)
def _empty_cache():
    render_cache.clear()
    yield
    render_cache.clear()


def png_bytes(data_url: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return base64.b64decode(data_url[len(prefix) :], validate=True)


def test_data_url_is_a_png_of_sane_size():
    data = png_bytes(attempt().data_url)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width == height
    assert 21 * BOX_SIZE <= width <= 177 * BOX_SIZE + 2 * BORDER * BOX_SIZE
    assert len(data) < 20_000


def test_png_shows_the_qr_modules_of_the_string():
    width, height, rows, _info = png.Reader(bytes=png_bytes(attempt().data_url)).read()
    pixels = [list(row) for row in rows]
    ref = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=BORDER)
    ref.add_data(QR_STRING)
    ref.make(fit=True)
    matrix = ref.get_matrix()  # with the quiet zone; True = dark
    assert width == height == len(matrix) * BOX_SIZE
    for y, line in enumerate(matrix):
        for x, dark in enumerate(line):
            # sample the centre of each module's box: 0 is black in a greyscale PNG
            px = pixels[y * BOX_SIZE + BOX_SIZE // 2][x * BOX_SIZE + BOX_SIZE // 2]
            assert (px == 0) == dark, (x, y)


def test_decodes_back_when_a_decoder_is_available():
    zxingcpp = pytest.importorskip("zxingcpp")
    pil_image = pytest.importorskip("PIL.Image")  # installed with neonize
    import io

    image = pil_image.open(io.BytesIO(png_bytes(attempt().data_url)))
    results = zxingcpp.read_barcodes(image)
    assert [r.text for r in results] == [QR_STRING]


def test_rendering_is_lazy_and_cached(monkeypatch):
    calls = []
    real = qr_module.render_png

    def counting(s: str) -> bytes:
        calls.append(s)
        return real(s)

    monkeypatch.setattr(qr_module, "render_png", counting)
    a = attempt()
    assert calls == [] and not a.is_rendered  # creating an attempt renders nothing
    first = a.data_url
    assert calls == [QR_STRING] and a.is_rendered
    assert a.data_url == first
    # another attempt with the same string (e.g. rebuilt from a snapshot) shares the rendering
    again = QrAttempt.expiring(QR_STRING, attempt=2, max_attempts=3, expires_at_epoch=0.0)
    assert again.data_url == first
    assert calls == [QR_STRING]


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(render_cache, "maxsize", 2)
    for s in ("a", "b", "c"):
        attempt(s).data_url  # noqa: B018 (rendering is the point)
    assert len(render_cache) == 2
    assert not attempt("a").is_rendered  # least recently used went first
    assert attempt("c").is_rendered


async def test_render_in_thread_matches_and_caches():
    a = attempt()
    url = await a.render()
    assert a.is_rendered
    assert url == a.data_url
    with trio.fail_after(1):
        assert await a.render() == url  # cached: returns without a thread


def test_to_json_has_the_get_qr_shape():
    a = attempt()
    assert a.to_json(a.data_url) == {
        "qrCode": a.data_url,
        "qrString": QR_STRING,
        "expiresAt": iso(1750334700.0),
        "attempt": 1,
        "maxAttempts": 3,
    }
    assert a.to_json(None)["qrCode"] is None  # the caller says what stands for the PNG
    assert a.expires_at == "2025-06-19T12:05:00.000Z"
    assert a.expires_at_epoch == 1750334700.0


def test_attempt_is_frozen_and_hashable():
    a = attempt()
    with pytest.raises(AttributeError):
        a.attempt = 2  # type: ignore[misc]
    assert a == attempt() and hash(a) == hash(attempt())
