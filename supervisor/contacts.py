"""Contacts of a device: checked numbers (cached and capped), the address book, one person,
the LID mapping and the block list, asked of WhatsApp through the device's session.

Usage (the routes of :mod:`api.routes_contacts`)::

    contacts = Contacts(devices)
    phones = phone_numbers(body["phoneNumbers"], contacts.config.check_batch_max)  # or 400
    results = await contacts.check(ref, phones)                     # [Checked(...)]
    info = await contacts.info(ref, person("contact", raw))

Checks (:meth:`Contacts.check`): a number checked within ``check_cache_seconds`` is answered
from memory and costs no request to WhatsApp; the others go to WhatsApp in one request. Each
device may ask WhatsApp about ``checks_per_hour`` numbers in any hour (a sliding window:
numbers answered from the cache do not count); a check that needs more than the room left
asks nothing and raises :class:`RateLimited`, whose ``retry_after`` says when enough room
frees up. The cache and the window live in memory on Trio's clock (a restart forgets them).

Error handling: :func:`phone_numbers` and :func:`person` raise :class:`InvalidRequest`
naming the field; the requests raise what
:meth:`~supervisor.devices.Devices.ask` raises (DeviceNotFound, DeviceConflict when not
connected, EngineRefused...), :class:`NotFound` for a person or mapping WhatsApp does not
know, and :class:`RateLimited` over the hourly cap.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from .config import ContactsConfig
from .devices import Devices
from .engine_contacts import Contact, ContactInfo, NumberCheck
from .errors import Busy, DeviceConflict, InvalidRequest, NotFound, RateLimited
from .jid import InvalidJid, Jid, JidKind

#: The window of the check cap, in seconds.
HOUR = 3600.0
#: What a checked phone number may be (docs/openapi.yaml ``ContactPhoneNumber``): E.164, ``+``
#: optional, matched whole.
PHONE_PATTERN = r"\+?[1-9][0-9]{6,14}"
#: What names a person in a path (docs/openapi.yaml ``Person``): a phone number, or a user or
#: LID JID (a device part allowed), matched whole, then read by :meth:`Jid.parse`.
PERSON_PATTERN = PHONE_PATTERN + r"|[0-9]{5,20}(:[0-9]{1,3})?@(s\.whatsapp\.net|lid)"

_PERSON = "must be a phone number like +15551234567 or a person's jid like " \
          "15551234567@s.whatsapp.net or 123456789012345@lid"


# -- validation ---------------------------------------------------------------------------------


def phone_numbers(numbers: Any, batch_max: int) -> list[str]:
    """The distinct phone numbers (digits, in their first order) of a check request's
    ``phoneNumbers``.

    Raises: InvalidRequest naming ``phoneNumbers`` (missing, not a list, empty, more than
    ``batch_max``, an entry that is not a phone number).
    """
    if not isinstance(numbers, list):
        raise InvalidRequest("phoneNumbers: is required, a list of phone numbers",
                             field="phoneNumbers")
    if not 1 <= len(numbers) <= batch_max:
        raise InvalidRequest(f"phoneNumbers: must hold 1 to {batch_max} phone numbers",
                             field="phoneNumbers")
    phones: dict[str, None] = {}
    for i, raw in enumerate(numbers):
        try:
            if not isinstance(raw, str) or re.fullmatch(PHONE_PATTERN, raw) is None:
                raise InvalidJid("not a phone number")
            phones[Jid.phone(raw, strict=True).user] = None
        except InvalidJid:
            raise InvalidRequest(
                f"phoneNumbers[{i}]: must be a phone number with the country code (E.164), "
                "like +15551234567", field="phoneNumbers") from None
    return list(phones)


def person(field: str, raw: str) -> Jid:
    """A person named in a path: a phone number, or a user or LID JID (:data:`PERSON_PATTERN`).

    Raises: InvalidRequest naming ``field`` for anything else (a group, a broadcast list...).
    """
    try:
        if re.fullmatch(PERSON_PATTERN, raw) is None:
            raise InvalidJid(_PERSON)
        return Jid.parse(raw, strict=True)
    except InvalidJid:
        raise InvalidRequest(f"{field}: {_PERSON}", field=field) from None


# -- the requests ------------------------------------------------------------------------------


@attrs.frozen
class Checked:
    """A check's answer for one number; ``cached`` when it came from wasup's cache."""

    result: NumberCheck
    cached: bool


@attrs.frozen
class Mapping:
    """A person's phone-number JID and LID JID (:meth:`Contacts.mapping`)."""

    pn: str
    lid: str


