"""wasup's storage on PostgreSQL: the same repositories and behaviour as the SQLite store.

Usage::

    from storage.pg import open_postgres

    async with open_postgres("postgresql://wasup@db/wasup") as db:
        row = await db.run(lambda repos: repos.devices.get("user_u1_device_shop"))

:mod:`storage.pg.store` is the store (a psycopg connection pool behind worker threads),
:mod:`storage.pg.batch` how it commits the jobs (group commit), :mod:`storage.pg.errors` which
errors are outages, :mod:`storage.pg.migrations` its schema, :mod:`storage.pg.sql` how the
repositories' SQL runs on PostgreSQL, :mod:`storage.pg.whatsmeow` the whatsmeow engine's stores
(a schema per device), and one module per repository that needs SQL of its own.
"""

from storage.pg.store import PgStore, open_postgres

__all__ = ["PgStore", "open_postgres"]
