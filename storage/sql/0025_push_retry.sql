-- push retries: when a pending push may be tried again (after a provider's 429/5xx)
-- now() is evaluated once here: existing rows are due at once, and the column is added
-- without rewriting the table.
ALTER TABLE push_notifications ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();
