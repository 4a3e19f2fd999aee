"""Versioned schema migrations, applied at start and by ``paynode migrate``.

Each migration runs once, in its own transaction, under an advisory lock so
that several node processes starting together do not race. Never edit a
migration that has shipped: add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .database import sync_engine

_LOCK_KEY = 0x7061796E6F6465  # "paynode"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "ledger core: accounts and the transfer journal",
        (
            """
            CREATE TABLE accounts (
                id         text PRIMARY KEY,
                currency   char(3) NOT NULL,
                flags      integer NOT NULL CHECK (flags >= 0),
                metadata   json NOT NULL,
                shard_key  bigint NOT NULL CHECK (shard_key >= 0),
                ts         bigint NOT NULL
            )
            """,
            """
            CREATE TABLE transfers (
                id                text PRIMARY KEY,
                debit_account_id  text NOT NULL,
                credit_account_id text NOT NULL,
                amount            bigint NOT NULL CHECK (amount > 0),
                currency          char(3) NOT NULL,
                flags             integer NOT NULL CHECK (flags >= 0),
                pending_id        text,
                timeout_s         integer NOT NULL CHECK (timeout_s >= 0),
                metadata          json NOT NULL,
                status            text NOT NULL
                    CHECK (status IN ('posted', 'pending', 'voided', 'expired')),
                posted_amount     bigint NOT NULL CHECK (posted_amount >= 0),
                pending_delta     bigint NOT NULL,
                ts                bigint NOT NULL,
                CHECK (debit_account_id <> credit_account_id)
            )
            """,
            "CREATE INDEX transfers_debit_ts ON transfers (debit_account_id, ts)",
            "CREATE INDEX transfers_credit_ts ON transfers (credit_account_id, ts)",
            # At most one resolution (post, void or expiry) per pending transfer.
            "CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id)"
            " WHERE pending_id IS NOT NULL",
        ),
    ),
)


def applied_versions(conn: sa.Connection) -> set[int]:
    rows = conn.execute(sa.text("SELECT version FROM schema_migrations"))
    return {r[0] for r in rows}


def migrate(database_url: str) -> list[int]:
    """Apply every migration not yet applied; return the versions applied now."""
    engine = sync_engine(database_url)
    done: list[int] = []
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            have = applied_versions(conn)
            for m in MIGRATIONS:
                if m.version in have:
                    continue
                with conn.begin_nested():
                    for stmt in m.statements:
                        conn.execute(sa.text(stmt))
                    conn.execute(
                        sa.text("INSERT INTO schema_migrations (version, name) VALUES (:v, :n)"),
                        {"v": m.version, "n": m.name},
                    )
                done.append(m.version)
    finally:
        engine.dispose()
    return done


def latest_version() -> int:
    return MIGRATIONS[-1].version
