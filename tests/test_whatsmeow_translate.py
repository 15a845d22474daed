"""The whatsmeow event mapping, row by row of the translation table (docs/engine-events.md).

Each test builds neonize's own protobuf event object (the very class neonize parses Go's
bytes into), runs it through :func:`translate` -- after a round trip through its wire form,
as it arrives from Go -- and, where the row says so, through the pure state machine, to check
the resulting status, ``statusReason`` and event. Pairing statuses and ``Neonize()``'s exit
texts are the strings neonize 0.5.2 hands over.
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
    PairingFailed,
    Retry,
    TemporaryBan,
)
from supervisor.engines.whatsmeow_translate import (
    KEEPALIVE_MAX_ERRORS,
    ROWS,
    UNKNOWN_BAN_SECONDS,
    OnStatus,
    Row,
    Section,
    Via,
    advice_for,
    connect_error_reason,
    exit_event,
    translate,
    translate_pairing_status,
)

from .docs_support import DOCS, load_generator

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
            case Disconnected(reason=r, recoverable=recoverable, retry=retry):
                step = sm.transition(state, sm.connection_ended(r, recoverable, retry))
            case LoggedOut(reason=r):
                step = sm.transition(state, sm.Unlinked(r))
            case PairingFailed(reason=r, restart=restart):
                step = sm.transition(state, sm.PairingFailed(r, restart))
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


def test_the_account_event_itself_reports_nothing() -> None:
    assert tr(nz.Device(JID=jid("15551234567"), PushName="Ana")) == []


def test_disconnected_reconnects_on_the_backoff_schedule() -> None:
    events = tr(nz.Disconnected(status=True))
    assert events == [Disconnected("connection_lost", retry=Retry.BACKOFF)]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason) == (sm.Status.DISCONNECTED, "connection_lost")
    assert EMITTED == ["device_status", "device_disconnected"]


def test_keepalive_timeout_below_threshold_changes_nothing() -> None:
    assert tr(nz.KeepAliveTimeout(ErrorCount=1, LastSuccess=int(NOW) - 30)) == []
    assert tr(nz.KeepAliveTimeout(ErrorCount=KEEPALIVE_MAX_ERRORS - 1)) == []


def test_keepalive_timeout_at_threshold_is_a_lost_connection() -> None:
    events = tr(nz.KeepAliveTimeout(ErrorCount=KEEPALIVE_MAX_ERRORS, LastSuccess=int(NOW) - 90))
    assert events == [Disconnected("keepalive_timeout", retry=Retry.BACKOFF)]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason) == (sm.Status.DISCONNECTED, "keepalive_timeout")
    assert EMITTED == ["device_status", "device_disconnected"]


def test_keepalive_restored_and_stream_error_change_nothing() -> None:
    assert tr(nz.KeepAliveRestored()) == []
    assert tr(nz.StreamError(Code="503")) == []


# -- logged out, refused, replaced, banned ------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (nz.LOGGED_OUT, "unlinked"),  # 401: unlinked from the phone
        (nz.MAIN_DEVICE_GONE, "account_locked"),  # 403: LOCKED in WhatsApp web's code
        (nz.UNKNOWN_LOGOUT, "banned"),  # 406: BANNED in WhatsApp web's code
    ],
)
def test_logged_out_wipes_for_whatsmeows_logged_out_codes(reason: int, expected: str) -> None:
    events = tr(nz.LoggedOut(OnConnect=True, Reason=reason))
    assert events == [LoggedOut(expected)]
    state = through_state_machine(sm.Status.CONNECTED, events)
    assert (state.status, state.reason, state.paired) == (sm.Status.LOGGED_OUT, expected, False)
    assert EMITTED == ["device_status", "device_logged_out"]


def test_device_removed_stream_error_is_unlinked() -> None:
    """whatsmeow's ``device_removed`` stream error: OnConnect false, reason 401."""
    assert tr(nz.LoggedOut(OnConnect=False, Reason=nz.LOGGED_OUT)) == [LoggedOut("unlinked")]
    # an older whatsmeow sent it without a reason
    assert translate(nz.LoggedOut(OnConnect=False), now=NOW) == [LoggedOut("unlinked")]


