"""A device's presence and profile, and its calls, as the API asks for them: checked, handed to
the device's engine session (:meth:`supervisor.devices.Devices.ask`) and shaped.

- presence: :func:`set_presence` (``available``/``unavailable``), :func:`set_chat_presence`
  (``typing``/``recording``/``paused`` in a chat), :func:`subscribe_presence` (``presence``
  events follow);
- profile: :func:`profile`, :func:`update_profile` (push name, about), :func:`set_picture`
  (any image Pillow reads, made a square JPEG of at most :data:`PICTURE_SIZE` pixels, as
  WhatsApp's own apps upload them);
- calls: :func:`reject_call`.

Chats and contacts are phone numbers or JIDs (:mod:`supervisor.jid`), passed on in their
canonical form. Error handling: :class:`InvalidRequest` naming the field (``state``, ``chatId``,
``contact``, ``callId``, ``from``, ``name``, ``about``, or the picture's field) before anything
is asked; then what :meth:`~supervisor.devices.Devices.ask` raises (409 when the device is not
connected, 502 when WhatsApp failed).
"""

from __future__ import annotations

import io
import re
import warnings

import attrs
import trio
from PIL import Image, UnidentifiedImageError

from .devices import Devices
from .engine_account import CHAT_STATES, PRESENCE_STATES, ChatState, PresenceState, Profile
from .errors import InvalidRequest
from .jid import InvalidJid, Jid, JidKind

#: WhatsApp's limits of a push name and an about text (its apps refuse longer ones).
NAME_MAX = 25
ABOUT_MAX = 139
#: The side of the square profile picture wasup uploads (pixels, at most).
PICTURE_SIZE = 640
#: The largest image (in pixels) wasup decodes for a profile picture.
PICTURE_PIXELS_MAX = 40_000_000
#: The longest JID or phone number a path may name, and a call id.
ADDRESS_MAX = 100
CALL_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")

CHAT_KINDS = frozenset({JidKind.USER, JidKind.LID, JidKind.GROUP})
CONTACT_KINDS = frozenset({JidKind.USER, JidKind.LID})


def address(value: str, field: str, kinds: frozenset[JidKind]) -> str:
    """``value`` (a phone number or JID of one of ``kinds``) as a canonical JID.

    Error handling: InvalidRequest naming ``field``."""
    jid = None
    if len(value) <= ADDRESS_MAX:
        try:
            jid = Jid.parse(value.strip(), strict=True)
        except InvalidJid:
            jid = None
    if jid is None or jid.kind not in kinds:
        what = "a phone number or a user jid" if JidKind.GROUP not in kinds else (
            "a phone number, a user jid or a group jid")
        raise InvalidRequest(f"{field}: must be {what} (like +15551234567 or "
                             "15551234567@s.whatsapp.net)", field=field)
    return jid.canonical


def presence_state(value: object) -> PresenceState:
    for state in PRESENCE_STATES:
        if value == state:
            return state
    raise InvalidRequest("state: must be available or unavailable", field="state")


def chat_state(value: object) -> ChatState:
    for state in CHAT_STATES:
        if value == state:
            return state
    raise InvalidRequest("state: must be typing, recording or paused", field="state")


async def set_presence(devices: Devices, ref: str, state: object) -> PresenceState:
    checked = presence_state(state)
    await devices.ask(ref, lambda s: s.account.set_presence(checked), "presence")
    return checked


async def set_chat_presence(devices: Devices, ref: str, chat: str,
                            state: object) -> tuple[str, ChatState]:
    """Returns the chat's canonical JID and the state shown."""
    jid = address(chat, "chatId", CHAT_KINDS)
    checked = chat_state(state)
    await devices.ask(ref, lambda s: s.account.set_chat_presence(jid, checked), "chat presence")
    return jid, checked


async def subscribe_presence(devices: Devices, ref: str, contact: str) -> str:
    """Returns the contact's canonical JID."""
    jid = address(contact, "contact", CONTACT_KINDS)
    await devices.ask(ref, lambda s: s.account.subscribe_presence(jid), "presence subscription")
    return jid


async def profile(devices: Devices, ref: str) -> Profile:
    return await devices.ask(ref, lambda s: s.account.profile(), "profile")


async def update_profile(devices: Devices, ref: str, name: str | None,
                         about: str | None) -> Profile:
    """Set the push name and/or the about text (checked by the caller: at least one, within
    :data:`NAME_MAX` / :data:`ABOUT_MAX`); returns the profile as WhatsApp has it then. A new
    push name is the device's ``pushName`` from then on too."""
    if name is not None:
        await devices.ask(ref, lambda s: s.account.set_name(name), "profile name")
        # The device's record shows the push name WhatsApp reported at the last connect.
        await devices.update_device(ref, push_name=name)
    if about is not None:
        await devices.ask(ref, lambda s: s.account.set_about(about), "profile about")
    shown = await profile(devices, ref)
    # WhatsApp may show the new values a moment later: answer with what was set.
    return attrs.evolve(shown, name=name if name is not None else shown.name,
                        about=about if about is not None else shown.about)


async def set_picture(devices: Devices, ref: str, image: bytes, field: str) -> str:
    """Make ``image`` the profile picture; returns WhatsApp's picture id.

    Error handling: InvalidRequest naming ``field`` when it is no image Pillow reads."""
    jpeg = await trio.to_thread.run_sync(profile_jpeg, image, field)
    return await devices.ask(ref, lambda s: s.account.set_picture(jpeg), "profile picture")


async def reject_call(devices: Devices, ref: str, call_id: str, caller: str) -> str:
    """Returns the caller's canonical JID."""
    if not CALL_ID_RE.fullmatch(call_id):
        raise InvalidRequest("callId: must be 1 to 128 letters, digits, '_' or '-'",
                             field="callId")
    jid = address(caller, "from", CONTACT_KINDS)
    await devices.ask(ref, lambda s: s.account.reject_call(call_id, jid), "call rejection")
    return jid


def profile_jpeg(image: bytes, field: str) -> bytes:
    """``image`` as a square JPEG (its centre), at most :data:`PICTURE_SIZE` pixels a side
    (blocking: call it in a worker thread).

    Error handling: InvalidRequest naming ``field`` for what is not an image, or one too large
    to decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as img:
                width, height = img.size
                if width * height > PICTURE_PIXELS_MAX:
                    raise InvalidRequest(f"{field}: the image has too many pixels "
                                         f"({width}x{height})", field=field)
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                square = img.convert("RGB").crop((left, top, left + side, top + side))
                if side > PICTURE_SIZE:
                    square = square.resize((PICTURE_SIZE, PICTURE_SIZE), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                square.save(out, "JPEG", quality=90)
                return out.getvalue()
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombWarning,
            Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise InvalidRequest(f"{field}: must be an image (JPEG, PNG, WebP, GIF...)",
                             field=field) from None
