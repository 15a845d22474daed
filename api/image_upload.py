"""An image upload, as the picture routes take it: the same forms as sending an image.

JSON ``{"media": {"data": "<base64>"}}`` or ``{"media": {"url": "https://…"}}`` (with an
optional ``mimetype``), or ``multipart/form-data`` with the file in a part named ``file``.
It is read and checked as an image send is (:mod:`api.send_request`,
:func:`api.send_media.prepare`: the URL fetched through the SSRF guard, the size limit of an
image, the mimetype read from the bytes), and must be a JPEG, which is what WhatsApp takes
for a group picture (:func:`read_jpeg`); the profile picture takes any image
(:func:`read_image`) and is made a JPEG by :mod:`supervisor.account`::

    jpeg = await read_jpeg(config.media, config.allow_networks)

Error handling: :class:`InvalidRequest` naming the field (``media``, ``media.data``,
``media.url``, ``mimetype``, ``file``, or an unknown one); :class:`TooLarge` (413) beyond an
image's limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from quart import request

from api import validation
from api.content_fields import fields
from api.send_media import prepare
from api.send_request import from_form, parse
from supervisor import message_content as mc
from supervisor.config import MediaConfig
from supervisor.errors import InvalidRequest
from supervisor.webhooks.ssrf import IPNetwork

#: The fields of an image upload (the file: ``media``, or the multipart part ``file``).
FIELDS = frozenset({"media", "mimetype"})
#: Where an upload is addressed while it is checked as an image send (never sent).
_NOWHERE = "+15550000000"


async def read_image(media: MediaConfig, allow: Sequence[IPNetwork]) -> tuple[bytes, str, str]:
    """The image file of the current request (any image type), its mimetype and the field that
    carried it (``media`` or ``file``)."""
    upload = None
    form = request.mimetype == "multipart/form-data"
    if form:
        body, upload = await from_form(await request.form, await request.files)
    else:
        data = await request.get_data()
        assert isinstance(data, bytes)
        body = validation.parse_json(data)
    fields(body, "body", FIELDS)
    req = parse({**body, "to": _NOWHERE, "type": "image"}, 1.0, upload, form=form)
    kept: list[bytes] = []

    async def keep(data: bytes) -> str:
        kept.append(data)
        return hashlib.sha256(data).hexdigest()

    message = await prepare(req, media, allow, keep)
    content = message.content
    assert isinstance(content, mc.Image)  # what prepare makes of an image request
    return kept[0], content.media.mimetype or "", "file" if form else "media"


async def read_jpeg(media: MediaConfig, allow: Sequence[IPNetwork]) -> bytes:
    """The JPEG file of the current request (see the module docstring)."""
    data, mimetype, field = await read_image(media, allow)
    if mimetype != "image/jpeg":
        raise InvalidRequest(f"{field}: a picture must be a JPEG image (image/jpeg), this "
                             f"file is {mimetype}", field=field)
    return data