@pytest.mark.parametrize(
    "reason",
    [nz.GENERIC, nz.TEMP_BANNED, nz.CLIENT_OUTDATED, nz.BAD_USER_AGENT, nz.SERVICE_UNAVAILABLE],
)
def test_logged_out_with_another_reason_keeps_the_credentials(reason: int) -> None:
    assert tr(nz.LoggedOut(OnConnect=True, Reason=reason)) == [
        Disconnected("connect_failure", retry=Retry.SLOW)
    ]


def test_stream_replaced_holds_with_the_credentials_kept() -> None:
    events = tr(nz.StreamReplaced())
    assert events == [Disconnected("stream_replaced", retry=Retry.HOLD)]
    assert not any(isinstance(e, LoggedOut) for e in events)
    assert "log the device in" in (advice_for("stream_replaced") or "")


def test_client_outdated_retries_slowly_and_says_to_upgrade_neonize() -> None:
    events = tr(nz.ClientOutdated())
    assert events == [Disconnected("client_outdated", retry=Retry.SLOW)]
    advice = advice_for("client_outdated")
    assert advice is not None and "upgrade neonize" in advice
    assert 'pip install -U "neonize>=0.5.2,<0.6"' in advice
    assert advice_for("connection_lost") is None


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
        (nz.GENERIC, Disconnected("connect_failure", retry=Retry.SLOW)),  # 400
        (nz.BAD_USER_AGENT, Disconnected("bad_user_agent", retry=Retry.SLOW)),  # 409
        (nz.EXPERIMENTAL, Disconnected("connect_failure", retry=Retry.SLOW)),  # 501
        (nz.INTERNAL_SERVER_ERROR, Disconnected("connect_failure", retry=Retry.SLOW)),  # 500
        (nz.SERVICE_UNAVAILABLE, Disconnected("connect_failure", retry=Retry.SLOW)),  # 503
        (nz.CLIENT_OUTDATED, Disconnected("client_outdated", retry=Retry.SLOW)),  # 405
        (nz.LOGGED_OUT, LoggedOut("unlinked")),  # 401
        (nz.MAIN_DEVICE_GONE, LoggedOut("account_locked")),  # 403
        (nz.UNKNOWN_LOGOUT, LoggedOut("banned")),  # 406
    ],
)
def test_connect_failure(reason: int, expected: EngineEvent) -> None:
    assert tr(nz.ConnectFailure(Reason=reason, Message="refused")) == [expected]


def test_connect_failure_temp_banned_without_expiry() -> None:
    events = tr(nz.ConnectFailure(Reason=nz.TEMP_BANNED))
    assert events == [TemporaryBan("temporary_ban", NOW + UNKNOWN_BAN_SECONDS)]


def test_credentials_are_wiped_only_for_whatsmeows_logged_out_codes() -> None:
    """Of every reason neonize can carry in a LoggedOut or ConnectFailure, only 401, 403 and
    406 (whatsmeow's ``IsLoggedOut``) end the session; the rest keep the credentials."""
    wiping = set()
    for name, value in nz.ConnectFailureReason.items():
        for event in (nz.LoggedOut(OnConnect=True, Reason=value),
                      nz.ConnectFailure(Reason=value, Message="")):
            if any(isinstance(e, LoggedOut) for e in tr(event)):
                wiping.add(name)
    assert wiping == {"LOGGED_OUT", "MAIN_DEVICE_GONE", "UNKNOWN_LOGOUT"}
    for row in ROWS:
        if isinstance(row.outcome, LoggedOut):
            assert row.outcome.reason in {"unlinked", "account_locked", "banned"}, row


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


def test_pair_error_event_restarts_pairing() -> None:
    ev = nz.PairStatus(ID=jid("15551234567"), Status=nz.PairStatus.ERROR, Error="bad signature")
    assert tr(ev) == [PairingFailed("pair_error", restart=True)]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", []),
        ("error", [PairingFailed("pair_error", restart=True)]),
        ("err-scanned-without-multidevice",
         [PairingFailed("scanned_without_multidevice", restart=False)]),
        ("passkey-request", [PairingFailed("passkey_required", restart=False)]),
        ("passkey-confirmation", [PairingFailed("passkey_required", restart=False)]),
        ("err-client-outdated", [Disconnected("client_outdated", retry=Retry.SLOW)]),
        ("timeout", [Disconnected("pairing_interrupted", retry=Retry.BACKOFF)]),
        ("err-unexpected-state", [Disconnected("pairing_unexpected_state", retry=Retry.BACKOFF)]),
        ("code", []),
        ("something-new", []),
    ],
)
def test_pairing_status(status: str, expected: list[EngineEvent]) -> None:
    assert translate_pairing_status(status) == expected


