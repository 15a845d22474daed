"""The hostile table: malformed and hostile requests against every route of a live wasup.

Bodies (malformed JSON, duplicate keys, lone surrogates, control characters, wrong types and
ranges), paths, headers, encodings, sizes, forms of authentication, raw protocol errors and the
WebSocket handshake. Each case asserts the status, the error envelope
(``{"success": false, "error", "code"}``, ``field`` where one is named) and that nothing stored
changed: the devices, their settings and the session list read back exactly as before. Nothing
may answer 5xx; the count is printed (``pytest -s``) and asserted to be 0.

One server for the whole table (real sockets on 127.0.0.1, real clock): two connected devices
of two users, AI and webhook settings stored for the first.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from api import protocol_errors
from api.ratelimit import RateLimitPolicy
from api.server import Server
from api.state import ApiSettings
from storage.interface import Repositories
from tests.conftest import TEST_TOKEN, api_client, running_server
from tests.lifecycle_support import wait_status

pytestmark = pytest.mark.both_backends  # tests/store_support.py

SETTINGS = ApiSettings(
    rate_limit=RateLimitPolicy(rate=10_000, burst=100_000),
    auth_failure_limit=RateLimitPolicy(rate=10_000, burst=100_000, name="auth"),
    qr_wait=0.2,
    graceful_timeout=1.0,
)

OP, KEY_A, KEY_B = "<operator>", "<key of A>", "<key of B>"
JSON = "application/json"
MIB = 1024 * 1024


@attrs.frozen
class Case:
    """One hostile request and the answer it must get.

    ``path`` is under /api/whatsapp (``{a}``/``{b}``: the devices' sessionIds, ``{aid}``: A's
    numeric id); ``body`` bytes are sent as they are; ``raw`` is a whole request sent on a
    bare socket (``{token}``, ``{a}`` filled in; the path is not prefixed).
    """

    name: str
    method: str = "GET"
    path: str = ""
    body: bytes | None = None
    content_type: str | None = JSON
    token: str | None = OP
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None
    status: int = 400
    code: str = "INVALID_REQUEST"
    field: str | None = None


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


SEND = "/devices/{a}/messages"
GROUP = "/devices/{a}/groups/120363000000000001@g.us"
PICTURE = f"{GROUP}/picture"
PROFILE_PICTURE = "/devices/{a}/profile/picture"
#: The routes that take forms too, and the field an empty form is missing.
FORM_ROUTES = {SEND: "to", PICTURE: "file", PROFILE_PICTURE: "file"}
BOUNDARY = "hostile-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def form(*parts: tuple[str, bytes | str, str | None]) -> bytes:
    """A multipart/form-data body of ``(name, value, file name or None)`` parts."""
    out = b""
    for name, value, filename in parts:
        data = value.encode() if isinstance(value, str) else value
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


# -- bodies -----------------------------------------------------------------------------------

#: Every route that takes a JSON body, with a body that is valid for it (never sent as is).
BODY_ROUTES: list[tuple[str, str]] = [
    ("POST", "/devices"),
    ("PUT", "/devices/{a}"),
    ("POST", "/devices/{a}/pair-code"),
    ("POST", "/devices/{a}/messages"),
    ("POST", "/devices/{a}/messages/3AHOSTILE/reaction"),
    ("PATCH", "/devices/{a}/messages/3AHOSTILE"),
    ("PUT", "/devices/{a}/settings/ai"),
    ("PUT", "/devices/{a}/settings/webhook"),
    ("PUT", "/devices/{a}/settings/proxy"),
    ("PUT", "/devices/{a}/settings/sending"),
    ("POST", "/simulator/devices/{a}/scan"),
    ("POST", "/simulator/devices/{a}/messages"),
    ("POST", "/simulator/devices/{a}/receipts"),
    ("POST", "/simulator/devices/{a}/fail"),
    ("POST", "/devices/{a}/contacts/check"),
    ("POST", "/devices/{a}/contacts/+15551234567/block"),
    ("POST", "/devices/{a}/contacts/15551234567@s.whatsapp.net/unblock"),
    ("POST", "/simulator/devices/{a}/contacts"),
    ("POST", "/devices/{a}/groups"),
    ("PATCH", GROUP),
    ("PUT", PICTURE),
    ("POST", f"{GROUP}/participants"),
    ("POST", "/devices/{a}/groups/join"),
    ("POST", f"{GROUP}/leave"),
    ("POST", "/simulator/devices/{a}/groups"),
    ("PATCH", "/simulator/devices/{a}/groups/120363000000000001@g.us"),
    ("POST", "/simulator/devices/{a}/groups/120363000000000001@g.us/participants"),
    ("POST", "/devices/{a}/presence"),
    ("POST", "/devices/{a}/chats/15551234567@s.whatsapp.net/presence"),
    ("POST", "/devices/{a}/contacts/15551234567@s.whatsapp.net/presence/subscribe"),
    ("PUT", "/devices/{a}/profile"),
    ("PUT", PROFILE_PICTURE),
    ("POST", "/devices/{a}/calls/ABC123/reject"),
    ("PUT", "/devices/{a}/settings/calls"),
    ("POST", "/simulator/devices/{a}/calls"),
    ("POST", "/simulator/devices/{a}/presence"),
]

#: Bodies no JSON route accepts, and the field named.
MALFORMED: list[tuple[str, bytes, str]] = [
    ("truncated JSON", b'{"alias": "x"', "body"),
    ("a JSON array", b"[]", "body"),
    ("a JSON string", b'"x"', "body"),
    ("trailing garbage", b"{} x", "body"),
    ("invalid UTF-8", b'{"alias": "\xff\xfe"}', "body"),
    ("a key given twice", b'{"k": 1, "k": 2}', "k"),
    ("a key with a lone surrogate", b'{"x\\ud800": 1}', "body"),
    ("nesting 100000 deep", b"[" * 100_000, "body"),
    ("an integer of 5000 digits", b'{"k": ' + b"9" * 5000 + b"}", "body"),
]


def body_cases() -> Iterator[Case]:
    for method, path in BODY_ROUTES:
        for name, body, field in MALFORMED:
            yield Case(f"{method} {path}: {name}", method, path, body, field=field)
        for ctype in ["text/plain", "application/x-www-form-urlencoded", None,
                      "multipart/form-data; boundary=x", "application/jsonx"]:
            if path in FORM_ROUTES and ctype is not None and ctype.startswith("multipart/"):
                # the send and picture routes take forms: this one holds no field
                yield Case(f"{method} {path}: Content-Type {ctype}", method, path, b"{}",
                           content_type=ctype, field=FORM_ROUTES[path])
                continue
            yield Case(f"{method} {path}: Content-Type {ctype}", method, path, b"{}",
                       content_type=ctype, status=415, code="UNSUPPORTED_MEDIA_TYPE")
    yield Case("POST /devices: an empty body", "POST", "/devices", b"", field="body")
    yield Case("PUT /devices/{a}: whitespace only", "PUT", "/devices/{a}", b" \r\n ",
               field="body")
    yield Case("POST /devices: UTF-16 JSON, an empty alias", "POST", "/devices",
               j({"userId": "mallory", "alias": ""}).decode().encode("utf-16"), field="alias")
    yield Case("POST /devices: +json media type, a bad alias", "POST", "/devices",
               j({"userId": "mallory", "alias": ""}), content_type="application/problem+json",
               field="alias")
    # json.loads decodes bytes with "surrogatepass": the text rules catch the surrogate
    yield Case("POST /devices: a UTF-8 encoded surrogate", "POST", "/devices",
               b'{"userId": "u", "alias": "\xed\xa0\x80"}', field="alias")
    for name, raw in [("an overlong UTF-8 slash", b'{"userId": "u", "alias": "\xc0\xaf"}'),
                      ("latin-1 bytes", '{"userId": "u", "alias": "caf\u00e9"}'.encode("latin-1")),
                      ("UTF-8 cut in a character", b'{"userId": "u", "alias": "\xe2\x82"}')]:
        yield Case(f"POST /devices: {name}", "POST", "/devices", raw,
                   content_type="application/json; charset=iso-8859-1", field="body")
    yield Case("POST /devices: UTF-32 JSON, a NUL in the alias", "POST", "/devices",
               b'{"userId": "mallory", "alias": "a\\u0000"}'.decode().encode("utf-32"),
               field="alias")
    yield Case("POST /devices: gzip bytes as JSON", "POST", "/devices",
               b"\x1f\x8b\x08\x00\x00\x00\x00\x00", headers=(("Content-Encoding", "gzip"),),
               field="body")
    yield Case("POST /devices: over 1 MiB", "POST", "/devices",
               b'{"alias": "' + b"x" * MIB + b'"}', status=413, code="PAYLOAD_TOO_LARGE")


def text_cases() -> Iterator[Case]:
    """Strings no field may hold; one-line fields refuse tabs and line breaks too."""
    bad_anywhere = [("a lone surrogate", "a\\ud800"), ("a lone low surrogate", "\\udfffa"),
                    ("NUL", "a\\u0000b"), ("ESC", "a\\u001bb"), ("DEL", "a\\u007fb"),
                    ("a C1 control", "a\\u0085b")]
    not_in_a_line = [("a line feed", "a\\nb"), ("a tab", "a\\tb"), ("a carriage return", "a\\r"),
                     ("a line separator", "a\\u2028b")]

    def raw(fields: dict[str, Any], name: str, escaped: str) -> bytes:
        # the escape goes into the JSON text as is (json.dumps would escape the backslash)
        text = j(fields)[:-1]
        sep = b", " if fields else b""
        return text + sep + b'"' + name.encode() + b'": "' + escaped.encode() + b'"}'

    targets: list[tuple[str, str, dict[str, Any], str, bool]] = [
        ("POST", "/devices", {"userId": "mallory"}, "alias", True),
        ("POST", "/devices", {"userId": "mallory", "alias": "M"}, "description", True),
        ("POST", "/devices", {"userId": "mallory", "alias": "M"}, "businessType", True),
        ("PUT", "/devices/{a}", {}, "alias", True),
        ("PUT", "/devices/{a}", {}, "description", True),
        ("PUT", "/devices/{a}", {}, "businessType", True),
        ("PUT", "/devices/{a}/settings/ai", {}, "apiKey", True),
        ("PUT", "/devices/{a}/settings/ai", {}, "model", True),
        ("PUT", "/devices/{a}/settings/ai", {}, "systemPrompt", False),
        ("PUT", "/devices/{a}/settings/webhook", {}, "url", True),
        ("PUT", "/devices/{a}/settings/webhook", {"url": "http://127.0.0.1:9/h"}, "secret", True),
        ("POST", "/devices/{a}/messages", {"to": "+15551234567"}, "text", False),
        ("POST", "/devices/{a}/messages", {"text": "hi"}, "to", True),
        ("POST", "/devices/{a}/pair-code", {}, "phoneNumber", True),
        ("POST", "/devices/{a}/messages/3AHOSTILE/reaction", {}, "emoji", True),
        ("PATCH", "/devices/{a}/messages/3AHOSTILE", {}, "text", False),
        ("PUT", "/devices/{a}/settings/proxy", {}, "url", True),
        ("POST", "/simulator/devices/{a}/scan", {}, "pushName", True),
        ("POST", "/simulator/devices/{a}/messages", {"from": "+15551234567"}, "text", False),
        ("POST", "/simulator/devices/{a}/messages", {"from": "+15551234567", "type": "image",
                                                     "media": {"data": "AAAA"}}, "caption", False),
        ("POST", "/simulator/devices/{a}/messages", {"from": "+15551234567", "text": "x"},
         "pushName", True),
        ("POST", "/simulator/devices/{a}/messages", {"from": "+15551234567", "type": "reaction",
                                                     "messageId": "3A"}, "emoji", True),
        ("POST", "/simulator/devices/{a}/messages", {"from": "+15551234567", "type": "poll_vote",
                                                     "messageId": "3A"}, "options", True),
        ("POST", "/simulator/devices/{a}/receipts", {"status": "read"}, "messageId", True),
        ("POST", "/devices/{a}/contacts/check", {}, "phoneNumbers", True),
        ("POST", "/simulator/devices/{a}/contacts", {"phoneNumber": "+15551234567"}, "name",
         True),
        ("POST", "/devices/{a}/groups", {"participants": ["+15551234567"]}, "subject", True),
        ("PATCH", GROUP, {}, "subject", True),
        ("PATCH", GROUP, {}, "topic", False),
        ("POST", "/devices/{a}/groups/join", {}, "link", True),
        ("PUT", "/devices/{a}/profile", {}, "name", True),
        ("PUT", "/devices/{a}/profile", {}, "about", True),
        ("PUT", "/devices/{a}/settings/calls", {"autoReject": True}, "message", False),
        ("POST", "/devices/{a}/calls/ABC123/reject", {}, "from", True),
    ]
    for method, path, fields, name, one_line in targets:
        bad = bad_anywhere + (not_in_a_line if one_line else [])
        for what, escaped in bad:
            yield Case(f"{method} {path}: {name} with {what}", method, path,
                       raw(fields, name, escaped), field=name)
    # Once an actor crash each: eight of them parked a connected device as crash_loop.
    for attempt in range(1, 9):
        yield Case(f"A's own key: a lone surrogate in its alias, attempt {attempt}", "PUT",
                   "/devices/{a}", b'{"alias": "x\\ud800", "description": "\\udc00"}',
                   token=KEY_A, field="alias")
    yield Case("PUT /devices/{a}: events list holding NUL", "PUT",
               "/devices/{a}/settings/webhook",
               b'{"url": "http://127.0.0.1:9/h", "events": ["message\\u0000"]}', field="events")


def field_cases() -> Iterator[Case]:
    """Wrong types, ranges and shapes, route by route."""
    create: list[tuple[Any, str]] = [
        ({"userId": "mallory", "alias": "x" * 1_000_000}, "alias"),
        ({"userId": "mallory", "alias": ""}, "alias"),
        ({"userId": "mallory", "alias": "!!!"}, "alias"),
        ({"userId": "mallory", "alias": 5}, "alias"),
        ({"userId": "mallory", "alias": None}, "alias"),
        ({"userId": "../etc", "alias": "M"}, "userId"),
        ({"userId": "a b", "alias": "M"}, "userId"),
        ({"userId": "x" * 65, "alias": "M"}, "userId"),
        ({"userId": ["mallory"], "alias": "M"}, "userId"),
        ({"userId": "mallory", "alias": "M", "phoneNumber": "+0123"}, "phoneNumber"),
        ({"userId": "mallory", "alias": "M", "phoneNumber": 15551234567}, "phoneNumber"),
        ({"userId": "mallory", "alias": "M", "description": "d" * 501}, "description"),
        ({"userId": "mallory", "alias": "M", "isAdmin": True}, "isAdmin"),
        ({"userId": "mallory", "alias": "M", "__proto__": {}}, "__proto__"),
    ]
    for body, field in create:
        yield Case(f"POST /devices: {field} {str(body)[-40:]}", "POST", "/devices", j(body),
                   field=field)
    yield Case("POST /devices: A's alias again", "POST", "/devices",
               j({"userId": "alice", "alias": "A"}), status=409, code="DEVICE_CONFLICT")
    update: list[tuple[Any, str]] = [
        ({}, "body"), ({"alias": None}, "alias"), ({"alias": True}, "alias"),
        ({"id": 7}, "id"), ({"sessionId": "user_x_device_y"}, "sessionId"),
        ({"status": "connected"}, "status"), ({"phoneNumber": "555"}, "phoneNumber"),
    ]
    for body, field in update:
        yield Case(f"PUT /devices/{{a}}: {body}", "PUT", "/devices/{a}", j(body), field=field)
    ai: list[tuple[bytes, str]] = [
        (b'{"maxTokens": 1' + b"0" * 400 + b"}", "maxTokens"),
        (b'{"maxTokens": 1e3}', "maxTokens"),
        (b'{"maxTokens": 5.0}', "maxTokens"),
        (b'{"maxTokens": 1e400}', "maxTokens"),
        (b'{"maxTokens": 0}', "maxTokens"),
        (b'{"maxTokens": "100"}', "maxTokens"),
        (b'{"temperature": NaN}', "temperature"),
        (b'{"temperature": Infinity}', "temperature"),
        (b'{"temperature": -1e400}', "temperature"),
        (b'{"temperature": 2.5}', "temperature"),
        (b'{"temperature": true}', "temperature"),
        (b'{"operatorPauseSeconds": 1' + b"0" * 400 + b"}", "operatorPauseSeconds"),
        (b'{"historyLimit": -1}', "historyLimit"),
        (b'{"maxRepliesPerMinute": 61}', "maxRepliesPerMinute"),
        (b'{"timeoutSeconds": 0}', "timeoutSeconds"),
        (b'{"enabled": "yes"}', "enabled"),
        (b'{"provider": "evil"}', "provider"),
        (b'{"apiKey": ""}', "apiKey"),
        (b'{"apiKey": "a b"}', "apiKey"),
        (b'{"model": ""}', "model"),
        (b'{"baseUrl": "http://h.example:0/v1"}', "baseUrl"),
        (b'{"baseUrl": "http://h.example:99999/v1"}', "baseUrl"),
        (b'{"baseUrl": "ftp://h.example/"}', "baseUrl"),
        (b'{"baseUrl": "http://user:pw@h.example/"}', "baseUrl"),
        (b'{"baseUrl": "javascript:alert(1)"}', "baseUrl"),
        (b'{"apiKeyy": "k"}', "apiKeyy"),
    ]
    for body, field in ai:
        yield Case(f"PUT settings/ai: {body[:40]!r}", "PUT", "/devices/{a}/settings/ai", body,
                   field=field)
    hook = "http://127.0.0.1:9/h"
    webhook: list[tuple[Any, str]] = [
        ({"url": "http://127.0.0.1:99999/h"}, "url"),
        ({"url": "http://127.0.0.1:65536/h"}, "url"),
        ({"url": "http://127.0.0.1:0/h"}, "url"),
        ({"url": "http://127.0.0.1:-1/h"}, "url"),
        ({"url": "ftp://127.0.0.1/h"}, "url"),
        ({"url": "http://u:p@127.0.0.1/h"}, "url"),
        ({"url": "http://127.0.0.1/h#x"}, "url"),
        ({"url": ""}, "url"),
        ({"url": 5}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://[::1]:9/h"}, "url"),
        ({"url": hook, "events": "message"}, "events"),
        ({"url": hook, "events": ["nope"]}, "events"),
        ({"url": hook, "events": [1]}, "events"),
        ({"url": hook, "secret": "short"}, "secret"),
        ({"url": hook, "secret": 5}, "secret"),
        ({"url": hook, "enabled": 1}, "enabled"),
        ({"url": hook, "rotateSecret": "yes"}, "rotateSecret"),
        ({"url": hook, "secrets": []}, "secrets"),
    ]
    for body, field in webhook:
        yield Case(f"PUT settings/webhook: {body}", "PUT", "/devices/{a}/settings/webhook",
                   j(body), field=field)
    messages: list[tuple[Any, str]] = [
        ({"to": "+1", "text": "hi"}, "to"),
        ({"to": "status@broadcast", "text": "hi"}, "to"),
        ({"to": "+15551234567", "text": ""}, "text"),
        ({"to": "+15551234567", "text": " \n\t "}, "text"),
        ({"to": "+15551234567", "text": "x" * 4097}, "text"),
        ({"to": "+15551234567", "text": 5}, "text"),
        ({"to": "+15551234567"}, "text"),
        ({"to": "+15551234567", "text": "hi", "bcc": "x"}, "bcc"),
        ({"to": "+15551234567", "text": "hi", "ttl": 0}, "ttl"),
        ({"to": "+15551234567", "text": "hi", "ttl": 10**9}, "ttl"),
        ({"to": "+15551234567", "text": "hi", "ttl": "60"}, "ttl"),
        ({"to": "+15551234567", "text": "hi", "ttl": True}, "ttl"),
    ]
    for body, field in messages:
        yield Case(f"POST messages: {str(body)[-40:]}", "POST", "/devices/{a}/messages",
                   j(body), field=field)
    pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
    png = b"\x89PNG\r\n\x1a\n" + bytes(40)
    pdf64 = base64.b64encode(pdf).decode()
    kinds: list[tuple[Any, str]] = [
        ({"to": "+15551234567", "type": "voice", "media": {"data": pdf64}}, "type"),
        ({"to": "+15551234567", "type": ["image"], "media": {"data": pdf64}}, "type"),
        ({"to": "+15551234567", "type": "image"}, "media"),
        ({"to": "+15551234567", "type": "image", "media": None}, "media"),
        ({"to": "+15551234567", "type": "image", "media": {"data": "%%%%"}}, "media.data"),
        ({"to": "+15551234567", "type": "image", "media": {"data": "QUJD\n"}}, "media.data"),
        ({"to": "+15551234567", "type": "image", "media": {"data": pdf64}}, "media"),
        ({"to": "+15551234567", "type": "image", "media": {"data": pdf64, "x": 1}}, "media.x"),
        ({"to": "+15551234567", "type": "image", "media": {"url": "http://127.0.0.1:9/a.png"}},
         "media.url"),
        ({"to": "+15551234567", "type": "image",
          "media": {"url": "http://169.254.169.254/latest/meta-data"}}, "media.url"),
        ({"to": "+15551234567", "type": "image", "media": {"url": "file:///etc/passwd"}},
         "media.url"),
        ({"to": "+15551234567", "type": "image", "media": {"url": "http://[::1]/a.png"}},
         "media.url"),
        ({"to": "+15551234567", "type": "document", "media": {"data": pdf64},
          "mimetype": "image/png"}, "mimetype"),
        ({"to": "+15551234567", "type": "document", "media": {"data": pdf64},
          "mimetype": "../../etc"}, "mimetype"),
        ({"to": "+15551234567", "type": "document", "media": {"data": pdf64},
          "filename": "a\u0000b"}, "filename"),
        ({"to": "+15551234567", "type": "sticker", "media": {"data": pdf64}}, "media"),
        ({"to": "+15551234567", "type": "audio", "media": {"data": pdf64}, "voice": 1}, "voice"),
        ({"to": "+15551234567", "type": "location",
          "location": {"latitude": "52", "longitude": 13}}, "location.latitude"),
        ({"to": "+15551234567", "type": "location",
          "location": {"latitude": 1e400, "longitude": 13}}, "location.latitude"),
        ({"to": "+15551234567", "type": "contact", "contact": {"vcard": "x" * 5000}},
         "contact.vcard"),
        ({"to": "+15551234567", "type": "poll",
          "poll": {"question": "q", "options": ["a", "b"] * 7}}, "poll.options"),
        ({"to": "+15551234567", "text": "hi", "mentions": ["+1"]}, "mentions"),
        ({"to": "+15551234567", "text": "hi", "mentions": {"a": 1}}, "mentions"),
        ({"to": "+15551234567", "text": "hi", "replyTo": "../x"}, "replyTo"),
        ({"to": "+15551234567", "text": "hi", "replyTo": "nosuchmessage"}, "replyTo"),
        ({"to": "+15551234567", "text": "hi", "linkPreview": "true"}, "linkPreview"),
    ]
    for n, (body, field) in enumerate(kinds):
        yield Case(f"POST messages, a type's field #{n} ({field}): {str(body)[-60:]}", "POST",
                   SEND, j(body), field=field)
    forms: list[tuple[str, bytes, str]] = [
        ("no file", form(("to", "+15551234567", None), ("type", "image", None)), "file"),
        ("a PDF as an image", form(("to", "+15551234567", None), ("type", "image", None),
                                   ("file", pdf, "a.png")), "file"),
        ("a PNG declared JPEG", form(("to", "+15551234567", None), ("type", "image", None),
                                     ("mimetype", "image/jpeg", None), ("file", png, "a.png")),
         "mimetype"),
        ("two files", form(("to", "+15551234567", None), ("type", "document", None),
                           ("file", pdf, "a.pdf"), ("file", pdf, "b.pdf")), "file"),
        ("a part not named file", form(("to", "+15551234567", None), ("type", "document", None),
                                       ("upload", pdf, "a.pdf")), "upload"),
        ("a field given twice", form(("to", "+15551234567", None), ("to", "+15550001111", None),
                                     ("text", "hi", None)), "to"),
        ("media as a field", form(("to", "+15551234567", None), ("type", "image", None),
                                  ("media", "{}", None)), "media"),
        ("location not JSON", form(("to", "+15551234567", None), ("type", "location", None),
                                   ("location", "{52, 13}", None)), "location"),
        ("ttl not a number", form(("to", "+15551234567", None), ("text", "hi", None),
                                  ("ttl", "soon", None)), "ttl"),
        ("voice not a boolean", form(("to", "+15551234567", None), ("type", "audio", None),
                                     ("voice", "yes", None), ("file", pdf, "a.mp3")), "voice"),
        ("a NUL in a field", form(("to", "+15551234567", None), ("text", "a\x00b", None)),
         "text"),
        ("a file on a text", form(("to", "+15551234567", None), ("text", "hi", None),
                                  ("file", pdf, "a.pdf")), "file"),
        ("no boundary in the body", b"--other\r\n\r\n", "to"),
    ]
    for name, body, field in forms:
        yield Case(f"POST messages multipart: {name}", "POST", SEND, body, content_type=FORM,
                   field=field)
    send = j({"to": "+15551234567", "text": "hi"})
    for key in ["", "x" * 129, "with space"]:
        yield Case(f"POST messages: Idempotency-Key {key[:12]!r}", "POST",
                   "/devices/{a}/messages", send, headers=(("Idempotency-Key", key),),
                   field="Idempotency-Key")
    actions: list[tuple[str, str, Any, str]] = [
        ("POST", "/reaction", {}, "emoji"),
        ("POST", "/reaction", {"emoji": 5}, "emoji"),
        ("POST", "/reaction", {"emoji": None}, "emoji"),
        ("POST", "/reaction", {"emoji": "x" * 33}, "emoji"),
        ("POST", "/reaction", {"emoji": "\u3000"}, "emoji"),
        ("POST", "/reaction", {"emoji": "👍", "messageId": "3A"}, "messageId"),
        ("PATCH", "", {}, "text"),
        ("PATCH", "", {"text": ""}, "text"),
        ("PATCH", "", {"text": " \n"}, "text"),
        ("PATCH", "", {"text": "x" * 4097}, "text"),
        ("PATCH", "", {"text": 5}, "text"),
        ("PATCH", "", {"text": "x", "to": "+15551234567"}, "to"),
    ]
    for method, suffix, body, field in actions:
        for message in ("3AHOSTILE", "%00"):
            yield Case(f"{method} message {message}{suffix}: {body}"[:120], method,
                       f"/devices/{{a}}/messages/{message}{suffix}", j(body), field=field)
    sending: list[tuple[Any, str]] = [
        ({}, "ratePerMinute"),
        ({"ratePerMinute": 60}, "burst"),
        ({"ratePerMinute": 0, "burst": 1}, "ratePerMinute"),
        ({"ratePerMinute": 601, "burst": 1}, "ratePerMinute"),
        ({"ratePerMinute": "60", "burst": 1}, "ratePerMinute"),
        ({"ratePerMinute": 60, "burst": 0}, "burst"),
        ({"ratePerMinute": 60, "burst": 1.5}, "burst"),
        ({"ratePerMinute": 60, "burst": True}, "burst"),
        ({"ratePerMinute": 60, "burst": 5, "jitter": 1}, "jitter"),
    ]
    for body, field in sending:
        yield Case(f"PUT settings/sending: {body}", "PUT", "/devices/{a}/settings/sending",
                   j(body), field=field)
    for body, field in [({"phoneNumber": "abc"}, "phoneNumber"), ({}, "phoneNumber"),
                        ({"phoneNumber": 155512345}, "phoneNumber"),
                        ({"phoneNumber": "+15551234567", "x": 1}, "x")]:
        yield Case(f"POST pair-code: {body}", "POST", "/devices/{a}/pair-code", j(body),
                   field=field)
    for body, field in [({"phoneNumber": "1"}, "phoneNumber"), ({"code": "nope"}, "code"),
                        ({"pushName": ""}, "pushName"), ({"x": 1}, "x")]:
        yield Case(f"POST simulator scan: {body}", "POST", "/simulator/devices/{a}/scan",
                   j(body), field=field)
    sim_messages: list[tuple[Any, str]] = [
        ({"from": "+15551234567", "text": "x" * 4097}, "text"),
        ({"from": "nobody", "text": "hi"}, "from"), ({"text": "hi"}, "from"),
        ({"from": "+15551234567", "type": "nope"}, "type"),
        ({"from": "+15551234567", "type": "image", "media": {"data": "%%%%"}}, "media.data"),
        ({"from": "+15551234567", "type": "image", "media": "AAAA"}, "media"),
        ({"from": "+15551234567", "type": "image", "media": {"data": "AAAA", "x": 1}}, "media.x"),
        ({"from": "+15551234567", "type": "location",
          "location": {"latitude": 1e308, "longitude": 0}}, "location.latitude"),
        ({"from": "+15551234567", "type": "poll",
          "poll": {"question": "q", "options": ["o"] * 13}}, "poll.options"),
        ({"from": "+15551234567", "type": "revoke", "messageId": "x" * 129}, "messageId"),
        ({"from": "+15551234567", "type": "contact", "contact": []}, "contact"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A"}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A", "options": "Yes"},
         "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A", "options": None},
         "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A", "options": [5]},
         "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A", "options": [""]},
         "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A",
          "options": ["x" * 101]}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A",
          "options": ["a\u0000"]}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A",
          "options": ["o"] * 13}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A",
          "options": ["a", "a"]}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A",
          "options": [["a"]]}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A",
          "options": [{"name": "a"}]}, "options"),
        ({"from": "+15551234567", "type": "poll_vote", "options": ["a"]}, "messageId"),
        ({"from": "+15551234567", "type": "poll_vote", "messageId": "3A", "options": ["a"],
          "emoji": "x"}, "emoji"),
    ]
    for body, field in sim_messages:
        yield Case(f"POST simulator message: {str(body)[:120]}", "POST",
                   "/simulator/devices/{a}/messages", j(body), field=field)
    proxy: list[tuple[Any, str]] = [
        ({"url": "http://proxy.example:99999"}, "url"),
        ({"url": "http://proxy.example:0"}, "url"),
        ({"url": "ftp://proxy.example:21"}, "url"),
        ({"url": "http://proxy.example:8080/path"}, "url"),
        ({"url": 5}, "url"),
        ({}, "url"),
        ({"url": None, "bypass": True}, "bypass"),
    ]
    for body, field in proxy:
        yield Case(f"PUT settings/proxy: {body}", "PUT", "/devices/{a}/settings/proxy", j(body),
                   field=field)
    fail: list[tuple[bytes, str]] = [
        (b"{}", "reason"), (b'{"reason": "nope"}', "reason"), (b'{"reason": 5}', "reason"),
        (b'{"reason": "banned\\u0000"}', "reason"),
        (b'{"reason": "temporary_ban", "seconds": "10"}', "seconds"),
        (b'{"reason": "temporary_ban", "seconds": 0}', "seconds"),
        (b'{"reason": "temporary_ban", "seconds": 1.5}', "seconds"),
        (b'{"reason": "temporary_ban", "seconds": 1' + b"0" * 400 + b"}", "seconds"),
        (b'{"reason": "client_outdated", "seconds": 10}', "seconds"),
        (b'{"reason": "banned", "now": true}', "now"),
    ]
    for body, field in fail:
        yield Case(f"POST simulator fail: {body[:50]!r}", "POST", "/simulator/devices/{a}/fail",
                   body, field=field)
    receipts: list[tuple[Any, str]] = [
        ({}, "messageId"), ({"messageId": 5, "status": "read"}, "messageId"),
        ({"messageId": "3A", "status": "seen"}, "status"),
        ({"messageId": "3A", "status": "read", "x": 1}, "x"), ([], "body"),
    ]
    for body, field in receipts:
        yield Case(f"POST simulator receipt: {str(body)[:40]}", "POST",
                   "/simulator/devices/{a}/receipts", j(body), field=field)
    contacts: list[tuple[Any, str]] = [
        ({}, "phoneNumbers"), ({"phoneNumbers": []}, "phoneNumbers"),
        ({"phoneNumbers": None}, "phoneNumbers"), ({"phoneNumbers": "+15551234567"}, "phoneNumbers"),
        ({"phoneNumbers": ["+15551234567"] * 51}, "phoneNumbers"),
        ({"phoneNumbers": ["+15551234567", "nobody"]}, "phoneNumbers"),
        ({"phoneNumbers": [15551234567]}, "phoneNumbers"),
        ({"phoneNumbers": [["+15551234567"]]}, "phoneNumbers"),
        ({"phoneNumbers": ["+0155512345"]}, "phoneNumbers"),
        ({"phoneNumbers": ["120363000000000001@g.us"]}, "phoneNumbers"),
        ({"phoneNumbers": ["+15551234567"], "x": 1}, "x"),
    ]
    for body, field in contacts:
        yield Case(f"POST contacts/check: {str(body)[:60]}", "POST",
                   "/devices/{a}/contacts/check", j(body), field=field)
    for action in ("block", "unblock"):
        yield Case(f"POST contacts/{action}: a field", "POST",
                   f"/devices/{{a}}/contacts/+15551234567/{action}", j({"x": 1}), field="x")
    for body, field in [({}, "phoneNumber"), ({"phoneNumber": "nobody"}, "phoneNumber"),
                        ({"phoneNumber": "+15551234567", "onWhatsApp": "yes"}, "onWhatsApp"),
                        ({"phoneNumber": "+15551234567", "name": ""}, "name"),
                        ({"phoneNumber": "+15551234567", "name": "x" * 101}, "name"),
                        ({"phoneNumber": "+15551234567", "x": 1}, "x")]:
        yield Case(f"POST simulator contacts: {body}", "POST", "/simulator/devices/{a}/contacts",
                   j(body), field=field)
    groups: list[tuple[str, str, Any, str]] = [
        ("POST", "/devices/{a}/groups", {"subject": "G", "participants": []}, "participants"),
        ("POST", "/devices/{a}/groups", {"subject": "G", "participants": ["nobody"]},
         "participants"),
        ("POST", "/devices/{a}/groups", {"subject": "x" * 101, "participants": ["+15551234567"]},
         "subject"),
        ("POST", "/devices/{a}/groups", {"subject": 5, "participants": ["+15551234567"]},
         "subject"),
        ("POST", "/devices/{a}/groups", {"subject": "G", "participants": "+15551234567"},
         "participants"),
        ("PATCH", GROUP, {}, "body"),
        ("PATCH", GROUP, {"locked": "true"}, "locked"),
        ("PATCH", GROUP, {"announce": None}, "announce"),
        ("PATCH", GROUP, {"topic": "x" * 2049}, "topic"),
        ("POST", f"{GROUP}/participants", {}, "body"),
        ("POST", f"{GROUP}/participants", {"kick": ["+15551234567"]}, "kick"),
        ("POST", f"{GROUP}/participants", {"add": [None]}, "add"),
        ("POST", f"{GROUP}/participants", {"promote": ["+1" * 60]}, "promote"),
        ("POST", "/devices/{a}/groups/join", {"link": "chat.whatsapp.com/short"}, "link"),
        ("POST", "/devices/{a}/groups/join", {"link": 5}, "link"),
        ("POST", f"{GROUP}/leave", {"force": True}, "force"),
        ("PUT", PICTURE, {}, "media"),
        ("PUT", PICTURE, {"media": {"url": "http://127.0.0.1:9/x.jpg"}}, "media.url"),
        ("PUT", PICTURE, {"media": {"data": "AAAA"}, "caption": "x"}, "caption"),
        ("PUT", PICTURE, {"media": {"url": f"http://{'a' * 70}.example/x.jpg"}}, "media.url"),
        ("GET", "/devices/{a}/groups/120363000000000001", None, "groupId"),
        ("GET", "/devices/{a}/groups/%00", None, "groupId"),
        ("GET", f"{GROUP}/invite?revoke=yes", None, "revoke"),
        ("POST", "/simulator/devices/{a}/groups", {"subject": "G", "participants": ["+1555123"]},
         "owner"),
        ("PATCH", "/simulator/devices/{a}/groups/120363000000000001@g.us", {"by": 5}, "by"),
    ]
    for method, path, body, field in groups:
        yield Case(f"{method} {path[10:]}: {str(body)[:60]}", method, path,
                   None if body is None else j(body), field=field)
    for route in ["disconnect", "unlink"]:
        yield Case(f"POST simulator {route}: a field", "POST",
                   f"/simulator/devices/{{a}}/{route}", j({"force": True}), field="force")


# -- paths, queries, methods ------------------------------------------------------------------


def path_cases() -> Iterator[Case]:
    no_device = ["%E2%91%A0", "%00", "%ff", "%ED%A0%80", "-1", "0", "1e0", "%201", "+1", "0x1",
                 "%D9%A3", "99999999999999999999999", "{a}%00", "{a}%0A", "x" * 4000,
                 "user_alice_device_a%20", "USER_ALICE_DEVICE_A"]
    for ref in no_device:
        yield Case(f"GET /devices/{ref[:30]}", "GET", f"/devices/{ref}", status=404,
                   code="DEVICE_NOT_FOUND")
    for ref in ["%E2%91%A0", "%00", "{a}%20", "-1"]:
        yield Case(f"POST /sessions/{ref}/cancel", "POST", f"/sessions/{ref}/cancel",
                   status=404, code="DEVICE_NOT_FOUND")
        yield Case(f"DELETE /devices/{ref}", "DELETE", f"/devices/{ref}", status=404,
                   code="DEVICE_NOT_FOUND")
    for user, field in [("%00", "userId"), ("a%20b", "userId"), ("-x", "userId"),
                        ("x" * 65, "userId"), ("%E2%91%A0", "userId")]:
        yield Case(f"GET /users/{user[:20]}/devices", "GET", f"/users/{user}/devices",
                   field=field)
    for query, field in [("page=0", "page"), ("limit=101", "limit"), ("limit=1e1", "limit"),
                         ("page=%00", "page"), ("status=%00", "status"),
                         ("status=connected%0A", "status"), ("page=9999999999", "page"),
                         ("limit=-1", "limit")]:
        yield Case(f"GET /users/alice/devices?{query}", "GET", f"/users/alice/devices?{query}",
                   field=field)
    for query, field in [("status=bogus", "status"), ("limit=0", "limit"), ("page=x", "page")]:
        yield Case(f"GET deliveries?{query}", "GET", f"/devices/{{a}}/webhook/deliveries?{query}",
                   field=field)
    for did in ["%00", "msg_%ED%A0%80", "msg_" + "a" * 100, "../x", "msg_a%0Ab"]:
        yield Case(f"GET delivery {did[:20]}", "GET", f"/devices/{{a}}/webhook/deliveries/{did}",
                   status=404, code="NOT_FOUND")
    for method, suffix in [("POST", "/reaction"), ("PATCH", ""), ("DELETE", "")]:
        for message in ("3ANOPE", "%00", "msg_%ED%A0%80", "x" * 300):
            body = {"/reaction": j({"emoji": "👍"}), "": j({"text": "x"})}[suffix]
            yield Case(f"{method} message {message[:20]}{suffix}: no such message", method,
                       f"/devices/{{a}}/messages/{message}{suffix}",
                       None if method == "DELETE" else body, status=404, code="NOT_FOUND")
    for query in ["before=5%0A", "before=0", "before=1%201"]:
        yield Case(f"GET chats?{query}", "GET", f"/devices/{{a}}/chats?{query}", field="before")
        yield Case(f"GET chat messages?{query}", "GET",
                   f"/devices/{{a}}/chats/%2B15551234567/messages?{query}", field="before")
    for chat in ["%00", "nobody", "1", "15551234567@example.com", "x" * 300,
                 "15551234567@s.whatsapp.net%0A"]:
        yield Case(f"POST chats/{chat[:20]}/read", "POST", f"/devices/{{a}}/chats/{chat}/read",
                   field="chatId")
    for person in ["%00", "nobody", "1", "120363000000000001@g.us", "status@broadcast",
                   "15551234567@c.us", "%2B1%20555%20123%204567", "x" * 300,
                   "15551234567@s.whatsapp.net%0A"]:
        yield Case(f"GET contacts/{person[:20]}", "GET", f"/devices/{{a}}/contacts/{person}",
                   field="contact")
        yield Case(f"POST contacts/{person[:20]}/block", "POST",
                   f"/devices/{{a}}/contacts/{person}/block", field="contact")
        yield Case(f"GET lids/{person[:20]}", "GET", f"/devices/{{a}}/lids/{person}",
                   field="lidOrPhone")
    for query, field in [("page=0", "page"), ("limit=101", "limit"), ("page=%00", "page")]:
        yield Case(f"GET contacts?{query}", "GET", f"/devices/{{a}}/contacts?{query}",
                   field=field)
    yield Case("POST redeliver of no delivery", "POST",
               "/devices/{a}/webhook/deliveries/msg_nope/redeliver", status=404, code="NOT_FOUND")
    for method, path in [("GET", "/nope"), ("GET", "/devices/{a}/nope"), ("POST", "/admin"),
                         ("GET", "/devices/{a}/settings/secret"),
                         ("DELETE", "/devices/{a}%2F.."),  # an escaped slash is a slash
                         ("POST", "/sessions/{a}%2F../cancel")]:
        yield Case(f"{method} {path}", method, path, status=404, code="NOT_FOUND")
    for method, path in [("PATCH", "/devices/{a}"), ("DELETE", "/sessions"), ("PUT", "/devices"),
                         ("GET", "/devices/{a}/login"), ("DELETE", "/devices/{a}/settings/ai"),
                         ("TRACE", "/sessions"), ("POST", "/ready"), ("PUT", "/health"),
                         ("DELETE", "/devices/{a}/settings/proxy")]:
        yield Case(f"{method} {path}", method, path, status=405, code="METHOD_NOT_ALLOWED")


# -- authentication ---------------------------------------------------------------------------


def auth_cases() -> Iterator[Case]:
    unauthenticated = dict(status=401, code="AUTHENTICATION_FAILED")
    for token in [None, "", "wrong", "x" * 10_000, "dev_" + "0" * 32, TEST_TOKEN + "x"]:
        shown = None if token is None else token[:12]
        yield Case(f"GET /sessions with token {shown!r}", token=token, path="/sessions",
                   **unauthenticated)  # type: ignore[arg-type]
    yield Case("DELETE A without a token", "DELETE", "/devices/{a}", token=None,
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("POST /devices without a token", "POST", "/devices",
               j({"userId": "mallory", "alias": "M"}), token=None,
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("a bearer token instead", path="/sessions", token=None,
               headers=(("Authorization", f"Bearer {TEST_TOKEN}"),),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("the token in the query", path=f"/sessions?token={TEST_TOKEN}", token=None,
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("two X-API-TOKEN headers, one wrong", path="/sessions",
               headers=(("X-API-TOKEN", "wrong"),), **unauthenticated)  # type: ignore[arg-type]
    yield Case("two X-API-TOKEN headers, both right", path="/sessions",
               headers=(("X-API-TOKEN", TEST_TOKEN),),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("text/plain without a token", "PUT", "/devices/{a}", b"x",
               content_type="text/plain", token=None,
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("GET /metrics without a token", path="/metrics", token=None,
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("GET /metrics with a wrong bearer token", path="/metrics", token=None,
               headers=(("Authorization", "Bearer wrong"),),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("GET /metrics with two tokens, the first right", path="/metrics",
               headers=(("X-API-TOKEN", "wrong"),), **unauthenticated)  # type: ignore[arg-type]
    yield Case("GET /metrics with a device key", path="/metrics", token=KEY_A, status=403,
               code="FORBIDDEN")
    not_found = dict(status=404, code="DEVICE_NOT_FOUND")
    for method, path, body in [("GET", "/devices/{b}", None),
                               ("PUT", "/devices/{b}", j({"alias": "Mine"})),
                               ("DELETE", "/devices/{b}", None),
                               ("POST", "/devices/{b}/logout", None),
                               ("POST", "/sessions/{b}/cancel", None),
                               ("PUT", "/devices/{b}/settings/ai", j({"enabled": True})),
                               ("GET", "/devices/{b}/settings/ai", None),
                               ("GET", "/devices/{b}/settings/proxy", None),
                               ("PUT", "/devices/{b}/settings/proxy", j({"url": None})),
                               ("POST", "/devices/{b}/messages", j({"to": "+15551234567",
                                                                     "text": "hi"}))]:
        yield Case(f"A's key: {method} {path}", method, path, body, token=KEY_A,
                   **not_found)  # type: ignore[arg-type]
    forbidden = dict(status=403, code="FORBIDDEN")
    yield Case("A's key creates a device", "POST", "/devices",
               j({"userId": "alice", "alias": "Second"}), token=KEY_A,
               **forbidden)  # type: ignore[arg-type]
    for route in ["scan", "disconnect", "unlink", "fail"]:
        yield Case(f"A's key: simulator {route}", "POST", f"/simulator/devices/{{a}}/{route}",
                   b"{}", token=KEY_A, **forbidden)  # type: ignore[arg-type]


# -- the protocol: raw requests ---------------------------------------------------------------


def raw_cases() -> Iterator[Case]:
    def req(head: str, body: bytes = b"") -> bytes:
        return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body

    sessions = "GET /api/whatsapp/sessions HTTP/1.1\nHost: x\nX-API-TOKEN: {token}\n"
    yield Case("garbage", raw=b"GARBAGE\r\n\r\n")
    yield Case("a bad Content-Length", raw=req("POST /api/whatsapp/devices HTTP/1.1\nHost: x\n"
                                               "Content-Length: abc\n"))
    yield Case("Content-Length and Transfer-Encoding", raw=req(
        "POST /api/whatsapp/devices HTTP/1.1\nHost: x\nContent-Length: 2\n"
        "Transfer-Encoding: chunked\n", b"{}\r\n\r\n"))
    yield Case("no Host", raw=req("GET /api/whatsapp/sessions HTTP/1.1\n"))
    yield Case("a header without a colon", raw=req(sessions + "Oops\n"))
    yield Case("a NUL in a header", raw=req(sessions + "X-Evil: a\0b\n"))
    yield Case("a space before the colon", raw=req(sessions + "X-Evil : a\n"))
    yield Case("headers over 64 KiB", raw=req(sessions + "X-Big: " + "x" * 70_000 + "\n"),
               status=431, code="HEADERS_TOO_LARGE")
    yield Case("a huge Content-Length", raw=req(
        "POST /api/whatsapp/devices HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        "X-API-TOKEN: {token}\nContent-Length: 99999999999999999999\n"),
        status=413, code="PAYLOAD_TOO_LARGE")
    yield Case("a huge Content-Length on the send route", raw=req(
        "POST /api/whatsapp/devices/{a}/messages HTTP/1.1\nHost: x\n"
        "Content-Type: application/json\nX-API-TOKEN: {token}\nContent-Length: 999999999999\n"),
        status=413, code="PAYLOAD_TOO_LARGE")
    yield Case("the send route's body without a credential", raw=req(
        "POST /api/whatsapp/devices/{a}/messages HTTP/1.1\nHost: x\n"
        "Content-Type: application/json\nContent-Length: 5000000\n", b"{"),
        status=401, code="AUTHENTICATION_FAILED")
    yield Case("a token that is not latin-1 text", raw=(
        b"GET /api/whatsapp/sessions HTTP/1.1\r\nHost: x\r\nX-API-TOKEN: \xff\xfe\xfd\r\n\r\n"),
        status=401, code="AUTHENTICATION_FAILED")
    yield Case("two tokens on the wire", raw=req(sessions + "X-API-TOKEN: {token}\n"),
               status=401, code="AUTHENTICATION_FAILED")
    yield Case("a path escaping the prefix", raw=req(
        "GET /api/whatsapp/../../etc/passwd HTTP/1.1\nHost: x\nX-API-TOKEN: {token}\n"),
        status=404, code="NOT_FOUND")
    yield Case("an absolute-form target without a token", raw=req(
        "DELETE http://evil.example/api/whatsapp/devices/{a} HTTP/1.1\nHost: x\n"),
        status=401, code="AUTHENTICATION_FAILED")
    yield Case("a chunked body that is not", raw=req(
        "PUT /api/whatsapp/devices/{a} HTTP/1.1\nHost: x\nX-API-TOKEN: {token}\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n", b"zz\r\n{}\r\n0\r\n\r\n"))


# -- the WebSocket handshake ------------------------------------------------------------------


def ws_cases() -> Iterator[Case]:
    def upgrade(query: str, extra: str = "", key: bool = True, version: str = "13") -> bytes:
        head = (f"GET /{query} HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n"
                f"Sec-WebSocket-Version: {version}\n")
        if key:
            head += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
        return (head + extra).replace("\n", "\r\n").encode("latin-1") + b"\r\n"

    unauthenticated = dict(status=401, code="AUTHENTICATION_FAILED")
    yield Case("ws: no token", raw=upgrade(""), **unauthenticated)  # type: ignore[arg-type]
    yield Case("ws: a wrong token", raw=upgrade("?token=wrong"),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("ws: a wrong query token next to a good header",
               raw=upgrade("?token=wrong", "X-API-TOKEN: {token}\n"),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("ws: a good query token next to a wrong header",
               raw=upgrade("?token={token}", "X-API-TOKEN: wrong\n"),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("ws: a wrong subprotocol next to a good token",
               raw=upgrade("?token={token}", "Sec-WebSocket-Protocol: wasup, wrong\n"),
               **unauthenticated)  # type: ignore[arg-type]
    yield Case("ws: two X-API-TOKEN headers", raw=upgrade(
        "", "X-API-TOKEN: {token}\nX-API-TOKEN: {token}\n"),
        **unauthenticated)  # type: ignore[arg-type]
    yield Case("ws: an unknown event filter", raw=upgrade("?token={token}&events=nope"),
               field="events")
    yield Case("ws: a control character in a filter",
               raw=upgrade("?token={token}&sessionId=a%00b"), field="sessionId")
    yield Case("ws: 101 filter values",
               raw=upgrade("?token={token}&sessionId=" + ",".join(["x"] * 101)),
               field="sessionId")
    yield Case("ws: no Sec-WebSocket-Key", raw=upgrade("?token={token}", key=False))
    yield Case("ws: version 12", raw=upgrade("?token={token}", version="12"))
    yield Case("plain GET on the WebSocket endpoint", raw=(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    yield Case("POST on the WebSocket endpoint", raw=(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
        status=405, code="METHOD_NOT_ALLOWED")


def account_cases() -> Iterator[Case]:
    """Presence, profile and calls: wrong states, addresses, lengths and types."""
    chat = "/devices/{a}/chats/15551234567@s.whatsapp.net/presence"
    rows: list[tuple[str, str, Any, str]] = [
        ("POST", "/devices/{a}/presence", {"state": "typing"}, "state"),
        ("POST", "/devices/{a}/presence", {"state": ["available"]}, "state"),
        ("POST", "/devices/{a}/presence", {}, "state"),
        ("POST", chat, {"state": "available"}, "state"),
        ("POST", chat, {"state": None}, "state"),
        ("POST", "/devices/{a}/chats/status@broadcast/presence", {"state": "typing"}, "chatId"),
        ("POST", "/devices/{a}/contacts/120363000000000001@g.us/presence/subscribe", {},
         "contact"),
        ("POST", "/devices/{a}/contacts/15551234567/presence/subscribe", {"x": 1}, "x"),
        ("PUT", "/devices/{a}/profile", {}, "body"),
        ("PUT", "/devices/{a}/profile", {"name": "n" * 26}, "name"),
        ("PUT", "/devices/{a}/profile", {"name": 7}, "name"),
        ("PUT", "/devices/{a}/profile", {"about": "a" * 140}, "about"),
        ("PUT", "/devices/{a}/profile", {"name": "Ann", "picture": "x"}, "picture"),
        ("PUT", PROFILE_PICTURE, {}, "media"),
        ("PUT", PROFILE_PICTURE, {"media": "x"}, "media"),
        ("PUT", PROFILE_PICTURE, {"media": {"data": "%%%%"}}, "media.data"),
        ("PUT", PROFILE_PICTURE, {"media": {"data": base64.b64encode(b"GIF8 not really").decode()}},
         "media"),
        ("PUT", PROFILE_PICTURE, {"media": {"url": "file:///etc/passwd"}}, "media.url"),
        ("POST", "/devices/{a}/calls/ABC123/reject", {}, "from"),
        ("POST", "/devices/{a}/calls/ABC123/reject", {"from": "120363000000000001@g.us"}, "from"),
        ("POST", "/devices/{a}/calls/a.b/reject", {"from": "+15551234567"}, "callId"),
        ("PUT", "/devices/{a}/settings/calls", {"message": "hi"}, "autoReject"),
        ("PUT", "/devices/{a}/settings/calls", {"autoReject": 1}, "autoReject"),
        ("PUT", "/devices/{a}/settings/calls", {"autoReject": True, "message": ""}, "message"),
        ("PUT", "/devices/{a}/settings/calls", {"autoReject": True, "message": "m" * 1001},
         "message"),
        ("POST", "/simulator/devices/{a}/calls", {}, "from"),
        ("POST", "/simulator/devices/{a}/calls", {"from": "+15551234567", "video": "yes"},
         "video"),
        ("POST", "/simulator/devices/{a}/presence", {"from": "+15551234567", "state": "x"},
         "state"),
        ("POST", "/simulator/devices/{a}/presence",
         {"from": "+15551234567", "state": "available", "lastSeen": 1_750_000_000}, "lastSeen"),
        ("POST", "/simulator/devices/{a}/presence",
         {"from": "+15551234567", "state": "typing", "chat": "x"}, "chat"),
    ]
    for method, path, body, field in rows:
        yield Case(f"{method} {path}: {body}"[:200], method, path, j(body), field=field)
    yield Case("PUT profile/picture multipart: no file", "PUT", PROFILE_PICTURE,
               form(("x", "1", None)), content_type=FORM, field="x")
    yield Case("PUT profile/picture multipart: not an image", "PUT", PROFILE_PICTURE,
               form(("file", b"plain text", "a.txt")), content_type=FORM, field="file")


ALL_CASES = [*body_cases(), *text_cases(), *field_cases(), *account_cases(), *path_cases(), *auth_cases(),
             *raw_cases(), *ws_cases()]


# -- running the table ------------------------------------------------------------------------


@attrs.define
class Fixture:
    server: Server
    a: dict[str, Any]
    b: dict[str, Any]

    def fill(self, text: str) -> str:
        return (text.replace("{aid}", str(self.a["id"])).replace("{a}", self.a["sessionId"])
                .replace("{b}", self.b["sessionId"]).replace("{token}", TEST_TOKEN))

    def token(self, token: str | None) -> str | None:
        return {OP: TEST_TOKEN, KEY_A: self.a["apiKey"], KEY_B: self.b["apiKey"]}.get(
            token or "", token)


def _deliveries(device_id: int, repos: Repositories) -> Any:
    return repos.outbox.list_deliveries(device_id, status=None, offset=0, limit=100)


async def snapshot(fx: Fixture) -> list[Any]:
    """Everything a hostile request could have changed: every stored device row, the devices'
    settings of every kind, and their webhook deliveries."""
    sup = fx.server.sup
    seen: list[Any] = list(sup.sessions())
    for dev in (fx.a, fx.b):
        for kind in ["ai", "webhook", "proxy"]:
            seen.append(await sup.get_settings(str(dev["id"]), kind))
        seen.append(await sup.db.run(partial(_deliveries, dev["id"])))
    return seen


async def raw_request(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on a new connection and parse the one answer (status, headers, body)."""
    stream = await trio.open_tcp_stream(server.host, server.port)
    data = b""
    try:
        await stream.send_all(request)
        with trio.fail_after(3):
            while chunk := await stream.receive_some(65536):
                data += chunk
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep:
                    lines = head.decode("latin-1").split("\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in
                               (line.partition(":") for line in lines[1:])}
                    if len(rest) >= int(headers.get("content-length", "-1")) >= 0:
                        break
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    return status, headers, body[: int(headers.get("content-length", len(body)))]


