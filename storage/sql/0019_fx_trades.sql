-- fx: completed conversions, append-only, for analytics (FX volume and P&L per pair)
-- Written in the transaction that marks a conversion completed, so analytics (which
-- follows tables in (txid, id) order) sees each trade once and final. pnl is what the
-- spread kept, in minor units of the bought currency: the amount the mid rate would
-- have bought less the amount the customer got.
CREATE TABLE fx_trades (
    id            text COLLATE "C" PRIMARY KEY,  -- the conversion's id
    sell_currency char(3) NOT NULL,
    buy_currency  char(3) NOT NULL,
    sell_amount   bigint NOT NULL,
    buy_amount    bigint NOT NULL,
    mid_e9        bigint NOT NULL,
    rate_e9       bigint NOT NULL,
    pnl           bigint NOT NULL,
    ts            bigint NOT NULL,  -- unix nanoseconds
    txid          bigint NOT NULL DEFAULT txid_current()
);
CREATE INDEX fx_trades_txid ON fx_trades (txid, id);
