"""The whatsmeow event mapping, one test per row of docs/engine-events.md.

Each test builds neonize's own protobuf event object (the very class neonize parses Go's
bytes into), runs it through :func:`translate` -- after a round trip through its wire form,
as it arrives from Go -- and, where the row says so, through the pure state machine, to check
the resulting status, ``statusReason`` and event.
"""

from __future__ import annotations

from typing import Any

import pytest
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from supervisor import state as sm
from supervisor.engine import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    MessageReceived,
    MessageStatus,
    Paired,
    TemporaryBan,
)
from supervisor.engines.whatsmeow_translate import (
    KEEPALIVE_MAX_ERRORS,
    UNKNOWN_BAN_SECONDS,
    connect_error_reason,
    translate,
    translate_pairing_status,
)

NOW = 1_750_000_000.0


def complete(msg: Any) -> Any:
    """Fill the proto2 ``required`` fields left unset with their defaults, as Go always sets
    them (neonize's schema marks most fields required)."""
    for field in msg.DESCRIPTOR.fields:
        if field.message_type is not None and not field.is_repeated:
            if field.is_required or msg.HasField(field.name):
                sub = getattr(msg, field.name)
                sub.SetInParent()
                complete(sub)
        elif field.message_type is not None:
            for item in getattr(msg, field.name):
                complete(item)
        elif field.is_required and not msg.HasField(field.name):
            setattr(msg, field.name, field.default_value)
    return msg


def wire(event: Any) -> Any:
    """As Go delivers it: serialized, then parsed by neonize's class."""
    return type(event).FromString(complete(event).SerializeToString())


def tr(event: Any, **kw: Any) -> list[EngineEvent]:
    return translate(wire(event), now=NOW, **kw)


def jid(user: str, server: str = "s.whatsapp.net") -> nz.JID:
    return nz.JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


EMITTED: list[str] = []  # the wasup event types of the last through_state_machine call


def through_state_machine(status: sm.Status, events: list[EngineEvent]) -> sm.DeviceState:
    """Feed the engine events to the state machine the way the actor does; the wasup events
    it publishes (``device_status``, ``device_connected``...) are left in :data:`EMITTED`."""
    state = sm.DeviceState(status=status, paired=status is not sm.Status.PENDING)
    EMITTED.clear()
    for ev in events:
        match ev:
            case Connected():
                step = sm.transition(state, sm.EngineConnected())
            case Paired():
                step = sm.transition(state, sm.Scanned())
            case Disconnected(reason=r, recoverable=True):
                step = sm.transition(state, sm.ConnectionLost(r))
            case Disconnected(reason=r) | LoggedOut(reason=r):
                step = sm.transition(state, sm.Unlinked(r))
            case TemporaryBan(reason=r, until_epoch=u):
                step = sm.transition(state, sm.Banned(r, u))
            case _:
                step = sm.Step(state)
        EMITTED.extend(_emitted(step))
        state = step.state
    return state


def _emitted(step: sm.Step) -> list[str]:
    """The wasup event types a step publishes, in order."""
    types = ["device_status"] if step.change is not None else []
    return types + [e.type for e in step.events if isinstance(e, sm.Emit)]


# -- connection --------------------------------------------------------------------------------


def test_connected_carries_push_name_and_platform() -> None:
    me = nz.Device(JID=jid("15551234567"), PushName="Ana", Platform="android")
    events = tr(nz.Connected(status=True), me=me)
    assert events == [Connected(push_name="Ana", platform="android")]
    state = through_state_machine(sm.Status.CONNECTING, events)
    assert (state.status, state.reason) == (sm.Status.CONNECTED, None)
    assert EMITTED == ["device_status", "device_connected"]


def test_connected_without_account_info() -> None:
    assert tr(nz.Connected(status=True)) == [Connected(push_name=None, platform=None)]


def test_disconnected_is_recoverable() -> None:
    events = tr(nz.Disconnected(status=True))
    assert events == [Disconnected("connection_lost", recoverable=True)]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason) == (sm.Status.DISCONNECTED, "connection_lost")
    assert EMITTED == ["device_status", "device_disconnected"]


def test_keepalive_timeout_below_threshold_changes_nothing() -> None:
    assert tr(nz.KeepAliveTimeout(ErrorCount=1, LastSuccess=int(NOW) - 30)) == []


def test_keepalive_timeout_at_threshold_is_a_lost_connection() -> None:
    events = tr(nz.KeepAliveTimeout(ErrorCount=KEEPALIVE_MAX_ERRORS, LastSuccess=int(NOW) - 90))
    assert events == [Disconnected("keepalive_timeout", recoverable=True)]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason) == (sm.Status.DISCONNECTED, "keepalive_timeout")
    assert EMITTED == ["device_status", "device_disconnected"]


def test_keepalive_restored_changes_nothing() -> None:
    assert tr(nz.KeepAliveRestored()) == []