async def send(client: httpx.AsyncClient, fx: Fixture, case: Case) -> tuple[int, dict[str, str],
                                                                            bytes]:
    if case.raw is not None:
        raw = case.raw.replace(b"{token}", TEST_TOKEN.encode()).replace(
            b"{a}", fx.a["sessionId"].encode())
        return await raw_request(fx.server, raw)
    headers: list[tuple[str, str]] = []
    token = fx.token(case.token)
    if token is not None:
        headers.append(("X-API-TOKEN", token))
    if case.body is not None and case.content_type is not None:
        headers.append(("Content-Type", case.content_type))
    headers.extend(case.headers)
    url = fx.server.api_url + fx.fill(case.path)
    r = await client.request(case.method, url, content=case.body, headers=headers)
    return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content


@pytest.fixture
async def hostile_server(tmp_path: Path) -> AsyncIterator[Fixture]:
    async with running_server(
        tmp_path / "data", settings=SETTINGS, allow_networks=("127.0.0.0/8",)
    ) as server, api_client(server) as api:
        devices = []
        for user, alias in [("alice", "A"), ("bob", "B")]:
            r = await api.post("/devices", json={"userId": user, "alias": alias})
            assert r.status_code == 201, r.text
            device = r.json()["data"]
            r = await api.post(f"/simulator/devices/{device['sessionId']}/scan", json={})
            assert r.status_code == 200, r.text
            devices.append(device)
        fx = Fixture(server, *devices)
        sid = fx.a["sessionId"]
        r = await api.put(f"/devices/{sid}/settings/ai",
                          json={"enabled": False, "model": "m", "apiKey": "sk-test"})
        assert r.status_code == 200, r.text
        r = await api.put(f"/devices/{sid}/settings/webhook",
                          json={"url": "http://127.0.0.1:9/hook", "secret": "a-webhook-secret"})
        assert r.status_code == 200, r.text
        for row in server.sup.sessions():  # the scan answers before the connection is up
            await wait_status(server.sup, row.id, "connected", within=30)
        yield fx


