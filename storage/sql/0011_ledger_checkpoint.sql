-- journal: a checkpoint of the ledger at a transaction horizon, so a shard replays only the tail
-- Every journal row of a transaction below `below` is folded into checkpoint_balances
-- (per account: the four balance sums and the latest row stamp) and
-- checkpoint_pendings (the pendings still open as of the horizon). One row in
-- ledger_checkpoint names the horizon and the totals a reader checks the fold
-- against; storage/checkpoint.py advances all three in one transaction.
CREATE TABLE ledger_checkpoint (
    id            smallint PRIMARY KEY CHECK (id = 1),
    below         bigint NOT NULL,
    taken_at      timestamptz NOT NULL,
    accounts      bigint NOT NULL,
    pendings      bigint NOT NULL,
    sum_dp        numeric NOT NULL,
    sum_cp        numeric NOT NULL,
    sum_dpend     numeric NOT NULL,
    sum_cpend     numeric NOT NULL
);

CREATE TABLE checkpoint_balances (
    account_id  text COLLATE "C" PRIMARY KEY,
    dp          bigint NOT NULL,
    cp          bigint NOT NULL,
    dpend       bigint NOT NULL,
    cpend       bigint NOT NULL,
    last_ts     bigint NOT NULL
);

CREATE TABLE checkpoint_pendings (
    id                 text COLLATE "C" PRIMARY KEY,
    debit_account_id   text COLLATE "C" NOT NULL,
    credit_account_id  text COLLATE "C" NOT NULL
);
