"""Requests to WhatsApp through a connected whatsmeow session (groups, contacts): the one way
they reach neonize's client, and the JIDs they pass and get back.

:func:`call` runs ``fn(neonize's client)`` on one of the session's worker threads, sharing the
Go gate as a send does (:mod:`supervisor.engines.whatsmeow_client`), so requests run beside
each other and beside the session's sends; a stop waits for one in flight.

Error handling: :func:`call` raises EngineError ``not_connected`` (recoverable) when the
session is not connected, or when the connection went down while the request ran; wasup's own
errors raised inside ``fn`` pass unchanged; any other failure is answered with
``failed(exc)`` (the domain's translation of whatsmeow's error text).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from neonize.client import NewClient
from neonize.proto import Neonize_pb2 as nz

from supervisor.errors import EngineError, WasupError
from supervisor.jid import InvalidJid, Jid

from . import whatsmeow_client as wc
from .whatsmeow_link import Link, LinkState
from .whatsmeow_messages import jid_string
from .whatsmeow_translate import short_error

T = TypeVar("T")


class RequestSession(Protocol):
    """What requests use of the :class:`~supervisor.engines.whatsmeow.WhatsmeowSession`: its
    connected link, and its worker threads."""

    def _connected_link(self) -> Link: ...

    async def _thread(self, fn: Callable[[], T], *, abandon: bool = False) -> T: ...


async def call(session: RequestSession, fn: Callable[[NewClient], T],
               failed: Callable[[Exception], Exception]) -> T:
    """``fn(neonize's client)`` on a worker thread under the shared gate (see the module
    docstring)."""
    link = session._connected_link()
    try:
        return await session._thread(lambda: link.client.call(fn), abandon=True)
    except WasupError:
        raise
    except Exception as exc:
        if not link.live or link.state is not LinkState.CONNECTED:
            raise EngineError("not_connected", message=short_error(exc)) from exc
        raise failed(exc) from exc


def neonize_arg(jid: str) -> nz.JID:
    """A phone number or JID (checked by the caller) as neonize's; EngineError
    ``invalid_recipient`` (final) should it be neither."""
    try:
        return wc.neonize_jid(Jid.parse(jid))
    except InvalidJid:
        raise EngineError("invalid_recipient", recoverable=False,
                          message=f"not a phone number or jid: {jid!r}") from None


def canonical(jid: nz.JID) -> str | None:
    """wasup's spelling of a neonize JID; None for an empty one."""
    text = jid_string(jid)
    if not text:
        return None
    try:
        return Jid.parse(text).canonical
    except InvalidJid:
        return text
