"""The shared simulator's wire format: one typed codec for every call between a wasup node and
the simulated WhatsApp running as its own process (``wasup simulator serve``).

Both sides speak the same Python interfaces: a node calls :class:`~supervisor.engine.
EngineSession` methods (and those of its ``contacts``, ``groups`` and ``account``) and the
simulator controls (:class:`~supervisor.engines.simulator_controls.SimulatorControls`); the
simulated WhatsApp reports :data:`~supervisor.engine.EngineEvent` records. Their arguments and
results are attrs records, ``str``, ``bytes``, numbers and sequences of them, so one cattrs
converter carries them all as JSON: the tables below name the methods a call may name
(:data:`SESSION_METHODS`, :data:`CONTROL_METHODS`), each with its interface's type hints, and
:func:`encode_args` / :func:`decode_args` / :func:`encode_result` / :func:`decode_result` turn
a call into JSON and back. Records of a union (an event, a message's content, a notice's
payload) carry their class name under ``"_type"``; ``bytes`` travel as base64.

Errors cross the wire by name (:func:`encode_error`, :func:`decode_error`): the
:class:`~supervisor.errors.EngineError` family, :class:`SimulatedCrash` and the controls'
domain errors come out on the node as the same exception the in-process simulator raises.

Error handling: :func:`decode_args` raises :class:`WireError` for a method not in its table or
arguments that do not fit its signature; the service answers that as a refused request.
"""

from __future__ import annotations

import base64
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs

from supervisor import engine as eng
from supervisor.engine_account import AccountApi
from supervisor.engine_contacts import ContactsApi
from supervisor.engine_groups import GroupsApi
from supervisor.errors import (
    DeliveryFailed,
    DeviceConflict,
    DeviceNotFound,
    EngineError,
    InvalidRequest,
    NotFound,
    WasupError,
    WhatsAppForbidden,
    WhatsAppRefused,
)

from .simulator_controls import SimulatorControls
from .simulator_server import SimulatedCrash

#: The key under which a record of a union names its class.
TAG = "_type"
#: The largest message either side sends (a media file, base64).
MAX_MESSAGE = 128 * 1024 * 1024


class WireError(ValueError):
    """A message that is not a call of the tables, or arguments that do not fit."""


def _records_union(kind: Any) -> bool:
    """Whether ``kind`` is a union of attrs records (perhaps with None)."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    return union and len(args) > 1 and all(attrs.has(arg) for arg in args)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
    converter.register_structure_hook(bytes, lambda v, _: base64.b64decode(v, validate=True))
    converter.register_structure_hook(type(None), lambda v, _: None)  # a call returning None

    def unstructure(value: object) -> object:
        if value is None:
            return None
        return {TAG: type(value).__name__, **converter.unstructure(value, type(value))}

    def structure_factory(kind: Any) -> Callable[[object, Any], object]:
        by_name = {arg.__name__: arg for arg in typing.get_args(kind) if arg is not type(None)}

        def structure(value: object, _: object) -> object:
            if value is None and type(None) in typing.get_args(kind):
                return None
            if not isinstance(value, dict) or value.get(TAG) not in by_name:
                raise ValueError(f"not one of {sorted(by_name)}: {value!r}")
            fields = {k: v for k, v in value.items() if k != TAG}
            return converter.structure(fields, by_name[value[TAG]])

        return structure

    converter.register_unstructure_hook_func(_records_union, unstructure)
    converter.register_structure_hook_factory(_records_union, structure_factory)
    return converter


converter = _make_converter()


#: A method's parameters (name -> type, in order) and its return type.
Signature = tuple[dict[str, Any], Any]


def _signature(function: Callable[..., object], skip: int = 1) -> Signature:
    hints = typing.get_type_hints(function)
    names = list(inspect.signature(function).parameters)[skip:]
    return {name: hints[name] for name in names}, hints["return"]


def _methods(protocol: type, prefix: str, leave_out: frozenset[str] = frozenset()) -> dict[str, Signature]:
    table = {}
    for name, member in vars(protocol).items():
        if inspect.iscoroutinefunction(member) and not name.startswith("_") and name not in leave_out:
            table[prefix + name] = _signature(member)
    return table


#: Every session call a node makes over its connection, by wire name (``"send"``,
#: ``"groups.create"``...). ``stop`` and ``has_credentials`` stay on the node (the connection's
#: end, the device's own credentials); ``logout`` and ``delete`` go as device requests that
#: need no connection (:data:`DEVICE_METHODS`).
SESSION_METHODS: dict[str, Signature] = {
    **_methods(eng.EngineSession, "", frozenset({"stop", "has_credentials", "logout", "delete"})),
    **_methods(ContactsApi, "contacts."),
    **_methods(GroupsApi, "groups."),
    **_methods(AccountApi, "account."),
}

#: Session calls that need no live connection: the device leaving WhatsApp.
DEVICE_METHODS: dict[str, Signature] = {
    name: _signature(getattr(eng.EngineSession, name)) for name in ("logout", "delete")
}

#: The simulator controls (the phone and the server) by name; each takes the device first.
CONTROL_METHODS: dict[str, Signature] = _methods(SimulatorControls, "")


def encode_args(table: Mapping[str, Signature], method: str, args: Mapping[str, object]) -> dict[str, Any]:
    """``args`` of ``method`` as JSON, each by its parameter's type."""
    params, _ = table[method]
    return {name: converter.unstructure(args[name], params[name]) for name in params}