# -- final conditions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (nz.LOGGED_OUT, "unlinked"),
        (nz.MAIN_DEVICE_GONE, "main_device_gone"),
        (nz.UNKNOWN_LOGOUT, "unknown_logout"),
        (nz.GENERIC, "unlinked"),
    ],
)
def test_logged_out_is_final(reason: int, expected: str) -> None:
    events = tr(nz.LoggedOut(OnConnect=True, Reason=reason))
    assert events == [LoggedOut(expected)]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason, state.paired) == (sm.Status.LOGGED_OUT, expected, False)
    assert EMITTED == ["device_status", "device_logged_out"]


def test_logged_out_without_reason() -> None:
    assert tr(nz.LoggedOut(OnConnect=False)) == [LoggedOut("unlinked")]


def test_stream_replaced_is_final() -> None:
    events = tr(nz.StreamReplaced())
    assert events == [LoggedOut("stream_replaced")]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason) == (sm.Status.LOGGED_OUT, "stream_replaced")
    assert EMITTED == ["device_status", "device_logged_out"]


def test_client_outdated_is_final() -> None:
    events = tr(nz.ClientOutdated())
    assert events == [LoggedOut("client_outdated")]
    state = through_state_machine(sm.Status.CONNECTING, events)
    assert (state.status, state.reason) == (sm.Status.LOGGED_OUT, "client_outdated")
    assert EMITTED == ["device_status", "device_logged_out"]


def test_temporary_ban_waits_until_expiry() -> None:
    ev = nz.TemporaryBan(Code=nz.TemporaryBan.SEND_TO_TOO_MANY_PEOPLE, Expire=7200)
    events = tr(ev)
    assert events == [TemporaryBan("temporary_ban: send_to_too_many_people", NOW + 7200)]
    old = sm.DeviceState(status=sm.Status.CONNECTED, paired=True)
    step = sm.transition(old, sm.Banned(events[0].reason, NOW + 7200))  # type: ignore[union-attr]
    state = step.state
    assert (state.status, state.reason, state.ban_until) == (
        sm.Status.DISCONNECTED, "temporary_ban", NOW + 7200
    )
    assert step.timeout == sm.StateTimeout(sm.TimeoutKind.BACKOFF, attempt=1, not_before=NOW + 7200)
    assert _emitted(step) == ["device_status", "device_disconnected"]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (nz.LOGGED_OUT, "unlinked"),
        (nz.MAIN_DEVICE_GONE, "main_device_gone"),
        (nz.UNKNOWN_LOGOUT, "unknown_logout"),
        (nz.CLIENT_OUTDATED, "client_outdated"),
        (nz.BAD_USER_AGENT, "bad_user_agent"),
    ],
)
def test_connect_failure_final(reason: int, expected: str) -> None:
    events = tr(nz.ConnectFailure(Reason=reason, Message="refused"))
    assert events == [LoggedOut(expected)]
    state = through_state_machine(sm.Status.CONNECTING, events)
    assert (state.status, state.reason) == (sm.Status.LOGGED_OUT, expected)
    assert EMITTED == ["device_status", "device_logged_out"]


def test_connect_failure_temp_banned_without_expiry() -> None:
    events = tr(nz.ConnectFailure(Reason=nz.TEMP_BANNED))
    assert events == [TemporaryBan("temporary_ban", NOW + UNKNOWN_BAN_SECONDS)]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (nz.INTERNAL_SERVER_ERROR, "internal_server_error: try later"),
        (nz.SERVICE_UNAVAILABLE, "service_unavailable: try later"),
        (nz.GENERIC, "connect_failure: try later"),
        (nz.EXPERIMENTAL, "experimental: try later"),
    ],
)
def test_connect_failure_recoverable(reason: int, expected: str) -> None:
    events = tr(nz.ConnectFailure(Reason=reason, Message="try later"))
    assert events == [Disconnected(expected, recoverable=True)]
    state = through_state_machine(sm.Status.CONNECTING, events)
    assert (state.status, state.reason) == (sm.Status.DISCONNECTED, expected)
    assert EMITTED == ["device_status", "device_disconnected"]


def test_stream_error_changes_nothing() -> None:
    assert tr(nz.StreamError(Code="503")) == []


# -- pairing -----------------------------------------------------------------------------------


def test_pair_success_is_paired() -> None:
    ev = nz.PairStatus(
        ID=jid("15551234567"), BusinessName="", Platform="android", Status=nz.PairStatus.SUCCESS
    )
    events = tr(ev)
    assert events == [Paired("15551234567@s.whatsapp.net", "15551234567", None, "android")]
    state = through_state_machine(sm.Status.PENDING, events)
    assert (state.status, state.paired) == (sm.Status.CONNECTING, True)
    assert EMITTED == ["device_status"]


