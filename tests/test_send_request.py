"""The send request: every type's valid body, each invalid field named in the 400, the file's
mimetype detected and checked against the type, each type's size limit (413 at the limit plus
one byte), and what reaches the media store.

Pure functions and the media store's stand-in; no server (tests/test_send_kinds_e2e.py sends
every type over HTTP).
"""

from __future__ import annotations

from typing import Any

import pytest

from api.send_media import body_max, check_mimetype, max_bytes, prepare
from api.send_request import SendRequest, Upload, parse
from supervisor import message_content as mc
from supervisor.config import MediaConfig
from supervisor.errors import InvalidRequest, TooLarge
from tests.media_support import CSV, GIF, JPEG, MP3, MP4, OGG, PDF, PNG, SAMPLES, WEBP, b64, sha256

MAX_TTL = 86400.0
TO = "+15551234567"
JID = "15551234567@s.whatsapp.net"


def ok(body: dict[str, Any], upload: Upload | None = None) -> SendRequest:
    return parse({"to": TO, **body}, MAX_TTL, upload)


def refused(body: Any, upload: Upload | None = None) -> str | None:
    with pytest.raises(InvalidRequest) as info:
        parse(body, MAX_TTL, upload)
    assert info.value.field is not None and info.value.field in str(info.value)
    return info.value.field


# -- every type's valid form ------------------------------------------------------------------


def test_text_is_the_default_type_with_mentions_and_link_preview() -> None:
    req = ok({"text": "hi @15550001111 https://example.com", "linkPreview": True,
              "mentions": ["+1 555 000 1111", "15550002222@s.whatsapp.net", "+15550001111"],
              "replyTo": "3EB0ABC", "ttl": 30})
    assert req.type == "text" and req.to.canonical == JID
    assert req.content == mc.Text("hi @15550001111 https://example.com")
    assert req.link_preview is True
    # normalized, each once, in the order given
    assert req.mentions == ("15550001111@s.whatsapp.net", "15550002222@s.whatsapp.net")
    assert req.reply_to == "3EB0ABC" and req.ttl == 30.0
    assert ok({"text": "x"}).link_preview is False


def test_a_group_takes_messages() -> None:
    req = parse({"to": "120363000000000000@g.us", "text": "hi all"}, MAX_TTL)
    assert req.to.canonical == "120363000000000000@g.us"


@pytest.mark.parametrize("kind", ["image", "video", "document"])
def test_captioned_media_from_base64(kind: str) -> None:
    data = SAMPLES[kind][0]
    req = ok({"type": kind, "media": {"data": b64(data)}, "caption": "look",
              "mentions": [TO]})
    assert req.type == kind and req.media is not None
    assert req.media.data == data and req.media.url is None and req.media.field == "media"
    assert req.caption == "look" and req.mentions == (JID,) and req.content is None


def test_audio_voice_document_filename_sticker_and_url() -> None:
    assert ok({"type": "audio", "media": {"data": b64(MP3)}}).voice is False
    assert ok({"type": "audio", "media": {"data": b64(OGG)}, "voice": True}).voice is True
    req = ok({"type": "document", "media": {"url": "https://files.example/r.pdf"},
              "filename": "report.pdf", "mimetype": "application/pdf"})
    assert req.media is not None and req.media.url == "https://files.example/r.pdf"
    assert req.filename == "report.pdf" and req.mimetype == "application/pdf"
    assert ok({"type": "sticker", "media": {"data": b64(WEBP)}}).media is not None


def test_location_contact_poll() -> None:
    req = ok({"type": "location",
              "location": {"latitude": 52.52, "longitude": 13.4, "name": "HQ", "address": "Mitte"}})
    assert req.content == mc.Location(52.52, 13.4, name="HQ", address="Mitte")
    req = ok({"type": "contact", "contact": {"name": "Ana", "phoneNumber": "+15550001111"}})
    assert isinstance(req.content, mc.Contact) and req.content.name == "Ana"
    (card,) = req.content.vcards
    assert "FN:Ana" in card and "waid=15550001111:+15550001111" in card
    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Bo\nTEL:+15550002222\nEND:VCARD"
    req = ok({"type": "contact", "contact": {"vcard": vcard}})
    assert req.content == mc.Contact("Bo", (vcard,))
    req = ok({"type": "poll", "poll": {"question": "Lunch?", "options": ["pizza", "soup"],
                                       "multiple": True}})
    assert req.content == mc.Poll("Lunch?", ("pizza", "soup"), multiple=True)


def test_a_multipart_upload_is_the_file() -> None:
    req = ok({"type": "document"}, Upload(PDF, "report.pdf"))
    assert req.media is not None and req.media.data == PDF
    assert req.media.field == "file" and req.media.filename == "report.pdf"


# -- each invalid field, named ----------------------------------------------------------------

