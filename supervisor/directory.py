"""The device directory: every device's current row, and the indexes to find one.

Usage::

    directory = DeviceDirectory()
    directory.put(row)                       # insert or replace; the indexes follow
    device_id = directory.resolve("7")       # or a sessionId; DeviceNotFound otherwise
    row = directory.get(device_id)           # None if there is no such device
    directory.by_key_hash(digest)            # the device whose API key hashes to digest
    directory.drop(device_id)
    directory.reference("user_7_device_shop")  # what a database read may look for, or None

The directory is the in-memory truth the API reads without a database query: the actor that
owns a device puts its row here after every write. It knows nothing of actors or supervision.

Error handling: :meth:`DeviceDirectory.resolve` raises :class:`DeviceNotFound` for a reference
that names no device, a numeric one included; a numeric id is ASCII digits only (``"³"`` is no
id), so no reference, however odd, gets further than that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import attrs

from storage.models import DeviceRow

from .errors import DeviceNotFound

_ID = re.compile(r"[0-9]{1,18}")
#: The shape of every sessionId :func:`session_id_for` makes (a userId of the API's rule, a slug
#: of an alias of at most 100 characters).
_SESSION = re.compile(r"user_[A-Za-z0-9][A-Za-z0-9_.-]{0,63}_device_[a-z0-9-]{1,100}")


def slugify(alias: str) -> str:
    """``"Business Account 1"`` -> ``"business-account-1"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", alias.lower()).strip("-")
    return slug or "device"


def session_id_for(user_id: str, alias: str) -> str:
    """The sessionId of the device ``alias`` of ``user_id``."""
    return f"user_{user_id}_device_{slugify(alias)}"


def hash_key(key: str) -> str:
    """The stored form of a device's API key."""
    return hashlib.sha256(key.encode()).hexdigest()


@attrs.define(eq=False)
class DeviceDirectory:
    """Rows by id, with indexes by sessionId and API key hash, and the set of devices that have
    webhook settings."""

    _rows: dict[int, DeviceRow] = attrs.field(factory=dict)
    _by_session: dict[str, int] = attrs.field(factory=dict)
    _by_key_hash: dict[str, int] = attrs.field(factory=dict)
    _webhooks: set[int] = attrs.field(factory=set)
    #: Devices dropped so far: a row read from the database before a drop may be stale.
    drops: int = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._rows

    def rows(self) -> Iterator[DeviceRow]:
        """Every row, in insertion order."""
        return iter(self._rows.values())

    def mapping(self) -> Mapping[int, DeviceRow]:
        """Every row by id, as a read-only view."""
        return MappingProxyType(self._rows)

    def get(self, device_id: int) -> DeviceRow | None:
        """The device's row, or None."""
        return self._rows.get(device_id)

    def resolve(self, ref: str | int) -> int:
        """The numeric id for a sessionId or a numeric id (ASCII digits); raises DeviceNotFound."""
        if isinstance(ref, int):
            if ref in self._rows:
                return ref
        elif _ID.fullmatch(ref):
            device_id = int(ref)
            if device_id in self._rows:
                return device_id
        else:
            found = self._by_session.get(ref)
            if found is not None:
                return found
        raise DeviceNotFound(ref)

    @staticmethod
    def reference(ref: str | int) -> int | str | None:
        """What a reference :meth:`resolve` did not find may name in the database: a numeric id,
        a sessionId, or None when no device can have it (nothing to read)."""
        if isinstance(ref, int):
            return ref if 0 <= ref < 10**18 else None
        if _ID.fullmatch(ref):
            return int(ref)
        return ref if _SESSION.fullmatch(ref) else None

    def learned(self, row: DeviceRow, drops: int) -> DeviceRow:
        """``row``, read from the database while this directory had no such device (``drops``:
        :attr:`drops` before the read), entered unless the directory learnt the device
        meanwhile (its row is newer: returned instead) or dropped a device (it may have been
        this one, deleted: the read would bring it back)."""
        known = self.get(row.id)
        if known is not None:
            return known
        if self.drops == drops:
            self.put(row)
        return row

    def session_taken(self, session_id: str) -> bool:
        """Whether a device has this sessionId."""
        return session_id in self._by_session

    def by_key_hash(self, digest: str) -> DeviceRow | None:
        """The device whose API key hashes to ``digest``, or None."""
        device_id = self._by_key_hash.get(digest)
        return None if device_id is None else self._rows.get(device_id)

    def put(self, row: DeviceRow) -> None:
        """Insert or replace the device's row; the indexes follow a changed sessionId."""
        old = self._rows.get(row.id)
        if old is not None and old.session_id != row.session_id:
            self._by_session.pop(old.session_id, None)
        self._rows[row.id] = row
        self._by_session[row.session_id] = row.id
        self._by_key_hash[row.api_key_hash] = row.id

    def drop(self, device_id: int) -> None:
        """Forget the device; nothing happens if it is unknown."""
        row = self._rows.pop(device_id, None)
        if row is not None:
            self.drops += 1
            self._by_session.pop(row.session_id, None)
            self._by_key_hash.pop(row.api_key_hash, None)
        self._webhooks.discard(device_id)

    def has_webhook(self, device_id: int) -> bool:
        """Whether the device has webhook settings (its events go to the outbox)."""
        return device_id in self._webhooks

    def set_webhook(self, device_id: int) -> None:
        """Note that the device has webhook settings now."""
        self._webhooks.add(device_id)
