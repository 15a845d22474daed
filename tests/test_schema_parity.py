"""SQLite's and PostgreSQL's schemas stay in step: both migrated to their newest version have the
same tables, the same columns (name, nullability, type family), the same primary keys and the
same indexes and unique constraints by their columns.

What only one backend has is listed here, each with its reason (:data:`PG_ONLY_TABLES`,
:data:`PG_ONLY_COLUMNS`, :data:`PG_ONLY_INDEXES`, :data:`PG_ONLY_TRIGGERS`,
:data:`INDEX_DIFFERENCES`). A migration appended to one backend's list without its counterpart
on the other fails this test, naming what differs: add the other migration
(``storage/migrations.py`` and ``storage/pg/migrations.py``), or, for a deliberate difference,
a line below saying why.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import psycopg

import storage
from storage.pg import open_postgres
from tests.pg_support import TestPostgres

#: Each backend's own record of its schema version (SQLite keeps it in ``PRAGMA user_version``).
BOOKKEEPING = frozenset({"wasup_schema", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})

#: Tables of the cluster (several nodes on one PostgreSQL; SQLite is always one node).
PG_ONLY_TABLES = frozenset({"nodes", "device_leases", "device_qr"})

PG_ONLY_COLUMNS = frozenset({
    # The order of insertion, which SQLite keeps in the rowid.
    ("webhook_outbox", "seq"),
    # A cluster node's claim on a delivery (any node delivers).
    ("webhook_outbox", "claimed_by"),
    ("webhook_outbox", "claimed_until"),
})

#: (table, columns, unique) of indexes only PostgreSQL has.
PG_ONLY_INDEXES = frozenset({
    # Every device's settings of one kind (webhook settings at start): SQLite scans the small
    # table, PostgreSQL's first migration indexed it.
    ("settings", ("kind",), False),
    # The cluster's lease scan.
    ("device_leases", ("owner", "expires_at"), False),
})

#: Indexes whose columns differ: (table, SQLite's columns, PostgreSQL's columns, unique).
INDEX_DIFFERENCES = frozenset({
    # A device's deliveries in order: SQLite orders by rowid, PostgreSQL by created_at, seq.
    ("webhook_outbox", ("device_id",), ("device_id", "created_at", "seq"), False),
})

#: The cluster's commit-time notifications (triggers); SQLite has no trigger at all.
PG_ONLY_TRIGGERS = frozenset({
    ("devices", "devices_notify"), ("events", "events_notify"), ("webhook_outbox", "outbox_notify"),
})

#: Type families: what each backend's declared type means to wasup.
SQLITE_FAMILIES = {"INTEGER": "integer", "TEXT": "text", "REAL": "real", "BLOB": "blob"}
PG_FAMILIES = {
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "text": "text", "character varying": "text",
    "double precision": "real", "real": "real",
    "bytea": "blob",
    "boolean": "boolean", "timestamp with time zone": "timestamp",
}


@attrs.frozen
class Column:
    name: str
    family: str
    not_null: bool


@attrs.frozen
class Schema:
    """One backend's schema, reduced to what the comparison needs."""

    columns: dict[str, dict[str, Column]]  # table -> name -> column
    primary_keys: dict[str, tuple[str, ...]]
    indexes: frozenset[tuple[str, tuple[str, ...], bool]]  # (table, columns, unique)
    triggers: frozenset[tuple[str, str]]


def sqlite_schema(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    try:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )]
        columns: dict[str, dict[str, Column]] = {}
        keys: dict[str, tuple[str, ...]] = {}
        indexes: set[tuple[str, tuple[str, ...], bool]] = set()
        for table in tables:
            if table in BOOKKEEPING:
                continue
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            pk = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            keys[table] = pk
            columns[table] = {}
            for _cid, name, declared, notnull, _default, in_pk in info:
                family = SQLITE_FAMILIES.get(str(declared).upper())
                assert family is not None, f"SQLite {table}.{name}: unknown type {declared!r}"
                # A primary key never holds NULL (INTEGER PRIMARY KEY is the rowid).
                columns[table][name] = Column(name, family, bool(notnull) or bool(in_pk))
            for _seq, index, unique, origin, _partial in conn.execute(
                f'PRAGMA index_list("{table}")'
            ).fetchall():
                if origin == "pk":
                    continue
                cols = tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{index}")'))
                indexes.add((table, cols, bool(unique)))
        triggers = frozenset(
            (t, n) for n, t in conn.execute(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
            )
        )
        return Schema(columns, keys, frozenset(indexes), triggers)
    finally:
        conn.close()


