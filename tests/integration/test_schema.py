"""The live schema (what the migrations build) is the one storage/schema.py declares."""

from __future__ import annotations

import sqlalchemy as sa

from paynode.storage.database import sync_engine
from paynode.storage.schema import metadata


def _kind(t: sa.types.TypeEngine) -> str:
    """A column type as a comparable word (lengths and collations aside)."""
    name = type(t).__name__.upper()
    for generic, words in {
        "TEXT": ("TEXT", "VARCHAR", "STRING"),
        "CHAR": ("CHAR",),
        "INT": ("INTEGER", "BIGINT", "SMALLINT"),
        "BOOL": ("BOOLEAN",),
        "TIME": ("TIMESTAMP", "DATETIME"),
        "JSON": ("JSON", "JSONB"),
        "BYTES": ("BYTEA", "LARGEBINARY"),
        "DATE": ("DATE",),
        "ARRAY": ("ARRAY",),
        "NUM": ("NUMERIC", "FLOAT", "DOUBLE"),
    }.items():  # fmt: skip
        if any(name.startswith(w) for w in words):
            return generic
    return name


def test_every_declared_table_and_column_exists_as_declared(database_url: str) -> None:
    engine = sync_engine(database_url)
    try:
        live = sa.inspect(engine)
        problems = []
        for table in metadata.sorted_tables:
            if not live.has_table(table.name):
                problems.append(f"{table.name}: declared, not in the database")
                continue
            columns = {c["name"]: c for c in live.get_columns(table.name)}
            for col in table.columns:
                found = columns.get(col.name)
                if found is None:
                    problems.append(f"{table.name}.{col.name}: declared, not in the database")
                    continue
                if _kind(found["type"]) != _kind(col.type):
                    problems.append(f"{table.name}.{col.name}: {found['type']} != {col.type}")
                if bool(found["nullable"]) != bool(col.nullable) and not col.primary_key:
                    problems.append(f"{table.name}.{col.name}: nullable {found['nullable']}")
            undeclared = set(columns) - {c.name for c in table.columns}
            problems += [f"{table.name}.{c}: in the database, not declared" for c in undeclared]
    finally:
        engine.dispose()
    assert not problems, "\n".join(problems)
