"""Presence, profile and calls through whatsmeow: the whatsmeow session's
:class:`~supervisor.engine_account.AccountApi` and the translation of whatsmeow's presence and
call events.

The requests go to neonize's client (``send_presence``, ``send_chat_presence``,
``subscribe_presence``, ``get_me``/``get_user_info``/``get_profile_picture``,
``set_profile_name``, ``set_status_message``, ``set_profile_photo``, ``reject_call``) through
:meth:`~supervisor.engines.whatsmeow_client.GoClient.call`, on a worker thread under the
engine's limiter, as the session's sends do.

Events (:func:`notices`): ``Presence`` -> ``presence`` ``available``, or ``unavailable`` with
``lastSeen`` when WhatsApp tells it; ``ChatPresence`` -> ``typing``, ``recording`` (composing
audio) or ``paused`` in its chat; ``CallOffer`` (a one-to-one call: video when the offer holds a
``video`` element) and ``CallOfferNotice`` (a group call: its ``media`` says audio or video) ->
``call_received``. A caller is named as WhatsApp addressed the call (``CallCreator``, which may
be a LID): whatsmeow's ``RejectCall`` needs exactly that JID.

Error handling: ``EngineError("not_connected")`` (recoverable) when the session is not
connected or the connection ended during the request; ``EngineError("<what>_failed: ...")``
(final) when WhatsApp refused or neonize failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

import attrs
from neonize.client import NewClient
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, Presence

from common.clock import iso
from supervisor.engine import EngineEvent, Notice
from supervisor.engine_account import ChatState, PresenceState, Profile
from supervisor.errors import EngineError
from supervisor.payloads import CallReceived, PresenceChanged

from .whatsmeow_link import Link
from .whatsmeow_messages import jid_string
from .whatsmeow_requests import call, neonize_arg
from .whatsmeow_translate import short_error

log = logging.getLogger("wasup.engine.whatsmeow")

T = TypeVar("T")

_CHAT_STATES: dict[ChatState, tuple[ChatPresence, ChatPresenceMedia]] = {
    "typing": (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
    "recording": (ChatPresence.CHAT_PRESENCE_COMPOSING,
                  ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO),
    "paused": (ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
}


class WhatsmeowSession(Protocol):
    """What the account uses of :class:`~supervisor.engines.whatsmeow.WhatsmeowSession`: its
    connected link and its worker threads, as its own calls use them."""

    def _connected_link(self) -> Link: ...

    async def _thread(self, fn: Callable[[], T], *, abandon: bool = False) -> T: ...


@attrs.define(eq=False)
class WhatsmeowAccount:
    """A whatsmeow session's :class:`~supervisor.engine_account.AccountApi`."""

    session: WhatsmeowSession

    async def set_presence(self, state: PresenceState) -> None:
        presence = Presence.AVAILABLE if state == "available" else Presence.UNAVAILABLE
        await self._call("presence", lambda api: api.send_presence(presence))

    async def set_chat_presence(self, chat: str, state: ChatState) -> None:
        jid = neonize_arg(chat)
        presence, media = _CHAT_STATES[state]
        await self._call("chat_presence", lambda api: api.send_chat_presence(jid, presence, media))

    async def subscribe_presence(self, contact: str) -> None:
        jid = neonize_arg(contact)
        await self._call("subscribe_presence", lambda api: api.subscribe_presence(jid))

    async def profile(self) -> Profile:
        return await self._call("profile", _profile)

    async def set_name(self, name: str) -> None:
        await self._call("set_name", lambda api: api.set_profile_name(name))

    async def set_about(self, about: str) -> None:
        await self._call("set_about", lambda api: api.set_status_message(about))

    async def set_picture(self, jpeg: bytes) -> str:
        return str(await self._call("set_picture", lambda api: api.set_profile_photo(jpeg)))

    async def reject_call(self, call_id: str, caller: str) -> None:
        jid = neonize_arg(caller)
        await self._call("reject_call", lambda api: api.reject_call(jid, call_id))

    async def _call(self, what: str, fn: Callable[[NewClient], T]) -> T:
        return await call(self.session, fn, lambda exc: EngineError(
            f"{what}_failed: {short_error(exc)}", recoverable=False))


def _profile(api: NewClient) -> Profile:
    """The account's profile (blocking: on a worker thread, under the gate)."""
    me = api.get_me()
    own = nz.JID(User=me.JID.User, Server=me.JID.Server)
    about = None
    for user in api.get_user_info(own):
        about = user.UserInfo.Status or None
    url = picture_id = None
    try:
        picture = api.get_profile_picture(own)
        url, picture_id = picture.URL or None, picture.ID or None
    except Exception as exc:  # whatsmeow answers an error when there is no picture
        log.debug("no profile picture: %s", short_error(exc))
    return Profile(jid=jid_string(own), name=me.PushName or None, about=about,
                   picture_url=url, picture_id=picture_id)


# -- events ------------------------------------------------------------------------------------


def notices(event: object) -> list[EngineEvent] | None:
    """The notices a presence or call event means; None for any other event."""
    match event:
        case nz.Presence():
            state = "unavailable" if event.Unavailable else "available"
            seen = iso(event.LastSeen) if event.Unavailable and event.LastSeen > 0 else None
            return [Notice(PresenceChanged(jid_string(event.From), state, last_seen=seen))]
        case nz.ChatPresence():
            source = event.MessageSource
            if event.State == nz.ChatPresence.PAUSED:
                chat_state = "paused"
            else:
                audio = event.Media == nz.ChatPresence.AUDIO
                chat_state = "recording" if audio else "typing"
            return [Notice(PresenceChanged(jid_string(source.Sender), chat_state,
                                           chat=jid_string(source.Chat)))]
        case nz.CallOffer():
            meta = event.basicCallMeta
            video = any(node.Tag == "video" for node in _offer_nodes(event.data))
            return [Notice(CallReceived(meta.callID, _caller(meta), video=video))]
        case nz.CallOfferNotice():
            meta = event.basicCallMeta
            return [Notice(CallReceived(meta.callID, _caller(meta), video=event.media == "video",
                                        is_group=event.type == "group"))]
    return None


def _caller(meta: nz.BasicCallMeta) -> str:
    creator = meta.callCreator if meta.callCreator.User else getattr(meta, "from")
    return jid_string(creator)


def _offer_nodes(data: nz.Node) -> list[nz.Node]:
    """The children of a call node's ``offer`` element (the node itself when it is one)."""
    if data.Tag == "offer":
        return list(data.Nodes)
    for child in data.Nodes:
        if child.Tag == "offer":
            return list(child.Nodes)
    return []
