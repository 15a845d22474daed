"""Validation at the HTTP edge: request bodies, query strings and path parameters.

One cattrs converter for this boundary turns a JSON body into a frozen request value: it refuses
unknown fields, missing required fields and wrong JSON types (no coercion: ``123`` is not a
string, ``true`` is not a number). Formats (lengths, phone numbers, user ids) are checked after
structuring, by hand, field by field.

Every string of a body is held to the text rules of :mod:`api.text` when the body is decoded
(:func:`parse_json`); a body with the same key twice is refused: ambiguous input is not
silently resolved.

Error handling: every function here raises :class:`supervisor.errors.InvalidRequest` whose
``field`` names the offending field (``alias``, ``query.limit``, ``body``...) and whose message
is short and lower-case and never repeats the offending value; nothing else escapes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from api.text import check_line, check_strings, is_one_line, text_problem
from supervisor.errors import InvalidRequest
from supervisor.status import Status

T = TypeVar("T")

#: Limits shared with docs/openapi.yaml (keep the two in step).
ALIAS_MAX = 100
BUSINESS_TYPE_MAX = 50
DESCRIPTION_MAX = 500
PUSH_NAME_MAX = 100
TEXT_MAX = 4096
USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PHONE_RE = re.compile(r"\+[1-9][0-9]{6,14}")
ALNUM_RE = re.compile(r"[A-Za-z0-9]")
PAIR_CODE_RE = re.compile(r"[A-Z0-9]{4}-?[A-Z0-9]{4}")
STATUSES = tuple(status.value for status in Status)
PAGE_MAX = 1_000_000
LIMIT_DEFAULT = 50
LIMIT_MAX = 100


# -- request values ---------------------------------------------------------------------------


@attrs.frozen
class CreateDevice:
    user_id: str
    alias: str
    business_type: str | None = None
    phone_number: str | None = None
    description: str | None = None


@attrs.frozen
class UpdateDevice:
    """Only the fields present in the body are changed; ``None`` clears an optional field."""

    alias: str | None = None
    business_type: str | None = None
    phone_number: str | None = None
    description: str | None = None
    present: frozenset[str] = frozenset()

    def changes(self) -> dict[str, Any]:
        """The keyword arguments for ``sup.update_device`` (only what the client sent)."""
        return {name: getattr(self, name) for name in sorted(self.present)}


@attrs.frozen
class SimScan:
    phone_number: str | None = None
    push_name: str | None = None
    code: str | None = None


@attrs.frozen
class Empty:
    """A body that must be empty or ``{}``."""


@attrs.frozen
class ListQuery:
    status: str | None
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


# -- the converter ----------------------------------------------------------------------------

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


converter.register_structure_hook(str, _strict_str)

# JSON field name -> attribute name, per request value.
_RENAMES: dict[type, dict[str, str]] = {
    CreateDevice: {"userId": "user_id", "businessType": "business_type",
                   "phoneNumber": "phone_number"},
    UpdateDevice: {"businessType": "business_type", "phoneNumber": "phone_number"},
    SimScan: {"phoneNumber": "phone_number", "pushName": "push_name"},
}
_JSON_NAMES: dict[type, dict[str, str]] = {
    cls: {attr: key for key, attr in names.items()} for cls, names in _RENAMES.items()
}

def _register_renames() -> None:
    for cls, names in _RENAMES.items():
        overrides: dict[str, Any] = {attr: override(rename=key) for key, attr in names.items()}
        if cls is UpdateDevice:
            overrides["present"] = override(omit=True)
        hook: Any = make_dict_structure_fn(
            cls, converter, _cattrs_forbid_extra_keys=True, **overrides
        )
        converter.register_structure_hook(cls, hook)


_register_renames()


def _format(exc: BaseException, _type: type | None) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unknown field"
    if isinstance(exc, TypeError) and str(exc) == "must be a string":
        return "must be a string"
    if isinstance(exc, TypeError | ValueError) and _type is not None:
        name = getattr(_type, "__name__", str(_type))
        return f"must be of type {name}"
    return "is invalid"


def _invalid_from(exc: BaseException, cls: type) -> InvalidRequest:
    """The first problem of a cattrs error as an :class:`InvalidRequest` naming its field."""
    if isinstance(exc, ForbiddenExtraKeysError):
        extra = sorted(exc.extra_fields)[0]
        return InvalidRequest(f"{extra}: unknown field", field=extra)
    messages = cattrs.transform_error(exc, format_exception=_format)
    first = messages[0] if messages else "body is invalid"
    text, _, path = first.rpartition(" @ ")
    field = path.removeprefix("$").lstrip(".") or "body"
    if text == "unknown field" and isinstance(exc, ClassValidationError):
        for sub in exc.exceptions:
            if isinstance(sub, ForbiddenExtraKeysError):
                field = sorted(sub.extra_fields)[0]
    # cattrs names attributes after their renamed JSON key already; map any leftover back.
    field = _JSON_NAMES.get(cls, {}).get(field, field)
    return InvalidRequest(f"{field}: {text}", field=field)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def parse_json(data: bytes) -> Any:
    """Decode a request body and apply the text rules to every string in it.

    Error handling: InvalidRequest(field="body") on bad UTF-8, malformed JSON or a key given
    twice (``field`` is that key then); InvalidRequest naming the top-level field for a string
    that breaks the text rules.
    """
    if not data.strip():
        raise InvalidRequest("body: a JSON object is required", field="body")
    try:
        body = json.loads(data, object_pairs_hook=_unique_object)
    except _DuplicateKey as exc:
        key = exc.key if text_problem(exc.key) is None else "body"
        raise InvalidRequest(f"{key[:64]}: given twice in the body", field=key[:64]) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest("body: malformed JSON", field="body") from exc
    check_strings(body)
    return body


def structure(body: Any, cls: type[T]) -> T:
    """Structure a decoded JSON body into ``cls``; raises InvalidRequest naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    try:
        return converter.structure(body, cls)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        raise _invalid_from(exc, cls) from None