def test_pair_error_starts_over() -> None:
    ev = nz.PairStatus(ID=jid("15551234567"), Status=nz.PairStatus.ERROR, Error="bad signature")
    events = tr(ev)
    assert events == [Disconnected("pair_error: bad signature", recoverable=True)]
    state = through_state_machine(sm.Status.PENDING, events)
    assert (state.status, state.reason) == (sm.Status.DISCONNECTED, "pair_error: bad signature")
    assert EMITTED == ["device_status", "device_disconnected"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", []),
        ("error", []),
        ("timeout", [Disconnected("pairing_interrupted", recoverable=True)]),
        ("err-client-outdated", [LoggedOut("client_outdated")]),
        ("err-unexpected-state", [Disconnected("pairing_unexpected_state", recoverable=True)]),
        ("err-scanned-without-multidevice", []),
    ],
)
def test_pairing_status(status: str, expected: list[EngineEvent]) -> None:
    assert translate_pairing_status(status) == expected


# -- messages and receipts ---------------------------------------------------------------------


def incoming(text_message: WAMessage, *, chat: nz.JID, sender: nz.JID, from_me: bool = False,
             group: bool = False, ts: int = 1_750_000_100) -> nz.Message:
    ev = nz.Message(
        Info=nz.MessageInfo(
            ID="3EB0ABCDEF",
            Timestamp=ts,
            MessageSource=nz.MessageSource(Chat=chat, Sender=sender, IsFromMe=from_me,
                                           IsGroup=group),
        )
    )
    ev.Message.CopyFrom(text_message)
    return ev


def test_text_message_received() -> None:
    peer = jid("15557654321")
    events = tr(incoming(WAMessage(conversation="hello"), chat=peer, sender=peer))
    assert events == [
        MessageReceived("3EB0ABCDEF", "15557654321@s.whatsapp.net", "15557654321@s.whatsapp.net",
                        "hello", is_group=False, from_me=False, timestamp=1_750_000_100.0)
    ]


def test_extended_text_in_group_with_millisecond_timestamp() -> None:
    msg = WAMessage()
    msg.extendedTextMessage.text = "see https://example.org"
    events = tr(incoming(msg, chat=jid("120363000000", "g.us"), sender=jid("15557654321"),
                         group=True, ts=1_750_000_100_000))
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, MessageReceived)
    assert (ev.chat, ev.sender, ev.text, ev.is_group, ev.timestamp) == (
        "120363000000@g.us", "15557654321@s.whatsapp.net", "see https://example.org", True,
        1_750_000_100.0,
    )


def test_image_caption_and_ephemeral_wrapper() -> None:
    msg = WAMessage()
    msg.ephemeralMessage.message.imageMessage.caption = "a photo"
    (ev,) = tr(incoming(msg, chat=jid("1555"), sender=jid("1555")))
    assert isinstance(ev, MessageReceived) and ev.text == "a photo"


def test_message_from_me_and_status_broadcast() -> None:
    (ev,) = tr(incoming(WAMessage(conversation="story"), chat=jid("status", "broadcast"),
                        sender=jid("15551234567"), from_me=True))
    assert isinstance(ev, MessageReceived)
    assert ev.from_me and ev.is_broadcast


def test_message_without_text_is_not_reported() -> None:
    msg = WAMessage()
    msg.reactionMessage.text = "👍"
    assert tr(incoming(msg, chat=jid("1555"), sender=jid("1555"))) == []


@pytest.mark.parametrize(
    ("receipt_type", "status"),
    [
        (nz.Receipt.DELIVERED, "delivered"),
        (nz.Receipt.READ, "read"),
        (nz.Receipt.PLAYED, "read"),
    ],
)
def test_receipt_updates_status(receipt_type: int, status: str) -> None:
    ev = nz.Receipt(
        MessageSource=nz.MessageSource(Chat=jid("1555"), Sender=jid("1555")),
        MessageIDs=["A1", "A2"],
        Timestamp=int(NOW),
        Type=receipt_type,
    )
    assert tr(ev) == [MessageStatus("A1", status), MessageStatus("A2", status)]


@pytest.mark.parametrize(
    "receipt_type",
    [nz.Receipt.SENDER, nz.Receipt.RETRY, nz.Receipt.READ_SELF, nz.Receipt.SERVER_ERROR,
     nz.Receipt.INACTIVE, nz.Receipt.PEER_MSG, nz.Receipt.HISTORY_SYNC],
)
def test_other_receipts_change_nothing(receipt_type: int) -> None:
    ev = nz.Receipt(MessageIDs=["A1"], Type=receipt_type)
    assert tr(ev) == []


def test_unrelated_events_are_ignored() -> None:
    assert tr(nz.OfflineSyncCompleted(Count=3)) == []


# -- connect errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            'failed to dial whatsapp web websocket: failed to WebSocket dial: failed to send '
            'handshake request: Get "https://web.whatsapp.com/ws/chat": dial tcp: lookup '
            "web.whatsapp.com on 10.255.255.53:53: no such host",
            "unreachable: lookup web.whatsapp.com: no such host",
        ),
        ("dial tcp 157.240.0.53:443: connect: connection refused", "unreachable: connection refused"),
        ("dial tcp 157.240.0.53:443: i/o timeout", "unreachable: i/o timeout"),
        ("something odd", "connect_failed: something odd"),
        ("", "connect_failed: unknown error"),
    ],
)
def test_connect_error_reason(text: str, reason: str) -> None:
    assert connect_error_reason(text) == reason
