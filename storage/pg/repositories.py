"""Every repository of the PostgreSQL store, bound to one job's connection.

The classes of the repositories that need nothing of their own on PostgreSQL are SQLite's, run
over :class:`storage.pg.sql.PgSql` (see there); the others are their subclasses in this package,
one module per repository.
"""

from __future__ import annotations

from typing import cast

import attrs
import sqlite_utils

from storage.history import SqliteMessageHistory
from storage.message_actions import SqliteMessageActions
from storage.pg.credentials import PgCredentials
from storage.pg.devices import PgDevices, PgHistory
from storage.pg.events import PgEvents
from storage.pg.leases import PgLeases
from storage.pg.messages import PgMessages
from storage.pg.outbox import PgOutbox
from storage.pg.qr import PgQr
from storage.pg.settings import PgSettings
from storage.pg.sql import PgSql
from storage.reads import SqliteReads
from storage.sends import SqliteSends


@attrs.frozen
class PgRepositories:
    """Every repository, over one connection inside one job's transaction."""

    devices: PgDevices
    history: PgHistory
    messages: PgMessages
    message_history: SqliteMessageHistory
    settings: PgSettings
    credentials: PgCredentials
    outbox: PgOutbox
    sends: SqliteSends
    message_actions: SqliteMessageActions
    reads: SqliteReads
    events: PgEvents
    #: Cluster membership and device leases (PostgreSQL only: :mod:`storage.pg.leases`).
    leases: PgLeases
    #: The QR code each pairing device shows (PostgreSQL only: :mod:`storage.pg.qr`).
    qr: PgQr

    @classmethod
    def bind(cls, sql: PgSql) -> PgRepositories:
        """The repositories over ``sql``."""
        # The shared classes type their database as SQLite's; what they call of it is
        # ``conn.execute``, which PgSql answers (see storage.pg.sql).
        db = cast(sqlite_utils.Database, sql)
        history = PgHistory(db)
        settings = PgSettings(db)
        return cls(
            devices=PgDevices(db, history),
            history=history,
            messages=PgMessages(db),
            message_history=SqliteMessageHistory(db),
            settings=settings,
            credentials=PgCredentials(db),
            outbox=PgOutbox(db, settings),
            sends=SqliteSends(db),
            message_actions=SqliteMessageActions(db),
            reads=SqliteReads(db),
            events=PgEvents(db),
            leases=PgLeases(sql),
            qr=PgQr(sql),
        )
