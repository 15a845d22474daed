"""Contacts at WhatsApp: the engine session's :class:`ContactsApi` and its result records.

What a device can ask WhatsApp about people: which phone numbers have an account
(:meth:`ContactsApi.check`, one request for the whole batch), the address book WhatsApp synced
from the phone (:meth:`ContactsApi.list`), one person's names, about text, business name and
profile picture (:meth:`ContactsApi.info`), the mapping between a phone-number JID and the
person's hidden identity (LID, ``…@lid``), and the account's block list.

Every method takes and returns canonical JIDs (:attr:`supervisor.jid.Jid.canonical`); a phone
number is its digits with the country code, no ``+``. Callers validate arguments first
(:mod:`supervisor.contacts`); the engines run the requests through the device's actor
(:mod:`supervisor.asks`), so they may run concurrently with each other and with sends.

Error handling: :class:`~supervisor.errors.EngineError` (recoverable) when not connected;
:class:`~supervisor.errors.NotFound` for a person WhatsApp knows nothing of;
:class:`~supervisor.errors.WhatsAppRefused` for WhatsApp's refusals (a block it will not do);
``EngineError(reason, recoverable=False)`` for any other failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs


@attrs.frozen
class NumberCheck:
    """Whether ``phone`` (digits) has a WhatsApp account; ``jid`` its JID when it has one,
    ``business_name`` the verified name of a business account."""

    phone: str
    on_whatsapp: bool
    jid: str | None = None
    business_name: str | None = None


@attrs.frozen
class Contact:
    """One entry of the address book WhatsApp synced from the phone: ``name`` as saved on the
    phone (its full name), ``first_name``, ``push_name`` the person's own WhatsApp name,
    ``business_name`` a business account's name."""

    jid: str
    name: str | None = None
    first_name: str | None = None
    push_name: str | None = None
    business_name: str | None = None


@attrs.frozen
class ContactInfo:
    """What WhatsApp tells about one person: the address book's names (None when not saved),
    the push name, ``about`` (their status text), ``business_name`` (the verified name of a
    business account), ``picture_url`` (None when not set or not visible to this account),
    ``lid`` (their hidden identity, when known) and whether this account blocked them."""

    jid: str
    name: str | None = None
    first_name: str | None = None
    push_name: str | None = None
    about: str | None = None
    business_name: str | None = None
    picture_url: str | None = None
    lid: str | None = None
    blocked: bool = False


class ContactsApi(Protocol):
    """A connected session's contacts (see the module docstring)."""

    async def check(self, phones: Sequence[str]) -> Sequence[NumberCheck]:
        """Which of ``phones`` (digits, distinct) are on WhatsApp: one request to WhatsApp
        for them all; one result per phone, in their order."""
        ...

    async def list(self) -> Sequence[Contact]:
        """The synced address book, ordered by JID."""
        ...

    async def info(self, jid: str) -> ContactInfo:
        """One person (a user or LID JID). :class:`~supervisor.errors.NotFound` when the
        JID has no WhatsApp account."""
        ...

    async def lid_of(self, pn: str) -> str | None:
        """The LID JID of a phone-number JID, None when WhatsApp has not told it."""
        ...

    async def pn_of(self, lid: str) -> str | None:
        """The phone-number JID of a LID JID, None when WhatsApp has not told it."""
        ...

    async def block(self, jid: str) -> None:
        """Add ``jid`` to the account's block list (no error if it is there already)."""

    async def unblock(self, jid: str) -> None:
        """Take ``jid`` off the account's block list (no error if it is not there)."""

    async def blocked(self) -> Sequence[str]:
        """The account's block list, ordered."""
        ...
