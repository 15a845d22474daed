"""Link preview cards (supervisor.link_preview) against a page server on 127.0.0.1: the card
reads the page's og: tags (or its <title>), its image becomes a JPEG thumbnail, and a page that
cannot be had is no card, never an error. Loopback is reachable only where ``allow`` lists it
(the guard's own switch); real sockets, every wait under a deadline."""

from __future__ import annotations

import io
import ipaddress

import trio
from PIL import Image

from supervisor.link_preview import LinkCard, LinkPreviews, first_link
from supervisor.thumbnails import THUMBNAIL_SIZE, jpeg_thumbnail
from tests.media_support import FileServer, start_file_server

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def picture(width: int, height: int, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, fmt)
    return out.getvalue()


def page(title: str, description: str = "", image: str | None = None) -> bytes:
    tags = [f'<meta property="og:title" content="{title}">',
            f'<meta property="og:description" content="{description}">']
    if image is not None:
        tags.append(f'<meta property="og:image" content="{image}">')
    return f"<html><head>{''.join(tags)}</head><body>hi</body></html>".encode()


async def card_of(files: FileServer, text: str, **kwargs: object) -> LinkCard | None:
    previews = LinkPreviews(allow=LOOPBACK, **kwargs)  # type: ignore[arg-type]
    with trio.fail_after(20):
        return await previews.card(text)


async def test_a_page_with_og_tags_and_an_image_makes_a_card_with_a_jpeg_thumbnail() -> None:
    async with trio.open_nursery() as nursery:
        files = await start_file_server(nursery)
        files.files["post"] = page("Spring  sale", "Everything\n half off", image="/img/cover.png")
        files.files["img/cover.png"] = picture(1200, 600)
        card = await card_of(files, f"look: {files.url('post')} today")
        assert card is not None
        assert (card.url, card.title, card.description) == (
            files.url("post"), "Spring sale", "Everything half off")
        assert card.thumbnail is not None
        assert (card.thumbnail.width, card.thumbnail.height) == (THUMBNAIL_SIZE, THUMBNAIL_SIZE // 2)
        assert Image.open(io.BytesIO(card.thumbnail.data)).format == "JPEG"
        assert files.requests == ["/post", "/img/cover.png"]
        assert card.to_json()["thumbnail"] == {"width": 240, "height": 120}
        nursery.cancel_scope.cancel()


async def test_a_plain_title_and_no_image_still_make_a_card() -> None:
    async with trio.open_nursery() as nursery:
        files = await start_file_server(nursery)
        files.files["plain"] = b"<html><head><title>Just a title</title></head></html>"
        files.files["broken"] = page("Broken image", image="/missing.png")
        files.files["notimage"] = page("Not an image", image="/plain")
        card = await card_of(files, files.url("plain"))
        assert card is not None and card.title == "Just a title" and card.thumbnail is None
        for name in ("broken", "notimage"):
            card = await card_of(files, files.url(name))
            assert card is not None and card.thumbnail is None, name
        nursery.cancel_scope.cancel()


async def test_a_page_that_cannot_be_had_is_no_card() -> None:
    async with trio.open_nursery() as nursery:
        files = await start_file_server(nursery)
        files.files["empty"] = b"<html><body>nothing to show</body></html>"
        files.files["huge"] = b"<html><head><title>x</title></head>" + b" " * (2 << 20)
        files.routes["/hang"] = "hang"
        assert await card_of(files, "no link here") is None
        assert await card_of(files, files.url("missing")) is None  # 404
        assert await card_of(files, files.url("empty")) is None  # no title or description
        assert await card_of(files, files.url("huge")) is None  # beyond PAGE_MAX
        assert await card_of(files, files.url("hang"), timeout=0.5) is None
        # Without the switch, the guard refuses loopback: no card, and nothing fetched.
        before = len(files.requests)
        with trio.fail_after(20):
            assert await LinkPreviews().card(files.url("empty")) is None
        assert len(files.requests) == before
        nursery.cancel_scope.cancel()


def test_the_first_link_of_a_text() -> None:
    assert first_link("a https://x.org/a?b=1 and http://y.org") == "https://x.org/a?b=1"
    assert first_link("no link, just ftp://x.org") is None


def test_thumbnails_fit_the_size_and_refuse_what_is_no_image() -> None:
    thumb = jpeg_thumbnail(picture(300, 900, "JPEG"))
    assert thumb is not None and (thumb.width, thumb.height) == (80, 240)
    small = jpeg_thumbnail(picture(20, 10))
    assert small is not None and (small.width, small.height) == (20, 10)
    assert jpeg_thumbnail(b"%PDF-1.4 not an image") is None
    assert jpeg_thumbnail(picture(100, 100)[:60]) is None  # truncated