INVALID: list[tuple[dict[str, Any], str]] = [
    ({"type": "sticker2", "text": "x"}, "type"),
    ({"type": 5, "text": "x"}, "type"),
    ({"type": "reaction", "text": "x"}, "type"),
    ({"text": ""}, "text"),
    ({"text": " \n "}, "text"),
    ({"text": "x" * 4097}, "text"),
    ({"text": 5}, "text"),
    ({}, "text"),
    ({"text": "x", "mentions": "+15550001111"}, "mentions"),
    ({"text": "x", "mentions": ["hello"]}, "mentions"),
    ({"text": "x", "mentions": ["120363000000000000@g.us"]}, "mentions"),
    ({"text": "x", "mentions": [5]}, "mentions"),
    ({"text": "x", "mentions": [TO] * 257}, "mentions"),
    ({"text": "x", "linkPreview": "yes"}, "linkPreview"),
    ({"text": "x", "replyTo": ""}, "replyTo"),
    ({"text": "x", "replyTo": "a b"}, "replyTo"),
    ({"text": "x", "replyTo": 5}, "replyTo"),
    ({"text": "x", "ttl": 0}, "ttl"),
    ({"text": "x", "ttl": "60"}, "ttl"),
    ({"text": "x", "ttl": 10**9}, "ttl"),
    ({"text": "x", "caption": "c"}, "caption"),
    ({"text": "x", "media": {"data": b64(PNG)}}, "media"),
    ({"type": "image"}, "media"),
    ({"type": "image", "media": b64(PNG)}, "media"),
    ({"type": "image", "media": {}}, "media"),
    ({"type": "image", "media": {"data": b64(PNG), "url": "https://x.example/a"}}, "media"),
    ({"type": "image", "media": {"data": b64(PNG), "mimetype": "image/png"}}, "media.mimetype"),
    ({"type": "image", "media": {"data": "%%%%"}}, "media.data"),
    ({"type": "image", "media": {"data": "AAA"}}, "media.data"),
    ({"type": "image", "media": {"data": "AA AA"}}, "media.data"),
    ({"type": "image", "media": {"data": 5}}, "media.data"),
    ({"type": "image", "media": {"data": ""}}, "media"),
    ({"type": "image", "media": {"url": ""}}, "media.url"),
    ({"type": "image", "media": {"url": 5}}, "media.url"),
    ({"type": "image", "media": {"url": "https://x.example/" + "a" * 2048}}, "media.url"),
    ({"type": "image", "media": {"data": b64(PNG)}, "mimetype": "png"}, "mimetype"),
    ({"type": "image", "media": {"data": b64(PNG)}, "mimetype": 5}, "mimetype"),
    ({"type": "image", "media": {"data": b64(PNG)}, "mimetype": None}, "mimetype"),
    ({"type": "image", "media": {"data": b64(PNG)}, "caption": None}, "caption"),
    ({"text": "x", "mentions": None}, "mentions"),
    ({"text": "x", "replyTo": None}, "replyTo"),
    ({"type": "image", "media": {"data": b64(PNG)}, "caption": "x" * 1025}, "caption"),
    ({"type": "image", "media": {"data": b64(PNG)}, "caption": 5}, "caption"),
    ({"type": "image", "media": {"data": b64(PNG)}, "filename": "a.png"}, "filename"),
    ({"type": "image", "media": {"data": b64(PNG)}, "voice": True}, "voice"),
    ({"type": "audio", "media": {"data": b64(MP3)}, "voice": "true"}, "voice"),
    ({"type": "audio", "media": {"data": b64(MP3)}, "caption": "c"}, "caption"),
    ({"type": "document", "media": {"data": b64(PDF)}, "filename": ""}, "filename"),
    ({"type": "document", "media": {"data": b64(PDF)}, "filename": "a\nb"}, "filename"),
    ({"type": "document", "media": {"data": b64(PDF)}, "filename": "x" * 256}, "filename"),
    ({"type": "sticker", "media": {"data": b64(WEBP)}, "caption": "c"}, "caption"),
    ({"type": "location"}, "location"),
    ({"type": "location", "location": {"latitude": 91, "longitude": 0}}, "location.latitude"),
    ({"type": "location", "location": {"latitude": 0, "longitude": "1"}}, "location.longitude"),
    ({"type": "location", "location": {"latitude": 0, "longitude": 0, "zoom": 3}},
     "location.zoom"),
    ({"type": "location", "location": {"latitude": 0, "longitude": 0, "name": ""}},
     "location.name"),
    ({"type": "contact", "contact": []}, "contact"),
    ({"type": "contact", "contact": {"name": "Ana"}}, "contact.phoneNumber"),
    ({"type": "contact", "contact": {"name": "Ana", "phoneNumber": "555"}}, "contact.phoneNumber"),
    ({"type": "contact", "contact": {"phoneNumber": TO}}, "contact.name"),
    ({"type": "contact", "contact": {"vcard": "x", "name": "Ana"}}, "contact"),
    ({"type": "contact", "contact": {"vcard": ""}}, "contact.vcard"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a"]}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a"] * 13}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a", "a"]}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a", ""]}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a", 5]}}, "poll.options"),
    ({"type": "poll", "poll": {"question": "", "options": ["a", "b"]}}, "poll.question"),
    ({"type": "poll", "poll": {"options": ["a", "b"]}}, "poll.question"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a", "b"], "multiple": 1}},
     "poll.multiple"),
    ({"type": "poll", "poll": {"question": "q", "options": ["a", "b"]}, "text": "x"}, "text"),
]


