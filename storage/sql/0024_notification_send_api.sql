-- notifications sent through the API: one message per channel, every attempt, users' preferences

-- A notification as asked for. The id is the caller's (a retried POST finds it)
-- or the node's. type is what users opt out of (the template name by default).
CREATE TABLE notifications (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    user_id     text NOT NULL REFERENCES users (id),
    template    text NOT NULL CHECK (length(template) BETWEEN 1 AND 64),
    type        text NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
    data        jsonb NOT NULL CHECK (octet_length(data::text) <= 16384),
    urgent      boolean NOT NULL DEFAULT false,
    channels    text[] NOT NULL CHECK (cardinality(channels) BETWEEN 1 AND 3),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notifications_user ON notifications (user_id, created_at);

-- One per notification and channel. The delivery loop claims due pending ones
-- (status, next_attempt_at) with FOR UPDATE SKIP LOCKED; suppressed ones say why.
CREATE TABLE notification_messages (
    id              bigserial PRIMARY KEY,
    notification_id text NOT NULL REFERENCES notifications (id),
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'dead', 'suppressed')),
    reason          text,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    replays         integer NOT NULL DEFAULT 0 CHECK (replays >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    provider_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (notification_id, channel)
);

CREATE INDEX notification_messages_due ON notification_messages (next_attempt_at)
    WHERE status = 'pending';

-- Every send, whatever its outcome; detail is the provider's status, never an
-- address or the content.
CREATE TABLE notification_attempts (
    id          bigserial PRIMARY KEY,
    message_id  bigint NOT NULL REFERENCES notification_messages (id),
    attempt     integer NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed', 'error')),
    detail      text NOT NULL DEFAULT '' CHECK (length(detail) <= 500),
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notification_attempts_message ON notification_attempts (message_id, id);

-- A user's preferences as domain/notify/preferences.Preferences encodes them
-- (channels in order, opt-outs per type, quiet hours, locale); no row = defaults.
CREATE TABLE notification_preferences (
    user_id    text PRIMARY KEY REFERENCES users (id),
    prefs      jsonb NOT NULL CHECK (octet_length(prefs::text) <= 16384),
    updated_at timestamptz NOT NULL DEFAULT now()
);
