-- rails: which rail moved each transfer the rails made, for analytics
-- The journal holds ledger rows only; a payment, refund, ACH return or micro-deposit
-- registers its transfer ids here in the transaction that reserves them, before any
-- reaches a shard. Analytics labels a journal row by its own id here, else by its
-- pending's (a post, void or expiry of a rail's hold), else 'ledger'. Exported in
-- (txid, id) order like the journal.
CREATE TABLE transfer_rails (
    id         text COLLATE "C" PRIMARY KEY,
    rail       text NOT NULL,
    payment_id text,
    txid       bigint NOT NULL DEFAULT txid_current(),
    -- unix nanoseconds of the registration (analytics measures its lag by it)
    ts         bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000000000)::bigint
);
CREATE INDEX transfer_rails_txid ON transfer_rails (txid, id);

-- What the rails made before this migration: payments' transfers, ACH returns, refunds,
-- and micro-deposits (their ids: "micro:<bank account>:<1|2>").
INSERT INTO transfer_rails (id, rail, payment_id)
SELECT transfer_id, rail, id FROM payments WHERE transfer_id IS NOT NULL
UNION ALL
SELECT 'ach-return:' || id, rail, id FROM payments WHERE rail = 'ach'
UNION ALL
SELECT r.transfer_id, p.rail, p.id FROM refunds r JOIN payments p ON p.id = r.payment_id
UNION ALL
SELECT 'micro:' || b.id || ':' || n, 'ach', NULL FROM bank_accounts b, generate_series(1, 2) n
ON CONFLICT (id) DO NOTHING;
