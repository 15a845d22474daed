"""Media downloads in the whatsmeow engine, offline, at the Go boundary: a ``media_ref`` made
from neonize's own ImageMessage, VideoMessage, ... objects turns back into the same media
message, and a download hands exactly that message to neonize's ``download_any`` (the one
method faked here: the network call cannot run in tests); whatsmeow's errors become the
engine's reasons."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from neonize.exc import DownloadError
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ContextInfo,
    DocumentMessage,
    FutureProofMessage,
    ImageMessage,
    StickerMessage,
    VideoMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from supervisor.engine import MessageReceived
from supervisor.engines import whatsmeow_client as wc
from supervisor.engines import whatsmeow_messages as wm
from supervisor.engines.whatsmeow_translate import download_reason, translate
from supervisor.errors import EngineError

from .test_whatsmeow_engine import Sink, connected_session, fake_go

__all__ = ["fake_go"]  # the fixture, used by name

PEER = nz.JID(User="15557654321", Server="s.whatsapp.net")


def keys(**fields: Any) -> dict[str, Any]:
    """What a download needs, as whatsmeow receives it, plus ``fields``."""
    return {
        "URL": "https://mmg.whatsapp.net/v/t62.7118-24/123?ccb=11-4",
        "directPath": "/v/t62.7118-24/123?ccb=11-4",
        "mediaKey": bytes(range(32)),
        "fileSHA256": bytes(range(32, 64)),
        "fileEncSHA256": bytes(range(64, 96)),
        "fileLength": 123_456,
        **fields,
    }


QUOTE = ContextInfo(stanzaID="3EB0QUOTED", participant="15550001111@s.whatsapp.net")

#: (field of the message, the media sub-message, the field it travels under in a media_ref).
MEDIA: list[tuple[str, Any, str]] = [
    ("imageMessage", ImageMessage(**keys(mimetype="image/jpeg", caption="a cat",
                                         JPEGThumbnail=b"\xff" * 3000, height=640, width=480,
                                         contextInfo=QUOTE)), "imageMessage"),
    ("videoMessage", VideoMessage(**keys(mimetype="video/mp4", seconds=12,
                                         JPEGThumbnail=b"\xff" * 2000)), "videoMessage"),
    ("ptvMessage", VideoMessage(**keys(mimetype="video/mp4", seconds=4)), "videoMessage"),
    ("audioMessage", AudioMessage(**keys(mimetype="audio/ogg; codecs=opus", PTT=True,
                                         seconds=3, contextInfo=QUOTE)), "audioMessage"),
    ("documentMessage", DocumentMessage(**keys(mimetype="application/pdf",
                                               fileName="report.pdf", pageCount=3)),
     "documentMessage"),
    ("stickerMessage", StickerMessage(**keys(mimetype="image/webp", isAnimated=True,
                                             pngThumbnail=b"\x89PNG" * 100)), "stickerMessage"),
]


def message_with(field: str, part: Any) -> WAMessage:
    m = WAMessage()
    getattr(m, field).CopyFrom(part)
    return m


def downloadable(part: Any) -> Any:
    """``part`` without what a media_ref leaves out (quote, thumbnails)."""
    copy = type(part)()
    copy.CopyFrom(part)
    for name in wm.NOT_DOWNLOADED:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return copy


def received(message: WAMessage) -> MessageReceived:
    ev = nz.Message(Info=nz.MessageInfo(
        ID="3EB0MEDIA", Timestamp=1_750_000_100,
        MessageSource=nz.MessageSource(Chat=PEER, Sender=PEER),
    ))
    ev.Message.CopyFrom(message)
    (out,) = translate(ev, now=0.0)
    assert isinstance(out, MessageReceived)
    return out


@pytest.mark.parametrize(("field", "part", "target"), MEDIA, ids=[f for f, _, _ in MEDIA])
def test_a_media_ref_round_trips_to_the_same_media_message(
    field: str, part: Any, target: str
) -> None:
    ev = received(message_with(field, part))
    assert ev.media_ref is not None
    back = wm.message_of_ref(ev.media_ref)
    assert [f.name for f, _ in back.ListFields()] == [target]
    assert getattr(back, target) == downloadable(part)
    # What the download uses is all there, byte for byte.
    for name in ("URL", "directPath", "mediaKey", "fileSHA256", "fileEncSHA256", "fileLength"):
        assert getattr(getattr(back, target), name) == getattr(part, name)
    # Quotes and thumbnails stay out: the reference stays small.
    assert len(ev.media_ref) < 400


def test_wrapped_media_has_the_same_ref_and_others_have_none() -> None:
    image = message_with("imageMessage", MEDIA[0][1])
    plain = received(image).media_ref
    wrapped = WAMessage(ephemeralMessage=FutureProofMessage(message=image))
    view_once = WAMessage(viewOnceMessageV2=FutureProofMessage(message=wrapped))
    assert received(wrapped).media_ref == plain
    assert received(view_once).media_ref == plain
    document = WAMessage(documentWithCaptionMessage=FutureProofMessage(
        message=message_with("documentMessage", MEDIA[4][1])))
    assert wm.message_of_ref(received(document).media_ref or "").HasField("documentMessage")
    assert received(WAMessage(conversation="hello")).media_ref is None
    location = WAMessage()
    location.locationMessage.degreesLatitude = 1.0
    assert received(location).media_ref is None


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"\xff\xff\xff").decode(),
                                 base64.b64encode(WAMessage(conversation="x").SerializeToString()).decode()])
def test_a_ref_wasup_did_not_make_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        wm.message_of_ref(bad)


@pytest.mark.parametrize(("error", "reason"), [
    ("download failed with status code 404", "media_expired"),
    ("download failed with status code 410", "media_expired"),
    ("failed to download: download failed with status code 403", "media_expired"),
    ("invalid media hmac", "download_failed: invalid media hmac"),
    ("download failed with status code 500", "download_failed: download failed with status code 500"),
])
def test_whatsmeows_download_errors_become_reasons(error: str, reason: str) -> None:
    assert download_reason(error) == reason


async def test_download_hands_the_media_message_to_neonize(
    tmp_path: Path, fake_go: list[wc.GoClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Sink()
    session, _client = await connected_session(tmp_path, fake_go, sink)
    asked: list[WAMessage] = []
    answers: dict[str, bytes | Exception] = {}

    def download_any(self: Any, message: WAMessage, path: str | None = None) -> bytes:
        asked.append(message)
        answer = answers["next"]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(wc.NewClient, "download_any", download_any)
    for field, part, target in MEDIA:
        ref = received(message_with(field, part)).media_ref
        assert ref is not None
        answers["next"] = f"{field} bytes".encode()
        assert await session.download(ref) == f"{field} bytes".encode()
        assert isinstance(asked[-1], WAMessage)
        assert getattr(asked[-1], target) == downloadable(part)
        # Byte for byte what reaches Go: the serialized message neonize passes on.
        assert asked[-1].SerializeToString() == base64.b64decode(ref)
    ref = received(message_with(*MEDIA[0][:2])).media_ref or ""
    answers["next"] = DownloadError("download failed with status code 410")
    with pytest.raises(EngineError) as info:
        await session.download(ref)
    assert (info.value.reason, info.value.recoverable) == ("media_expired", False)
    answers["next"] = DownloadError("invalid media hmac")
    with pytest.raises(EngineError) as info:
        await session.download(ref)
    assert info.value.reason == "download_failed: invalid media hmac"
    with pytest.raises(EngineError) as info:
        await session.download("garbage")
    assert info.value.reason == "invalid_media_ref"
    await session.stop()
    with pytest.raises(EngineError) as info:
        await session.download(ref)
    assert (info.value.reason, info.value.recoverable) == ("not_connected", True)
