-- the journal is the outbox: ledger events derive from accounts and transfers

-- Before this, every account and journal row had an events row written with
-- it; from here on its event is derived from the row (storage/events.py).
-- The boundary: rows with a txid above it are derived, those at or below it
-- keep their events row (and its id). No writer may straddle it: the lock
-- waits for the writers in flight and holds new ones off until this commits
-- (readers go on). Then every txid already handed out is below the snapshot's
-- xmax, and a writer after us takes its txid when it first inserts (the
-- shards write only these tables), after the lock: at xmax or above.
LOCK TABLE accounts, transfers, events IN EXCLUSIVE MODE;

CREATE TABLE outbox_boundary (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    txid bigint NOT NULL
);

INSERT INTO outbox_boundary (txid) VALUES (pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1);

-- A node of the previous version still running would write a ledger events
-- row above the boundary (its event then listed twice): refused, so such a
-- node fails its commits instead. NOT VALID: the rows below the boundary stay.
ALTER TABLE events ADD CONSTRAINT events_not_ledger CHECK (type NOT IN (
    'account.created', 'transfer.posted', 'transfer.pending', 'transfer.voided',
    'transfer.expired')) NOT VALID;

-- A delivery or push now names a derived event (evt_a_<account id>,
-- evt_t_<transfer id>) as well as an events row.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_id_fkey;

ALTER TABLE push_notifications DROP CONSTRAINT push_notifications_event_id_fkey;

-- The fan-out position is (txid, source, key) across the three sources
-- (domain/notify/outbox.py); a saved position was in events (source 2).
ALTER TABLE notifier_cursor RENAME COLUMN event_id TO key;

ALTER TABLE notifier_cursor ADD COLUMN source smallint NOT NULL DEFAULT 2 CHECK (source BETWEEN 0 AND 3);

ALTER TABLE notifier_cursor ALTER COLUMN source DROP DEFAULT;

-- The fan-out looks for subscribers started above its position on every
-- pass (actors/notifier.py): the recent ones, found by index.
CREATE INDEX webhook_endpoints_start ON webhook_endpoints (start_txid) WHERE enabled AND deleted_at IS NULL;

CREATE INDEX devices_start ON devices (start_txid) WHERE deleted_at IS NULL;
