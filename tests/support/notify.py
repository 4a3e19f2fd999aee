"""Settings, SQL and push-sink readers the notification tests share."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from tests.support.node import RunningNode

APNS_URL = re.compile(r"https://api\.push\.apple\.com/3/device/(sha256:[0-9a-f]{16})")

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


def fingerprint(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def sink_path(node: RunningNode) -> Path:
    return Path(node.settings.data_dir) / "push-sink.jsonl"


def sink(node: RunningNode) -> list[dict]:
    path = sink_path(node)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def push_target(line: dict) -> str:
    """The device fingerprint a sink line is addressed to."""
    req = line["request"]
    if line["platform"] == "apns":
        m = APNS_URL.fullmatch(req["url"])
        assert m, req["url"]
        return m.group(1)
    return req["body"]["message"]["token"]


def pushes(node: RunningNode) -> list[tuple[str, str, str]]:
    """(device fingerprint, event type, event id) of every line in the sink, in order."""
    out = []
    for line in sink(node):
        req = line["request"]
        if line["platform"] == "apns":
            etype, eid = req["body"]["event_type"], req["body"]["event_id"]
        else:
            data = req["body"]["message"]["data"]
            etype, eid = data["event_type"], data["event_id"]
        out.append((push_target(line), etype, eid))
    return out