def named_args(table: Mapping[str, Signature], method: str, args: tuple[object, ...],
               kwargs: Mapping[str, object]) -> dict[str, object]:
    """A call's arguments (positional ``args`` and ``kwargs``) by parameter name."""
    return {**dict(zip(table[method][0], args, strict=False)), **kwargs}


def decode_args(table: Mapping[str, Signature], method: str, data: object) -> dict[str, Any]:
    """The arguments of a call to ``method`` from their JSON.

    Error handling: :class:`WireError` for an unknown method or arguments that do not fit.
    """
    if method not in table:
        raise WireError(f"unknown method: {method!r}")
    if not isinstance(data, dict):
        raise WireError("args: must be an object")
    params, _ = table[method]
    if set(data) != set(params):
        raise WireError(f"{method}: arguments must be {sorted(params)}")
    try:
        return {name: converter.structure(data[name], params[name]) for name in params}
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise WireError(f"{method}: {exc}") from None


def encode_result(table: Mapping[str, Signature], method: str, value: object) -> Any:
    return converter.unstructure(value, table[method][1])


def decode_result(table: Mapping[str, Signature], method: str, data: object) -> Any:
    return converter.structure(data, table[method][1])


def encode_event(event: eng.EngineEvent) -> Any:
    return converter.unstructure(event, eng.EngineEvent)


def decode_event(data: object) -> eng.EngineEvent:
    event: eng.EngineEvent = converter.structure(data, eng.EngineEvent)  # type: ignore[arg-type]
    return event


#: Errors that cross the wire, by name; each is rebuilt from its message and these attributes.
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (DeliveryFailed, EngineError, SimulatedCrash, DeviceNotFound, DeviceConflict,
                InvalidRequest, NotFound, WhatsAppForbidden, WhatsAppRefused)
}


def encode_error(exc: Exception) -> dict[str, Any] | None:
    """``exc`` as JSON when it is one of the errors that cross the wire, else None."""
    for name, cls in _ERRORS.items():
        if type(exc) is cls:
            return {"error": name, "message": str(exc), "reason": getattr(exc, "reason", None),
                    "recoverable": getattr(exc, "recoverable", None),
                    "field": getattr(exc, "field", None)}
    return None


def decode_error(data: Mapping[str, Any]) -> Exception:
    """The exception :func:`encode_error` wrote (an unknown one: a :class:`SimulatedCrash`)."""
    name, message = data.get("error"), str(data.get("message"))
    reason = str(data.get("reason"))
    if name == "DeliveryFailed":
        return DeliveryFailed(reason, message)
    if name == "EngineError":
        return EngineError(reason, bool(data.get("recoverable")), message)
    if name in ("WhatsAppForbidden", "WhatsAppRefused"):
        return _ERRORS[str(name)](reason, message)
    if name == "InvalidRequest":
        field = data.get("field")
        return InvalidRequest(message, None if field is None else str(field))
    if name == "DeviceNotFound":
        return DeviceNotFound(message.removeprefix("device ").removesuffix(" not found"))
    cls = _ERRORS.get(str(name))
    if cls is not None and issubclass(cls, WasupError | SimulatedCrash):
        return cls(message)
    return SimulatedCrash(f"the simulator failed: {message}")


__all__ = [
    "CONTROL_METHODS",
    "DEVICE_METHODS",
    "SESSION_METHODS",
    "WireError",
    "converter",
    "decode_args",
    "decode_error",
    "decode_event",
    "decode_result",
    "encode_args",
    "encode_error",
    "encode_event",
    "encode_result",
]
