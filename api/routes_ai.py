"""AI auto-reply settings of a device (under ``/api/whatsapp``), validated here at the edge.

- ``PUT /devices/{deviceId}/settings/ai``: ``{"enabled", "provider", "model", "autoReply",
  "systemPrompt", "baseUrl", "apiKey", "maxRepliesPerMinute", "operatorPauseSeconds",
  "historyLimit", "timeoutSeconds", "maxTokens", "temperature"}``; absent fields keep their
  value, ``null`` resets one (``"apiKey": null`` removes the key). Answers the settings as
  stored, with ``apiKeySet`` in place of the key.
- ``GET /devices/{deviceId}/settings/ai``: the same view (the defaults, disabled, when nothing
  was ever stored).

The body becomes a :class:`PutAiSettings` request value through the HTTP edge's cattrs
converter; each field's hook checks its JSON type and range, so the settings are validated once,
here, and stored typed. The API key is stored (the provider needs it) but never returned and
never logged. A ``baseUrl`` set with a device key must pass the webhook SSRF rules (loopback,
private, link-local... refused unless listed in ``WASUP_WEBHOOK_ALLOW_NETWORKS``) and the
provider is then reached only through the guarded client; the operator token may point it
anywhere (a model server on localhost is the usual self-hosted setup).

Error handling: 400 INVALID_REQUEST naming the first wrong field of the body (unknown fields
first), 404 for a device that does not exist or that a device key may not see.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

import attrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override
from quart import Blueprint, Response

from api.auth import current_principal, resolve_device
from api.routes_devices import ok, read_body
from api.state import current_state
from api.text import check_line, check_text
from api.validation import converter, number
from supervisor.autoreply.settings import JSON_NAMES, MAX_PAUSE_SECONDS, PROVIDERS, AiSettings
from supervisor.errors import InvalidRequest
from supervisor.webhooks import ssrf

bp = Blueprint("ai", __name__)

_HEADER_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
#: What ``baseUrl`` may look like (docs/openapi.yaml has the same pattern): ASCII only (an
#: IDN host in its punycode form), a host name or IPv4 address (no IPv6 literal: use a name),
#: no credentials, no fragment.
BASE_URL_PATTERN = (
    r"^https?://[A-Za-z0-9.-]+(?::" + _PORT + r")?"
    r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?"
    r"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?$"
)
_BASE_URL_RE = re.compile(BASE_URL_PATTERN)


class Absent(enum.Enum):
    """A field the body did not have (``null`` is a value: the default)."""

    ABSENT = enum.auto()


ABSENT = Absent.ABSENT


# -- field checks (each raises InvalidRequest naming its field) ----------------------------


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{field}: must be true or false", field)
    return value


def _text(
    field: str, value: Any, *, max_len: int, min_len: int = 0, free_form: bool = False
) -> str:
    """A string of ``min_len`` to ``max_len`` characters; one line unless ``free_form``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be a string", field)
    if len(value) < min_len:
        raise InvalidRequest(f"{field}: must not be empty", field)
    if len(value) > max_len:
        raise InvalidRequest(f"{field}: must be at most {max_len} characters", field)
    if free_form:
        check_text(field, value)
    else:
        check_line(field, value)
    return value


def _provider(value: Any) -> str:
    if not isinstance(value, str) or value not in PROVIDERS:
        allowed = ", ".join(sorted(PROVIDERS))
        raise InvalidRequest(f"provider: must be one of {allowed}", "provider")
    return str(value)


def _base_url(value: Any) -> str:
    text = _text("baseUrl", value, min_len=1, max_len=2048)
    if _BASE_URL_RE.match(text):
        return text
    if "@" in text.split("//", 1)[-1].split("/", 1)[0]:
        raise InvalidRequest("baseUrl: must not contain credentials (use apiKey)", "baseUrl")
    raise InvalidRequest("baseUrl: must be an http or https url", "baseUrl")


def _api_key(value: Any) -> str:
    # never echo the value in the message
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise InvalidRequest("apiKey: must be a non-empty string", "apiKey")
    check_line("apiKey", value)
    if _HEADER_UNSAFE.search(value):
        raise InvalidRequest("apiKey: must not contain spaces or control characters", "apiKey")
    return value


#: Attribute -> the check of its JSON value (``null`` never reaches a check: it is the default).
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "enabled": lambda v: _bool("enabled", v),
    "provider": _provider,
    "model": lambda v: _text("model", v, min_len=1, max_len=200),
    "auto_reply": lambda v: _bool("autoReply", v),
    "system_prompt": lambda v: _text("systemPrompt", v, max_len=8000, free_form=True),
    "base_url": _base_url,
    "api_key": _api_key,
    "max_replies_per_minute": lambda v: number("maxRepliesPerMinute", v, 1, 60, integer=True),
    "operator_pause_seconds": lambda v: number(
        "operatorPauseSeconds", v, 0, MAX_PAUSE_SECONDS, integer=False
    ),
    "history_limit": lambda v: number("historyLimit", v, 0, 100, integer=True),
    "timeout_seconds": lambda v: number("timeoutSeconds", v, 1, 300, integer=False),
    "max_tokens": lambda v: number("maxTokens", v, 1, 32768, integer=True),
    "temperature": lambda v: number("temperature", v, 0, 2, integer=False),
}


