"""``paynode bench --webhooks``: payments under load while webhooks are delivered.

One customer (a user owning 1% of the accounts) has a webhook endpoint for
``transfer.posted``; every other account is someone else's. The notifier
still reads the whole outbox to find that customer's events, so this
measures what a subscription costs the node and how late the customer hears
about its money. Phases, on one node, in one run:

* ``off``: no endpoint (the baseline);
* ``ok``: the endpoint answers 204 at once; lag is commit to receipt;
* ``hang``: the endpoint accepts connections and never answers (every
  attempt times out): payments must not slow down.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import psycopg

from paynode.benchmarks import drivers
from paynode.benchmarks.receiver import Receiver
from paynode.benchmarks.workload import Workload
from paynode.storage.database import libpq_url

OWNED_EVERY = 100  # one account in this many belongs to the subscribed customer


@dataclass
class Customer:
    user_id: str
    key: str  # an API key acting as the user (webhooks:*)


async def create_customer(url: str) -> Customer:
    async with drivers.session() as http:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        async with http.post(f"{url}/v1/users", json={"email": email}) as r:
            assert r.status == 201, await r.text()
            user_id = (await r.json())["id"]
        body = {"name": "bench webhooks", "scopes": ["webhooks:read", "webhooks:write"],
                "owner_user_id": user_id}  # fmt: skip
        async with http.post(f"{url}/v1/api-keys", json=body) as r:
            assert r.status == 201, await r.text()
            key = (await r.json())["key"]
    return Customer(user_id, key)


def owner_of(w: Workload, customer: Customer | None) -> dict[str, str]:
    if customer is None:
        return {}
    return {a.id: customer.user_id for i, a in enumerate(w.accounts) if i % OWNED_EVERY == 0}


async def endpoint(url: str, customer: Customer, hook: str, enabled_id: str | None) -> dict:
    """Create the customer's endpoint to ``hook``; disable ``enabled_id`` (the last one)."""
    async with drivers.session() as http:
        headers = {"Authorization": f"Bearer {customer.key}"}
        if enabled_id is not None:
            async with http.patch(f"{url}/v1/webhook-endpoints/{enabled_id}",
                                  json={"enabled": False}, headers=headers) as r:  # fmt: skip
                assert r.status == 200, await r.text()
        async with http.post(f"{url}/v1/webhook-endpoints", headers=headers,
                             json={"url": hook, "events": ["transfer.posted"],
                                   "max_in_flight": 8}) as r:  # fmt: skip
            assert r.status == 201, await r.text()
            return await r.json()


async def disable(url: str, customer: Customer, endpoint_id: str) -> None:
    headers = {"Authorization": f"Bearer {customer.key}"}
    target = f"{url}/v1/webhook-endpoints/{endpoint_id}"
    async with (
        drivers.session() as http,
        http.patch(target, json={"enabled": False}, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()


def lag_summary(receiver: Receiver, since: float) -> dict:
    """Commit (the transfer's decision time) to receipt, first attempts only."""
    lags = sorted(
        r.at - r.body["data"]["transfer"]["timestamp"] / 1e9
        for r in receiver.received
        if r.attempt == 1 and r.at >= since and r.verified
    )
    if not lags:
        return {"delivered": 0}

    def q(f: float) -> float:
        return round(lags[min(len(lags) - 1, int(f * len(lags)))], 3)

    return {"delivered": len(lags), "lag_p50_s": q(0.5), "lag_p99_s": q(0.99),
            "lag_max_s": round(lags[-1], 3)}  # fmt: skip


def wait_delivered(database_url: str, endpoint_id: str, timeout: float = 120.0) -> float:
    """Seconds until the endpoint has nothing pending and the fan-out passed the load."""
    t0 = time.monotonic()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # transfer.posted events are derived from the journal: the load's last commit.
        row = conn.execute("SELECT coalesce(max(txid), 0) FROM transfers").fetchone()
        assert row is not None
        last = row[0]
        while time.monotonic() - t0 < timeout:
            cursor = conn.execute("SELECT coalesce(max(txid), 0) FROM notifier_cursor").fetchone()
            pending = conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s"
                " AND status = 'pending'",
                (endpoint_id,),
            ).fetchone()
            assert cursor is not None and pending is not None
            if cursor[0] >= last and pending[0] == 0:
                return round(time.monotonic() - t0, 2)
            time.sleep(0.1)
    return float("nan")
