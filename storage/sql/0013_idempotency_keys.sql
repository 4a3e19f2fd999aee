-- idempotency: Idempotency-Key answers, kept 24 hours per credential
-- A POST carrying an Idempotency-Key runs once per (credential, key); a retry with the
-- same request gets the stored answer, another request under the key a 409
-- (api/idempotency.py). The answer is sealed like personal data (storage/pii.py): it
-- may hold a secret shown once (a new API key, a webhook signing secret).
CREATE TABLE idempotency_keys (
    owner        text COLLATE "C" NOT NULL,  -- the credential's principal: "<kind>:<id>"
    key          text COLLATE "C" NOT NULL,
    fingerprint  bytea NOT NULL,             -- SHA-256 of method, path, query and body
    state        text NOT NULL CHECK (state IN ('in_flight', 'done')),
    status       integer,
    content_type text,
    body_ct      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