# -- neonize's event loop ends -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "proto: required field neonize.Receipt.Type not set",
        "proto: required field neonize.TemporaryBan.Code not set",
        "proto: required field neonize.ConnectFailure.Reason not set",
    ],
)
def test_an_event_neonize_cannot_encode_retries_slowly(text: str) -> None:
    assert exit_event(text) == Disconnected("unsupported_event", retry=Retry.SLOW)
    assert connect_error_reason(text) == "unsupported_event"


def test_a_connect_that_failed_reconnects_on_the_backoff_schedule() -> None:
    text = "failed to dial whatsapp web websocket: dial tcp: lookup web.whatsapp.com: no such host"
    assert exit_event(text) == Disconnected(
        "unreachable: lookup web.whatsapp.com: no such host", retry=Retry.BACKOFF
    )
    assert exit_event("") == Disconnected("connect_failed: unknown error", retry=Retry.BACKOFF)


# -- the table -----------------------------------------------------------------------------------


def test_every_row_of_the_table_says_how_it_arrives() -> None:
    keys = [row.key for row in ROWS if row.key is not None]
    assert len(keys) == len(set(keys)), "two rows claim the same event"
    for section in Section:
        assert any(row.section is section for row in ROWS), section
    statuses = {row.key.status for row in ROWS if isinstance(row.key, OnStatus)}
    assert statuses >= {"success", "error", "timeout", "err-client-outdated",
                        "err-unexpected-state", "err-scanned-without-multidevice",
                        "passkey-request", "passkey-confirmation"}
    never = [row for row in ROWS if row.via is Via.NEVER]
    assert never and all(row.note or row.neonize for row in never)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if isinstance(r.outcome, Disconnected | LoggedOut | PairingFailed)],
    ids=lambda r: r.whatsmeow[:60],
)
def test_each_fixed_row_does_to_the_device_what_the_doc_says(row: Row) -> None:
    """Through the state machine: the status, reason and retry class the generated doc shows,
    and credentials wiped (EngineLogout) only on the logged_out rows."""
    event = row.outcome
    assert isinstance(event, Disconnected | LoggedOut | PairingFailed)
    pairing = row.section is Section.PAIRING
    before = sm.DeviceState(status=sm.Status.PENDING if pairing else sm.Status.CONNECTED,
                            paired=not pairing)
    step = sm.transition(before, _machine_event(event))
    state = step.state
    gen = load_generator("gen_engine_events.py")
    _, status, reason, credentials, then = gen._cells(row)[:5]
    assert (f"`{state.status.value}`", f"`{state.reason}`") == (status, reason)
    assert isinstance(step.engine, sm.EngineLogout) == (credentials == "wiped")
    match event:
        case LoggedOut():
            assert not state.paired
        case Disconnected(retry=retry):
            assert state.paired == before.paired and state.retry is retry
            assert then == gen.NEXT[state.retry]
            assert isinstance(step.engine, sm.StopEngine)
            if retry is Retry.HOLD:
                assert step.timeout is None
            elif retry is Retry.SLOW:
                assert step.timeout is not None and step.timeout.kind is sm.TimeoutKind.SLOW
        case PairingFailed(reason=r, restart=restart):
            assert isinstance(step.engine, sm.StartPairing) == restart
            assert step.keep_timeout  # the QR cycle's deadline is unchanged
            published = [e.payload for e in step.events if isinstance(e, sm.Emit)]
            assert [(p.type, p.reason) for p in published] == [("device_status", r)]


def _machine_event(event: Disconnected | LoggedOut | PairingFailed) -> sm.Event:
    match event:
        case Disconnected(reason=r, recoverable=recoverable, retry=retry):
            return sm.connection_ended(r, recoverable, retry)
        case LoggedOut(reason=r):
            return sm.Unlinked(r)
        case PairingFailed(reason=r, restart=restart):
            return sm.PairingFailed(r, restart)


