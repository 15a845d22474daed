"""The simulated WhatsApp's people: who is on WhatsApp, address books, LIDs, profiles, blocks.

:class:`ContactWorld` is held by the :class:`~.simulator_server.SimulatedServer`
(``server.contacts``); :class:`SimulatorContacts` is a simulator session's
:class:`~supervisor.engine_contacts.ContactsApi` over it.

The world is derived from the seed (``SimulatedServer.derive``), so a test knows it:

* a phone number is on WhatsApp unless its derived byte is divisible by 4 (about three in four
  are): :meth:`ContactWorld.on_whatsapp` says which, :meth:`ContactWorld.set_on_whatsapp`
  overrides it;
* a person's push name, about text, business name (about one in five is a business) and
  profile picture (about one in two has one) derive from their number, and so does their LID
  (15 digits ``@lid``); the world learns a LID's phone number once it told the LID (in a
  check, an info or a lookup), as whatsmeow's store does;
* each device's address book holds :data:`ADDRESS_BOOK_SIZE` people on WhatsApp, named and
  numbered from the seed and the device, plus those :meth:`ContactWorld.add_contact` adds;
* each device has a block list, empty at first.

The world counts the check requests each device made and the numbers they asked about
(:meth:`ContactWorld.checks`), so a test sees what a cache spared WhatsApp.

Error handling: the session's requests raise ``EngineError("not_connected")`` (recoverable)
when the session is not connected, :class:`~supervisor.errors.NotFound` for the info of a
number that is not on WhatsApp or a LID the world never told.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import trio

from supervisor.engine_contacts import Contact, ContactInfo, NumberCheck
from supervisor.errors import EngineError, NotFound
from supervisor.jid import Jid, JidKind

#: ``SimulatedServer.derive``: (device, label, draw, size) -> bytes.
Derive = Callable[[int, str, int, int], bytes]

#: People in each device's derived address book.
ADDRESS_BOOK_SIZE = 12
FIRST_NAMES = ("Ana", "Ben", "Chen", "Dara", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Jun",
               "Kofi", "Lena", "Mateo", "Noor", "Olga", "Priya")
LAST_NAMES = ("Silva", "Okafor", "Novak", "Haddad", "Kim", "Moreau", "Rossi", "Tanaka")
ABOUTS = ("Hey there! I am using WhatsApp.", "Available", "At work", "Busy", "Sleeping")
#: The world as a whole (who is on WhatsApp, who a number is) belongs to no device.
EVERYONE = 0


def _number(data: bytes) -> int:
    return int.from_bytes(data, "big")


@attrs.frozen
class Person:
    """What the simulated WhatsApp knows of one number with an account."""

    phone: str
    push_name: str
    about: str
    business_name: str | None
    picture_url: str | None
    lid: str


@attrs.frozen
class CheckCount:
    """A device's check requests to the simulated WhatsApp and the numbers they asked about."""

    requests: int = 0
    numbers: int = 0


@attrs.define(eq=False)
class ContactWorld:
    """Who is on the simulated WhatsApp, and each device's contacts (see module docstring)."""

    derive: Derive
    _registered: dict[str, bool] = attrs.field(factory=dict)
    _books: dict[int, dict[str, Contact]] = attrs.field(factory=dict)
    _blocks: dict[int, set[str]] = attrs.field(factory=dict)
    _checks: dict[int, CheckCount] = attrs.field(factory=dict)
    _lids: dict[str, str] = attrs.field(factory=dict)  # LID user -> phone digits, once told

    # -- the world ---------------------------------------------------------------------------

    def on_whatsapp(self, phone: str) -> bool:
        """Whether ``phone`` (digits) has an account."""
        found = self._registered.get(phone)
        if found is not None:
            return found
        return self.derive(EVERYONE, "on_whatsapp", int(phone), 1)[0] % 4 != 0

    def set_on_whatsapp(self, phone: str, on: bool) -> None:
        """Give ``phone`` an account or take it away (a control)."""
        self._registered[phone] = on

    def person(self, phone: str) -> Person:
        """The derived profile of ``phone`` (whether or not it is on WhatsApp)."""
        bits = self.derive(EVERYONE, "person", int(phone), 8)
        first, last = FIRST_NAMES[bits[0] % len(FIRST_NAMES)], LAST_NAMES[bits[1] % len(LAST_NAMES)]
        business = f"{last} & Co" if bits[2] % 5 == 0 else None
        picture = (f"https://pps.whatsapp.net/v/t61.24694-24/sim{bits.hex()}.jpg"
                   if bits[3] % 2 == 0 else None)
        lid = str(10**14 + _number(self.derive(EVERYONE, "lid", int(phone), 8)) % (9 * 10**14))
        return Person(phone, first, ABOUTS[bits[4] % len(ABOUTS)], business, picture, lid)

    def lid_of(self, phone: str) -> str:
        """The LID user of ``phone``; the world remembers it was told."""
        lid = self.person(phone).lid
        self._lids[lid] = phone
        return lid

    def phone_of(self, lid: str) -> str | None:
        """The phone number behind a LID user the world told, else None."""
        return self._lids.get(lid)

    # -- per device --------------------------------------------------------------------------

    def address_book(self, device_id: int) -> dict[str, Contact]:
        """The device's address book by JID (derived the first time)."""
        book = self._books.get(device_id)
        if book is None:
            book = self._books[device_id] = {}
            draw = 0
            while len(book) < ADDRESS_BOOK_SIZE:
                draw += 1
                phone = "1555" + f"{_number(self.derive(device_id, 'book', draw, 4)) % 10**7:07d}"
                if self.on_whatsapp(phone):
                    bits = self.derive(device_id, "book_name", draw, 2)
                    first = FIRST_NAMES[bits[0] % len(FIRST_NAMES)]
                    name = f"{first} {LAST_NAMES[bits[1] % len(LAST_NAMES)]}"
                    book[f"{phone}@s.whatsapp.net"] = self._entry(phone, name, first)
        return book

    def add_contact(self, device_id: int, phone: str, name: str) -> Contact:
        """Save ``phone`` in the device's address book as ``name`` (a control)."""
        entry = self._entry(phone, name, name.split(" ")[0])
        self.address_book(device_id)[f"{phone}@s.whatsapp.net"] = entry
        return entry

    def blocked(self, device_id: int) -> set[str]:
        """The device's block list (JIDs), live."""
        return self._blocks.setdefault(device_id, set())

    def checks(self, device_id: int) -> CheckCount:
        """The device's check requests and the numbers they asked about, so far."""
        return self._checks.get(device_id, CheckCount())

    def count_check(self, device_id: int, numbers: int) -> None:
        done = self.checks(device_id)
        self._checks[device_id] = CheckCount(done.requests + 1, done.numbers + numbers)

    def forget(self, device_id: int) -> None:
        """Forget the device's address book, block list and counts."""
        self._books.pop(device_id, None)
        self._blocks.pop(device_id, None)
        self._checks.pop(device_id, None)

    def _entry(self, phone: str, name: str, first_name: str) -> Contact:
        person = self.person(phone)
        return Contact(f"{phone}@s.whatsapp.net", name=name, first_name=first_name,
                       push_name=person.push_name, business_name=person.business_name)


