"""SIGKILL the node while it delivers webhooks; after the restart every event arrives.

Event ids are derived from the journal rows, so an event has the same id
before and after the restart, in the webhooks and in ``GET /v1/events``.

The node runs as the real ``paynode run`` process tree; the receiver is a
real HTTP server in this process that verifies every signature and answers
slowly, so the kill lands with deliveries in flight and queued.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from paynode.benchmarks.node_process import NodeProcess
from paynode.benchmarks.receiver import Receiver, serve
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_HEADERS, process_env, wait_until

pytestmark = pytest.mark.slow

TRANSFERS = 150


def _listed(http: httpx.Client) -> dict[str, str]:
    """transfer id -> event id of this test's transfer.posted events, via the API."""
    out: dict[str, str] = {}
    after = None
    while True:
        params = {"type": "transfer.posted", "limit": 1000} | ({"after": after} if after else {})
        page = http.get("/v1/events", params=params).json()
        out |= {e["data"]["transfer"]["id"]: e["id"] for e in page["events"]}
        after = page["next_after"]
        if not page["has_more"]:
            return out


def test_sigkill_mid_delivery_then_every_event_is_delivered(tmp_path: Path, request) -> None:
    env = process_env(
        request,
        PAYNODE_WEBHOOK_ALLOW_PRIVATE="1",
        PAYNODE_WEBHOOK_BACKOFF_BASE_S="0.1",
        PAYNODE_WEBHOOK_BACKOFF_CAP_S="0.5",
        PAYNODE_NOTIFY_INTERVAL_MS="20",
    )
    node = NodeProcess(tmp_path / "data", shards=2, env=env)
    receiver = Receiver(delay_s=0.02, fail_first=0)
    with serve(receiver) as hook_url:
        node.start()
        try:
            with httpx.Client(base_url=node.url, timeout=30, headers=ADMIN_HEADERS) as http:
                r = http.post("/v1/webhook-endpoints",
                              json={"url": hook_url, "events": ["transfer.posted"],
                                    "max_in_flight": 4})  # fmt: skip
                assert r.status_code == 201, r.text
                receiver.secret = r.json()["secret"]
                for a in ("kd-a", "kd-b"):
                    assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).is_success
                acked = []
                for i in range(TRANSFERS):
                    body = {"id": f"kd-{i}", "debit_account_id": "kd-a", "amount": 1,
                            "credit_account_id": "kd-b", "currency": "USD"}  # fmt: skip
                    if http.post("/v1/transfers", json=body).status_code == 201:
                        acked.append(f"kd-{i}")
            wait_until(lambda: len(receiver.received) >= 10, what="deliveries to begin")
            assert len(receiver.delivered()) < TRANSFERS, "the kill must land mid-delivery"
        finally:
            node.kill()
        before_restart = len(receiver.delivered())
        # The ids the node sent before it died, by transfer.
        ids_before = {r.body["data"]["transfer"]["id"]: r.event_id for r in receiver.received}

        node.start()
        try:
            with psycopg.connect(libpq_url(node.database_url)) as conn:
                # The journal is the outbox: a transfer.posted event per posted row.
                outbox = {
                    f"evt_t_{r[0]}": r[0]
                    for r in conn.execute("SELECT id FROM transfers WHERE status = 'posted'")
                }
                assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
            assert set(outbox.values()) >= set(acked)
            with httpx.Client(base_url=node.url, timeout=30, headers=ADMIN_HEADERS) as http:
                ids_after = wait_until(
                    lambda: (got := _listed(http)).keys() >= set(acked) and got,
                    what="every acknowledged transfer's event listed",
                )
            assert {t: ids_after[t] for t in ids_before} == ids_before, "ids survive a restart"

            def all_arrived() -> bool:
                return {r.event_id for r in receiver.delivered()} >= set(outbox)

            wait_until(all_arrived, timeout=120, what="every event delivered after the restart")
            assert all(r.verified for r in receiver.received)
            transfers = {r.body["data"]["transfer"]["id"] for r in receiver.delivered()}
            assert transfers >= set(acked), "an acknowledged transfer's event was never delivered"
            # Sent before the kill and again after it: the same event, the same id.
            for r in receiver.received:
                assert r.event_id == ids_after[r.body["data"]["transfer"]["id"]]
            assert before_restart < len(outbox)
        finally:
            assert node.stop() == 0
