"""The fields of a message's content, as a request body gives them: one checker per field.

The send route (:mod:`api.send_request`) and the simulator's incoming messages
(:mod:`api.sim_messages`) take the same ``location``, ``contact`` and ``poll`` objects and the
same kinds of strings; both check them here, so the two accept exactly the same values::

    location({"latitude": 52.5, "longitude": 13.4, "name": "Office"})   # mc.Location
    contact({"name": "Ana", "phoneNumber": "+15551234567"})             # mc.Contact, a vCard built
    poll({"question": "Lunch?", "options": ["pizza", "soup"]})          # mc.Poll
    string(body, "caption", "caption", CAPTION_MAX, required=False, one_line=False)

Error handling: every function raises :class:`supervisor.errors.InvalidRequest` naming the
field at fault (``location.latitude``, ``contact.phoneNumber``, ``poll.options``, ...); the
message never repeats the value.
"""

from __future__ import annotations

import re
from typing import Any

from api import validation
from api.text import check_line, check_text
from api.validation import number
from supervisor import message_content as mc
from supervisor.errors import InvalidRequest

#: Limits shared with docs/openapi.yaml (keep the two in step).
CAPTION_MAX = 1024
NAME_MAX = 256
VCARD_MAX = 4096
POLL_OPTIONS = (2, 12)
OPTION_MAX = 100
FILENAME_MAX = 255


def fields(value: Any, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    """``value`` as a JSON object holding no key but ``allowed`` (``field`` is ``body`` for a
    whole body: an unknown key is then named alone, not as ``body.key``)."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field}: must be a JSON object", field=field)
    for key in value:
        if key not in allowed:
            name = key if field == "body" else f"{field}.{key}"
            raise InvalidRequest(f"{name}: unknown field", field=name)
    return value


def string(body: dict[str, Any], key: str, field: str, maximum: int, *, required: bool = True,
           one_line: bool = True, empty: bool = False) -> str | None:
    """``body[key]`` as a string of at most ``maximum`` characters (None when absent and not
    ``required``): one line unless ``one_line`` is false, not empty unless ``empty``."""
    value = body.get(key)
    if key not in body:
        if not required:
            return None
        raise InvalidRequest(f"{field}: is required", field=field)
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be a string", field=field)
    (check_line if one_line else check_text)(field, value)
    if not value and not empty:
        raise InvalidRequest(f"{field}: must not be empty", field=field)
    if len(value) > maximum:
        raise InvalidRequest(f"{field}: must be at most {maximum} characters", field=field)
    return value


def flag(body: dict[str, Any], key: str) -> bool:
    """``body[key]`` as true or false (False when absent)."""
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key}: must be true or false", field=key)
    return value


def vcard(name: str, phone: str) -> str:
    """A vCard 3.0 of one contact: its name and its number (E.164, with ``+``)."""
    digits = phone.lstrip("+")
    return (f"BEGIN:VCARD\nVERSION:3.0\nFN:{name}\n"
            f"TEL;type=CELL;waid={digits}:{phone}\nEND:VCARD")


def contact(value: Any) -> mc.Contact:
    """``{"name", "phoneNumber"}`` (a vCard is built from them) or ``{"vcard"}``."""
    given = fields(value, "contact", frozenset({"name", "phoneNumber", "vcard"}))
    if "vcard" in given:
        if "name" in given or "phoneNumber" in given:
            raise InvalidRequest("contact: either vcard, or name and phoneNumber",
                                 field="contact")
        card = string(given, "vcard", "contact.vcard", VCARD_MAX, one_line=False)
        assert card is not None
        found = re.search(r"^FN:(.*)$", card, flags=re.M)
        return mc.Contact(found.group(1).strip() if found else "", (card,))
    name = string(given, "name", "contact.name", NAME_MAX)
    phone = given.get("phoneNumber")
    if not isinstance(phone, str):
        raise InvalidRequest("contact.phoneNumber: must be a string", field="contact.phoneNumber")
    validation.check_phone(phone, "contact.phoneNumber")
    assert name is not None
    return mc.Contact(name, (vcard(name, phone),))


def poll(value: Any) -> mc.Poll:
    """``{"question", "options": [2 to 12 different, non-empty options], "multiple"?}``."""
    given = fields(value, "poll", frozenset({"question", "options", "multiple"}))
    question = string(given, "question", "poll.question", validation.TEXT_MAX, one_line=False)
    options = given.get("options")
    low, high = POLL_OPTIONS
    if not isinstance(options, list) or not low <= len(options) <= high:
        raise InvalidRequest(f"poll.options: must be a list of {low} to {high} options",
                             field="poll.options")
    texts = [string({"o": o}, "o", "poll.options", OPTION_MAX) for o in options]
    if len(set(texts)) != len(texts):
        raise InvalidRequest("poll.options: must be different from each other",
                             field="poll.options")
    multiple = given.get("multiple", False)
    if not isinstance(multiple, bool):
        raise InvalidRequest("poll.multiple: must be true or false", field="poll.multiple")
    assert question is not None
    return mc.Poll(question, tuple(t for t in texts if t is not None), multiple=multiple)


def location(value: Any) -> mc.Location:
    """``{"latitude", "longitude", "name"?, "address"?}`` in degrees."""
    where = fields(value, "location", frozenset({"latitude", "longitude", "name", "address"}))
    return mc.Location(
        float(number("location.latitude", where.get("latitude"), -90, 90)),
        float(number("location.longitude", where.get("longitude"), -180, 180)),
        name=string(where, "name", "location.name", NAME_MAX, required=False),
        address=string(where, "address", "location.address", NAME_MAX, required=False),
    )
