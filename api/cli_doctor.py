"""``wasup doctor``: is this machine ready for a first pairing? Each check says what to fix.

Usage::

    wasup doctor [--data-dir DIR] [--host web.whatsapp.com] [--port 443] [--timeout 5]

Checks, in order: neonize loads (its Go library and libmagic with it), libmagic identifies a
file, the WhatsApp web version compiled into neonize and how old the whatsmeow it came with is,
the data directory can be created and written and is private, the open-files limit, then the
way to WhatsApp: a DNS lookup and a TCP connect to ``web.whatsapp.com:443``, or, when a proxy
is set in the environment (``HTTPS_PROXY``, ``ALL_PROXY``), a connect through that proxy.

:func:`diagnose` returns the checks as :class:`Finding` records (``--host``/``--port`` point the
network checks elsewhere: the tests use a loopback listener); :func:`report` prints them. The
exit status is 1 when a check failed, else 0 (warnings do not fail).

Error handling: nothing raises; every failure is a finding with its fix.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import os
import re
import resource
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import attrs

from supervisor.engines.neonize_info import engine_info, library_path
from supervisor.proxy import env_proxy, mask, preflight_through

WHATSAPP_HOST = "web.whatsapp.com"
WHATSAPP_PORT = 443
#: Days after which the whatsmeow compiled into neonize is worth upgrading.
WHATSMEOW_AGE_WARN_DAYS = 90
#: Open files below which wasup may run out with many devices (each holds a few).
FD_WARN = 4096
LIBMAGIC_FIX = ("install libmagic: apt-get install libmagic1 (Debian/Ubuntu), "
                "dnf install file-libs (Fedora), brew install libmagic (macOS)")
#: whatsmeow's module version in Go's build information: a pseudo-version with its commit time.
_WHATSMEOW_BUILD = re.compile(rb"go\.mau\.fi/whatsmeow\tv[0-9.]+-(\d{14})-[0-9a-f]{12}")


class Level(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@attrs.frozen
class Finding:
    """One check: its name, level, what was found and (unless ok) what to do."""

    name: str
    level: Level
    message: str
    fix: str = ""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Mapping[str, str]) -> None:
    """Add ``doctor`` to the ``wasup`` parser's subcommands."""
    doctor = sub.add_parser("doctor", help="check this machine before a first pairing")
    doctor.add_argument("--data-dir", type=Path,
                        default=Path(env.get("WASUP_DATA_DIR") or "./data"),
                        help="the data directory wasup serve will use (default: WASUP_DATA_DIR, "
                        "else ./data)")
    doctor.add_argument("--host", default=WHATSAPP_HOST,
                        help=f"the host the network checks reach (default {WHATSAPP_HOST})")
    doctor.add_argument("--port", type=int, default=WHATSAPP_PORT,
                        help=f"the port the network checks reach (default {WHATSAPP_PORT})")
    doctor.add_argument("--timeout", type=float, default=5.0,
                        help="seconds each network check may take (default 5)")


def check_neonize() -> Finding:
    try:
        importlib.import_module("supervisor.engines.neonize_go")
        importlib.import_module("neonize.client")
    except ImportError as exc:
        if "magic" in str(exc):
            return Finding("neonize", Level.FAIL, f"neonize does not load: {exc}", LIBMAGIC_FIX)
        return Finding("neonize", Level.FAIL, f"neonize does not load: {exc}",
                       'pip install "neonize>=0.5.2,<0.6" in wasup\'s environment')
    except OSError as exc:
        return Finding("neonize", Level.FAIL, f"neonize's Go library does not load: {exc}",
                       "reinstall neonize for this platform (pip install --force-reinstall neonize)")
    info = engine_info()
    return Finding("neonize", Level.OK, f"neonize {info.neonize_version} loads its Go library")


def check_libmagic() -> Finding:
    try:
        import magic

        kind = magic.from_buffer(b"%PDF-1.4\n", mime=True)
    except (ImportError, OSError) as exc:
        return Finding("libmagic", Level.FAIL, f"libmagic is missing: {exc}", LIBMAGIC_FIX)
    return Finding("libmagic", Level.OK, f"libmagic identifies files (a PDF header: {kind})")