def test_the_table_is_big_enough() -> None:
    assert len(ALL_CASES) >= 150
    assert len({case.name for case in ALL_CASES}) == len(ALL_CASES)


def test_hypercorn_errors_carry_the_envelope() -> None:
    """The contract with Hypercorn's private error answers (see api.protocol_errors)."""
    assert protocol_errors.install(), "unsupported Hypercorn: check api/protocol_errors.py"
    body = json.loads(protocol_errors.envelope(431))
    assert body == {"success": False, "error": "request headers too large",
                    "code": "HEADERS_TOO_LARGE"}


async def test_hostile_table(
    hostile_server: Fixture, caplog: pytest.LogCaptureFixture
) -> None:
    fx = hostile_server
    caplog.set_level(logging.ERROR)
    before = await snapshot(fx)
    failures: list[str] = []
    server_errors = 0
    async with httpx.AsyncClient(timeout=10.0) as client:
        for case in ALL_CASES:
            try:
                status, headers, body = await send(client, fx, case)
            except (trio.TooSlowError, httpx.HTTPError, ValueError, IndexError) as exc:
                failures.append(f"{case.name}: no answer ({exc!r})")
                continue
            problem = check(case, status, headers, body)
            if status >= 500:
                server_errors += 1
            after = await snapshot(fx)
            if after != before:
                problem = (problem or "") + " stored state changed"
                before = after
            if problem:
                failures.append(f"{case.name}: {problem}")
    print(f"\nhostile table: {len(ALL_CASES)} cases, {server_errors} answered 5xx")
    assert server_errors == 0
    assert not failures, "\n".join(failures)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not logged, logged[:3]


def check(case: Case, status: int, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with an answer (None: nothing)."""
    shown = body[:200]
    if status != case.status:
        return f"status {status}, expected {case.status}: {shown!r}"
    if not headers.get("content-type", "").startswith("application/json"):
        return f"content-type {headers.get('content-type')!r}: {shown!r}"
    try:
        payload = json.loads(body)
    except ValueError:
        return f"not JSON: {shown!r}"
    if payload.get("success") is not False or payload.get("code") != case.code:
        return f"envelope {payload!r}, expected code {case.code}"
    if not isinstance(payload.get("error"), str) or not payload["error"]:
        return f"no error message: {payload!r}"
    if case.field is not None and payload.get("field") != case.field:
        return f"field {payload.get('field')!r}, expected {case.field!r}: {payload!r}"
    if b"Traceback" in body or b"\\ud800" in body:
        return f"leaks: {shown!r}"
    return None
