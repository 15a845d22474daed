"""Incoming calls: a device's ``calls`` settings and the automatic rejection they ask for.

``PUT .../settings/calls`` stores ``{"autoReject": true, "message": "Please write instead"}``
(the settings kind :data:`SETTINGS_KIND`). When a call comes in (a
:class:`~supervisor.payloads.CallReceived` notice) and the device's settings say
``autoReject``, :func:`screen` (called by the device's actor before it publishes the event):

- starts the rejection as a task in the operations nursery, so the actor goes on at once (a
  failed rejection is logged: the call then rings out on the phone);
- sends ``message``, when there is one, to the caller through the device's outbound queue, as
  any send (stored, paced, tracked with ``message_sent`` / ``message_status`` events, origin
  ``autoreply``);
- marks the event ``rejected: true``.

Error handling: :func:`screen` raises only what the outbound queue's storage raises
(:class:`storage.StorageUnavailable`); a send the queue refuses (full, the device not taking
sends) is logged and the call is still rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from storage.models import DeviceRow

from . import commands as cmd
from . import engine as eng
from . import message_content as mc
from . import state as sm
from .context import ActorContext
from .errors import WasupError
from .outbound import Outbound
from .outgoing import Outgoing
from .payloads import CallReceived, Payload

log = logging.getLogger("wasup.calls")

#: The settings kind of a device's call handling (``PUT .../settings/calls``).
SETTINGS_KIND = "calls"
#: The longest reply message (shared with the route's validation and docs/openapi.yaml).
MESSAGE_MAX = 1000


@attrs.frozen
class CallSettings:
    """What a device does with incoming calls: reject them at once (``auto_reject``) and
    answer the caller with ``message`` (None: no answer)."""

    auto_reject: bool = False
    message: str | None = None

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> CallSettings:
        doc = stored or {}
        message = doc.get("message")
        return cls(auto_reject=doc.get("autoReject") is True,
                   message=message if isinstance(message, str) and message else None)

    def to_json(self) -> dict[str, Any]:
        return {"autoReject": self.auto_reject, "message": self.message}


class CallHost(Protocol):
    """What :func:`screen` needs of a device actor."""

    ctx: ActorContext
    row: DeviceRow
    state: sm.DeviceState
    session: eng.EngineSession
    outbound: Outbound


async def screen(host: CallHost, payload: Payload) -> Payload:
    """``payload`` as the device publishes it: an incoming call the device's settings reject
    is rejected (see the module docstring) and marked ``rejected``; anything else unchanged."""
    if not isinstance(payload, CallReceived) or payload.rejected:
        return payload
    device = host.row.id
    settings = CallSettings.of(await host.ctx.db.run(lambda r: r.settings.get(device, SETTINGS_KIND)))
    if not settings.auto_reject:
        return payload
    host.ctx.ops_nursery.start_soon(_reject, host.session, payload, host.row.session_id)
    if settings.message is not None:
        send = cmd.Send(payload.sender, Outgoing(mc.Text(settings.message)), origin="autoreply")
        try:
            await host.outbound.accept(send, host.state)
        except WasupError as exc:
            log.warning("device %s: the reply to a rejected call was not sent: %s",
                        host.row.session_id, exc)
    return attrs.evolve(payload, rejected=True)


async def _reject(session: eng.EngineSession, call: CallReceived, session_id: str) -> None:
    try:
        await session.account.reject_call(call.call_id, call.sender)
    except Exception as exc:
        log.warning("device %s: call %s from %s not rejected: %s", session_id, call.call_id,
                    call.sender, exc)
    else:
        log.info("device %s: call %s from %s rejected", session_id, call.call_id, call.sender)
