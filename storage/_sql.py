"""Small helpers shared by the repository modules (not public)."""

from __future__ import annotations

import sqlite3

from storage.errors import Conflict, NotFound

_UNIQUE = "UNIQUE constraint failed: "
_FIELD_NAMES = {
    "devices.session_id": "session_id",
    "devices.user_id, devices.alias": "alias",
    "devices.api_key_hash": "api_key_hash",
    "messages.device_id, messages.message_id": "message_id",
}


def names_nothing(key: str) -> bool:
    """Whether a lookup key (a message id from a request's path) holds a NUL character: no
    row has one (wasup stores none), and PostgreSQL refuses one in any statement, so a lookup
    by it answers None on both backends without asking the database."""
    return "\x00" in key


def translate_integrity_error(exc: sqlite3.IntegrityError) -> Exception:
    """Map SQLite's constraint failures onto ``Conflict`` / ``NotFound``; else return ``exc``."""
    text = str(exc)
    if text.startswith(_UNIQUE):
        columns = text[len(_UNIQUE) :]
        field = _FIELD_NAMES.get(columns, columns)
        return Conflict(f"{field} already exists", field=field)
    if "FOREIGN KEY constraint failed" in text:
        return NotFound("device not found")
    return exc
