"""Link preview cards: the title, description and thumbnail WhatsApp shows under a text's link.

A text sent with ``linkPreview`` gets its card when it leaves (the outbound queue asks
:meth:`LinkPreviews.card` just before the engine sends it, so a queued send gets a fresh one):
the first ``http(s)://`` link of the text is fetched through the SSRF guard
(:func:`supervisor.media_fetch.fetch_media`: private and loopback addresses refused unless
``Config.allow_networks`` lists them, redirects followed through the same guard), at most
:data:`PAGE_MAX` bytes of it; its ``og:``/Twitter/``<title>`` tags are read with the
``linkpreview`` library; the image they name is fetched the same way (at most
:data:`IMAGE_MAX` bytes) and made a JPEG thumbnail (:mod:`supervisor.thumbnails`). Everything
together takes at most :data:`CARD_TIMEOUT` seconds. Usage::

    previews = LinkPreviews(allow=config.allow_networks)
    card = await previews.card("see https://example.com/post")   # LinkCard | None
    card.url, card.title, card.description, card.thumbnail

Error handling: a page that cannot be had (refused by the guard, unreachable, an error status,
too large, too slow, without a title or description) is no card (None, logged), never an
error: the text goes out without one. An image that cannot be had or read is a card without a
thumbnail.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import attrs
import trio
from linkpreview import Link, LinkPreview

from .errors import TooLarge
from .media_fetch import MediaUrlFailed, MediaUrlRefused, fetch_media
from .thumbnails import Thumbnail, jpeg_thumbnail
from .webhooks.ssrf import IPNetwork, Resolver, system_resolver

log = logging.getLogger("wasup.link_preview")

#: A link in a text, as WhatsApp matches it.
URL_RE = re.compile(r"https?://\S+")
#: Bytes of a page read for its card, and of the image its card shows.
PAGE_MAX = 1 << 20
IMAGE_MAX = 5 << 20
#: Seconds the whole card may take, page and image.
CARD_TIMEOUT = 10.0
#: Characters kept of a page's title and description.
TITLE_MAX = 256
DESCRIPTION_MAX = 1024


@attrs.frozen
class LinkCard:
    """What WhatsApp shows of a link: ``url`` as the text has it, the page's ``title`` and
    ``description``, and a JPEG ``thumbnail`` of its image (None when it has none)."""

    url: str
    title: str
    description: str = ""
    thumbnail: Thumbnail | None = None

    def to_json(self) -> dict[str, object]:
        """The card without its picture's bytes (``thumbnail``: its size, or None)."""
        thumb = self.thumbnail
        return {
            "url": self.url, "title": self.title, "description": self.description,
            "thumbnail": None if thumb is None else {"width": thumb.width, "height": thumb.height},
        }


def first_link(text: str) -> str | None:
    """The first http(s) link in ``text``, None when it has none."""
    found = URL_RE.search(text)
    return None if found is None else found.group(0)


@attrs.frozen
class _Page:
    title: str
    description: str
    image: str | None


def read_page(url: str, html: bytes) -> _Page | None:
    """The card's fields of the page ``html`` found at ``url`` (blocking: it parses HTML);
    None when it has neither a title nor a description."""
    preview = LinkPreview(Link(url, html), parser="html.parser")
    title = " ".join(str(preview.title or "").split())[:TITLE_MAX]
    description = " ".join(str(preview.description or "").split())[:DESCRIPTION_MAX]
    if not title and not description:
        return None
    image = preview.absolute_image
    return _Page(title, description, str(image) if image else None)


@attrs.frozen
class LinkPreviews:
    """Makes the cards of texts sent with ``linkPreview`` (see the module doc); ``allow``:
    the networks the guard lets through (``Config.allow_networks``)."""

    allow: Sequence[IPNetwork] = ()
    resolver: Resolver = system_resolver
    timeout: float = CARD_TIMEOUT

    async def card(self, text: str) -> LinkCard | None:
        """The card of the first link in ``text``; None when it has no link or its page
        cannot be had (never raises for the page)."""
        url = first_link(text)
        if url is None:
            return None
        with trio.move_on_after(self.timeout):
            return await self._card(url)
        log.info("no link preview of %s: no answer within %g seconds", url, self.timeout)
        return None

    async def _card(self, url: str) -> LinkCard | None:
        try:
            html = await self._fetch(url, PAGE_MAX)
        except (MediaUrlRefused, MediaUrlFailed, TooLarge) as exc:
            log.info("no link preview of %s: %s", url, exc)
            return None
        page = await trio.to_thread.run_sync(read_page, url, html)
        if page is None:
            log.info("no link preview of %s: the page has no title or description", url)
            return None
        thumbnail = None
        if page.image is not None:
            try:
                image = await self._fetch(page.image, IMAGE_MAX)
            except (MediaUrlRefused, MediaUrlFailed, TooLarge) as exc:
                log.info("link preview of %s without its image: %s", url, exc)
            else:
                thumbnail = await trio.to_thread.run_sync(jpeg_thumbnail, image)
        return LinkCard(url, page.title, page.description, thumbnail)

    async def _fetch(self, url: str, max_bytes: int) -> bytes:
        data, _name = await fetch_media(url, max_bytes=max_bytes, timeout=self.timeout,
                                        allow=self.allow, resolver=self.resolver)
        return data
