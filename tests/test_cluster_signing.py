"""Signatures of forwarded requests (api.cluster_signing): what a node accepts and refuses."""

from __future__ import annotations

import pytest

from api.cluster_signing import (
    NODE,
    SIGNATURE,
    TIMESTAMP,
    WINDOW,
    BadSignature,
    is_forwarded,
    sign,
    verify,
)

SECRET = b"cluster-secret"
PATH = b"/api/whatsapp/devices/7/messages?x=1"
BODY = b'{"to":"+15550001","text":"hi"}'
NOW = 1_764_537_600.0


def _signed() -> dict[str, str]:
    return sign(SECRET, "POST", PATH, BODY, node="node-a", now=NOW)


def test_a_signed_request_verifies_and_names_its_node() -> None:
    headers = _signed()
    assert set(headers) == {NODE, TIMESTAMP, SIGNATURE}
    assert is_forwarded(headers)
    assert verify(SECRET, "POST", PATH, BODY, headers, now=NOW) == "node-a"
    assert verify(SECRET, "post", PATH, BODY, headers, now=NOW + WINDOW) == "node-a"


@pytest.mark.parametrize(
    ("method", "path", "body", "secret"),
    [
        ("PUT", PATH, BODY, SECRET),  # another method
        ("POST", b"/api/whatsapp/devices/8/messages?x=1", BODY, SECRET),  # another device
        ("POST", b"/api/whatsapp/devices/7/messages?x=2", BODY, SECRET),  # another query
        ("POST", b"/api/whatsapp/devices/7/messages", BODY, SECRET),  # the query dropped
        ("POST", PATH, BODY + b" ", SECRET),  # a tampered body
        ("POST", PATH, b"", SECRET),  # the body dropped
        ("POST", PATH, BODY, b"another-cluster"),  # another secret
    ],
)
def test_anything_changed_breaks_the_signature(method: str, path: bytes, body: bytes,
                                               secret: bytes) -> None:
    with pytest.raises(BadSignature, match="does not match"):
        verify(secret, method, path, body, _signed(), now=NOW)


def test_a_changed_timestamp_or_node_breaks_the_signature() -> None:
    later = {**_signed(), TIMESTAMP: str(int(NOW) + 1)}
    with pytest.raises(BadSignature, match="does not match"):
        verify(SECRET, "POST", PATH, BODY, later, now=NOW)
    other = {**_signed(), NODE: "node-b"}
    with pytest.raises(BadSignature, match="does not match"):
        verify(SECRET, "POST", PATH, BODY, other, now=NOW)


def test_a_replay_outside_the_window_is_refused() -> None:
    headers = _signed()
    for now in (NOW + WINDOW + 1, NOW - WINDOW - 1, NOW + 3600):
        with pytest.raises(BadSignature, match="clock"):
            verify(SECRET, "POST", PATH, BODY, headers, now=now)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({SIGNATURE: None}, f"without {SIGNATURE}"),
        ({TIMESTAMP: None, NODE: None}, f"without {NODE}, {TIMESTAMP}"),
        ({TIMESTAMP: "-5"}, "whole seconds"),
        ({TIMESTAMP: "1e9"}, "whole seconds"),
        ({SIGNATURE: "v2=" + "0" * 64}, "v1="),
        ({SIGNATURE: "v1=" + "0" * 63}, "v1="),
        ({SIGNATURE: "v1=" + "0" * 64}, "does not match"),
        ({NODE: "a b"}, "malformed"),
        ({NODE: "x" * 129}, "malformed"),
    ],
)
def test_missing_or_malformed_headers_are_refused(change: dict[str, str | None],
                                                  match: str) -> None:
    headers = {**_signed(), **change}
    kept = {name: value for name, value in headers.items() if value is not None}
    assert is_forwarded(kept)
    with pytest.raises(BadSignature, match=match):
        verify(SECRET, "POST", PATH, BODY, kept, now=NOW)


def test_a_plain_request_is_not_forwarded_and_node_ids_are_checked() -> None:
    assert not is_forwarded({"X-API-TOKEN": "t", "Content-Type": "application/json"})
    with pytest.raises(ValueError):
        sign(SECRET, "GET", PATH, b"", node="", now=NOW)
