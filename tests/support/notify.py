"""Settings and SQL the notification tests share."""

# Webhook deliveries and retries in milliseconds, to loopback receivers.
FAST = {
    "webhook_allow_private": True,
    "webhook_backoff_base_s": 0.05,
    "webhook_backoff_cap_s": 0.2,
    "notify_interval_ms": 20,
    "webhook_timeout_s": 2.0,
}


# The outbox as a reader must see it, written out independently of storage/outbox.py:
# ledger events derived from the journal's rows, other events from their table, in
# (txid, source, key) order.
OUTBOX_SQL = """
SELECT id, type, subject FROM (
    SELECT txid, 0 AS source, id AS key, 'evt_a_' || id AS id, 'account.created' AS type,
           id AS subject FROM accounts
    UNION ALL
    SELECT txid, 1, id, 'evt_t_' || id, 'transfer.' || status, id FROM transfers
    UNION ALL
    SELECT txid, 2, id, id, type, subject_id FROM events
) o WHERE subject LIKE %s ORDER BY txid, source, key
"""
