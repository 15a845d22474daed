"""Process start-up of ``wasup serve``: what the process must hold before the server runs.

Three things are settled here, by :func:`api.cli.main`, in this order:

1. **No bot label.** neonize 0.5.2 adds ``<bot biz_bot="1"/>`` to every one-to-one message (the
   recipient sees an AI/bot label) unless ``NEONIZE_BOT_TAG`` is ``off`` (or ``none``,
   ``false``, ``0``). Its Go runtime reads the variable from the environment block the process
   was *started* with, when the library loads; changing ``os.environ`` afterwards does nothing.
   So with the whatsmeow engine, :func:`ensure_bot_tag` re-executes the process with
   ``NEONIZE_BOT_TAG=off`` added when the variable is missing from its start environment. A
   value the operator set is kept (and :func:`log_bot_tag` warns when it turns the label on).
2. **The engine library loads.** ``import neonize`` needs the system libmagic (through
   python-magic). :func:`check_whatsmeow_importable` turns that failure into one line naming
   the package to install, and once it loads logs the neonize release and the WhatsApp web
   version compiled into it (WhatsApp refuses clients that have grown too old:
   ``client_outdated``, fixed by upgrading neonize).
3. **File descriptors.** :func:`raise_open_files_limit` raises the soft ``RLIMIT_NOFILE`` to
   the hard limit: every device holds sockets and a database file, and the usual soft default
   (1024) runs out long before the hard one.
"""

from __future__ import annotations

import importlib
import logging
import os
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

from supervisor.engines.neonize_info import engine_info

log = logging.getLogger("wasup.startup")

#: The variable neonize's Go code reads before adding the bot node to a one-to-one message.
BOT_TAG = "NEONIZE_BOT_TAG"
#: The values that turn the bot node off (neonize's ``shouldAddBotNode``: trimmed, any case).
BOT_TAG_OFF_VALUES = frozenset({"off", "none", "false", "0"})
#: The module whose import loads neonize (and, through python-magic, libmagic).
WHATSMEOW_MODULE = "supervisor.engines.whatsmeow"

LIBMAGIC_HINT = (
    "the whatsmeow engine needs the libmagic system library, which was not found: install it "
    "(Debian/Ubuntu: apt install libmagic1; macOS: brew install libmagic), "
    "or run with --engine simulator"
)

#: Where Linux exposes the environment block the process was started with.
_START_ENVIRON = Path("/proc/self/environ")


class EngineUnavailable(Exception):
    """The whatsmeow engine cannot be loaded; the message is one line for the operator."""


def start_environment() -> dict[str, str]:
    """The environment this process was started with: what a Go runtime loaded into it reads.

    On Linux that is ``/proc/self/environ`` (the block ``execve`` received, untouched by later
    ``os.environ`` changes); elsewhere ``os.environ``, which is that block unless Python code
    changed it.
    """
    try:
        raw = _START_ENVIRON.read_bytes()
    except OSError:
        return dict(os.environ)
    found: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            found[os.fsdecode(name)] = os.fsdecode(value)
    return found


def bot_tag_is_off(value: str) -> bool:
    """Whether neonize reads ``value`` of ``NEONIZE_BOT_TAG`` as "no bot node"."""
    return value.strip().lower() in BOT_TAG_OFF_VALUES


def reexec_command(argv: Sequence[str] | None) -> list[str]:
    """The command that runs this ``wasup`` again: the same interpreter, flags and arguments.

    ``argv`` is what :func:`api.cli.main` was given (None: the process's own command line).
    The interpreter is named by ``sys.executable`` (absolute), so a virtual environment stays
    the one in use whatever ``argv[0]`` said.
    """
    if argv is None:
        return [sys.executable, *sys.orig_argv[1:]]
    return [sys.executable, "-m", "api.cli", *argv]


def ensure_bot_tag(argv: Sequence[str] | None) -> str:
    """The value of ``NEONIZE_BOT_TAG`` the engine will read; re-executes the process to set it.

    When the variable is missing from the start environment, the process is replaced
    (``os.execve``, same process id) by the same command with ``NEONIZE_BOT_TAG=off`` added to
    ``os.environ``; the new process then finds it and returns here. Call it before anything
    imports neonize and before anything is printed or opened that should happen once.

    Error handling: ``OSError`` from ``os.execve`` (the interpreter cannot be executed)
    propagates; this process is then unchanged.
    """
    value = start_environment().get(BOT_TAG)
    if value is not None:
        return value
    env = dict(os.environ)
    env.setdefault(BOT_TAG, "off")
    command = reexec_command(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
    raise AssertionError("os.execve returned")  # pragma: no cover -- it never does


def log_bot_tag(value: str) -> None:
    """Say at start whether outgoing one-to-one messages carry WhatsApp's bot label."""
    if bot_tag_is_off(value):
        log.info("%s=%s: messages are sent without the bot label", BOT_TAG, value)
    else:
        log.warning(
            "%s=%s was set explicitly: WhatsApp shows every one-to-one message as sent by a "
            "bot (unset it, or set it to off, to send without the label)",
            BOT_TAG,
            value,
        )


def check_whatsmeow_importable() -> None:
    """Load the whatsmeow engine's modules (and with them neonize and its Go library).

    The import is deferred to here, not done by ``api.cli``'s imports, because it must follow
    :func:`ensure_bot_tag` and must not stop the simulator engine from starting.

    Once loaded, logs one line with the neonize release and the WhatsApp web version its Go
    library presents (:func:`supervisor.engines.neonize_info.engine_info`).

    Error handling: raises :class:`EngineUnavailable` with one line for the operator when
    libmagic is missing (the hint names the package to install) or the engine fails to import
    or load its library for another reason.
    """
    try:
        importlib.import_module(WHATSMEOW_MODULE)
    except ImportError as exc:
        if "libmagic" in str(exc):
            raise EngineUnavailable(LIBMAGIC_HINT) from exc
        raise EngineUnavailable(f"the whatsmeow engine cannot be loaded: {exc}") from exc
    except OSError as exc:  # ctypes could not load neonize's own Go library
        raise EngineUnavailable(f"the whatsmeow engine cannot load its library: {exc}") from exc
    info = engine_info()
    log.info(
        "whatsmeow engine: neonize %s, WhatsApp web %s",
        info.neonize_version,
        info.wa_version or "unknown (not found in neonize's library)",
    )


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit before and after.

    An unlimited hard limit is not a valid soft one for open files on Linux or macOS, so then
    the first of a few usual ceilings that the system accepts is taken.

    Error handling: when no higher value is accepted the limit stays as it was, with a warning;
    nothing raises.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.info("open files: soft limit %s, already the hard limit", _limit(soft))
        return soft, soft
    if hard == resource.RLIM_INFINITY:
        targets = [1_048_576, 65_536, 10_240]  # Linux's default fs.nr_open; macOS's OPEN_MAX
    else:
        targets = [hard]
    higher = [target for target in targets if target > soft]
    for target in higher:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.info("open files: soft limit raised from %d to %d (hard limit %s)",
                 soft, target, _limit(hard))
        return soft, target
    if higher:
        log.warning("open files: the soft limit stays %d (hard limit %s): raising it failed",
                    soft, _limit(hard))
    else:
        log.info("open files: soft limit %d (hard limit %s)", soft, _limit(hard))
    return soft, soft


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)

