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
    Migration(
        2,
        "identity: account owners, users with sealed PII, sessions, API keys, KYC trail",
        (
            "ALTER TABLE accounts ADD COLUMN owner_user_id text",
            "CREATE INDEX accounts_owner ON accounts (owner_user_id)"
            " WHERE owner_user_id IS NOT NULL",
            # *_ct columns hold storage.pii sealed values; email_index is its blind index.
            """
            CREATE TABLE users (
                id            text PRIMARY KEY,
                email_index   bytea NOT NULL UNIQUE,
                email_ct      bytea NOT NULL,
                password_hash text,
                name_ct       bytea,
                phone_ct      bytea,
                birth_date_ct bytea,
                address_ct    bytea,
                kyc_status    text NOT NULL DEFAULT 'unverified'
                    CHECK (kyc_status IN ('unverified', 'pending', 'verified', 'rejected')),
                kyc_id_type   text,
                kyc_id_ct     bytea,
                created_at    timestamptz NOT NULL DEFAULT now(),
                updated_at    timestamptz NOT NULL DEFAULT now()
            )
            """,
            # A session is one login: the family of its rotating refresh tokens.
            """
            CREATE TABLE sessions (
                id             text PRIMARY KEY,
                user_id        text NOT NULL REFERENCES users (id),
                created_at     timestamptz NOT NULL DEFAULT now(),
                revoked_at     timestamptz,
                revoked_reason text
            )
            """,
            """
            CREATE TABLE refresh_tokens (
                id          text PRIMARY KEY,
                session_id  text NOT NULL REFERENCES sessions (id),
                secret_hash bytea NOT NULL,
                expires_at  timestamptz NOT NULL,
                used_at     timestamptz,
                created_at  timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id)",
            """
            CREATE TABLE api_keys (
                id            text PRIMARY KEY,
                secret_hash   bytea NOT NULL,
                name          text NOT NULL,
                scopes        text[] NOT NULL,
                owner_user_id text REFERENCES users (id),
                created_by    text NOT NULL,
                created_at    timestamptz NOT NULL DEFAULT now(),
                revoked_at    timestamptz
            )
            """,
            "CREATE INDEX api_keys_owner ON api_keys (owner_user_id)",
            """
            CREATE TABLE kyc_events (
                id          bigserial PRIMARY KEY,
                user_id     text NOT NULL REFERENCES users (id),
                from_status text NOT NULL,
                to_status   text NOT NULL,
                actor       text NOT NULL,
                reason      text,
                at          timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX kyc_events_user ON kyc_events (user_id, id)",
        ),
    ),
    Migration(
        3,
        "analytics and reconciliation: commit order (txid) on the journal, runs, discrepancies",
        (
            # The writing transaction's id: rows with txid below the oldest running
            # transaction are all committed, so a reader can follow the journal in
            # (txid, id) order without gaps (storage/analytics.py). Existing rows get
            # this migration's id.
            "ALTER TABLE transfers ADD COLUMN txid bigint NOT NULL"
            " DEFAULT pg_current_xact_id()::text::bigint",
            "CREATE INDEX transfers_txid ON transfers (txid, id)",
            "ALTER TABLE accounts ADD COLUMN txid bigint NOT NULL"
            " DEFAULT pg_current_xact_id()::text::bigint",
            "CREATE INDEX accounts_txid ON accounts (txid, id)",
            """
            CREATE TABLE reconciliation_runs (
                id              bigserial PRIMARY KEY,
                kind            text NOT NULL CHECK (kind IN ('incremental', 'full')),
                trigger         text NOT NULL,
                started_at      timestamptz NOT NULL DEFAULT now(),
                finished_at     timestamptz,
                status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'ok', 'discrepancies', 'failed')),
                from_txid       bigint,
                to_txid         bigint,
                accounts_checked integer NOT NULL DEFAULT 0,
                transfers_checked bigint NOT NULL DEFAULT 0,
                skipped_in_flight integer NOT NULL DEFAULT 0,
                found           integer NOT NULL DEFAULT 0,
                resolved        integer NOT NULL DEFAULT 0,
                error           text
            )
            """,
            # One open row per (kind, object): seen again, it is updated, not repeated.
            """
            CREATE TABLE discrepancies (
                id            bigserial PRIMARY KEY,
                kind          text NOT NULL CHECK (kind IN ('missing_in_journal',
                    'missing_in_bank', 'missing_in_analytics', 'amount_mismatch',
                    'balance_drift', 'status_mismatch', 'nonzero_total')),
                object_type   text NOT NULL CHECK (object_type IN ('account', 'transfer',
                    'currency', 'bank_entry')),
                object_id     text NOT NULL,
                sources       text NOT NULL,
                expected      text,
                actual        text,
                first_run_id  bigint NOT NULL REFERENCES reconciliation_runs (id),
                last_run_id   bigint NOT NULL REFERENCES reconciliation_runs (id),
                found_at      timestamptz NOT NULL DEFAULT now(),
                last_seen_at  timestamptz NOT NULL DEFAULT now(),
                resolved_at   timestamptz
            )
            """,
            "CREATE UNIQUE INDEX discrepancies_one_open ON discrepancies"
            " (kind, object_type, object_id, sources) WHERE resolved_at IS NULL",
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
