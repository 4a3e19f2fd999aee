-- billing: products, prices, subscriptions, invoices, test clocks (domain/billing)
-- A subscription row keeps the domain Subscription as JSON (state) plus the columns
-- the scheduler and the lists query. Exactly once: invoice ids are derived
-- (in_<sub>_<n>), each collection attempt is ledger transfer bill:<invoice>:<attempt>,
-- and collecting names the invoice whose attempt was moved but not yet recorded.
CREATE TABLE billing_products (
    id            text COLLATE "C" PRIMARY KEY,
    owner_user_id text NOT NULL,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_products_owner ON billing_products (owner_user_id, id);

CREATE TABLE billing_prices (
    id                text COLLATE "C" PRIMARY KEY,
    owner_user_id     text NOT NULL,
    product_id        text NOT NULL REFERENCES billing_products (id),
    amount            bigint NOT NULL CHECK (amount BETWEEN 0 AND 99999999),
    currency          char(3) NOT NULL,
    interval          text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
    interval_count    integer NOT NULL CHECK (interval_count BETWEEN 1 AND 365),
    payout_account_id text NOT NULL,  -- the merchant's wallet account credited
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_prices_owner ON billing_prices (owner_user_id, id);

CREATE TABLE billing_test_clocks (
    id            text COLLATE "C" PRIMARY KEY,
    owner_user_id text NOT NULL,
    now           timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing_subscriptions (
    id                   text COLLATE "C" PRIMARY KEY,
    customer_user_id     text NOT NULL,
    merchant_user_id     text NOT NULL,
    price_id             text NOT NULL REFERENCES billing_prices (id),
    source_kind          text NOT NULL CHECK (source_kind IN ('wallet')),
    source_account_id    text NOT NULL,  -- the customer's wallet account debited
    merchant_account_id  text NOT NULL,
    status               text NOT NULL CHECK (status IN ('trialing', 'active', 'past_due',
        'paused', 'canceled', 'incomplete')),
    test_clock_id        text REFERENCES billing_test_clocks (id),
    anchor               timestamptz NOT NULL,
    current_period       integer NOT NULL,
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    trial_end            timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    paused_at            timestamptz,
    dunning              text,  -- the domain Dunning as JSON while an invoice is retried
    state                text NOT NULL,  -- the domain Subscription as JSON
    next_due_at          timestamptz,  -- the next timed event (clocks.next_due); NULL: none
    collecting           text,  -- an invoice whose attempt is moved, not yet recorded
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_subscriptions_due ON billing_subscriptions (next_due_at)
    WHERE next_due_at IS NOT NULL OR collecting IS NOT NULL;
CREATE INDEX billing_subscriptions_customer ON billing_subscriptions (customer_user_id, id);
CREATE INDEX billing_subscriptions_merchant ON billing_subscriptions (merchant_user_id, id);
CREATE INDEX billing_subscriptions_clock ON billing_subscriptions (test_clock_id)
    WHERE test_clock_id IS NOT NULL;

-- Each customer's invoice numbers: PREFIX-0001, PREFIX-0002, ...
CREATE TABLE billing_customers (
    user_id  text COLLATE "C" PRIMARY KEY,
    prefix   text NOT NULL,
    last_seq integer NOT NULL DEFAULT 0
);

CREATE TABLE billing_invoices (
    id                  text COLLATE "C" PRIMARY KEY,
    number              text NOT NULL UNIQUE,
    subscription_id     text NOT NULL REFERENCES billing_subscriptions (id),
    customer_user_id    text NOT NULL,
    merchant_user_id    text NOT NULL,
    period_index        integer,
    currency            char(3) NOT NULL,
    lines               text NOT NULL,  -- the domain Lines as JSON (at most 100)
    total               bigint NOT NULL,
    amount_due          bigint NOT NULL CHECK (amount_due >= 0),
    credit              bigint NOT NULL CHECK (credit >= 0),
    status              text NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void',
        'uncollectible')),
    attempts            integer NOT NULL DEFAULT 0,  -- collection attempts recorded
    in_flight           integer,  -- the attempt moved and not yet recorded
    due_at              timestamptz NOT NULL,  -- when the attempt in flight was due
    last_code           text,  -- the last refusal's code
    paid_by             text,  -- the transfer that paid it
    token_hash          bytea UNIQUE,  -- sha256 of the hosted page's token
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_invoices_customer ON billing_invoices (customer_user_id, id);
CREATE INDEX billing_invoices_merchant ON billing_invoices (merchant_user_id, id);
CREATE INDEX billing_invoices_subscription ON billing_invoices (subscription_id, id);