class _Connection(Protocol):
    """What contacts use of a :class:`~.simulator_session.SimulatorSession`: its device and
    whether it is connected."""

    device_id: int
    epoch: int

    def online(self, epoch: int) -> bool: ...


@attrs.define(eq=False)
class SimulatorContacts:
    """A simulator session's :class:`~supervisor.engine_contacts.ContactsApi` over the
    server's world."""

    _world: ContactWorld
    session: _Connection

    @property
    def _device(self) -> int:
        return self.session.device_id

    async def check(self, phones: Sequence[str]) -> list[NumberCheck]:
        await self._connected()
        self._world.count_check(self._device, len(phones))
        results = []
        for phone in phones:
            if self._world.on_whatsapp(phone):
                self._world.lid_of(phone)
                results.append(NumberCheck(phone, True, f"{phone}@s.whatsapp.net",
                                           self._world.person(phone).business_name))
            else:
                results.append(NumberCheck(phone, False))
        return results

    async def list(self) -> list[Contact]:
        await self._connected()
        book = self._world.address_book(self._device)
        return [book[jid] for jid in sorted(book)]

    async def info(self, jid: str) -> ContactInfo:
        await self._connected()
        phone = self._phone(jid)
        if phone is None or not self._world.on_whatsapp(phone):
            raise NotFound(f"{jid} is not on whatsapp")
        person = self._world.person(phone)
        pn = f"{phone}@s.whatsapp.net"
        saved = self._world.address_book(self._device).get(pn)
        return ContactInfo(
            pn,
            name=saved.name if saved else None,
            first_name=saved.first_name if saved else None,
            push_name=person.push_name,
            about=person.about,
            business_name=person.business_name,
            picture_url=person.picture_url,
            lid=f"{self._world.lid_of(phone)}@lid",
            blocked=pn in self._world.blocked(self._device),
        )

    async def lid_of(self, pn: str) -> str | None:
        await self._connected()
        phone = Jid.parse(pn).user
        if not self._world.on_whatsapp(phone):
            return None
        return f"{self._world.lid_of(phone)}@lid"

    async def pn_of(self, lid: str) -> str | None:
        await self._connected()
        phone = self._world.phone_of(Jid.parse(lid).user)
        return None if phone is None else f"{phone}@s.whatsapp.net"

    async def block(self, jid: str) -> None:
        await self._connected()
        self._world.blocked(self._device).add(self._person_jid(jid))

    async def unblock(self, jid: str) -> None:
        await self._connected()
        self._world.blocked(self._device).discard(self._person_jid(jid))

    async def blocked(self) -> builtins.list[str]:
        await self._connected()
        return sorted(self._world.blocked(self._device))

    async def _connected(self) -> None:
        await trio.lowlevel.checkpoint()
        if not self.session.online(self.session.epoch):
            raise EngineError("not_connected", recoverable=True)

    def _phone(self, jid: str) -> str | None:
        """The phone digits of a user or LID JID (None: a LID the world never told)."""
        parsed = Jid.parse(jid)
        if parsed.kind is JidKind.LID:
            return self._world.phone_of(parsed.user)
        return parsed.user

    def _person_jid(self, jid: str) -> str:
        """A block list names a person by phone-number JID where the world knows it."""
        phone = self._phone(jid)
        return jid if phone is None else f"{phone}@s.whatsapp.net"
