"""JPEG thumbnails: the small picture WhatsApp shows of an image, or of a link's page, before
its file is downloaded.

:func:`jpeg_thumbnail` decodes an image with Pillow and shrinks it to fit in
:data:`THUMBNAIL_SIZE` pixels a side, as a JPEG. It is blocking work: call it in a worker
thread. Usage::

    thumb = await trio.to_thread.run_sync(jpeg_thumbnail, data)
    if thumb is not None:
        thumb.data, thumb.width, thumb.height

Error handling: None for what Pillow cannot read as an image (not an image, a truncated or
corrupt file, a decompression bomb beyond Pillow's own pixel limit); never raises for the
file's content.
"""

from __future__ import annotations

import io
import logging
import warnings

import attrs
from PIL import Image, UnidentifiedImageError

log = logging.getLogger("wasup.thumbnails")

#: The longest side of a thumbnail, in pixels (what WhatsApp's own clients make).
THUMBNAIL_SIZE = 240
#: JPEG quality of a thumbnail (0-95).
QUALITY = 60


@attrs.frozen
class Thumbnail:
    """A JPEG thumbnail and its size in pixels."""

    data: bytes
    width: int
    height: int


def jpeg_thumbnail(data: bytes, size: int = THUMBNAIL_SIZE) -> Thumbnail | None:
    """``data`` (an image in any format Pillow reads) as a JPEG of at most ``size`` pixels a
    side, None if it is no image Pillow can read (blocking)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
                image.thumbnail((size, size))
                rgb = image.convert("RGB")
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=QUALITY, optimize=True)
        return Thumbnail(out.getvalue(), rgb.width, rgb.height)
    except (UnidentifiedImageError, Image.DecompressionBombWarning,
            Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        log.info("no thumbnail: %s", exc)
        return None
