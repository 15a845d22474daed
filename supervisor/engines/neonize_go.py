"""Depends on the private ``neonize._binder`` module and ``NewClient._stop_finalizer`` of
neonize 0.5.2: the one place wasup reaches below neonize's public API.

wasup drives whatsmeow's Go ``Neonize()`` entry point itself (see
:mod:`supervisor.engines.whatsmeow_client` for why), so it needs what neonize keeps private:

* the loaded Go library (``_binder.gocode``) and its ctypes callback types
  (``func_string``, ``func_callback_bytes``, ``func_callback_bytes2``);
* the 17 positional arguments of ``gocode.Neonize`` (the order ``NewClient.connect`` uses,
  ``neonize/client.py``), wrapped here as :func:`run_client` with named parameters;
* ``NewClient._stop_finalizer``, a ``weakref.finalize`` that calls Go's ``Stop`` from whichever
  thread collects the client: :func:`api_client` detaches it, because wasup stops its clients
  itself, inside its gate.

Upgrading neonize: re-verify ``gocode.Neonize.argtypes`` in ``neonize/_binder.py`` against
:func:`run_client`, the three callback signatures, and that ``NewClient.__init__`` still sets
``_stop_finalizer``; then change :data:`NEONIZE_VERSION`. ``tests/test_neonize_go.py`` checks the
contract against the installed library.

Error handling: importing this module raises ``ImportError`` when the installed neonize is not
:data:`NEONIZE_VERSION`. The functions block and run in worker threads, never on Trio's.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from importlib.metadata import version

#: The neonize release whose internals this module was checked against.
NEONIZE_VERSION = "0.5.2"



def check_version(installed: str) -> None:
    """Raise ``ImportError`` saying what to re-verify unless ``installed`` is the checked one."""
    if installed != NEONIZE_VERSION:
        raise ImportError(
            f"wasup's whatsmeow engine was checked against neonize {NEONIZE_VERSION}, found "
            f"{installed}: re-verify the private parts listed in "
            "supervisor/engines/neonize_go.py (Neonize() arguments, callback types, "
            "NewClient._stop_finalizer), then update NEONIZE_VERSION"
        )


check_version(version("neonize"))

from neonize._binder import (  # noqa: E402 -- only after the version check
    ProxySettings,
    func_callback_bytes,
    func_callback_bytes2,
    func_string,
    gocode,
)
from neonize.client import NewClient  # noqa: E402

__all__ = [
    "NEONIZE_VERSION",
    "CallbackRef",
    "api_client",
    "check_version",
    "event_callback",
    "log_callback",
    "run_client",
    "stop_client",
    "string_callback",
]

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