def pg_schema(url: str) -> Schema:
    with psycopg.connect(url) as conn:
        columns: dict[str, dict[str, Column]] = {}
        for table, name, declared, nullable in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, ordinal_position"
        ):
            if table in BOOKKEEPING:
                continue
            family = PG_FAMILIES.get(declared)
            assert family is not None, f"PostgreSQL {table}.{name}: unknown type {declared!r}"
            columns.setdefault(table, {})[name] = Column(name, family, nullable == "NO")
        keys: dict[str, tuple[str, ...]] = {table: () for table in columns}
        indexes: set[tuple[str, tuple[str, ...], bool]] = set()
        for table, cols, unique, primary in conn.execute(
            """
            SELECT t.relname,
                   array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(num, pos)
                         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.num
                         ORDER BY k.pos),
                   i.indisunique, i.indisprimary
            FROM pg_index i
            JOIN pg_class t ON t.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = 'public'
            """
        ):
            if table in BOOKKEEPING:
                continue
            if primary:
                keys[table] = tuple(cols)
            else:
                indexes.add((table, tuple(cols), bool(unique)))
        triggers = frozenset(
            (str(t), str(n)) for t, n in conn.execute(
                "SELECT c.relname, g.tgname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
                " WHERE NOT g.tgisinternal"
            )
        )
    return Schema(columns, keys, frozenset(indexes), triggers)


def differences(lite: Schema, pg: Schema) -> list[str]:
    """Every difference between the two schemas that no list above explains, in words."""
    found: list[str] = []
    lite_tables, pg_tables = set(lite.columns), set(pg.columns) - PG_ONLY_TABLES
    found += [f"table {t} is in SQLite only" for t in sorted(lite_tables - pg_tables)]
    found += [f"table {t} is in PostgreSQL only" for t in sorted(pg_tables - lite_tables)]
    found += [f"PG_ONLY_TABLES lists {t}, which PostgreSQL lacks"
              for t in sorted(PG_ONLY_TABLES - set(pg.columns))]
    for table in sorted(lite_tables & pg_tables):
        lite_cols = lite.columns[table]
        pg_cols = {n: c for n, c in pg.columns[table].items() if (table, n) not in PG_ONLY_COLUMNS}
        for name in sorted(set(lite_cols) - set(pg_cols)):
            found.append(f"column {table}.{name} is in SQLite only")
        for name in sorted(set(pg_cols) - set(lite_cols)):
            found.append(f"column {table}.{name} is in PostgreSQL only")
        for name in sorted(set(lite_cols) & set(pg_cols)):
            a, b = lite_cols[name], pg_cols[name]
            if a.family != b.family:
                found.append(f"column {table}.{name}: {a.family} on SQLite, {b.family} on PostgreSQL")
            if a.not_null != b.not_null:
                found.append(
                    f"column {table}.{name}: {'NOT NULL' if a.not_null else 'nullable'} on SQLite,"
                    f" {'NOT NULL' if b.not_null else 'nullable'} on PostgreSQL"
                )
        if lite.primary_keys[table] != pg.primary_keys.get(table):
            found.append(f"table {table}: primary key {lite.primary_keys[table]} on SQLite,"
                         f" {pg.primary_keys.get(table)} on PostgreSQL")
    found += [f"PG_ONLY_COLUMNS lists {t}.{c}, which PostgreSQL lacks"
              for t, c in sorted(PG_ONLY_COLUMNS) if c not in pg.columns.get(t, {})]

    lite_indexes, pg_indexes = set(lite.indexes), set(pg.indexes) - PG_ONLY_INDEXES
    for table, lite_cols_, pg_cols_, unique in INDEX_DIFFERENCES:
        if (table, lite_cols_, unique) not in lite_indexes or (table, pg_cols_, unique) not in pg_indexes:
            found.append(f"INDEX_DIFFERENCES lists {table} {lite_cols_}/{pg_cols_}, which is gone")
        lite_indexes.discard((table, lite_cols_, unique))
        pg_indexes.discard((table, pg_cols_, unique))
    found += [f"PG_ONLY_INDEXES lists {i}, which PostgreSQL lacks"
              for i in sorted(PG_ONLY_INDEXES - set(pg.indexes))]

    def index_words(index: tuple[str, tuple[str, ...], bool]) -> str:
        table, cols, unique = index
        return f"{'unique ' if unique else ''}index on {table} ({', '.join(cols)})"

    found += [f"{index_words(i)} is on SQLite only" for i in sorted(lite_indexes - pg_indexes)]
    found += [f"{index_words(i)} is on PostgreSQL only" for i in sorted(pg_indexes - lite_indexes)]
    found += [f"trigger {n} on {t} is on SQLite only" for t, n in sorted(lite.triggers)]
    found += [f"trigger {n} on {t} is on PostgreSQL only"
              for t, n in sorted(pg.triggers - PG_ONLY_TRIGGERS)]
    found += [f"PG_ONLY_TRIGGERS lists {n} on {t}, which PostgreSQL lacks"
              for t, n in sorted(PG_ONLY_TRIGGERS - pg.triggers)]
    return found


