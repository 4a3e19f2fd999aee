-- rails: card payments through a processor (domain/rails/card_rules.py). Card numbers
-- never reach the node: a client sends the processor's token, the node keeps what the
-- processor tells about the card (brand, last 4, expiry) and its payment-method reference.
ALTER TABLE payments DROP CONSTRAINT payments_rail_check;
ALTER TABLE payments ADD CONSTRAINT payments_rail_check
    CHECK (rail IN ('wallet', 'ach', 'rtp', 'card'));
-- The card a card payment charges (payment_methods.id)
ALTER TABLE payments ADD COLUMN payment_method_id text;

-- A user's stored cards. Detached cards stay (payments name them) but are no longer
-- listed or chargeable.
CREATE TABLE payment_methods (
    id              text PRIMARY KEY,
    owner_user_id   text NOT NULL,
    type            text NOT NULL CHECK (type = 'card'),
    processor       text NOT NULL,
    processor_ref   text NOT NULL,
    brand           text NOT NULL,
    last4           char(4) NOT NULL,
    exp_month       smallint NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year        smallint NOT NULL CHECK (exp_year BETWEEN 2000 AND 2200),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'detached')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    detached_at     timestamptz
);
CREATE INDEX payment_methods_owner ON payment_methods (owner_user_id, id)
    WHERE status = 'active';

-- One default payment method per user: a card (payment_methods.id) or a verified bank
-- account (bank_accounts.id).
CREATE TABLE payment_method_defaults (
    owner_user_id     text PRIMARY KEY,
    payment_method_id text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One per card payment: the processor's side of it. 'authorizing' until the processor
-- answers; requires_action (3-D Secure) -> authorized -> captured, or declined / voided.
CREATE TABLE card_charges (
    payment_id      text PRIMARY KEY REFERENCES payments (id),
    charge_ref      text NOT NULL UNIQUE,
    status          text NOT NULL CHECK (status IN ('authorizing', 'requires_action',
                        'authorized', 'captured', 'declined', 'voided')),
    decline_code    text,
    authorization_code text,
    fee             bigint NOT NULL DEFAULT 0 CHECK (fee >= 0),
    receipt_number  text UNIQUE,
    settlement_id   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Receipt numbers: a sequence, so two fronts never hand out the same one.
CREATE SEQUENCE card_receipt_seq;

-- Card refunds handed to the processor (refunds.id), so a crash between the ledger's
-- reversal and the processor's refund is finished by a retry with the same id.
CREATE TABLE card_refunds (
    refund_id     text PRIMARY KEY,
    payment_id    text NOT NULL REFERENCES payments (id),
    amount        bigint NOT NULL CHECK (amount > 0),
    processor_ref text,
    settlement_id text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The processor's asynchronous events about charges (disputes, ...), as received.
CREATE TABLE card_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    payment_id  text,
    data        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Settlement batches from the processor and what reconciling them found.
CREATE TABLE card_settlements (
    id            text PRIMARY KEY,
    gross         bigint NOT NULL,
    refunds       bigint NOT NULL,
    fees          bigint NOT NULL,
    net           bigint NOT NULL,
    expected_gross   bigint NOT NULL,
    expected_refunds bigint NOT NULL,
    expected_fees    bigint NOT NULL,
    lines         integer NOT NULL,
    differences   jsonb NOT NULL,
    status        text NOT NULL CHECK (status IN ('matched', 'mismatched')),
    received_at   timestamptz NOT NULL DEFAULT now()
);
