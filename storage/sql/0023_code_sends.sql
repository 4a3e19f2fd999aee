-- Step-up codes sent wherever the user is (actors/notify/codes.py), and SMS delivery
-- status reported by the provider's callbacks (api/code_routes.py).

-- One row per send of a challenge's code: seq 0 is the first (written with the
-- challenge), 1.. the payer's resends. The code itself is never stored: the sender
-- derives it from the sealed challenge secret when it sends.
CREATE TABLE otp_sends (
    id          bigserial PRIMARY KEY,
    payment_id  text NOT NULL REFERENCES otp_challenges (payment_id),
    seq         integer NOT NULL CHECK (seq >= 0),
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    channel     text CHECK (channel IN ('push', 'sms', 'email')),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_at      timestamptz NOT NULL DEFAULT now(),
    -- channels tried and their answers ("sms:http_400 21211; email:250 accepted"),
    -- never an address or the code
    result      text NOT NULL DEFAULT '',
    provider_id text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (payment_id, seq)
);

CREATE INDEX otp_sends_pending ON otp_sends (due_at) WHERE status = 'pending';
CREATE INDEX otp_sends_provider ON otp_sends (provider_id) WHERE provider_id IS NOT NULL;

-- The last status the SMS provider reported for a message it accepted (by its sid).
CREATE TABLE sms_status (
    provider_id text PRIMARY KEY,
    status      text NOT NULL,
    error_code  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
