-- journal: the rows resolving a pending indexed, for shards that no longer remember it
-- A shard keeps a bounded window of recent transfers in memory (domain/ledger/window.py);
-- a post or void of a pending outside it asks the journal how that pending was resolved.
CREATE INDEX transfers_pending_id ON transfers (pending_id) WHERE pending_id IS NOT NULL;
