"""The one JID parser: every spelling of an address reads as the same Jid, and the canonical
form reads back as itself (hypothesis round trips), in both the lenient and the strict reading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.send_request import normalize_recipient
from supervisor.errors import InvalidRequest
from supervisor.jid import InvalidJid, Jid, JidKind

numbers = st.from_regex(r"[0-9]{5,20}", fullmatch=True)
phones = st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True)
kinds = st.sampled_from(list(JidKind))


@st.composite
def jids(draw: st.DrawFn) -> Jid:
    kind = draw(kinds)
    if kind is JidKind.BROADCAST and draw(st.booleans()):
        return Jid("status", kind)
    user = draw(numbers)
    if kind is JidKind.GROUP and draw(st.booleans()):
        user = f"{user}-{draw(numbers)}"
    return Jid(user, kind)


@given(jids(), st.booleans())
def test_canonical_reads_back_as_itself(jid: Jid, strict: bool) -> None:
    assert Jid.parse(jid.canonical, strict=strict) == jid
    assert Jid.parse(f"  {jid}\n", strict=strict) == jid


@given(jids(), st.integers(0, 999))
def test_a_device_part_names_the_same_chat(jid: Jid, device: int) -> None:
    assert Jid.parse(f"{jid.user}:{device}@{jid.server}", strict=True) == jid


@given(phones, st.lists(st.sampled_from([" ", "-"]), max_size=14), st.booleans())
def test_a_phone_number_with_separators_is_its_user_jid(
    digits: str, seps: list[str], plus: bool
) -> None:
    spelled = "".join(d + (seps[i] if i < len(seps) and i < len(digits) - 1 else "")
                      for i, d in enumerate(digits))
    text = ("+" if plus else "") + spelled
    for strict in (True, False):
        jid = Jid.parse(text, strict=strict)
        assert jid == Jid(digits, JidKind.USER)
        assert jid.canonical == f"{digits}@s.whatsapp.net"
        assert jid.phone_number == f"+{digits}"


@given(numbers, st.integers(0, 99), st.integers(0, 99),
       st.sampled_from(["s.whatsapp.net", "c.us", "S.WhatsApp.NET", "C.US"]))
def test_lenient_spellings_of_a_user(user: str, agent: int, device: int, server: str) -> None:
    jid = Jid.parse(f"{user}.{agent}:{device}@{server}")
    assert jid == Jid(user, JidKind.USER)
    assert Jid.parse(jid.canonical, strict=True) == jid


@pytest.mark.parametrize(
    ("text", "canonical", "kind"),
    [
        ("+1 555-123-4567", "15551234567@s.whatsapp.net", JidKind.USER),
        ("+1 (555) 123.4567", "15551234567@s.whatsapp.net", JidKind.USER),
        ("491701234567@c.us", "491701234567@s.whatsapp.net", JidKind.USER),
        ("12345678901234@lid", "12345678901234@lid", JidKind.LID),
        ("120363025246125486@g.us", "120363025246125486@g.us", JidKind.GROUP),
        ("15551234567-1600000000@g.us", "15551234567-1600000000@g.us", JidKind.GROUP),
        ("status@broadcast", "status@broadcast", JidKind.BROADCAST),
        ("1234567890@broadcast", "1234567890@broadcast", JidKind.BROADCAST),
        ("120363000000000000@newsletter", "120363000000000000@newsletter", JidKind.NEWSLETTER),
    ],
)
def test_forms(text: str, canonical: str, kind: JidKind) -> None:
    jid = Jid.parse(text)
    assert (jid.canonical, jid.kind) == (canonical, kind)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "123", "nobody", "1555@example.com", "+1555abc4567", "1" * 16,
     "@s.whatsapp.net", "0123456789", "12@s.whatsapp.net", "abc@g.us", "a@b@g.us",
     "status@g.us", "120363xyz@newsletter", "15551234567@"],
)
def test_refused(text: str) -> None:
    for strict in (True, False):
        with pytest.raises(InvalidJid):
            Jid.parse(text, strict=strict)


@pytest.mark.parametrize(
    "text",
    ["15551234567@c.us", "15551234567@S.WHATSAPP.NET", "15551234567.0:1@s.whatsapp.net",
     "+1 (555) 123-4567", "1.555.123.4567"],
)
def test_strict_refuses_what_the_api_never_accepted(text: str) -> None:
    Jid.parse(text)
    with pytest.raises(InvalidJid):
        Jid.parse(text, strict=True)


def test_direct_kinds() -> None:
    assert {k for k in JidKind if k.is_direct} == {JidKind.USER, JidKind.LID}


@pytest.mark.parametrize(
    "to",
    ["15551234567@c.us", "15551234567@S.WHATSAPP.NET", "12345678901234@lid", "status@broadcast",
     "120363000000000000@newsletter", "+1 (555) 123-4567", "1" * 101],
)
def test_the_api_refuses_what_it_always_refused(to: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize_recipient(to)
    assert info.value.field == "to"


@pytest.mark.parametrize(
    ("to", "canonical"),
    [("+1 555-123-4567", "15551234567@s.whatsapp.net"),
     ("15551234567:3@s.whatsapp.net", "15551234567@s.whatsapp.net"),
     ("12345-67890@g.us", "12345-67890@g.us")],
)
def test_the_api_sends_to_the_canonical_jid(to: str, canonical: str) -> None:
    assert normalize_recipient(to).canonical == canonical
