-- notifications: event outbox, webhook endpoints and deliveries, devices, inbound webhooks

-- The outbox. Written in the same transaction as the change it reports
-- (storage/journal.py), read in (txid, id) order below pg_snapshot_xmin
-- so a reader never skips an event that commits late.
CREATE TABLE events (
    id            text PRIMARY KEY,
    type          text NOT NULL,
    subject_id    text NOT NULL,
    owner_user_id text,
    debit_account_id  text,
    credit_account_id text,
    data          json,
    created       bigint NOT NULL,
    txid          bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint
);

CREATE INDEX events_txid ON events (txid, id);

-- Who an event concerns, without a join: the owner (accounts, payments)
-- or the two accounts (transfers). The notifier filters on these.
-- secret_ct (and previous_secret_ct during a rotation) are storage.pii
-- sealed values: the node must sign with them, so they are not hashes.
CREATE TABLE webhook_endpoints (
    id                  text PRIMARY KEY,
    owner_user_id       text REFERENCES users (id),
    url                 text NOT NULL,
    events              text[] NOT NULL,
    secret_ct           bytea NOT NULL,
    previous_secret_ct  bytea,
    previous_expires_at timestamptz,
    max_in_flight       integer NOT NULL DEFAULT 1
        CHECK (max_in_flight BETWEEN 1 AND 16),
    enabled             boolean NOT NULL DEFAULT true,
    start_txid          bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);

CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_user_id);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints (id),
    event_id        text NOT NULL REFERENCES events (id),
    order_keys      text[] NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (endpoint_id, event_id)
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, id) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id),
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error       text,
    duration_ms integer NOT NULL
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- Where the notifier's fan-out stands in the outbox.
CREATE TABLE notifier_cursor (
    name     text PRIMARY KEY,
    txid     bigint NOT NULL,
    event_id text NOT NULL
);

-- token_index is a blind index: one row per physical device token.
CREATE TABLE devices (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id),
    platform    text NOT NULL CHECK (platform IN ('apns', 'fcm')),
    token_ct    bytea NOT NULL,
    token_index bytea NOT NULL,
    events      text[] NOT NULL,
    start_txid  bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

CREATE UNIQUE INDEX devices_one_token ON devices (token_index) WHERE deleted_at IS NULL;

CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE push_notifications (
    id         bigserial PRIMARY KEY,
    device_id  text NOT NULL REFERENCES devices (id),
    event_id   text NOT NULL REFERENCES events (id),
    status     text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts   integer NOT NULL DEFAULT 0,
    result     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    UNIQUE (device_id, event_id)
);

CREATE INDEX push_notifications_pending ON push_notifications (id) WHERE status = 'pending';

-- Every inbound webhook, accepted or refused (with why). The payload is
-- sealed: a bank's event may name people.
CREATE TABLE inbound_webhooks (
    id          bigserial PRIMARY KEY,
    provider    text NOT NULL,
    event_id    text,
    event_type  text,
    signed_at   bigint,
    received_at timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL CHECK (status IN ('accepted', 'refused')),
    reason      text,
    payload_ct  bytea,
    handled_at  timestamptz,
    handler     text
);

CREATE UNIQUE INDEX inbound_webhooks_once ON inbound_webhooks (provider, event_id) WHERE status = 'accepted';
