-- rails: RTP instant payments (pacs.008 answered by pacs.002) and requests for payment
-- (pain.013, answered by pain.014). An RTP payment is final once accepted: it has no
-- 'returned' status to reach (domain/rails/rtp_rules.py).
ALTER TABLE payments DROP CONSTRAINT payments_rail_check;
ALTER TABLE payments ADD CONSTRAINT payments_rail_check CHECK (rail IN ('wallet', 'ach', 'rtp'));
-- What the payer paid on top of the amount (RTP's fee rule); 0 for the other rails
ALTER TABLE payments ADD COLUMN fee bigint NOT NULL DEFAULT 0 CHECK (fee >= 0);

-- One per RTP payment: its message ids and the network's answer. 'sending' until a
-- pacs.002 arrives; the fronts ask the network again about one unanswered past
-- rtp.timeout_ms (claimed by moving sent_at, so two fronts never ask at once).
CREATE TABLE rtp_transfers (
    payment_id      text PRIMARY KEY REFERENCES payments (id),
    end_to_end_id   text NOT NULL UNIQUE,
    message_id      text NOT NULL,
    -- where the credit goes: the payer's bank account, or a request for payment's creditor
    bank_account_id text,
    request_id      text,
    status          text NOT NULL CHECK (status IN ('sending', 'accepted', 'rejected')),
    reason          text,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    answered_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((bank_account_id IS NULL) <> (request_id IS NULL))
);

CREATE INDEX rtp_transfers_unanswered ON rtp_transfers (sent_at) WHERE status = 'sending';

-- Requests for payment a creditor sent to one of our users (pain.013). The creditor's
-- name and account number are sealed like a bank account's (storage/pii.py); the payer
-- sees the name and the account's last 4 digits.
CREATE TABLE rtp_requests (
    id                text PRIMARY KEY,
    end_to_end_id     text NOT NULL UNIQUE,
    message_id        text NOT NULL,
    owner_user_id     text NOT NULL,
    account_id        text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL,
    creditor_name_ct  bytea NOT NULL,
    creditor_routing  text NOT NULL,
    creditor_account_ct bytea NOT NULL,
    creditor_last4    text NOT NULL,
    remittance        text NOT NULL DEFAULT '',
    expires_at        timestamptz NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'accepted', 'declined',
                                                      'expired')),
    -- No foreign key: an accept names its payment before the payment's row exists (the
    -- request's row lock orders two accepts; api/payment_service.pay_request).
    payment_id        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX rtp_requests_owner ON rtp_requests (owner_user_id, id);
