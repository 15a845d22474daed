"""Signatures of forwarded requests: how one wasup node proves to another that a request comes
from a node of the same cluster.

A node that forwards a request to the device's owner adds three headers::

    X-Wasup-Node: node-a                       # the forwarding node's id
    X-Wasup-Timestamp: 1764537600              # whole seconds since the Unix epoch
    X-Wasup-Signature: v1=<64 hex digits>      # HMAC-SHA256 with the cluster secret

The signature covers, one per line: ``wasup-forward-v1``, the method, the path with its query
exactly as sent (percent-encoding included), the timestamp, the node id and the SHA-256 of the
body (hex). A changed method, path, query, body, timestamp or node id gives another signature.
The receiver recomputes it and compares in constant time (:func:`hmac.compare_digest`), and
accepts a timestamp at most :data:`WINDOW` seconds from its own clock either way, so a
recorded request cannot be replayed later than that.

Usage::

    headers = sign(secret, "POST", b"/api/whatsapp/devices/7/login", body, node="a", now=t)
    verify(secret, "POST", b"/api/whatsapp/devices/7/login", body, headers, now=t)  # or raises

Error handling: :func:`verify` raises :class:`BadSignature` saying what is wrong (a header
missing or malformed, the timestamp outside the window, the signature not matching).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

#: The header naming the forwarding node.
NODE = "X-Wasup-Node"
#: The header with the forwarding node's clock (whole seconds since the epoch).
TIMESTAMP = "X-Wasup-Timestamp"
#: The header with the signature (``v1=`` and 64 hex digits).
SIGNATURE = "X-Wasup-Signature"
#: Every header of a forwarded request: a request with any of them is a forwarded request.
HEADERS = (NODE, TIMESTAMP, SIGNATURE)

#: Seconds a signed request stays acceptable either side of the receiver's clock.
WINDOW = 30.0

_VERSION = "v1"
_NODE_RE = re.compile(r"[\x21-\x7e]{1,128}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"v1=([0-9a-f]{64})")


class BadSignature(Exception):
    """A forwarded request whose signature does not hold; the message says why."""


def is_forwarded(headers: Mapping[str, str]) -> bool:
    """Whether a request carries any of the forwarding headers (it must then carry a valid
    signature)."""
    return any(name in headers for name in HEADERS)


def _digest(secret: bytes, method: str, path: bytes, timestamp: str, node: str,
            body: bytes) -> str:
    message = b"\n".join((
        b"wasup-forward-" + _VERSION.encode(),
        method.upper().encode("ascii"),
        path,
        timestamp.encode("ascii"),
        node.encode("ascii"),
        hashlib.sha256(body).hexdigest().encode("ascii"),
    ))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path: bytes, body: bytes, *, node: str,
         now: float) -> dict[str, str]:
    """The headers that sign a request of ``method`` to ``path`` (the raw path with its query,
    as it goes on the wire) carrying ``body``, from ``node`` at ``now`` (epoch seconds).

    Raises: ValueError for a node id that is not 1 to 128 visible ASCII characters.
    """
    if not _NODE_RE.fullmatch(node):
        raise ValueError(f"node id {node!r}: 1 to 128 visible ascii characters")
    timestamp = str(int(now))
    signature = _digest(secret, method, path, timestamp, node, body)
    return {NODE: node, TIMESTAMP: timestamp, SIGNATURE: f"{_VERSION}={signature}"}


def verify(secret: bytes, method: str, path: bytes, body: bytes,
           headers: Mapping[str, str], *, now: float) -> str:
    """Check a forwarded request's signature; returns the forwarding node's id.

    Raises: BadSignature (a header missing or malformed, the timestamp more than
    :data:`WINDOW` seconds from ``now``, or a signature that does not match).
    """
    node = headers.get(NODE)
    timestamp = headers.get(TIMESTAMP)
    signature = headers.get(SIGNATURE)
    if node is None or timestamp is None or signature is None:
        missing = ", ".join(name for name in HEADERS if headers.get(name) is None)
        raise BadSignature(f"forwarded request without {missing}")
    if not _NODE_RE.fullmatch(node):
        raise BadSignature(f"{NODE}: malformed")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise BadSignature(f"{TIMESTAMP}: whole seconds since the epoch expected")
    if abs(int(timestamp) - now) > WINDOW:
        raise BadSignature(f"{TIMESTAMP}: more than {WINDOW:g} s from this node's clock")
    found = _SIGNATURE_RE.fullmatch(signature)
    if found is None:
        raise BadSignature(f"{SIGNATURE}: v1= and 64 hex digits expected")
    expected = _digest(secret, method, path, timestamp, node, body)
    if not hmac.compare_digest(found.group(1), expected):
        raise BadSignature("the signature does not match the request")
    return node
