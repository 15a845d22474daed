"""WhatsApp addresses (JIDs): one value type, one parser, one canonical spelling.

A JID names a chat partner: ``<user>@<server>``, where the server says what kind of address it
is. :meth:`Jid.parse` reads every form wasup meets, from the API, from the engines and from
incoming messages, and :attr:`Jid.canonical` is the one spelling wasup stores, sends and
compares::

    Jid.parse("+1 555-123-4567").canonical          # '15551234567@s.whatsapp.net'
    Jid.parse("15551234567:3@s.whatsapp.net")      # the same Jid (device 3 dropped)
    Jid.parse("120363000000000000@g.us").kind       # JidKind.GROUP
    Jid.parse("15551234567@c.us", strict=True)      # InvalidJid: a spelling the API refuses

The forms, and what they mean:

* a phone number: ``+`` optional, 7 to 15 digits with the country code (no leading 0), spaces
  and dashes between digits (leniently also dots and parentheses); it names the number's
  WhatsApp account (``JidKind.USER``);
* ``<digits>@s.whatsapp.net`` (``c.us`` is the older spelling of the same server), a user;
  a device part (``:3``) or agent part (``.0``) after the user names one of the user's
  devices, and is dropped: a chat is with the user, not one of its phones;
* ``<digits>@lid``, a user behind WhatsApp's hidden identity (``JidKind.LID``);
* ``<digits>@g.us`` or the older ``<creator>-<timestamp>@g.us``, a group;
* ``status@broadcast`` and ``<digits>@broadcast``, status updates and broadcast lists;
* ``<digits>@newsletter``, a channel.

A user part is 5 to 20 digits (with one ``-`` inside for old group ids). The lenient reading
(the default) also takes the server in any case, ``c.us``, and the agent part, as incoming
messages and other WhatsApp libraries spell them; ``strict=True`` takes exactly the spellings
the API documents (``docs/openapi.yaml``, ``SendMessageRequest.to``), so that the API accepts
and refuses what it always did.

Error handling: :meth:`Jid.parse` raises :class:`InvalidJid` (a ``ValueError``) for anything
else; its message says what a valid address looks like.
"""

from __future__ import annotations

import enum
import re

import attrs

__all__ = ["InvalidJid", "Jid", "JidKind"]


class JidKind(enum.Enum):
    """What a JID addresses; the value is the canonical server name."""

    USER = "s.whatsapp.net"
    LID = "lid"
    GROUP = "g.us"
    BROADCAST = "broadcast"
    NEWSLETTER = "newsletter"

    @property
    def server(self) -> str:
        """The canonical server name (``s.whatsapp.net``, ``g.us``, ...)."""
        return self.value

    @property
    def is_direct(self) -> bool:
        """A one-to-one chat with a person (a user or a hidden-identity user)."""
        return self in (JidKind.USER, JidKind.LID)


class InvalidJid(ValueError):
    """Raised by :meth:`Jid.parse` for text that is neither a phone number nor a JID."""


#: Server spellings, lower case, to kinds. ``c.us`` is read leniently only.
_SERVERS = {kind.server: kind for kind in JidKind}
_LENIENT_SERVERS = {**_SERVERS, "c.us": JidKind.USER}

_NUMBER = r"[0-9]{5,20}(?:-[0-9]{5,20})?"
_DEVICE = r"(?::[0-9]{1,3})?"
_AGENT = r"(?:\.[0-9]{1,3})?"
_DIGIT_USER = re.compile(f"({_NUMBER}){_DEVICE}")
#: The user part, per kind (group 1 is the user the canonical form keeps): strict, then lenient.
_STRICT_USER: dict[JidKind, re.Pattern[str]] = {
    JidKind.USER: _DIGIT_USER,
    JidKind.LID: _DIGIT_USER,
    JidKind.GROUP: _DIGIT_USER,
    JidKind.BROADCAST: re.compile(f"(status|{_NUMBER}){_DEVICE}"),
    JidKind.NEWSLETTER: _DIGIT_USER,
}
_LENIENT_USER: dict[JidKind, re.Pattern[str]] = {
    **_STRICT_USER,
    JidKind.USER: re.compile(f"({_NUMBER}){_AGENT}{_DEVICE}"),
    JidKind.LID: re.compile(f"({_NUMBER}){_AGENT}{_DEVICE}"),
}
_STRICT_PHONE = re.compile(r"\+?[0-9][0-9 \-]{5,30}")
_LENIENT_PHONE = re.compile(r"\+?[\s(]*[0-9][0-9\s\-().]{5,30}")

_MESSAGE = (
    "must be a phone number like +15551234567 or a whatsapp jid like 15551234567@s.whatsapp.net"
)


@attrs.frozen
class Jid:
    """A WhatsApp address: ``user`` at the server of ``kind``. Build it with :meth:`parse`.

    Two Jids are equal when they name the same chat, whatever spelling they were parsed from.
    """

    user: str
    kind: JidKind

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> Jid:
        """Read a phone number or a JID in any of the forms in the module docstring.

        Error handling: raises :class:`InvalidJid` for anything else.
        """
        value = text.strip()
        if "@" not in value:
            return cls.phone(value, strict=strict)
        user, _, server = value.rpartition("@")
        if strict:
            kind, users = _SERVERS.get(server), _STRICT_USER
        else:
            kind, users = _LENIENT_SERVERS.get(server.lower()), _LENIENT_USER
        if kind is None:
            raise InvalidJid(_MESSAGE)
        m = users[kind].fullmatch(user)
        if m is None:
            raise InvalidJid(_MESSAGE)
        return cls(m.group(1), kind)

    @classmethod
    def phone(cls, text: str, *, strict: bool = False) -> Jid:
        """The user JID of a phone number: ``+`` optional, 7 to 15 digits (no leading 0),
        spaces and dashes allowed between them (leniently also dots and parentheses).

        Error handling: raises :class:`InvalidJid` for anything else (a JID included).
        """
        value = text.strip()
        if (_STRICT_PHONE if strict else _LENIENT_PHONE).fullmatch(value):
            digits = "".join(ch for ch in value if ch.isdigit())
            if 7 <= len(digits) <= 15 and digits[0] != "0":
                return cls(digits, JidKind.USER)
        raise InvalidJid(_MESSAGE)

    @property
    def server(self) -> str:
        """The canonical server name."""
        return self.kind.server

    @property
    def canonical(self) -> str:
        """``user@server``, the one spelling wasup stores, sends and compares."""
        return f"{self.user}@{self.kind.server}"

    @property
    def phone_number(self) -> str | None:
        """``+<digits>`` for a user JID, else None."""
        return f"+{self.user}" if self.kind is JidKind.USER else None

    def __str__(self) -> str:
        return self.canonical
