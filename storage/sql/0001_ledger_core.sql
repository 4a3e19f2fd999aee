-- ledger core: accounts and the transfer journal

CREATE TABLE accounts (
    id         text PRIMARY KEY,
    currency   char(3) NOT NULL,
    flags      integer NOT NULL CHECK (flags >= 0),
    metadata   json NOT NULL,
    shard_key  bigint NOT NULL CHECK (shard_key >= 0),
    ts         bigint NOT NULL
);

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
);

CREATE INDEX transfers_debit_ts ON transfers (debit_account_id, ts);

CREATE INDEX transfers_credit_ts ON transfers (credit_account_id, ts);

-- At most one resolution (post, void or expiry) per pending transfer.
CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id) WHERE pending_id IS NOT NULL;
