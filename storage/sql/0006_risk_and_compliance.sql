-- risk and compliance: decisions on payments, one-time codes, reviews, audit log

-- requires_action: waiting for the payer's one-time code; in_review: held by a
-- sanctions match until an operator decides.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;

ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'processing', 'completed', 'failed', 'pending', 'submitted', 'settled',
    'returned', 'requires_action', 'in_review'));

-- The risk decision is stored with the payment it was made for, once.
ALTER TABLE payments
    ADD COLUMN session_id   text,
    ADD COLUMN usage_amount bigint,  -- counted toward the payer's limits; NULL: not
    ADD COLUMN risk_score   integer,
    ADD COLUMN risk_level   text CHECK (risk_level IN ('LOW', 'HIGH')),
    ADD COLUMN risk_reasons text;  -- JSON: [{"rule", "points", "detail"}]

CREATE INDEX payments_owner_payee ON payments (owner_user_id, credit_account_id);

CREATE INDEX payments_session ON payments (session_id) WHERE session_id IS NOT NULL;

-- Each user's sends today and this month (UTC), kept in step with their payments:
-- the gate reads and bumps it in one statement, which also locks the row, so a
-- user's payments are decided one after the other and limits hold.
CREATE TABLE risk_usage (
    user_id      text PRIMARY KEY,
    day          date NOT NULL,
    day_count    integer NOT NULL CHECK (day_count >= 0),
    day_amount   bigint NOT NULL CHECK (day_amount >= 0),
    month        date NOT NULL,
    month_amount bigint NOT NULL CHECK (month_amount >= 0)
);

-- Screening results, tied to the list they were made against (its digest):
-- NULL or another digest means "screen again".
ALTER TABLE users ADD COLUMN sanctions_hit boolean, ADD COLUMN sanctions_list text;

ALTER TABLE bank_accounts
    ADD COLUMN sanctions_hit boolean, ADD COLUMN sanctions_list text;

-- One challenge per payment; `version` makes each check a compare-and-set so
-- concurrent guesses cannot share an attempt.
CREATE TABLE otp_challenges (
    payment_id text PRIMARY KEY REFERENCES payments (id),
    secret_ct  bytea NOT NULL,
    issued_at  double precision NOT NULL,
    attempts   integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    used       boolean NOT NULL DEFAULT false,
    version    integer NOT NULL DEFAULT 0
);

-- matches: the listed entries (public list data), never the screened name.
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
);

CREATE UNIQUE INDEX reviews_open ON reviews (kind, subject_id) WHERE status = 'open';

CREATE INDEX reviews_status ON reviews (status, created_at);

-- Hash-chained (storage/audit_chain.py). `at` is kept as the exact text that
-- was hashed. txid orders the export to DuckDB like the journal's.
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
);

CREATE INDEX audit_log_txid ON audit_log (txid, seq);

-- What analytics exports (storage/analytics.py AUDIT): no source_ip, and of
-- before/after only their keys; id is seq padded so (txid, id) orders rows.
-- JSON null (not only SQL NULL) has no keys; COLLATE "C" sorts them as Python does.
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
FROM audit_log;

-- Append-only for the application; the hash chain catches whoever bypasses this.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
