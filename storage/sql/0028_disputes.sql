-- cards: disputes (chargebacks) of captured charges, from the processor's events.
-- The hold moves the disputed amount out of the credited wallet until the issuer decides
-- (domain/rails/disputes.py). Evidence is sealed (storage/pii.py): it may name people.
CREATE TABLE disputes (
    id            text PRIMARY KEY,            -- the processor's
    payment_id    text NOT NULL REFERENCES payments (id),
    owner_user_id text,                        -- the credited wallet's owner (the merchant)
    account_id    text NOT NULL,               -- the credited wallet
    amount        bigint NOT NULL CHECK (amount > 0),
    currency      char(3) NOT NULL,
    reason        text NOT NULL,
    status        text NOT NULL CHECK (status IN ('needs_response', 'under_review', 'won',
                                                  'lost')),
    held          boolean NOT NULL,             -- the wallet covered the hold
    unrecovered   bigint NOT NULL DEFAULT 0 CHECK (unrecovered >= 0),
    evidence_ct   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    closed_at     timestamptz
);

CREATE INDEX disputes_owner ON disputes (owner_user_id, id);
CREATE INDEX disputes_payment ON disputes (payment_id);