# -- format checks ----------------------------------------------------------------------------


def _bounded(field: str, value: str | None, maximum: int, *, allow_empty: bool = False) -> None:
    if value is None:
        return
    if not value and not allow_empty:
        raise InvalidRequest(f"{field}: must not be empty", field=field)
    if len(value) > maximum:
        raise InvalidRequest(f"{field}: must be at most {maximum} characters", field=field)


def check_alias(alias: str, field: str = "alias") -> None:
    check_line(field, alias)
    _bounded(field, alias, ALIAS_MAX)
    if not ALNUM_RE.search(alias):
        raise InvalidRequest(f"{field}: must contain a letter or a digit", field=field)


def check_phone(value: str | None, field: str = "phoneNumber") -> None:
    if value is not None and not PHONE_RE.fullmatch(value):
        raise InvalidRequest(
            f"{field}: must be + and 7 to 15 digits (E.164, no leading 0), like +1234567890", field=field
        )


def check_user_id(value: str, field: str = "userId") -> None:
    if not USER_ID_RE.fullmatch(value):
        raise InvalidRequest(
            f"{field}: must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            field=field,
        )


def create_device(body: Any) -> CreateDevice:
    req = structure(body, CreateDevice)
    check_user_id(req.user_id)
    check_alias(req.alias)
    _check_details(req.business_type, req.phone_number, req.description)
    return req


def _check_details(
    business_type: str | None, phone_number: str | None, description: str | None
) -> None:
    check_line("businessType", business_type)
    _bounded("businessType", business_type, BUSINESS_TYPE_MAX)
    check_phone(phone_number)
    check_line("description", description)
    _bounded("description", description, DESCRIPTION_MAX, allow_empty=True)


def update_device(body: Any) -> UpdateDevice:
    req = structure(body, UpdateDevice)
    assert isinstance(body, dict)  # structure() checked it
    names = _RENAMES[UpdateDevice]
    present = frozenset(names.get(str(key), str(key)) for key in body)
    if not present:
        raise InvalidRequest("body: at least one field to change is required", field="body")
    if "alias" in present:
        if req.alias is None:
            raise InvalidRequest("alias: must be a string", field="alias")
        check_alias(req.alias)
    _check_details(req.business_type, req.phone_number, req.description)
    return attrs.evolve(req, present=present)


def sim_scan(body: Any) -> SimScan:
    req = structure(body, SimScan)
    check_phone(req.phone_number)
    check_line("pushName", req.push_name)
    _bounded("pushName", req.push_name, PUSH_NAME_MAX)
    if req.code is not None and not PAIR_CODE_RE.fullmatch(req.code):
        raise InvalidRequest("code: must be a pair code like ABCD-EFGH", field="code")
    return req


#: No path parameter or query value of wasup's is longer (a sessionId is at most ~170).
PARAM_MAX = 512


def check_params(path: Mapping[str, Any], query: Iterable[tuple[str, str]]) -> None:
    """Path parameters (``device_id`` is named ``deviceId``) and query values: one line of
    valid text, at most :data:`PARAM_MAX` characters; a query name must be valid text too.

    Error handling: InvalidRequest naming the parameter (``query`` for a bad name).
    """
    items = [(_camel(name), value) for name, value in path.items() if isinstance(value, str)]
    for name, value in query:
        if not is_one_line(name):
            raise InvalidRequest("query: a parameter name must be one line of text", field="query")
        items.append((name, value))
    for name, value in items:
        check_line(name, value)
        if len(value) > PARAM_MAX:
            raise InvalidRequest(f"{name}: must be at most {PARAM_MAX} characters", field=name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def number(field: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> Any:
    """A JSON number of a body in ``[lo, hi]`` (a bool is not one); an ``integer`` field takes a
    JSON integer only (``1e3`` and ``5.0`` are refused: a client sending them has a float where
    it means a count). Returns the value as given (an int or a float).

    Error handling: InvalidRequest naming ``field``.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{field}: must be {kind}", field=field)
    if integer and not isinstance(value, int):
        raise InvalidRequest(f"{field}: must be {kind}", field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{field}: must be {kind}", field=field)
    # Compared as is: float() of a 400-digit JSON integer overflows.
    if not lo <= value <= hi:
        raise InvalidRequest(f"{field}: must be between {lo:g} and {hi:g}", field=field)
    return value


def int_param(args: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """The integer query parameter ``name`` in ``[lo, hi]``, or ``default`` when absent.

    Error handling: InvalidRequest naming ``name``.
    """
    raw = args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise InvalidRequest(f"{name}: must be an integer", field=name)
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name}: must be between {lo} and {hi}", field=name)
    return value


def list_query(args: Mapping[str, str]) -> ListQuery:
    """``status``, ``page`` (from 1) and ``limit`` (1 to 100, default 50) of a list request."""
    status = args.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: must be one of {', '.join(STATUSES)}", field="status")
    page = int_param(args, "page", 1, 1, PAGE_MAX)
    limit = int_param(args, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    return ListQuery(status=status, page=page, limit=limit)
