-- analytics and reconciliation: commit order (txid) on the journal, runs, discrepancies

-- The writing transaction's id: rows with txid below the oldest running
-- transaction are all committed, so a reader can follow the journal in
-- (txid, id) order without gaps (storage/analytics.py). Existing rows get
-- this migration's id.
ALTER TABLE transfers ADD COLUMN txid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;

CREATE INDEX transfers_txid ON transfers (txid, id);

ALTER TABLE accounts ADD COLUMN txid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;

CREATE INDEX accounts_txid ON accounts (txid, id);

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
);

-- One open row per (kind, object): seen again, it is updated, not repeated.
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
);

CREATE UNIQUE INDEX discrepancies_one_open ON discrepancies (kind, object_type, object_id, sources) WHERE resolved_at IS NULL;
