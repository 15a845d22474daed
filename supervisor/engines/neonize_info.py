"""Which neonize is installed, and which WhatsApp web version its Go library presents.

WhatsApp refuses clients whose web version has grown too old (``ClientOutdated``, 405): the
version is compiled into neonize's Go library, so the only remedy is a newer neonize. wasup
logs both versions at start (:mod:`api.startup`) and exports them as
``wasup_engine_info{neonize_version,wa_version}`` (:mod:`api.metrics`), so an operator sees
what a ``client_outdated`` device is running.

Nothing here imports neonize (importing it loads its Go library and libmagic): the release
comes from the package metadata, the WA version from a scan of the library file for whatsmeow's
``waVersion`` variable, a little-endian ``[3]uint32{2, 3000, build}``.

Usage::

    info = engine_info()            # cached: the library is read once per process
    info.neonize_version            # "0.5.2"
    info.wa_version                 # "2.3000.1047769893", or None if the scan found none

Error handling: never raises. A missing neonize gives ``neonize_version`` None; a library that
cannot be read, or holds no recognisable version, gives ``wa_version`` None.
"""

from __future__ import annotations

import functools
import importlib.util
import struct
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import attrs

#: The first two parts of every WhatsApp web version whatsmeow has presented (2.3000.x).
WA_MAJOR, WA_MINOR = 2, 3000
#: The build numbers a real ``waVersion`` has had (about 1.0e9 in 2025, growing ~80k a day):
#: a triple outside this range is some other data that happens to start with 2, 3000.
WA_BUILD_RANGE = range(1_000_000_000, 2_000_000_000)
#: File name suffixes of neonize's Go library (per platform).
LIBRARY_SUFFIXES = (".so", ".dylib", ".dll")


@attrs.frozen
class EngineInfo:
    """The installed neonize release and the WhatsApp web version it presents."""

    neonize_version: str | None
    wa_version: str | None


def neonize_version() -> str | None:
    """The installed neonize release (package metadata), or None when it is not installed."""
    try:
        return version("neonize")
    except PackageNotFoundError:
        return None


def library_path() -> Path | None:
    """neonize's Go library file (``neonize-<os>-<arch>.<ext>`` beside its package), if any."""
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(
        p for p in folder.glob("neonize-*") if p.suffix in LIBRARY_SUFFIXES and p.is_file()
    )
    return found[0] if found else None


def scan_wa_version(data: bytes) -> str | None:
    """The WhatsApp web version in a Go library's bytes: the first ``[3]uint32{2, 3000, b}``
    (little-endian) whose build ``b`` is in :data:`WA_BUILD_RANGE`, as ``"2.3000.b"``."""
    needle = struct.pack("<II", WA_MAJOR, WA_MINOR)
    at = data.find(needle)
    while at != -1:
        if at % 4 == 0 and at + 12 <= len(data):
            (build,) = struct.unpack_from("<I", data, at + 8)
            if build in WA_BUILD_RANGE:
                return f"{WA_MAJOR}.{WA_MINOR}.{build}"
        at = data.find(needle, at + 1)
    return None


def wa_version(path: Path | None = None) -> str | None:
    """The WhatsApp web version compiled into neonize's library (``path``: that file, found
    with :func:`library_path` when None). Resource handling: reads the whole file (~19 MB)."""
    path = library_path() if path is None else path
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return scan_wa_version(data)


@functools.cache
def engine_info() -> EngineInfo:
    """Both versions, computed once per process."""
    return EngineInfo(neonize_version=neonize_version(), wa_version=wa_version())