@pytest.mark.parametrize(("body", "field"), INVALID, ids=[f for _, f in INVALID])
def test_each_invalid_field_is_named(body: dict[str, Any], field: str) -> None:
    assert refused({"to": TO, **body}) == field


@pytest.mark.parametrize("to", [None, 5, "", "hello", "+1", "status@broadcast", "a\tb", "x" * 101])
def test_recipient(to: Any) -> None:
    body = {"text": "x"} if to is None else {"to": to, "text": "x"}
    assert refused(body) == "to"


def test_a_form_names_its_file() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({"to": TO, "type": "image"}, MAX_TTL, form=True)
    assert info.value.field == "file"


def test_body_must_be_an_object_and_a_file_needs_a_media_type() -> None:
    assert refused([]) == "body"
    assert refused({"to": TO, "text": "x"}, Upload(PNG)) == "file"
    assert refused({"to": TO, "type": "poll", "poll": {}}, Upload(PNG)) == "file"
    assert refused({"to": TO, "type": "image"}, Upload(b"")) == "file"


# -- the file: mimetype, size, the store ------------------------------------------------------


@pytest.mark.parametrize(("kind", "detected", "declared", "mimetype"), [
    ("image", "image/png", None, "image/png"),
    ("image", "image/jpeg", "image/jpg", "image/jpeg"),
    ("image", "image/jpeg", "IMAGE/JPEG", "image/jpeg"),
    ("audio", "audio/ogg", "audio/ogg; codecs=opus", "audio/ogg; codecs=opus"),
    ("audio", "video/mp4", None, "audio/mp4"),  # an m4a without its brand reads as video
    ("audio", "audio/x-m4a", None, "audio/mp4"),
    ("document", "text/plain", "text/csv", "text/csv"),
    ("document", "application/zip", "application/vnd.openxmlformats-officedocument."
     "wordprocessingml.document", "application/vnd.openxmlformats-officedocument."
     "wordprocessingml.document"),
    ("document", "application/pdf", None, "application/pdf"),
    ("document", "image/png", None, "image/png"),
    ("sticker", "image/webp", "image/webp", "image/webp"),
])
def test_mimetype_accepted(kind: str, detected: str, declared: str | None,
                           mimetype: str) -> None:
    assert check_mimetype(kind, detected, declared, "media") == mimetype


