"""A journal connection dies under load: nothing unacknowledged is claimed, and the shard heals.

Killing the shards' PostgreSQL backends makes commits fail mid-flight. Every
request in flight must get either its durable answer or a retryable 503
(never a 2xx for a row that is not journaled), the shards must rebuild from
the journal by themselves, and memory must equal the journal afterwards.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import psycopg

from paynode.storage.audit import journal_balances
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_HEADERS, wait_until


def test_commit_failures_refuse_and_rebuild(make_node) -> None:
    node = make_node(shards=2)
    ids = [f"f{i}" for i in range(10)]
    for a in ids:
        assert node.http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
    url = libpq_url(node.database_url)
    dbname = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    acked: list[str] = []
    refused: list[str] = []
    rng = random.Random(3)

    async def client(http: httpx.AsyncClient, c: int) -> None:
        for k in range(60):
            dr, cr = rng.sample(ids, 2)
            body = {"id": f"s{c}-{k}", "debit_account_id": dr, "credit_account_id": cr,
                    "amount": 1 + k, "currency": "USD"}  # fmt: skip
            r = await http.post("/v1/transfers", json=body)
            if r.status_code in (200, 201):
                acked.append(body["id"])
            else:
                assert r.status_code == 503, r.text
                # storage_unavailable: nothing applied; timeout: the transfer committed but
                # the request's audit record did not (its connection was killed too).
                assert r.json()["code"] in ("storage_unavailable", "timeout"), r.text
                assert r.json()["retryable"]
                if r.json()["code"] == "storage_unavailable":
                    refused.append(body["id"])

    async def saboteur() -> None:
        for _ in range(4):
            await asyncio.sleep(0.15)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                )

    async def main() -> None:
        async with httpx.AsyncClient(base_url=node.url, timeout=60, headers=ADMIN_HEADERS) as http:
            await asyncio.gather(*(client(http, c) for c in range(16)), saboteur())

    asyncio.run(main())
    assert acked, "no transfer got through"
    print(f"acked={len(acked)} refused={len(refused)}")
    wait_until(lambda: node.http.get("/ready").status_code == 200, what="the shards to heal")
    with psycopg.connect(url) as conn:
        journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
    assert set(acked) <= journaled
    assert not set(refused) & journaled, "a transfer refused as not applied was journaled"
    assert node.balances() == journal_balances(node.database_url)
    # and the node still moves money
    r = node.http.post("/v1/transfers", json={"id": "after", "debit_account_id": ids[0],
                       "credit_account_id": ids[1], "amount": 1, "currency": "USD"})  # fmt: skip
    assert r.status_code == 201, r.text
