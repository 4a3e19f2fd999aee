"""Versioned schema migrations, applied at start and by ``paynode migrate``.

A migration is a plain SQL file in ``storage/sql/``: ``NNNN_<slug>.sql``, its
first line ``-- <what it does>``. Files run in version order, each once and in
its own transaction, so a failing migration leaves the ones before it applied
and nothing of itself. One session-level advisory lock is held for the whole
run so that several node processes starting together do not race.

Never edit a migration that has shipped: add a new one. Each applied file's
SHA-256 is recorded, and a database whose recorded checksum differs from the
file refuses to migrate (a shipped migration was changed).

Why not Alembic: our migrations are forward-only DDL written by hand (no
autogenerate: ``storage/schema.py`` is checked against the live schema by a
test instead), the node migrates itself at start from any working directory
(no ``alembic.ini``/``env.py`` to locate), and the runner is this module.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from paynode.storage.database import libpq_url

_LOCK_KEY = 0x7061796E6F6465  # "paynode"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the shipped files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(package: str = "paynode.storage", folder: str = "sql") -> tuple[Migration, ...]:
    """The migrations shipped in ``package/folder``, in version order (no gaps)."""
    found: list[Migration] = []
    for entry in resources.files(package).joinpath(folder).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        first = sql.split("\n", 1)[0]
        if not first.startswith("-- "):
            raise MigrationError(f"{entry.name}: first line must be '-- <what it does>'")
        found.append(Migration(int(match.group(1)), first[3:].strip(), sql))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps: {versions}")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = load()

_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text
"""


def migrate(
    database_url: str,
    upto: int | None = None,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Apply every migration not yet applied (up to version ``upto``: tests of an
    upgrade stop there), each in its own transaction; return the versions applied now.

    Raises ``MigrationError`` if an applied migration's file changed since, and
    re-raises the database's error of a failing migration (the ones before it stay).
    """
    done: list[int] = []
    with psycopg.connect(libpq_url(database_url), application_name="paynode-migrate") as conn:
        conn.autocommit = True
        # Held by the session: closing the connection (or losing it) releases it.
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        with conn.transaction():
            conn.execute(_HISTORY)
            applied = _check_history(conn, migrations)
        for m in migrations:
            if m.version in applied or (upto is not None and m.version > upto):
                continue
            with conn.transaction():
                # No parameters: psycopg sends the file as one simple query, so a file
                # may hold many statements (and $$ function bodies).
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
            done.append(m.version)
    return done


def _check_history(conn: psycopg.Connection, migrations: tuple[Migration, ...]) -> set[int]:
    """The applied versions, after checking each against its file. Rows applied before
    checksums were recorded take the file's checksum now (the first check)."""
    shipped = {m.version: m for m in migrations}
    applied: set[int] = set()
    rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
    for version, checksum in rows.fetchall():
        m = shipped.get(version)
        if m is None:
            raise MigrationError(
                f"the database has migration {version}, which this paynode does not ship"
                " (a newer version migrated it)"
            )
        if checksum is None:
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                (m.checksum, version),
            )
        elif checksum != m.checksum:
            raise MigrationError(
                f"migration {version} ({m.name}) changed after it was applied:"
                " shipped migrations must not be edited; add a new one"
            )
        applied.add(version)
    return applied


def latest_version() -> int:
    return MIGRATIONS[-1].version