@attrs.define(eq=False)
class Contacts:
    """Contact requests of every device of ``devices``, with the check cache and cap."""

    devices: Devices
    #: Per device: phone digits -> (Trio time it expires, result).
    _cache: dict[int, dict[str, tuple[float, NumberCheck]]] = attrs.field(factory=dict)
    #: Per device: (Trio time, numbers) asked of WhatsApp within the last hour, oldest first.
    _asked: dict[int, deque[tuple[float, int]]] = attrs.field(factory=dict)

    @property
    def config(self) -> ContactsConfig:
        return self.devices.config.contacts

    async def check(self, ref: str | int, phones: Sequence[str]) -> list[Checked]:
        """Whether each of ``phones`` (distinct digits) is on WhatsApp, in their order."""
        device = self.devices.get(ref).id
        now = trio.current_time()
        cache = self._cache.setdefault(device, {})
        known: dict[str, Checked] = {}
        for phone in phones:
            hit = cache.get(phone)
            if hit is not None and hit[0] > now:
                known[phone] = Checked(hit[1], cached=True)
        missing = [p for p in phones if p not in known]
        if missing:
            entry = self._reserve(device, len(missing), now)
            try:
                answers = await self.devices.ask(
                    device, lambda s: s.contacts.check(missing), "contact check")
            except (DeviceConflict, Busy):  # never reached WhatsApp: the room is given back
                self._asked[device].remove(entry)
                raise
            self._remember(cache, answers, trio.current_time())
            known.update((a.phone, Checked(a, cached=False)) for a in answers)
        return [known[p] for p in phones if p in known]

    def room(self, ref: str | int) -> int:
        """How many numbers the device may still ask WhatsApp about this hour."""
        device = self.devices.get(ref).id
        return self.config.checks_per_hour - self._used(device, trio.current_time())

    async def address_book(self, ref: str | int) -> Sequence[Contact]:
        return await self.devices.ask(ref, lambda s: s.contacts.list(), "address book")

    async def info(self, ref: str | int, jid: Jid) -> ContactInfo:
        return await self.devices.ask(ref, lambda s: s.contacts.info(jid.canonical),
                                      "contact info")

    async def mapping(self, ref: str | int, jid: Jid) -> Mapping:
        """The phone-number and LID JIDs of a person named by either; NotFound when WhatsApp
        has not told the other."""
        if jid.kind is JidKind.LID:
            pn = await self.devices.ask(ref, lambda s: s.contacts.pn_of(jid.canonical),
                                        "phone of lid")
            if pn is None:
                raise NotFound(f"no phone number is known for {jid.canonical}")
            return Mapping(pn, jid.canonical)
        lid = await self.devices.ask(ref, lambda s: s.contacts.lid_of(jid.canonical),
                                     "lid of phone")
        if lid is None:
            raise NotFound(f"no lid is known for {jid.canonical}")
        return Mapping(jid.canonical, lid)

    async def block(self, ref: str | int, jid: Jid, blocked: bool) -> None:
        """Block (or unblock) the person."""
        if blocked:
            await self.devices.ask(ref, lambda s: s.contacts.block(jid.canonical), "block")
        else:
            await self.devices.ask(ref, lambda s: s.contacts.unblock(jid.canonical), "unblock")

    # -- the cap and the cache -----------------------------------------------------------------

    def _used(self, device: int, now: float) -> int:
        asked = self._asked.setdefault(device, deque())
        while asked and asked[0][0] <= now - HOUR:
            asked.popleft()
        return sum(n for _, n in asked)

    def _reserve(self, device: int, count: int, now: float) -> tuple[float, int]:
        """Count ``count`` numbers against the device's hour; RateLimited when they do not
        fit, saying when they would."""
        cap = self.config.checks_per_hour
        used = self._used(device, now)
        if used + count > cap:
            freed, wait = 0, HOUR
            for at, n in self._asked[device]:
                freed += n
                if used - freed + count <= cap:
                    wait = at + HOUR - now
                    break
            raise RateLimited(
                f"this device may ask whatsapp about {cap} numbers an hour: {cap - used} left, "
                f"{count} not cached in this request", retry_after=wait)
        entry = (now, count)
        self._asked[device].append(entry)
        return entry

    def _remember(self, cache: dict[str, tuple[float, NumberCheck]],
                  answers: Sequence[NumberCheck], now: float) -> None:
        seconds = self.config.check_cache_seconds
        if seconds <= 0:
            return
        if len(cache) >= self.config.checks_per_hour:
            for phone in [p for p, (until, _) in cache.items() if until <= now]:
                del cache[phone]
        for answer in answers:
            cache[answer.phone] = (now + seconds, answer)
