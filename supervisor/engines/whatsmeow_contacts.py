"""Contacts through whatsmeow: the whatsmeow session's
:class:`~supervisor.engine_contacts.ContactsApi`, and the translation of neonize's answers.

Each request calls neonize's client through :func:`.whatsmeow_requests.call` (a worker
thread, the shared Go gate), beside other requests and sends. The calls (neonize 0.5.2):

* check: ``is_on_whatsapp("+<digits>", ...)``, one usync request for the batch; each answer's
  ``Query`` (else its JID) says which number it is for, ``IsIn`` whether it has an account,
  ``VerifiedName`` a business's verified name;
* list: the contact store's ``get_all_contacts()`` (the address book synced from the phone's
  app state: full name, first name, push name, business name);
* info: ``get_user_info`` (about text, verified name; no answer: not on WhatsApp), the contact
  store's ``get_contact``, ``get_profile_picture`` (not set or not visible: no URL),
  ``get_lid_from_pn`` / ``get_pn_from_lid`` and ``get_blocklist``; neonize 0.5.2 has no call
  for whatsmeow's business profile, so a business shows by its verified name;
* lid_of / pn_of: whatsmeow's LID store (an empty JID: not known);
* block / unblock / blocked: ``update_blocklist`` and ``get_blocklist``.

Error handling: a dropped connection -> EngineError ``not_connected`` (recoverable); a person
without an account -> :class:`~supervisor.errors.NotFound`; anything else -> EngineError
``contacts_failed: …`` (final), whatsmeow's words shortened.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
from neonize.client import NewClient
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import BlocklistAction

from supervisor.engine_contacts import Contact, ContactInfo, NumberCheck
from supervisor.errors import EngineError, NotFound
from supervisor.jid import JidKind

from .whatsmeow_requests import RequestSession, call, canonical
from .whatsmeow_requests import neonize_arg as _neonize
from .whatsmeow_translate import short_error

T = TypeVar("T")


@attrs.define(eq=False)
class WhatsmeowContacts:
    """A whatsmeow session's contacts (see the module docstring)."""

    session: RequestSession

    async def check(self, phones: Sequence[str]) -> list[NumberCheck]:
        queries = [f"+{p}" for p in phones]
        answers = await self._call(lambda api: list(api.is_on_whatsapp(*queries)))
        return number_checks(phones, answers)

    async def list(self) -> list[Contact]:
        entries = await self._call(lambda api: list(api.contact.get_all_contacts()))
        return address_book(entries)

    async def info(self, jid: str) -> ContactInfo:
        person = _neonize(jid)

        def ask(api: NewClient) -> ContactInfo:
            users = list(api.get_user_info(person))
            if not users:
                raise NotFound(f"{jid} is not on whatsapp")
            pn, lid = person, api.get_lid_from_pn(person)
            if person.Server == JidKind.LID.server:
                pn, lid = api.get_pn_from_lid(person), person
            if not pn.User:
                pn = person
            try:
                picture: str | None = api.get_profile_picture(pn).URL or None
            except Exception:  # not set, or not shown to this account
                picture = None
            blocked = {_canonical(b) for b in api.get_blocklist().JIDs}
            return contact_info(pn, lid, users[0].UserInfo, api.contact.get_contact(pn),
                                picture, blocked)

        return await self._call(ask)

    async def lid_of(self, pn: str) -> str | None:
        person = _neonize(pn)
        return _canonical(await self._call(lambda api: api.get_lid_from_pn(person)))

    async def pn_of(self, lid: str) -> str | None:
        person = _neonize(lid)
        return _canonical(await self._call(lambda api: api.get_pn_from_lid(person)))

    async def block(self, jid: str) -> None:
        person = _neonize(jid)
        await self._call(lambda api: api.update_blocklist(person, BlocklistAction.BLOCK))

    async def unblock(self, jid: str) -> None:
        person = _neonize(jid)
        await self._call(lambda api: api.update_blocklist(person, BlocklistAction.UNBLOCK))

    async def blocked(self) -> builtins.list[str]:
        found = await self._call(lambda api: list(api.get_blocklist().JIDs))
        return sorted({j for j in (_canonical(b) for b in found) if j})

    async def _call(self, fn: Callable[[NewClient], T]) -> T:
        """``fn(neonize's client)`` as a request (:func:`.whatsmeow_requests.call`)."""
        return await call(self.session, fn, lambda exc: EngineError(
            f"contacts_failed: {short_error(exc)}", recoverable=False))


# -- translation --------------------------------------------------------------------------


def _canonical(jid: nz.JID) -> str | None:
    """wasup's spelling of a neonize JID; None for one without a user (an unknown mapping)."""
    return canonical(jid) if jid.User else None


def _verified_name(name: nz.VerifiedName) -> str | None:
    return name.Details.verifiedName or None


def number_checks(phones: Sequence[str], answers: Sequence[nz.IsOnWhatsAppResponse]
                  ) -> list[NumberCheck]:
    """One result per phone asked about, from whatsmeow's answers; a phone WhatsApp did not
    answer for is not on WhatsApp."""
    by_phone: dict[str, nz.IsOnWhatsAppResponse] = {}
    for answer in answers:
        query = "".join(c for c in answer.Query.partition("@")[0] if c.isdigit())
        by_phone.setdefault(query or answer.JID.User, answer)
    results = []
    for phone in phones:
        found = by_phone.get(phone)
        if found is None or not found.IsIn:
            results.append(NumberCheck(phone, False))
        else:
            results.append(NumberCheck(phone, True, _canonical(found.JID) or f"{phone}@s.whatsapp.net",
                                       _verified_name(found.VerifiedName)))
    return results


def address_book(entries: Sequence[nz.Contact]) -> list[Contact]:
    """The contact store's entries as wasup's contacts, by JID."""
    book: dict[str, Contact] = {}
    for entry in entries:
        jid = _canonical(entry.JID)
        if jid is None:
            continue
        info = entry.Info
        book[jid] = Contact(jid, name=info.FullName or None, first_name=info.FirstName or None,
                            push_name=info.PushName or None,
                            business_name=info.BusinessName or None)
    return [book[jid] for jid in sorted(book)]


def contact_info(pn: nz.JID, lid: nz.JID, user: nz.UserInfo, saved: nz.ContactInfo,
                 picture: str | None, blocked: set[str | None]) -> ContactInfo:
    """One person from whatsmeow's answers (see :meth:`WhatsmeowContacts.info`)."""
    jid = _canonical(pn) or ""
    return ContactInfo(
        jid,
        name=saved.FullName or None,
        first_name=saved.FirstName or None,
        push_name=saved.PushName or None,
        about=user.Status or None,
        business_name=_verified_name(user.VerifiedName) or saved.BusinessName or None,
        picture_url=picture,
        lid=_canonical(lid) if lid.Server == JidKind.LID.server else None,
        blocked=jid in blocked or _canonical(lid) in blocked,
    )
