"""The neonize surface wasup relies on, checked against the installed release.

wasup pins neonize as a compatible range (``>=0.5.2,<0.6``), so a new release is a one-line
deploy: these tests are what makes that safe. Each one names a part of neonize (or of the Go
library inside it) that the whatsmeow engine, its translation table or its docs depend on; a
release that changes one fails here, offline, before it reaches a real account. The private
ctypes parts (``Neonize()``'s 17 arguments, the callback types, ``_stop_finalizer``) are in
``tests/test_neonize_go.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from importlib.metadata import version
from pathlib import Path

import pytest
from neonize import _binder
from neonize.events import EVENT_TO_INT, INT_TO_EVENT
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ClientName, ClientType

from api import startup
from supervisor.engines import neonize_go, neonize_info
from supervisor.engines.whatsmeow_client import SUBSCRIBED_EVENTS


@pytest.fixture(scope="module")
def library() -> bytes:
    path = neonize_info.library_path()
    assert path is not None, "neonize's Go library was not found beside the package"
    return path.read_bytes()


def test_go_library_is_the_installed_release() -> None:
    _binder.gocode.GetVersion.restype = ctypes.c_char_p
    assert _binder.gocode.GetVersion() == version("neonize").encode()
    assert neonize_info.neonize_version() == version("neonize")


def test_library_path_is_the_loaded_library() -> None:
    path = neonize_info.library_path()
    assert path is not None
    assert Path(_binder.gocode._name).resolve() == path.resolve()


def test_neonize_result_is_read_into_bytes_and_freed() -> None:
    """``Neonize()`` returns a Go-allocated C string; neonize's errcheck copies it into
    ``bytes`` and frees it (run_client decodes that)."""
    assert _binder.gocode.Neonize.restype is ctypes.c_void_p
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    text = b"proto: required field neonize.Receipt.Type not set\0"
    ptr = libc.malloc(len(text))
    ctypes.memmove(ptr, text, len(text))
    assert _binder.gocode.Neonize.errcheck(ptr, None, ()) == text[:-1]
    assert _binder.gocode.Neonize.errcheck(None, None, ()) == b""


#: The event codes wasup subscribes to (and code 0, which neonize always sends first), with
#: the neonize classes whatsmeow_translate expects under them.
EXPECTED_CODES = {
    0: nz.Device,
    2: nz.PairStatus,
    3: nz.Connected,
    4: nz.KeepAliveTimeout,
    5: nz.KeepAliveRestored,
    6: nz.LoggedOut,
    7: nz.StreamReplaced,
    8: nz.TemporaryBan,
    9: nz.ConnectFailure,
    10: nz.ClientOutdated,
    11: nz.StreamError,
    12: nz.Disconnected,
    17: nz.Message,
    18: nz.Receipt,
    21: nz.JoinedGroup,
    22: nz.GroupInfoEvent,
    19: nz.ChatPresence,
    20: nz.Presence,
    36: nz.CallOffer,
    40: nz.CallOfferNotice,
    44: nz.UndecryptableMessage,
}


def test_event_codes_map_to_the_expected_classes() -> None:
    assert set(SUBSCRIBED_EVENTS) | {0} == set(EXPECTED_CODES)
    for code, cls in EXPECTED_CODES.items():
        assert INT_TO_EVENT[code] is cls, code
        assert EVENT_TO_INT[cls] == code, cls


def test_connect_failure_reason_values() -> None:
    assert dict(nz.ConnectFailureReason.items()) == {
        "GENERIC": 1, "LOGGED_OUT": 2, "TEMP_BANNED": 3, "MAIN_DEVICE_GONE": 4,
        "UNKNOWN_LOGOUT": 5, "CLIENT_OUTDATED": 6, "BAD_USER_AGENT": 7,
        "INTERNAL_SERVER_ERROR": 8, "EXPERIMENTAL": 9, "SERVICE_UNAVAILABLE": 10,
    }


def test_temporary_ban_reason_values() -> None:
    assert dict(nz.TemporaryBan.TempBanReason.items()) == {
        "SEND_TO_TOO_MANY_PEOPLE": 1, "BLOCKED_BY_USERS": 2, "CREATED_TOO_MANY_GROUPS": 3,
        "SENT_TOO_MANY_SAME_MESSAGE": 4, "BROADCAST_LIST": 5,
    }


def test_receipt_type_values() -> None:
    assert dict(nz.Receipt.ReceiptType.items()) == {
        "DELIVERED": 1, "SENDER": 2, "RETRY": 3, "READ": 4, "READ_SELF": 5, "PLAYED": 6,
        "PLAYED_SELF": 7, "SERVER_ERROR": 8, "INACTIVE": 9, "PEER_MSG": 10, "HISTORY_SYNC": 11,
    }


def test_pair_status_values() -> None:
    assert dict(nz.PairStatus.PStatus.items()) == {"ERROR": 1, "SUCCESS": 2}


def test_message_source_carries_the_alternative_addresses() -> None:
    """LID-addressed messages: the phone-number JID is in SenderAlt / RecipientAlt."""
    fields = {f.name: f for f in nz.MessageSource.DESCRIPTOR.fields}
    for name in ("Chat", "Sender", "SenderAlt", "RecipientAlt"):
        assert fields[name].message_type is nz.JID.DESCRIPTOR, name
    assert {f.name for f in nz.JID.DESCRIPTOR.fields} >= {"User", "Server", "Device"}


def test_pair_phone_sends_chrome_on_linux(tmp_path: Path) -> None:
    """The pair-code request names the client ``Chrome (Linux)`` (WhatsApp refuses display
    names that are not a common browser and OS), type 1 (Chrome)."""
    assert f"{ClientType.CHROME.name} ({ClientName.LINUX.name})" == "Chrome (Linux)"
    sent: list[bytes] = []

    class Go:
        def PairPhone(self, uuid: bytes, payload: bytes, size: int) -> bytes:
            sent.append(payload[:size])
            return nz.PairPhoneReturnFunction(Code="ABCD-EFGH").SerializeToString()

    client = neonize_go.api_client(str(tmp_path / "pair.db"), "wasup-contract-pair")
    client._NewClient__client = Go()  # type: ignore[attr-defined]
    assert client.PairPhone("15551234567", True, ClientName.LINUX, ClientType.CHROME) == (
        "ABCD-EFGH"
    )
    (payload,) = sent
    params = nz.PairPhoneParams.FromString(payload)
    assert (params.phone, params.clientDisplayName, params.clientType) == (
        "15551234567", "Chrome (Linux)", 1
    )
    assert params.showPushNotification


@pytest.mark.parametrize(
    "needle",
    [
        b"https://wa.me/settings/linked_devices#",  # the QR string format wasup documents
        b"NEONIZE_BOT_TAG",  # the variable api.startup sets to keep the bot label off
        b"err-client-outdated",  # the pairing statuses whatsmeow_translate maps
        b"err-scanned-without-multidevice",
        b"passkey-request",
        b"passkey-confirmation",
        b"err-unexpected-state",
        # protobuf-go's "proto: required field … not set": how Neonize() exits on an event
        # neonize cannot encode (whatsmeow_translate.exit_event recognises it)
        b"required field %v not set",
    ],
)
def test_library_contains(library: bytes, needle: bytes) -> None:
    assert needle in library


def test_wa_version_is_found_in_the_library(library: bytes) -> None:
    found = neonize_info.scan_wa_version(library)
    assert found is not None, "no WhatsApp web version found in neonize's Go library"
    major, minor, build = (int(part) for part in found.split("."))
    assert (major, minor) == (2, 3000) and build in neonize_info.WA_BUILD_RANGE
    assert neonize_info.engine_info() == neonize_info.EngineInfo(version("neonize"), found)


def test_wa_version_scan_skips_look_alikes() -> None:
    import struct

    fake = (
        b"\x00" * 4
        + struct.pack("<III", 2, 3000, 7)  # a build number no WhatsApp release had
        + struct.pack("<III", 2, 3000, 1_047_769_893)
    )
    assert neonize_info.scan_wa_version(fake) == "2.3000.1047769893"
    assert neonize_info.scan_wa_version(b"\x00" * 64) is None
    assert neonize_info.wa_version(Path("/nonexistent/neonize.so")) is None


def test_serve_logs_both_versions_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wasup.startup")
    startup.check_whatsmeow_importable()
    info = neonize_info.engine_info()
    lines = [r.getMessage() for r in caplog.records if r.name == "wasup.startup"]
    assert f"whatsmeow engine: neonize {info.neonize_version}, WhatsApp web {info.wa_version}" in (
        lines
    ), lines


async def test_metrics_export_the_engine_info(tmp_path: Path) -> None:
    import httpx

    from tests.conftest import TEST_TOKEN, running_server

    info = neonize_info.engine_info()
    async with running_server(tmp_path / "data") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/metrics", headers={"X-API-TOKEN": TEST_TOKEN})
    assert r.status_code == 200
    line = (
        f'wasup_engine_info{{neonize_version="{info.neonize_version}",'
        f'wa_version="{info.wa_version}"}} 1.0'
    )
    assert line in r.text.splitlines(), r.text
