"""The text rules: which strings wasup takes at its edge, for every field of every route.

Every string anywhere in a JSON body (keys included) must be valid Unicode, with no lone UTF-16
surrogate (a ``\\ud800`` escape, or its UTF-8 bytes, which ``json.loads`` lets through, smuggle
one in; no database or encoder accepts it), and hold no control character but tab, line feed
and carriage return. Those three are allowed only in free-form text (a message, a system
prompt); a name, an alias, a URL, a key is one line (:func:`check_line`): no tab, line break
or Unicode line separator either.

Usage::

    check_strings(body)               # every string of a decoded body: the text rules
    check_line("alias", req.alias)    # a one-line field
    check_text("text", req.text)      # a free-form field (when not checked with its body)

Error handling: the checks raise :class:`supervisor.errors.InvalidRequest` naming the field;
the message never repeats the value (it may be a secret).
"""

from __future__ import annotations

import re
from typing import Any

from supervisor.errors import InvalidRequest

#: Control characters no string may hold (C0 but tab, LF, CR; DEL; C1).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: What a one-line string may not hold on top of that.
_LINE_BREAK_RE = re.compile(r"[\t\n\r\u2028\u2029\x85]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
#: The ASCII characters a string may hold (for the fast check of an all-ASCII string).
_ASCII_OK = bytes([9, 10, 13, *range(0x20, 0x7F)])


def text_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable text anywhere in wasup, or None if it is."""
    if value.isascii():  # no surrogate; a byte scan finds a control character much faster
        if value.encode("ascii").translate(None, _ASCII_OK):
            return "must not contain control characters"
        return None
    if _SURROGATE_RE.search(value):
        return "must be valid unicode (a lone surrogate is not)"
    if _CONTROL_RE.search(value):
        return "must not contain control characters"
    return None


def is_one_line(value: str) -> bool:
    """Whether ``value`` is acceptable text without a tab or line break."""
    return text_problem(value) is None and not _LINE_BREAK_RE.search(value)


def check_text(field: str, value: str) -> None:
    """Raise InvalidRequest naming ``field`` if ``value`` breaks the text rules."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", field=field)


def check_line(field: str, value: str | None) -> None:
    """One-line text (None passes): the text rules, and no tab or line break either."""
    if value is None:
        return
    check_text(field, value)
    if _LINE_BREAK_RE.search(value):
        raise InvalidRequest(f"{field}: must be one line (no tab or line break)", field=field)


def check_strings(body: Any) -> None:
    """Apply the text rules to every key and string value of a decoded JSON body, in the
    body's order, naming the top-level field the first bad string is under (``body`` for a bad
    top-level key)."""
    stack: list[tuple[Any, str]] = [(body, "body")]
    while stack:
        value, field = stack.pop()
        if isinstance(value, str):
            check_text(field, value)
        elif isinstance(value, dict):
            children: list[tuple[Any, str]] = []
            for key, item in value.items():
                if text_problem(key) is not None:
                    raise InvalidRequest(
                        f"{field}: a field name must be valid unicode without control "
                        "characters", field=field,
                    )
                children.append((item, key if field == "body" else field))
            stack.extend(reversed(children))  # the first child is checked first
        elif isinstance(value, list):
            stack.extend((item, field) for item in reversed(value))
