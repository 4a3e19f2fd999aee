"""Migrations: SQL files in version order, each once and in its own transaction."""

from __future__ import annotations

import psycopg
import pytest

from paynode.storage.database import libpq_url
from paynode.storage.migrations import MIGRATIONS, Migration, MigrationError, load, migrate


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def _versions(url: str) -> list[tuple[int, str | None]]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
        return [(r[0], r[1]) for r in rows]


def test_shipped_files_load_in_order_with_names() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.name and m.sql.strip() for m in MIGRATIONS)
    assert load() == MIGRATIONS


def test_a_failing_migration_leaves_the_ones_before_it_and_nothing_of_itself(
    empty_database_url: str,
) -> None:
    good = Migration(1, "one", "-- one\nCREATE TABLE t_one (id int);")
    bad = Migration(2, "two", "-- two\nCREATE TABLE t_two (id int);\nSELECT 1 / 0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(empty_database_url, migrations=(good, bad))
    assert _versions(empty_database_url) == [(1, good.checksum)]
    assert "t_one" in _tables(empty_database_url)
    assert "t_two" not in _tables(empty_database_url)
    # Fixed (a file that never applied may still change): the run resumes at 2.
    fixed = Migration(2, "two", "-- two\nCREATE TABLE t_two (id int);")
    assert migrate(empty_database_url, migrations=(good, fixed)) == [2]
    assert migrate(empty_database_url, migrations=(good, fixed)) == []


def test_history_that_disagrees_with_the_files_is_refused(empty_database_url: str) -> None:
    one = Migration(1, "one", "-- one\nCREATE TABLE t_one (id int);")
    two = Migration(2, "two", "-- two\nCREATE TABLE t_two (id int);")
    assert migrate(empty_database_url, migrations=(one, two)) == [1, 2]
    edited = Migration(1, "one", "-- one\nCREATE TABLE t_one (id bigint);")
    with pytest.raises(MigrationError, match=r"migration 1 .* changed after it was applied"):
        migrate(empty_database_url, migrations=(edited, two))
    with pytest.raises(MigrationError, match="has migration 2, which this paynode does not ship"):
        migrate(empty_database_url, migrations=(one,))


def test_history_from_before_checksums_adopts_the_files(empty_database_url: str) -> None:
    """Databases migrated before checksums were recorded: the first run records them."""
    assert migrate(empty_database_url, upto=3) == [1, 2, 3]
    with psycopg.connect(libpq_url(empty_database_url), autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = NULL")
    applied = migrate(empty_database_url)
    assert applied == [m.version for m in MIGRATIONS[3:]]
    assert _versions(empty_database_url) == [(m.version, m.checksum) for m in MIGRATIONS]
