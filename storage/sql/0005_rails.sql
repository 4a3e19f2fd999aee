-- rails: handles, payments with their status history, refunds, bank accounts, ACH

-- A handle is unique among live ones; a released handle may be taken again.
CREATE TABLE handles (
    handle        text NOT NULL,
    account_id    text NOT NULL REFERENCES accounts (id),
    owner_user_id text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    released_at   timestamptz
);

CREATE UNIQUE INDEX handles_live ON handles (handle) WHERE released_at IS NULL;

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
);

CREATE INDEX payments_owner ON payments (owner_user_id, created_at);

CREATE TABLE payment_status_history (
    id         bigserial PRIMARY KEY,
    payment_id text NOT NULL REFERENCES payments (id),
    status     text NOT NULL,
    reason     text,
    at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_history_payment ON payment_status_history (payment_id, id);

-- The CHECK on payments.refunded_amount is the last word: concurrent refunds
-- reserve their amount under the payment's row lock first.
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
);

CREATE INDEX refunds_payment ON refunds (payment_id);

-- account_ct, holder_ct and micro_ct are storage.pii sealed values.
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
);

CREATE INDEX bank_accounts_owner ON bank_accounts (owner_user_id);

-- One NACHA entry each. A payment has one; a verification has two micro-deposits.
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
);

CREATE INDEX ach_entries_pending ON ach_entries (id) WHERE status = 'pending';

CREATE INDEX ach_entries_payment ON ach_entries (payment_id);

-- content_ct: the file holds account numbers, so it is sealed like any PII.
CREATE TABLE ach_files (
    id             text PRIMARY KEY,
    direction      text NOT NULL CHECK (direction IN ('outbound', 'return')),
    content_ct     bytea NOT NULL,
    entries        integer NOT NULL,
    total_debit    bigint NOT NULL,
    total_credit   bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    transmitted_at timestamptz
);
