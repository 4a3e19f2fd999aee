-- reconciliation: candidates (seen once, not yet discrepancies), findings per run

-- What a run saw (findings), saw for the first time (candidates) and found gone
-- again at its second look (dropped); `found` stays "discrepancies opened".
ALTER TABLE reconciliation_runs
    ADD COLUMN findings   integer NOT NULL DEFAULT 0,
    ADD COLUMN candidates integer NOT NULL DEFAULT 0,
    ADD COLUMN dropped    integer NOT NULL DEFAULT 0;

-- A difference seen once: it becomes a discrepancy only if the next run that
-- checks its object sees it again (domain/reconciliation.py). Kept here, not in
-- the reconciler's memory, so that a restart does not forget it.
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
);
