"""Versioned schema migrations, applied at start and by ``paynode migrate``.

Each migration runs once, in its own transaction, under an advisory lock so
that several node processes starting together do not race. Never edit a
migration that has shipped: add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from paynode.storage.database import sync_engine

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
    Migration(
        4,
        "notifications: event outbox, webhook endpoints and deliveries, devices, inbound webhooks",
        (
            # The outbox. Written in the same transaction as the change it reports
            # (storage/journal.py), read in (txid, id) order below pg_snapshot_xmin
            # so a reader never skips an event that commits late.
            """
            CREATE TABLE events (
                id            text PRIMARY KEY,
                type          text NOT NULL,
                subject_id    text NOT NULL,
                owner_user_id text,
                debit_account_id  text,
                credit_account_id text,
                data          json,
                created       bigint NOT NULL,
                txid          bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint
            )
            """,
            "CREATE INDEX events_txid ON events (txid, id)",
            # Who an event concerns, without a join: the owner (accounts, payments)
            # or the two accounts (transfers). The notifier filters on these.
            # secret_ct (and previous_secret_ct during a rotation) are storage.pii
            # sealed values: the node must sign with them, so they are not hashes.
            """
            CREATE TABLE webhook_endpoints (
                id                  text PRIMARY KEY,
                owner_user_id       text REFERENCES users (id),
                url                 text NOT NULL,
                events              text[] NOT NULL,
                secret_ct           bytea NOT NULL,
                previous_secret_ct  bytea,
                previous_expires_at timestamptz,
                max_in_flight       integer NOT NULL DEFAULT 1
                    CHECK (max_in_flight BETWEEN 1 AND 16),
                enabled             boolean NOT NULL DEFAULT true,
                start_txid          bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
                created_at          timestamptz NOT NULL DEFAULT now(),
                updated_at          timestamptz NOT NULL DEFAULT now(),
                deleted_at          timestamptz
            )
            """,
            "CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_user_id)",
            """
            CREATE TABLE webhook_deliveries (
                id              bigserial PRIMARY KEY,
                endpoint_id     text NOT NULL REFERENCES webhook_endpoints (id),
                event_id        text NOT NULL REFERENCES events (id),
                order_keys      text[] NOT NULL,
                status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
                attempts        integer NOT NULL DEFAULT 0,
                next_attempt_at timestamptz NOT NULL DEFAULT now(),
                last_status     integer,
                last_error      text,
                created_at      timestamptz NOT NULL DEFAULT now(),
                delivered_at    timestamptz,
                UNIQUE (endpoint_id, event_id)
            )
            """,
            "CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, id)"
            " WHERE status = 'pending'",
            """
            CREATE TABLE webhook_attempts (
                id          bigserial PRIMARY KEY,
                delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id),
                attempt     integer NOT NULL,
                at          timestamptz NOT NULL DEFAULT now(),
                status_code integer,
                error       text,
                duration_ms integer NOT NULL
            )
            """,
            "CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id)",
            # Where the notifier's fan-out stands in the outbox.
            """
            CREATE TABLE notifier_cursor (
                name     text PRIMARY KEY,
                txid     bigint NOT NULL,
                event_id text NOT NULL
            )
            """,
            # token_index is a blind index: one row per physical device token.
            """
            CREATE TABLE devices (
                id          text PRIMARY KEY,
                user_id     text NOT NULL REFERENCES users (id),
                platform    text NOT NULL CHECK (platform IN ('apns', 'fcm')),
                token_ct    bytea NOT NULL,
                token_index bytea NOT NULL,
                events      text[] NOT NULL,
                start_txid  bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
                created_at  timestamptz NOT NULL DEFAULT now(),
                deleted_at  timestamptz
            )
            """,
            "CREATE UNIQUE INDEX devices_one_token ON devices (token_index)"
            " WHERE deleted_at IS NULL",
            "CREATE INDEX devices_user ON devices (user_id)",
            """
            CREATE TABLE push_notifications (
                id         bigserial PRIMARY KEY,
                device_id  text NOT NULL REFERENCES devices (id),
                event_id   text NOT NULL REFERENCES events (id),
                status     text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
                attempts   integer NOT NULL DEFAULT 0,
                result     text,
                created_at timestamptz NOT NULL DEFAULT now(),
                sent_at    timestamptz,
                UNIQUE (device_id, event_id)
            )
            """,
            "CREATE INDEX push_notifications_pending ON push_notifications (id)"
            " WHERE status = 'pending'",
            # Every inbound webhook, accepted or refused (with why). The payload is
            # sealed: a bank's event may name people.
            """
            CREATE TABLE inbound_webhooks (
                id          bigserial PRIMARY KEY,
                provider    text NOT NULL,
                event_id    text,
                event_type  text,
                signed_at   bigint,
                received_at timestamptz NOT NULL DEFAULT now(),
                status      text NOT NULL CHECK (status IN ('accepted', 'refused')),
                reason      text,
                payload_ct  bytea,
                handled_at  timestamptz,
                handler     text
            )
            """,
            "CREATE UNIQUE INDEX inbound_webhooks_once ON inbound_webhooks (provider, event_id)"
            " WHERE status = 'accepted'",
        ),
    ),
    Migration(
        5,
        "rails: handles, payments with their status history, refunds, bank accounts, ACH",
        (
            # A handle is unique among live ones; a released handle may be taken again.
            """
            CREATE TABLE handles (
                handle        text NOT NULL,
                account_id    text NOT NULL REFERENCES accounts (id),
                owner_user_id text,
                created_at    timestamptz NOT NULL DEFAULT now(),
                released_at   timestamptz
            )
            """,
            "CREATE UNIQUE INDEX handles_live ON handles (handle) WHERE released_at IS NULL",
            """
            CREATE TABLE payments (
                id                text PRIMARY KEY,
                owner_user_id     text,
                from_ref          text NOT NULL,
                to_ref            text NOT NULL,
                debit_account_id  text NOT NULL,
                credit_account_id text NOT NULL,
                amount            bigint NOT NULL CHECK (amount > 0),
                currency          char(3) NOT NULL,
                rail              text NOT NULL CHECK (rail IN ('wallet', 'ach')),
                memo              text NOT NULL DEFAULT '',
                -- wallet: processing -> completed | failed; ACH: processing -> pending
                -- (held) -> submitted (in a file) -> settled | returned, or failed.
                status            text NOT NULL CHECK (status IN ('processing', 'completed',
                    'failed', 'pending', 'submitted', 'settled', 'returned')),
                failure_code      text,
                bank_account_id   text,
                ach_direction     text CHECK (ach_direction IN ('credit', 'debit')),
                same_day          boolean NOT NULL DEFAULT false,
                return_code       text,
                transfer_id       text,
                refunded_amount   bigint NOT NULL DEFAULT 0
                    CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
                created_at        timestamptz NOT NULL DEFAULT now(),
                updated_at        timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX payments_owner ON payments (owner_user_id, created_at)",
            """
            CREATE TABLE payment_status_history (
                id         bigserial PRIMARY KEY,
                payment_id text NOT NULL REFERENCES payments (id),
                status     text NOT NULL,
                reason     text,
                at         timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX payment_history_payment ON payment_status_history (payment_id, id)",
            # The CHECK on payments.refunded_amount is the last word: concurrent refunds
            # reserve their amount under the payment's row lock first.
            """
            CREATE TABLE refunds (
                id           text PRIMARY KEY,
                payment_id   text NOT NULL REFERENCES payments (id),
                amount       bigint NOT NULL CHECK (amount > 0),
                status       text NOT NULL CHECK (status IN ('processing', 'completed',
                    'failed')),
                failure_code text,
                transfer_id  text NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT now(),
                updated_at   timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX refunds_payment ON refunds (payment_id)",
            # account_ct, holder_ct and micro_ct are storage.pii sealed values.
            """
            CREATE TABLE bank_accounts (
                id              text PRIMARY KEY,
                owner_user_id   text,
                routing_number  char(9) NOT NULL,
                account_ct      bytea NOT NULL,
                account_last4   text NOT NULL,
                account_type    text NOT NULL CHECK (account_type IN ('checking', 'savings')),
                holder_type     text NOT NULL CHECK (holder_type IN ('individual', 'company')),
                holder_ct       bytea NOT NULL,
                status          text NOT NULL CHECK (status IN ('pending_verification',
                    'verified', 'verification_failed', 'closed')),
                micro_ct        bytea NOT NULL,
                verify_attempts integer NOT NULL DEFAULT 0,
                created_at      timestamptz NOT NULL DEFAULT now(),
                verified_at     timestamptz
            )
            """,
            "CREATE INDEX bank_accounts_owner ON bank_accounts (owner_user_id)",
            # One NACHA entry each. A payment has one; a verification has two micro-deposits.
            """
            CREATE TABLE ach_entries (
                id              bigserial PRIMARY KEY,
                payment_id      text REFERENCES payments (id),
                bank_account_id text NOT NULL REFERENCES bank_accounts (id),
                kind            text NOT NULL CHECK (kind IN ('credit', 'debit',
                    'microdeposit')),
                amount          bigint NOT NULL CHECK (amount > 0),
                same_day        boolean NOT NULL DEFAULT false,
                status          text NOT NULL CHECK (status IN ('pending', 'submitted',
                    'settled', 'returned')),
                trace_number    char(15) UNIQUE,
                file_id         text,
                effective_date  date,
                return_code     text,
                created_at      timestamptz NOT NULL DEFAULT now(),
                submitted_at    timestamptz,
                settled_at      timestamptz,
                returned_at     timestamptz
            )
            """,
            "CREATE INDEX ach_entries_pending ON ach_entries (id) WHERE status = 'pending'",
            "CREATE INDEX ach_entries_payment ON ach_entries (payment_id)",
            # content_ct: the file holds account numbers, so it is sealed like any PII.
            """
            CREATE TABLE ach_files (
                id             text PRIMARY KEY,
                direction      text NOT NULL CHECK (direction IN ('outbound', 'return')),
                content_ct     bytea NOT NULL,
                entries        integer NOT NULL,
                total_debit    bigint NOT NULL,
                total_credit   bigint NOT NULL,
                created_at     timestamptz NOT NULL DEFAULT now(),
                transmitted_at timestamptz
            )
            """,
        ),
    ),
    Migration(
        6,
        "risk and compliance: decisions on payments, one-time codes, reviews, audit log",
        (
            # requires_action: waiting for the payer's one-time code; in_review: held by a
            # sanctions match until an operator decides.
            "ALTER TABLE payments DROP CONSTRAINT payments_status_check",
            """
            ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
                'processing', 'completed', 'failed', 'pending', 'submitted', 'settled',
                'returned', 'requires_action', 'in_review'))
            """,
            # The risk decision is stored with the payment it was made for, once.
            """
            ALTER TABLE payments
                ADD COLUMN session_id   text,
                ADD COLUMN usage_amount bigint,  -- counted toward the payer's limits; NULL: not
                ADD COLUMN risk_score   integer,
                ADD COLUMN risk_level   text CHECK (risk_level IN ('LOW', 'HIGH')),
                ADD COLUMN risk_reasons text  -- JSON: [{"rule", "points", "detail"}]
            """,
            "CREATE INDEX payments_owner_payee ON payments (owner_user_id, credit_account_id)",
            "CREATE INDEX payments_session ON payments (session_id) WHERE session_id IS NOT NULL",
            # Each user's sends today and this month (UTC), kept in step with their payments:
            # the gate reads and bumps it in one statement, which also locks the row, so a
            # user's payments are decided one after the other and limits hold.
            """
            CREATE TABLE risk_usage (
                user_id      text PRIMARY KEY,
                day          date NOT NULL,
                day_count    integer NOT NULL CHECK (day_count >= 0),
                day_amount   bigint NOT NULL CHECK (day_amount >= 0),
                month        date NOT NULL,
                month_amount bigint NOT NULL CHECK (month_amount >= 0)
            )
            """,
            # Screening results, tied to the list they were made against (its digest):
            # NULL or another digest means "screen again".
            "ALTER TABLE users ADD COLUMN sanctions_hit boolean, ADD COLUMN sanctions_list text",
            """
            ALTER TABLE bank_accounts
                ADD COLUMN sanctions_hit boolean, ADD COLUMN sanctions_list text
            """,
            # One challenge per payment; `version` makes each check a compare-and-set so
            # concurrent guesses cannot share an attempt.
            """
            CREATE TABLE otp_challenges (
                payment_id text PRIMARY KEY REFERENCES payments (id),
                secret_ct  bytea NOT NULL,
                issued_at  double precision NOT NULL,
                attempts   integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                used       boolean NOT NULL DEFAULT false,
                version    integer NOT NULL DEFAULT 0
            )
            """,
            # matches: the listed entries (public list data), never the screened name.
            """
            CREATE TABLE reviews (
                id          text PRIMARY KEY,
                kind        text NOT NULL CHECK (kind IN ('payment', 'user', 'bank_account')),
                subject_id  text NOT NULL,
                user_id     text,
                status      text NOT NULL CHECK (status IN ('open', 'approved', 'rejected')),
                reason      text NOT NULL,
                matches     jsonb NOT NULL,
                created_at  timestamptz NOT NULL DEFAULT now(),
                decided_at  timestamptz,
                decided_by  text,
                note        text
            )
            """,
            "CREATE UNIQUE INDEX reviews_open ON reviews (kind, subject_id) WHERE status = 'open'",
            "CREATE INDEX reviews_status ON reviews (status, created_at)",
            # Hash-chained (storage/audit_chain.py). `at` is kept as the exact text that
            # was hashed. txid orders the export to DuckDB like the journal's.
            """
            CREATE TABLE audit_log (
                seq       bigint PRIMARY KEY CHECK (seq >= 1),
                at        text NOT NULL,
                actor     text NOT NULL,
                action    text NOT NULL,
                subject   text NOT NULL,
                source_ip text NOT NULL,
                before    jsonb,
                after     jsonb,
                prev_hash char(64) NOT NULL,
                hash      char(64) NOT NULL UNIQUE,
                txid      bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint
            )
            """,
            "CREATE INDEX audit_log_txid ON audit_log (txid, seq)",
            # What analytics exports (storage/analytics.py AUDIT): no source_ip, and of
            # before/after only their keys; id is seq padded so (txid, id) orders rows.
            # JSON null (not only SQL NULL) has no keys; COLLATE "C" sorts them as Python does.
            """
            CREATE VIEW audit AS
            SELECT txid, lpad(seq::text, 20, '0') AS id, seq, at, actor, action, subject,
                   CASE WHEN jsonb_typeof(before) = 'object' THEN coalesce((SELECT
                       string_agg(k, ',' ORDER BY k COLLATE "C")
                       FROM jsonb_object_keys(before) AS k), '') END AS before_keys,
                   CASE WHEN jsonb_typeof(after) = 'object' THEN coalesce((SELECT
                       string_agg(k, ',' ORDER BY k COLLATE "C")
                       FROM jsonb_object_keys(after) AS k), '') END AS after_keys,
                   prev_hash::text AS prev_hash, hash::text AS hash,
                   (extract(epoch FROM at::timestamptz) * 1000000000)::bigint AS ts
            FROM audit_log
            """,
            # Append-only for the application; the hash chain catches whoever bypasses this.
            """
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only';
            END $$
            """,
            """
            CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
                ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
            """,
        ),
    ),
    Migration(
        7,
        "reconciliation: candidates (seen once, not yet discrepancies), findings per run",
        (
            # What a run saw (findings), saw for the first time (candidates) and found gone
            # again at its second look (dropped); `found` stays "discrepancies opened".
            """
            ALTER TABLE reconciliation_runs
                ADD COLUMN findings   integer NOT NULL DEFAULT 0,
                ADD COLUMN candidates integer NOT NULL DEFAULT 0,
                ADD COLUMN dropped    integer NOT NULL DEFAULT 0
            """,
            # A difference seen once: it becomes a discrepancy only if the next run that
            # checks its object sees it again (domain/reconciliation.py). Kept here, not in
            # the reconciler's memory, so that a restart does not forget it.
            """
            CREATE TABLE reconciliation_candidates (
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
                first_seen_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (kind, object_type, object_id, sources)
            )
            """,
        ),
    ),
    Migration(
        8,
        "journal: ids compared as bytes (C collation); followers woken by NOTIFY on commit",
        (
            # Ids are [A-Za-z0-9._:~-]: a linguistic collation only makes every index probe
            # on them slower (strcoll instead of memcmp; measured: 13.5 vs 8.4 us of server
            # CPU per journal row written) and orders them unlike Python and DuckDB do.
            *(
                f'ALTER TABLE {table} ALTER COLUMN {column} TYPE text COLLATE "C"'
                for table, column in (
                    ("accounts", "id"),
                    ("transfers", "id"),
                    ("transfers", "debit_account_id"),
                    ("transfers", "credit_account_id"),
                    ("transfers", "pending_id"),
                )
            ),
            # The journal's commit-order index on txid alone: each group commit's rows share
            # one txid, so the index deduplicates them and an insert costs next to nothing
            # (measured: -1.2 us of server CPU per row against (txid, id)). Readers in
            # (txid, id) order get an incremental sort within each txid.
            "DROP INDEX transfers_txid",
            "CREATE INDEX transfers_txid ON transfers (txid)",
            # The writing transaction's id as every row's txid, without a text round trip
            # per row (pg_current_xact_id()::text::bigint; measured: 7.9 -> 5.8 us of
            # server CPU per journal row). Same value: the 64-bit, epoch-extended id.
            *(
                f"ALTER TABLE {table} ALTER COLUMN txid SET DEFAULT txid_current()"
                for table in ("accounts", "transfers", "events", "audit_log")
            ),
            # Every insert into a followed table announces its transaction on commit
            # (storage/journal_watch.py): followers sleep instead of polling.
            """
            CREATE FUNCTION paynode_announce() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('paynode_journal', pg_current_xact_id()::text);
                RETURN NULL;
            END $$
            """,
            *(
                f"CREATE TRIGGER {table}_announce AFTER INSERT ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION paynode_announce()"
                for table in ("accounts", "transfers", "events", "audit_log")
            ),
        ),
    ),
    Migration(
        9,
        "the journal is the outbox: ledger events derive from accounts and transfers",
        (
            # Before this, every account and journal row had an events row written with
            # it; from here on its event is derived from the row (storage/events.py).
            # The boundary: rows with a txid above it are derived, those at or below it
            # keep their events row (and its id). No writer may straddle it: the lock
            # waits for the writers in flight and holds new ones off until this commits
            # (readers go on). Then every txid already handed out is below the snapshot's
            # xmax, and a writer after us takes its txid when it first inserts (the
            # shards write only these tables), after the lock: at xmax or above.
            "LOCK TABLE accounts, transfers, events IN EXCLUSIVE MODE",
            """
            CREATE TABLE outbox_boundary (
                one  boolean PRIMARY KEY DEFAULT true CHECK (one),
                txid bigint NOT NULL
            )
            """,
            "INSERT INTO outbox_boundary (txid)"
            " VALUES (pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1)",
            # A node of the previous version still running would write a ledger events
            # row above the boundary (its event then listed twice): refused, so such a
            # node fails its commits instead. NOT VALID: the rows below the boundary stay.
            """
            ALTER TABLE events ADD CONSTRAINT events_not_ledger CHECK (type NOT IN (
                'account.created', 'transfer.posted', 'transfer.pending', 'transfer.voided',
                'transfer.expired')) NOT VALID
            """,
            # A delivery or push now names a derived event (evt_a_<account id>,
            # evt_t_<transfer id>) as well as an events row.
            "ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_id_fkey",
            "ALTER TABLE push_notifications DROP CONSTRAINT push_notifications_event_id_fkey",
            # The fan-out position is (txid, source, key) across the three sources
            # (domain/notify/outbox.py); a saved position was in events (source 2).
            "ALTER TABLE notifier_cursor RENAME COLUMN event_id TO key",
            "ALTER TABLE notifier_cursor ADD COLUMN source smallint NOT NULL DEFAULT 2"
            " CHECK (source BETWEEN 0 AND 3)",
            "ALTER TABLE notifier_cursor ALTER COLUMN source DROP DEFAULT",
            # The fan-out looks for subscribers started above its position on every
            # pass (actors/notifier.py): the recent ones, found by index.
            "CREATE INDEX webhook_endpoints_start ON webhook_endpoints (start_txid)"
            " WHERE enabled AND deleted_at IS NULL",
            "CREATE INDEX devices_start ON devices (start_txid) WHERE deleted_at IS NULL",
        ),
    ),
)


def applied_versions(conn: sa.Connection) -> set[int]:
    rows = conn.execute(sa.text("SELECT version FROM schema_migrations"))
    return {r[0] for r in rows}


def migrate(database_url: str, upto: int | None = None) -> list[int]:
    """Apply every migration not yet applied (up to version ``upto``: tests of an
    upgrade stop there); return the versions applied now."""
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
                if m.version in have or (upto is not None and m.version > upto):
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