@pytest.mark.parametrize(("kind", "detected", "declared", "field"), [
    ("image", "image/png", "image/jpeg", "mimetype"),  # a PNG declared as JPEG
    ("image", "application/pdf", None, "media"),  # a PDF sent as an image
    ("image", "application/pdf", "image/png", "mimetype"),
    ("video", "image/png", None, "file"),
    ("audio", "application/pdf", None, "media"),
    ("sticker", "image/png", None, "media"),  # a sticker is WebP
    ("document", "application/pdf", "text/plain", "mimetype"),  # precise and contradicting
])
def test_mimetype_refused(kind: str, detected: str, declared: str | None, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_mimetype(kind, detected, declared, "file" if field == "file" else "media")
    assert info.value.field == field


class Store:
    """The media store's ``put`` as :func:`prepare` calls it."""

    def __init__(self) -> None:
        self.files: list[bytes] = []

    async def __call__(self, data: bytes) -> str:
        self.files.append(data)
        return sha256(data)


@pytest.mark.parametrize(("kind", "data", "content", "mimetype"), [
    ("image", PNG, mc.Image, "image/png"),
    ("image", JPEG, mc.Image, "image/jpeg"),
    ("image", GIF, mc.Image, "image/gif"),
    ("video", MP4, mc.Video, "video/mp4"),
    ("audio", MP3, mc.Audio, "audio/mpeg"),
    ("audio", OGG, mc.Audio, "audio/ogg"),
    ("document", PDF, mc.Document, "application/pdf"),
    ("document", CSV, mc.Document, "text/csv"),
    ("sticker", WEBP, mc.Sticker, "image/webp"),
])
async def test_prepare_detects_and_stores(kind: str, data: bytes, content: type,
                                          mimetype: str) -> None:
    store = Store()
    req = ok({"type": kind, "media": {"data": b64(data)}})
    message = await prepare(req, MediaConfig(), (), store)
    assert isinstance(message.content, content)
    assert mc.media_of(message.content) == mc.MediaInfo(
        mimetype=mimetype, size=len(data), sha256=sha256(data), filename=None)
    assert store.files == [data]


async def test_prepare_builds_voice_captions_filenames_and_plain_kinds() -> None:
    store = Store()
    message = await prepare(ok({"type": "audio", "media": {"data": b64(OGG)}, "voice": True}),
                            MediaConfig(), (), store)
    assert isinstance(message.content, mc.Voice)
    message = await prepare(ok({"type": "image", "media": {"data": b64(PNG)}, "caption": "hi",
                                "mentions": [TO]}), MediaConfig(), (), store)
    assert message.content == mc.Image(mc.MediaInfo("image/png", len(PNG), sha256(PNG)), "hi")
    assert message.mentions == (JID,)
    message = await prepare(ok({"type": "document"}, Upload(PDF, "q3.pdf")), MediaConfig(), (),
                            store)
    assert mc.media_of(message.content) == mc.MediaInfo(
        "application/pdf", len(PDF), sha256(PDF), "q3.pdf")
    message = await prepare(ok({"type": "document", "filename": "mine.pdf"}, Upload(PDF, "q.pdf")),
                            MediaConfig(), (), store)
    media = mc.media_of(message.content)
    assert media is not None and media.filename == "mine.pdf"
    message = await prepare(ok({"text": "hi", "linkPreview": True}), MediaConfig(), (), store)
    assert message.content == mc.Text("hi") and message.link_preview is True
    assert len(store.files) == 4


async def test_a_refused_file_never_reaches_the_store() -> None:
    store = Store()
    for body in [{"type": "image", "media": {"data": b64(PDF)}},
                 {"type": "image", "media": {"data": b64(PNG)}, "mimetype": "image/jpeg"},
                 {"type": "sticker", "media": {"data": b64(PNG)}}]:
        with pytest.raises(InvalidRequest):
            await prepare(ok(body), MediaConfig(), (), store)
    assert store.files == []


@pytest.mark.parametrize("kind", ["image", "video", "audio", "document", "sticker"])
async def test_size_limit_per_type(kind: str) -> None:
    """At the limit is fine; one byte more is 413 naming where the file came from."""
    data = SAMPLES[kind][0]
    limits = MediaConfig(max_image=len(data), max_video=len(data), max_audio=len(data),
                         max_document=len(data), max_sticker=len(data))
    assert max_bytes(kind, limits) == len(data)
    store = Store()
    await prepare(ok({"type": kind, "media": {"data": b64(data)}}), limits, (), store)
    bigger = data + b"\x00"
    with pytest.raises(TooLarge) as info:
        await prepare(ok({"type": kind, "media": {"data": b64(bigger)}}), limits, (), store)
    assert info.value.field == "media" and kind in str(info.value)
    with pytest.raises(TooLarge) as info:
        await prepare(ok({"type": kind}, Upload(bigger)), limits, (), store)
    assert info.value.field == "file"
    assert store.files == [data]


def test_the_body_limit_follows_the_largest_file_in_base64() -> None:
    assert body_max(MediaConfig()) == -(-(100 << 20) // 3) * 4 + 64 * 1024
    assert body_max(MediaConfig(max_document=3, max_video=3, max_image=3, max_audio=3,
                                max_sticker=3)) == 4 + 64 * 1024


def test_base64_is_decoded_strictly_chunk_by_chunk() -> None:
    import base64
    import os

    from api.send_request import BASE64_CHUNK, decode_base64

    for size in (0, 1, 2, 3, BASE64_CHUNK // 4 * 3, BASE64_CHUNK // 4 * 3 + 1, 3 * BASE64_CHUNK):
        data = os.urandom(size)
        assert decode_base64(base64.b64encode(data).decode()) == data
    middle = "QUJD" * (BASE64_CHUNK // 4) + "QQ==" + "QUJD"  # padding inside: not base64
    for bad in ("QUJ", "QU JD", "QUJ\n", "QUJD=", "Q===", "QQ==QQ==", "QUJ-", "é" * 4, middle):
        assert decode_base64(bad) is None, bad


def test_text_rules_on_ascii_and_beyond() -> None:
    from api.text import text_problem

    assert text_problem("a\tb\r\nc ~") is None
    assert text_problem("ok ü ✓") is None
    for bad in ("a\x00b", "\x7f", "x\x1b[0m", "ü\x01", "ü\x85"[1:] + "\x9f"):
        assert text_problem(bad) == "must not contain control characters", repr(bad)
    assert text_problem("\ud800") is not None
