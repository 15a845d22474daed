"""Schemathesis hooks for every schemathesis run (``SCHEMATHESIS_HOOKS=schemathesis_hooks``, with
tests/ as the current directory).

JSON Schema counts ``5.0`` as the integer 5, and schemathesis sends such whole floats for
``type: integer`` fields on purpose. wasup's counts take JSON integers only (``5.0`` and ``1e3``
are 400: a client sending them has a float where it means a count, see docs/openapi.yaml), so
bodies with a whole float in a count field are not generated as valid data.

A message send carries a file whose bytes must be what its type says (a schema cannot say
that of base64): in the generated cases, a schema-valid file of a send becomes a real file of
its type (with its mimetype where one is given), and a schema-valid ``media.url`` becomes that
file inline (a profile picture's becomes a real image too), so that sends of every type go through (tests/test_media_fetch.py and
tests/test_send_kinds_e2e.py fetch URLs from 127.0.0.1; the schemathesis tests fetch none). A
schema-valid ``replyTo`` is dropped: it names no message the device has (400, which the schema
cannot tell either). Values that break the schema are left alone, so negative cases stay
negative.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from media_support import SAMPLES, b64

#: The body fields that are counts: PUT /settings/ai's, PUT /settings/sending's ``burst`` and
#: the simulator's ``fail`` ``seconds``.
COUNT_FIELDS = frozenset({"maxTokens", "maxRepliesPerMinute", "historyLimit", "burst", "seconds"})

#: The send schemas' patterns (docs/openapi.yaml: SendMedia, Mimetype, ReplyTo).
BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
                       r"|(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)")
URL_RE = re.compile(r"https?://[^\x00-\x20\x7f-\x9f@#]+")
MIMETYPE_RE = re.compile(r"[A-Za-z]+/[A-Za-z0-9.+-]{1,100}"
                         r"(?: ?; ?[A-Za-z0-9-]{1,30}=[A-Za-z0-9.+-]{1,60})*")
REPLY_TO_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    if not isinstance(body, dict):
        return True
    return not any(isinstance(body.get(name), float) for name in COUNT_FIELDS)


def _valid(pattern: re.Pattern[str], value: Any, maximum: int) -> bool:
    return isinstance(value, str) and len(value) <= maximum and bool(pattern.fullmatch(value))


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and set(body) in ({"media"}, {"file"}):
        return _picture(body)
    if not isinstance(body, dict) or not isinstance(body.get("to"), str):
        return body
    body = dict(body)
    if _valid(REPLY_TO_RE, body.get("replyTo"), 128):
        del body["replyTo"]
    kind = body.get("type")
    sample = SAMPLES.get(kind) if isinstance(kind, str) else None
    if sample is None:
        return body
    data, mimetype = sample
    media = body.get("media")
    if isinstance(media, dict) and len(media) == 1 and (
        _valid(BASE64_RE, media.get("data"), 1 << 30) or _valid(URL_RE, media.get("url"), 2048)
    ):
        body["media"] = {"data": b64(data)}
    if isinstance(body.get("file"), bytes | str):
        body["file"] = data
    if _valid(MIMETYPE_RE, body.get("mimetype"), 255):
        body["mimetype"] = mimetype
    return body


def _picture(body: dict[str, Any]) -> dict[str, Any]:
    """A profile picture's schema-valid file becomes a real image (PUT /profile/picture)."""
    data, _ = SAMPLES["image"]
    media = body.get("media")
    if isinstance(media, dict) and len(media) == 1 and (
        _valid(BASE64_RE, media.get("data"), 1 << 30) or _valid(URL_RE, media.get("url"), 2048)
    ):
        return {"media": {"data": b64(data)}}
    if isinstance(body.get("file"), bytes | str):
        return {"file": data}
    return body