def test_engine_events_doc_is_current() -> None:
    """docs/engine-events.md shows the table the code reads (run docs/gen_engine_events.py)."""
    gen = load_generator("gen_engine_events.py")
    document = (DOCS / "engine-events.md").read_text(encoding="utf-8")
    assert gen.splice(document, gen.render()) == document, "run docs/gen_engine_events.py"


def test_engine_events_doc_has_a_row_per_table_row() -> None:
    gen = load_generator("gen_engine_events.py")
    rendered = gen.render()
    for row in ROWS:
        assert row.whatsmeow in rendered, row
    assert rendered.count("\n| ") == len(ROWS) + len(Section)  # rows plus one header each


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
                        "hello", is_group=False, from_me=False, timestamp=1_750_000_100.0,
                        sender_lid=None, sender_pn="15557654321@s.whatsapp.net")
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


# -- LID addressing ------------------------------------------------------------------------------

LID = jid("140000000000001", "lid")
PN = jid("15557654321")
ME = jid("15551234567")


def received(source: nz.MessageSource) -> MessageReceived:
    ev = nz.Message(Info=nz.MessageInfo(ID="3EB0LID", Timestamp=1_750_000_100,
                                        MessageSource=source))
    ev.Message.CopyFrom(WAMessage(conversation="hi"))
    (out,) = tr(ev)
    assert isinstance(out, MessageReceived)
    return out


def test_lid_addressed_message_with_the_phone_number_known() -> None:
    got = received(nz.MessageSource(Chat=LID, Sender=LID, SenderAlt=PN, IsFromMe=False,
                                    IsGroup=False, AddressingMode=nz.LID))
    assert (got.chat, got.sender, got.sender_lid, got.sender_pn) == (
        "15557654321@s.whatsapp.net", "15557654321@s.whatsapp.net",
        "140000000000001@lid", "15557654321@s.whatsapp.net",
    )


def test_lid_addressed_message_without_the_phone_number() -> None:
    got = received(nz.MessageSource(Chat=LID, Sender=LID, IsFromMe=False, IsGroup=False))
    assert (got.chat, got.sender, got.sender_lid, got.sender_pn) == (
        "140000000000001@lid", "140000000000001@lid", "140000000000001@lid", None,
    )


def test_phone_addressed_message_with_the_lid_known() -> None:
    got = received(nz.MessageSource(Chat=PN, Sender=PN, SenderAlt=LID, IsFromMe=False,
                                    IsGroup=False))
    assert (got.chat, got.sender, got.sender_lid, got.sender_pn) == (
        "15557654321@s.whatsapp.net", "15557654321@s.whatsapp.net",
        "140000000000001@lid", "15557654321@s.whatsapp.net",
    )


def test_group_message_from_a_lid_sender_keeps_the_group_as_chat() -> None:
    group = jid("120363000000", "g.us")
    got = received(nz.MessageSource(Chat=group, Sender=LID, SenderAlt=PN, IsFromMe=False,
                                    IsGroup=True))
    assert (got.chat, got.sender, got.sender_lid, got.sender_pn, got.is_group) == (
        "120363000000@g.us", "15557654321@s.whatsapp.net",
        "140000000000001@lid", "15557654321@s.whatsapp.net", True,
    )


def test_message_sent_from_the_phone_to_a_lid_chat_names_the_recipients_number() -> None:
    got = received(nz.MessageSource(Chat=LID, Sender=ME, RecipientAlt=PN, IsFromMe=True,
                                    IsGroup=False))
    assert (got.chat, got.sender, got.sender_pn, got.from_me) == (
        "15557654321@s.whatsapp.net", "15551234567@s.whatsapp.net",
        "15551234567@s.whatsapp.net", True,
    )


def test_a_device_part_is_dropped_from_both_addresses() -> None:
    lid_dev = nz.JID(User="140000000000001", Server="lid", Device=3, RawAgent=0, Integrator=0)
    got = received(nz.MessageSource(Chat=LID, Sender=lid_dev, SenderAlt=PN, IsFromMe=False,
                                    IsGroup=False))
    assert (got.sender_lid, got.sender_pn) == ("140000000000001@lid",
                                               "15557654321@s.whatsapp.net")


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
