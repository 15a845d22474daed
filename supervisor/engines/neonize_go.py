"""Depends on the private ``neonize._binder`` module and ``NewClient._stop_finalizer`` of
neonize (checked against 0.5.2): the one place wasup reaches below neonize's public API.

wasup drives whatsmeow's Go ``Neonize()`` entry point itself (see
:mod:`supervisor.engines.whatsmeow_client` for why), so it needs what neonize keeps private:

* the loaded Go library (``_binder.gocode``) and its ctypes callback types
  (``func_string``, ``func_callback_bytes``, ``func_callback_bytes2``);
* the 17 positional arguments of ``gocode.Neonize`` (the order ``NewClient.connect`` uses,
  ``neonize/client.py``), wrapped here as :func:`run_client` with named parameters;
* ``NewClient._stop_finalizer``, a ``weakref.finalize`` that calls Go's ``Stop`` from whichever
  thread collects the client: :func:`api_client` detaches it, because wasup stops its clients
  itself, inside its gate.
* ``_binder.consume_bytes_struct``, the errcheck that copies a Go-allocated ``Bytes`` result
  into ``bytes`` and frees it: neonize 0.5.2 declares Go's ``DecryptPollVote`` to return such a
  struct pointer but leaves that errcheck off it (it has it on every other such function), so
  ``NewClient.decrypt_poll_vote`` fails on every call (``TypeError: expected bytes, LP_Bytes
  found``). Importing this module puts it on (:func:`mend_decrypt_poll_vote`; a release that
  has it already is left alone).

Upgrading neonize: within the compatible range (:data:`NEONIZE_RANGE`, the same as
pyproject.toml's pin) a new release installs as it is; ``tests/test_neonize_contract.py`` and
``tests/test_neonize_go.py`` check every part of neonize wasup relies on against the installed
library, so run them first. For a release outside the range, re-verify
``gocode.Neonize.argtypes`` in ``neonize/_binder.py`` against :func:`run_client`, the three
callback signatures, and that ``NewClient.__init__`` still sets ``_stop_finalizer``; then
widen :data:`NEONIZE_RANGE` and the pin.

Error handling: importing this module raises ``ImportError`` when the installed neonize is
outside :data:`NEONIZE_RANGE`. The functions block and run in worker threads, never on Trio's.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from importlib.metadata import version

#: The oldest neonize release whose internals this module was checked against.
NEONIZE_VERSION = "0.5.2"
#: The compatible releases: from :data:`NEONIZE_VERSION` up to, not including, 0.6.
NEONIZE_RANGE = ">=0.5.2,<0.6"
_LOWEST = (0, 5, 2)
_BELOW = (0, 6, 0)


def release(text: str) -> tuple[int, int, int] | None:
    """The numeric release of a version string (``"0.5.3.post1"`` -> ``(0, 5, 3)``), or None
    when it does not start with one. A pre-release (``0.6.0rc1``) counts as its release."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def check_version(installed: str) -> None:
    """Raise ``ImportError`` saying what to re-verify unless ``installed`` is in
    :data:`NEONIZE_RANGE`."""
    found = release(installed)
    if found is None or not _LOWEST <= found < _BELOW:
        raise ImportError(
            f"wasup's whatsmeow engine works with neonize {NEONIZE_RANGE}, found "
            f"{installed}: install a release in that range, or re-verify the private parts "
            "listed in supervisor/engines/neonize_go.py (Neonize() arguments, callback types, "
            "NewClient._stop_finalizer) and widen NEONIZE_RANGE"
        )


check_version(version("neonize"))

from neonize._binder import (  # noqa: E402 -- only after the version check
    ProxySettings,
    consume_bytes_struct,
    func_callback_bytes,
    func_callback_bytes2,
    func_string,
    gocode,
)
from neonize.client import NewClient  # noqa: E402

__all__ = [
    "NEONIZE_RANGE",
    "NEONIZE_VERSION",
    "CallbackRef",
    "api_client",
    "check_version",
    "event_callback",
    "log_callback",
    "mend_decrypt_poll_vote",
    "release",
    "run_client",
    "stop_client",
    "string_callback",
]

def mend_decrypt_poll_vote() -> None:
    """Give Go's ``DecryptPollVote`` the errcheck neonize 0.5.2 forgot (module docstring), so
    ``NewClient.decrypt_poll_vote`` gets ``bytes`` and Go's buffer is freed; idempotent."""
    if getattr(gocode.DecryptPollVote, "errcheck", None) is None:
        gocode.DecryptPollVote.errcheck = consume_bytes_struct


mend_decrypt_poll_vote()

#: A ctypes callback object; it must stay referenced for as long as Go may call it.
CallbackRef = object


def string_callback(fn: Callable[[int, int], None]) -> CallbackRef:
    """Go's QR and login-status callback: ``fn(uuid_ptr, c_string_ptr)``."""
    return func_string(fn)


def event_callback(fn: Callable[[bytes, int, int, int], None]) -> CallbackRef:
    """Go's event callback: ``fn(uuid, data_ptr, size, event_code)``."""
    return func_callback_bytes(fn)


def log_callback(fn: Callable[[int, int], None]) -> CallbackRef:
    """Go's log callback: ``fn(data_ptr, size)``."""
    return func_callback_bytes2(fn)


def run_client(
    *,
    db: bytes,
    uuid: bytes,
    pairing: bool,
    log_level: bytes,
    on_qr: CallbackRef,
    on_status: CallbackRef,
    on_event: CallbackRef,
    on_log: CallbackRef,
    subscribed: bytearray,
    device_props: bytes,
    proxy: str | None = None,
) -> str:
    """Run one whatsmeow client: blocks until Go's ``Neonize()`` returns (after
    :func:`stop_client`, or at once when the connection fails).

    ``subscribed`` lists neonize's event codes, one byte each. Returns Go's error text, ``""``
    when it returned cleanly. Resource handling: the callbacks, ``subscribed`` and
    ``device_props`` must stay referenced until this returns. ``proxy`` (a URL) is the last
    argument, neonize's ``ProxySettings`` struct (whatsmeow's ``SetProxyAddress``).
    """
    buffer = (ctypes.c_char * len(subscribed)).from_buffer(subscribed)
    settings = None if proxy is None else ProxySettings(proxy_address=proxy)._to_c_struct()
    raw = gocode.Neonize(
        db, uuid, b"", 0, int(pairing), log_level,
        on_qr, on_status, on_event, on_log, buffer, len(subscribed),
        device_props, len(device_props), b"", 0,
        None if settings is None else ctypes.byref(settings),
    )
    if not raw:
        return ""
    if isinstance(raw, int):  # restype c_void_p: a C string
        raw = ctypes.string_at(raw)
    return bytes(raw).decode(errors="replace")


def stop_client(uuid: bytes) -> None:
    """Cancel the client's Go context (disconnect; ``Neonize()`` then returns)."""
    gocode.Stop(uuid)


def api_client(db_path: str, uuid: str) -> NewClient:
    """neonize's ``NewClient`` for the API calls (send, pair phone, logout) of the client
    ``uuid``, without the finalizer that would ``Stop`` it from a garbage-collecting thread."""
    client = NewClient(db_path, uuid=uuid)
    client._stop_finalizer.detach()
    return client
