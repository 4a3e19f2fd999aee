-- fx: mid rates, quotes with a short life, and conversions that execute them
-- Rates are exact integers (rate_e9: quote-currency units per base unit, times 10^9).
-- A quote is used by at most one conversion (used_by); a conversion moves money as two
-- linked transfers "fx:<id>:sell" and "fx:<id>:buy" through the node's per-currency FX
-- accounts (fx-<currency>), all or nothing.
CREATE TABLE fx_rates (
    base       char(3) NOT NULL,
    quote      char(3) NOT NULL,
    rate_e9    bigint NOT NULL CHECK (rate_e9 > 0),
    as_of      timestamptz NOT NULL,
    source     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base, quote),
    CHECK (base <> quote)
);

CREATE TABLE fx_quotes (
    id            text COLLATE "C" PRIMARY KEY,
    owner_user_id text,
    sell_currency char(3) NOT NULL,
    buy_currency  char(3) NOT NULL,
    sell_amount   bigint NOT NULL CHECK (sell_amount > 0),
    buy_amount    bigint NOT NULL CHECK (buy_amount > 0),
    mid_e9        bigint NOT NULL,
    rate_e9       bigint NOT NULL,
    rate_as_of    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    used_by       text
);

CREATE TABLE fx_conversions (
    id                text COLLATE "C" PRIMARY KEY,
    quote_id          text NOT NULL UNIQUE REFERENCES fx_quotes (id),
    owner_user_id     text,
    debit_account_id  text NOT NULL,
    credit_account_id text NOT NULL,
    status            text NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    failure_code      text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