# -- the request value -----------------------------------------------------------------------


@attrs.frozen
class PutAiSettings:
    """A ``PUT /settings/ai`` body: :data:`ABSENT` keeps the current value, ``None`` resets
    the field to its default."""

    enabled: bool | Absent | None = ABSENT
    provider: str | Absent | None = ABSENT
    model: str | Absent | None = ABSENT
    auto_reply: bool | Absent | None = ABSENT
    system_prompt: str | Absent | None = ABSENT
    base_url: str | Absent | None = ABSENT
    api_key: str | Absent | None = ABSENT
    max_replies_per_minute: int | Absent | None = ABSENT
    operator_pause_seconds: float | Absent | None = ABSENT
    history_limit: int | Absent | None = ABSENT
    timeout_seconds: float | Absent | None = ABSENT
    max_tokens: int | Absent | None = ABSENT
    temperature: float | Absent | None = ABSENT

    def apply(self, current: AiSettings) -> AiSettings:
        """The settings after this update. There are no rules across fields: every field has
        a usable default (the model included), so a body is valid whatever is stored."""
        defaults = AiSettings()
        changes: dict[str, Any] = {}
        for field in attrs.fields(PutAiSettings):
            value = getattr(self, field.name)
            if value is ABSENT:
                continue
            changes[field.name] = getattr(defaults, field.name) if value is None else value
        return attrs.evolve(current, **changes)


def _hook(check: Callable[[Any], Any]) -> Callable[[Any, type], Any]:
    def structure(value: Any, _: type) -> Any:
        return None if value is None else check(value)

    return structure


# Any: cattrs types **overrides as its keyword flags' type
_OVERRIDES: dict[str, Any] = {
    name: override(rename=JSON_NAMES.get(name, name), struct_hook=_hook(check))
    for name, check in _CHECKS.items()
}
converter.register_structure_hook(
    PutAiSettings,
    make_dict_structure_fn(
        PutAiSettings, converter, _cattrs_forbid_extra_keys=True, **_OVERRIDES
    ),
)


def parse_put_ai(body: Any) -> PutAiSettings:
    """Structure a PUT body.

    Error handling: raises :class:`InvalidRequest` naming the first wrong field in the body's
    order (unknown fields before any other); the message never contains the API key.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", "body")
    try:
        return converter.structure(body, PutAiSettings)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        raise _first_problem(exc, list(body)) from None


def _first_problem(exc: BaseException, order: list[str]) -> InvalidRequest:
    problems: list[BaseException] = [exc]
    if isinstance(exc, ClassValidationError):
        problems = list(exc.exceptions)
    unknown = {
        str(key) for p in problems if isinstance(p, ForbiddenExtraKeysError) for key in p.extra_fields
    }
    for key in order:
        if key in unknown:
            name = str(key)[:64]
            return InvalidRequest(f"{name}: unknown field", name)
    found = [p for p in problems if isinstance(p, InvalidRequest)]
    position = {key: i for i, key in enumerate(order)}
    found.sort(key=lambda p: position.get(p.field or "", len(order)))
    if found:
        return found[0]
    return InvalidRequest("body: is invalid", "body")  # not reached: every hook names its field


# -- routes ----------------------------------------------------------------------------------


async def _current(device_id: int) -> AiSettings:
    stored = await current_state().sup.get_settings(str(device_id), "ai")
    return AiSettings.from_stored(stored)


@bp.put("/devices/<device_id>/settings/ai")
async def put_ai(device_id: str) -> Response:
    row = await resolve_device(device_id)
    update = parse_put_ai(await read_body())
    state = current_state()
    new = update.apply(await _current(row.id))
    if update.base_url is not ABSENT:
        if current_principal().is_operator:
            new = attrs.evolve(new, guarded=False)
        else:
            try:
                await ssrf.check_url(new.base_url, state.sup.config.allow_networks)
            except ValueError as exc:
                raise InvalidRequest(f"baseUrl: {exc}", field="baseUrl") from None
            new = attrs.evolve(new, guarded=True)
    await state.sup.put_settings(str(row.id), "ai", new.to_stored())
    if state.autoreply is not None:
        state.autoreply.settings_changed(row.id, new)
    return ok(new.public(), "AI settings updated.")


@bp.get("/devices/<device_id>/settings/ai")
async def get_ai(device_id: str) -> Response:
    row = await resolve_device(device_id)
    return ok((await _current(row.id)).public())
