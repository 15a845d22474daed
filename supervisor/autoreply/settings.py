"""A device's AI settings: the frozen :class:`AiSettings` and its stored form.

Synopsis::

    settings = AiSettings.from_stored(stored)     # the "ai" settings kind, or None
    settings.active                               # enabled and autoReply
    stored = settings.to_stored()                 # what the settings table keeps
    view = settings.public()                      # what the API shows (no key)

The stored form is a JSON object with the API's field names plus ``guarded``; one cattrs
converter (:data:`stored_converter`) reads and writes it. Values are validated once, at the
API edge (``api.routes_ai``), before they are stored; reading them back only checks their
JSON types.

Error handling: :meth:`AiSettings.from_stored` never raises: a stored value it cannot read
yields the defaults (auto-reply off) and a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

log = logging.getLogger("wasup.autoreply")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
PROVIDERS = frozenset({"openai"})
#: Longest operator pause (seconds); pauses are forgotten after this long.
MAX_PAUSE_SECONDS = 86400.0


@attrs.frozen
class AiSettings:
    """A device's AI settings (the ``"ai"`` settings kind), in their validated form.

    ``api_key`` is kept out of ``repr`` and out of :meth:`public`; it leaves this object only
    in :meth:`to_stored` (the settings table) and in the provider request's ``Authorization``
    header.
    """

    enabled: bool = False
    provider: str = "openai"
    model: str = DEFAULT_MODEL
    auto_reply: bool = False
    system_prompt: str = ""
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = attrs.field(default=None, repr=False)
    max_replies_per_minute: int = 5
    operator_pause_seconds: float = 600.0
    history_limit: int = 10
    timeout_seconds: float = 30.0
    max_tokens: int | None = None
    temperature: float | None = None
    #: The base URL was set by a device key, not the operator: the provider is then reached
    #: only through the SSRF guard (see ``supervisor.webhooks.ssrf``). Not part of the API.
    guarded: bool = False

    @property
    def active(self) -> bool:
        """True when incoming messages should be answered."""
        return self.enabled and self.auto_reply

    @classmethod
    def from_stored(cls, value: Mapping[str, Any] | None) -> AiSettings:
        """Settings from the stored dict (``None``: the defaults, disabled).

        Error handling: a stored value that cannot be read (unknown field, wrong JSON type)
        yields the defaults (disabled) and a warning, so a bad row switches auto-reply off
        instead of breaking it. ``null`` stands for a field's default.
        """
        if not value:
            return cls()
        fields = {key: item for key, item in value.items() if item is not None}
        try:
            return stored_converter.structure(fields, cls)
        except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
            log.warning("stored ai settings are invalid (%s), auto-reply is off", exc)
            return cls()

    def to_stored(self) -> dict[str, Any]:
        """The dict stored in the settings table (API field names, ``apiKey`` included)."""
        stored: dict[str, Any] = stored_converter.unstructure(self)
        return stored

    def public(self) -> dict[str, Any]:
        """What the API shows: every field except the key, plus ``apiKeySet``."""
        return {
            "enabled": self.enabled,
            "provider": self.provider,
            "model": self.model,
            "autoReply": self.auto_reply,
            "systemPrompt": self.system_prompt,
            "baseUrl": self.base_url,
            "apiKeySet": self.api_key is not None,
            "maxRepliesPerMinute": self.max_replies_per_minute,
            "operatorPauseSeconds": self.operator_pause_seconds,
            "historyLimit": self.history_limit,
            "timeoutSeconds": self.timeout_seconds,
            "maxTokens": self.max_tokens,
            "temperature": self.temperature,
        }


#: Attribute -> JSON field name, for the fields whose names differ (the API's and the stored
#: form's names are the same).
JSON_NAMES: dict[str, str] = {
    "auto_reply": "autoReply",
    "system_prompt": "systemPrompt",
    "base_url": "baseUrl",
    "api_key": "apiKey",
    "max_replies_per_minute": "maxRepliesPerMinute",
    "operator_pause_seconds": "operatorPauseSeconds",
    "history_limit": "historyLimit",
    "timeout_seconds": "timeoutSeconds",
    "max_tokens": "maxTokens",
}


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("must be an integer")
    return value


def _strict_number(value: Any, _: type) -> float:
    # An int stays an int, so a stored 120 is shown as 120, as it was given.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be a number")
    return value


def _make_stored_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_number)
    # Any: cattrs types **overrides as its keyword flags' type
    renames: dict[str, Any] = {attr: override(rename=key) for attr, key in JSON_NAMES.items()}
    converter.register_structure_hook(
        AiSettings,
        make_dict_structure_fn(
            AiSettings, converter, _cattrs_forbid_extra_keys=True, **renames
        ),
    )
    converter.register_unstructure_hook(
        AiSettings, make_dict_unstructure_fn(AiSettings, converter, **renames)
    )
    return converter


#: The one converter between :class:`AiSettings` and its stored form.
stored_converter = _make_stored_converter()
