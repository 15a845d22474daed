"""Asks: requests that go to WhatsApp through a connected device's session and answer their
caller with what WhatsApp said (contact checks, groups, presence, profile, calls).

Usage (from the devices facade)::

    groups = await devices.ask(ref, lambda s: s.groups.joined(), "joined groups")

The actor checks that the device is connected, then runs the request as a task in its
operations nursery (:func:`run`), so a slow answer from WhatsApp never holds up the device's
other commands and events. Requests may therefore run concurrently with each other and with the
actor's own engine calls; an engine's request methods must allow that (both engines' do).

Error handling, done here once for every request: a recoverable :class:`EngineError` (the
connection dropped meanwhile) answers :class:`DeviceConflict`; a final one answers
:class:`EngineRefused` with its reason; WhatsApp's refusals
(:class:`~supervisor.errors.WhatsAppRefused`, :class:`~supervisor.errors.WhatsAppForbidden`)
and wasup's own errors pass as they are. Anything else the engine raises is logged and
answered as ``EngineRefused("whatsapp_error")``: a request that failed is no reason to restart
the device.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from . import commands as cmd
from . import engine as eng
from .errors import DeviceConflict, EngineError, EngineRefused, WasupError

log = logging.getLogger("wasup.asks")

R = TypeVar("R")


async def run(session: eng.EngineSession, ask: cmd.Ask[R], reply: cmd.Reply[R]) -> None:
    """Run ``ask`` on ``session`` and answer ``reply``; never raises but ``trio.Cancelled``."""
    try:
        reply.set(await ask.op(session))
    except EngineError as exc:
        reply.fail(refusal(exc))
    except WasupError as exc:
        reply.fail(exc)
    except Exception as exc:
        log.exception("request %s failed", ask.what)
        reply.fail(EngineRefused("whatsapp_error", recoverable=False,
                                 message=f"{ask.what} failed: {type(exc).__name__}"))


def refusal(exc: EngineError) -> WasupError:
    """The error an :class:`EngineError` of a request is answered with."""
    if exc.recoverable:
        return DeviceConflict(f"device is not connected: {exc.reason}")
    return EngineRefused(exc.reason, exc.recoverable, str(exc))
