-- identity: account owners, users with sealed PII, sessions, API keys, KYC trail

ALTER TABLE accounts ADD COLUMN owner_user_id text;

CREATE INDEX accounts_owner ON accounts (owner_user_id) WHERE owner_user_id IS NOT NULL;

-- *_ct columns hold storage.pii sealed values; email_index is its blind index.
CREATE TABLE users (
    id            text PRIMARY KEY,
    email_index   bytea NOT NULL UNIQUE,
    email_ct      bytea NOT NULL,
    password_hash text,
    name_ct       bytea,
    phone_ct      bytea,
    birth_date_ct bytea,
    address_ct    bytea,
    kyc_status    text NOT NULL DEFAULT 'unverified'
        CHECK (kyc_status IN ('unverified', 'pending', 'verified', 'rejected')),
    kyc_id_type   text,
    kyc_id_ct     bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A session is one login: the family of its rotating refresh tokens.
CREATE TABLE sessions (
    id             text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);

CREATE TABLE refresh_tokens (
    id          text PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id),
    secret_hash bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    secret_hash   bytea NOT NULL,
    name          text NOT NULL,
    scopes        text[] NOT NULL,
    owner_user_id text REFERENCES users (id),
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE INDEX api_keys_owner ON api_keys (owner_user_id);

CREATE TABLE kyc_events (
    id          bigserial PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id),
    from_status text NOT NULL,
    to_status   text NOT NULL,
    actor       text NOT NULL,
    reason      text,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX kyc_events_user ON kyc_events (user_id, id);