async def test_both_backends_migrate_to_the_same_schema(
    tmp_path: Path, postgres_server: TestPostgres
) -> None:
    path, url = tmp_path / "wasup.db", postgres_server.create_database()
    async with storage.open_database(path):
        pass
    async with open_postgres(url, pool_size=1):
        pass
    lite, pg = sqlite_schema(path), pg_schema(url)
    assert len(lite.columns) >= 10  # the comparison saw the tables at all
    found = differences(lite, pg)
    assert not found, (
        "SQLite's and PostgreSQL's schemas differ (add the missing migration to the other"
        " backend, or list a deliberate difference in tests/test_schema_parity.py):\n  "
        + "\n  ".join(found)
    )


def test_a_migration_on_one_side_only_is_named() -> None:
    """The comparison itself: a column, an index or a table added on one side is reported."""
    base = Schema(
        {"t": {"id": Column("id", "integer", True), "a": Column("a", "text", False)}},
        {"t": ("id",)}, frozenset({("t", ("a",), False)}), frozenset(),
    )
    def unexplained(lite: Schema, pg: Schema) -> list[str]:
        return [f for f in differences(lite, pg) if " only" in f]

    assert unexplained(base, base) == []
    wider = attrs.evolve(base, columns={"t": {**base.columns["t"], "b": Column("b", "real", False)}})
    assert unexplained(wider, base) == ["column t.b is in SQLite only"]
    assert unexplained(base, wider) == ["column t.b is in PostgreSQL only"]
    stricter = attrs.evolve(base, columns={"t": {**base.columns["t"], "a": Column("a", "text", True)}})
    assert "column t.a: nullable on SQLite, NOT NULL on PostgreSQL" in differences(base, stricter)
    retyped = attrs.evolve(base, columns={"t": {**base.columns["t"], "a": Column("a", "blob", False)}})
    assert "column t.a: text on SQLite, blob on PostgreSQL" in differences(base, retyped)
    indexed = attrs.evolve(base, indexes=base.indexes | {("t", ("id", "a"), True)})
    assert unexplained(base, indexed) == ["unique index on t (id, a) is on PostgreSQL only"]
    table = attrs.evolve(base, columns={**base.columns, "u": {}}, primary_keys={**base.primary_keys, "u": ()})
    assert unexplained(table, base) == ["table u is in SQLite only"]