def whatsmeow_date(data: bytes) -> datetime | None:
    """When the whatsmeow compiled into a Go library was committed (its pseudo-version)."""
    m = _WHATSMEOW_BUILD.search(data)
    if m is None:
        return None
    return datetime.strptime(m.group(1).decode(), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def check_wa_version(now: datetime | None = None) -> Finding:
    info = engine_info()
    if info.wa_version is None:
        return Finding("whatsapp-version", Level.WARN,
                       "the WhatsApp web version was not found in neonize's library",
                       "upgrade neonize if devices go disconnected with client_outdated")
    path = library_path()
    built = None
    if path is not None:
        try:
            built = whatsmeow_date(path.read_bytes())
        except OSError:
            built = None
    if built is None:
        return Finding("whatsapp-version", Level.OK, f"WhatsApp web {info.wa_version}")
    days = ((now or datetime.now(UTC)) - built).days
    message = (f"WhatsApp web {info.wa_version}, from whatsmeow of {built:%Y-%m-%d} "
               f"({days} days old)")
    if days > WHATSMEOW_AGE_WARN_DAYS:
        return Finding("whatsapp-version", Level.WARN, message,
                       "WhatsApp refuses old versions in time (client_outdated): upgrade "
                       'neonize when a newer release exists (pip install -U "neonize>=0.5.2,<0.6")')
    return Finding("whatsapp-version", Level.OK, message)


def check_data_dir(path: Path) -> Finding:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Finding("data-dir", Level.FAIL, f"{path} is not writable: {exc}",
                       f"create {path} writable by this user, or pass --data-dir")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return Finding("data-dir", Level.WARN, f"{path} is writable but mode {mode:o}",
                       f"chmod 700 {path}: it holds the credentials of every device")
    return Finding("data-dir", Level.OK, f"{path} is writable and private ({mode:o})")


def check_open_files() -> Finding:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    text = f"open files: soft limit {soft}, hard limit {'unlimited' if hard == resource.RLIM_INFINITY else hard}"
    if usable < FD_WARN:
        return Finding("open-files", Level.WARN, text,
                       f"raise the hard limit to at least {FD_WARN} (ulimit -Hn, LimitNOFILE= in "
                       "a systemd unit); wasup serve raises the soft limit to the hard one")
    return Finding("open-files", Level.OK, text + " (wasup serve raises the soft one)")


def check_dns(host: str) -> Finding:
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError as exc:
        return Finding("dns", Level.FAIL, f"{host} does not resolve: {exc}",
                       "check the DNS resolver (/etc/resolv.conf) or set a proxy (HTTPS_PROXY)")
    return Finding("dns", Level.OK, f"{host} resolves to {', '.join(sorted(addresses)[:3])}")


def check_tcp(host: str, port: int, timeout: float) -> Finding:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return Finding("tcp", Level.FAIL, f"no TCP connection to {host}:{port}: {exc}",
                       f"allow outgoing TCP to {host}:{port} in the firewall, or set a proxy "
                       "(HTTPS_PROXY)")
    return Finding("tcp", Level.OK, f"TCP connection to {host}:{port} opens")


def check_proxy(url: str, source: str, host: str, port: int, timeout: float) -> Finding:
    problem = preflight_through(url, host, port, timeout)
    shown = mask(url)
    if problem is not None:
        return Finding("proxy", Level.FAIL, f"through {shown} (from {source}): {problem}",
                       f"check that the proxy in {source} runs and allows {host}:{port}")
    return Finding("proxy", Level.OK, f"{host}:{port} is reachable through {shown} (from {source})")


def diagnose(
    data_dir: Path, *, host: str = WHATSAPP_HOST, port: int = WHATSAPP_PORT,
    timeout: float = 5.0, environ: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every check's finding, in order (see the module docstring)."""
    environ = os.environ if environ is None else environ
    checks: list[Callable[[], Finding]] = [
        check_neonize, check_libmagic, check_wa_version, lambda: check_data_dir(data_dir),
        check_open_files,
    ]
    proxy = env_proxy(environ)
    if proxy is None:
        checks += [lambda: check_dns(host), lambda: check_tcp(host, port, timeout)]
    else:
        source, url = proxy
        checks.append(lambda: check_proxy(url, source, host, port, timeout))
    return [check() for check in checks]


def report(findings: list[Finding], out: TextIO) -> int:
    """Print the findings, one line each with its fix below; 1 if one failed, else 0."""
    for finding in findings:
        print(f"[{finding.level.value:>4}] {finding.name}: {finding.message}", file=out)
        if finding.fix:
            print(f"       fix: {finding.fix}", file=out)
    failed = [f.name for f in findings if f.level is Level.FAIL]
    if failed:
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}", file=out)
        return 1
    print("\nready for a first pairing: wasup serve, then create a device and run wasup qr",
          file=out)
    return 0


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``wasup doctor``'s exit status."""
    out = sys.stdout if out is None else out
    findings = diagnose(args.data_dir, host=args.host, port=args.port, timeout=args.timeout)
    return report(findings, out)
