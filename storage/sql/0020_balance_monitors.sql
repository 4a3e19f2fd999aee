-- monitors: a condition on an account's balance; its shard emits one event per change
-- crossed is NULL until the owning shard first evaluates it (silently); seq counts the
-- changes, and a writer changes a monitor only from the seq it read, so a change is
-- recorded (with its event) once even when a shard that restarted finds it again.
CREATE TABLE balance_monitors (
    id            text COLLATE "C" PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts (id),
    owner_user_id text,
    condition     text NOT NULL CHECK (condition IN ('balance_below', 'balance_at_least',
        'available_below', 'available_at_least')),
    threshold     bigint NOT NULL,
    crossed       boolean,
    seq           integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX balance_monitors_account ON balance_monitors (account_id) WHERE deleted_at IS NULL;
CREATE INDEX balance_monitors_owner ON balance_monitors (owner_user_id, id);
