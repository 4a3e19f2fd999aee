"""SIGKILL the whole node during a transfer load, restart it, and audit.

Every transfer that got a 2xx must be in the journal, and every balance the
restarted node reports must equal the journal aggregate. The node runs as
the real ``paynode run`` process tree (Ray, shard workers, the embedded
PostgreSQL when DATABASE_URL is unset: all killed at once).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from paynode.benchmarks.node_process import NodeProcess
from paynode.storage.analytics import connect_views
from paynode.storage.audit import currency_totals, journal_balances
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_HEADERS, ADMIN_KEY, wait_until

pytestmark = pytest.mark.slow

ACCOUNTS = 16
CLIENTS = 64


async def _load(url: str, ids: list[str], acked: list[str], stop: asyncio.Event) -> None:
    rng = random.Random(11)
    counter = iter(range(10**9))

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            dr, cr = rng.sample(ids, 2)
            tid = f"k{next(counter)}"
            body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr,
                    "amount": rng.randint(1, 50), "currency": "USD"}  # fmt: skip
            try:
                r = await http.post("/v1/transfers", json=body)
            except httpx.HTTPError:
                continue  # the node died under us: no acknowledgement
            if r.status_code in (200, 201):
                acked.append(tid)

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=url, timeout=10, limits=limits, headers=ADMIN_HEADERS
    ) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))


def test_sigkill_during_load_loses_no_acknowledged_transfer(tmp_path: Path, request) -> None:
    env = dict(os.environ, PAYNODE_API_KEY=ADMIN_KEY)
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    else:
        env.pop("DATABASE_URL", None)
    node = NodeProcess(tmp_path / "data", shards=2, env=env)
    url, database_url = node.url, node.database_url

    node.start()
    try:
        ids = [f"d{i}" for i in range(ACCOUNTS)]
        with httpx.Client(base_url=url, timeout=30, headers=ADMIN_HEADERS) as http:
            for i, a in enumerate(ids):
                flags = ["debits_must_not_exceed_credits"] if i % 2 else []
                body = {"id": a, "currency": "USD", "flags": flags}
                assert http.post("/v1/accounts", json=body).status_code == 201

        acked: list[str] = []

        async def run() -> None:
            stop = asyncio.Event()
            load = asyncio.create_task(_load(url, ids, acked, stop))
            deadline = time.monotonic() + 20
            while len(acked) < 1500 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            killed = await asyncio.to_thread(node.kill)
            assert killed >= 3
            stop.set()
            await load

        asyncio.run(run())
        assert len(acked) >= 200, "the load never got going"
    finally:
        node.kill()

    node.start()
    try:
        with psycopg.connect(libpq_url(database_url)) as conn:
            journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
        lost = set(acked) - journaled
        assert not lost, f"{len(lost)} acknowledged transfers lost, e.g. {sorted(lost)[:5]}"
        journal = journal_balances(database_url)
        with httpx.Client(base_url=url, timeout=30, headers=ADMIN_HEADERS) as http:
            for a in ids:
                b = http.get(f"/v1/accounts/{a}").json()
                mem = (b["debits_posted"], b["credits_posted"], b["debits_pending"],
                       b["credits_pending"])  # fmt: skip
                assert mem == journal[a], a
                if "debits_must_not_exceed_credits" in b["flags"]:
                    assert b["available"] >= 0
            # the restarted node keeps working on the same data
            r = http.post("/v1/transfers", json={"id": "after", "debit_account_id": ids[0],
                          "credit_account_id": ids[1], "amount": 1, "currency": "USD"})  # fmt: skip
            assert r.status_code == 201
        assert currency_totals(database_url) == {"USD": 0}

        # The analytics stream resumed where it stopped: every journal row, once.
        with psycopg.connect(libpq_url(database_url)) as conn:
            journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}

        def duck_ids() -> list[str]:
            con = connect_views(tmp_path / "data" / "analytics")
            try:
                return [r[0] for r in con.execute("SELECT id FROM journal").fetchall()]
            finally:
                con.close()

        published = wait_until(
            lambda: (ids_ := duck_ids()) and len(ids_) >= len(journaled) and ids_,
            timeout=60, what="analytics to catch up after the restart",
        )  # fmt: skip
        assert len(published) == len(set(published)), "a journal row published twice"
        assert set(published) == journaled, "a gap in the analytics stream"
    finally:
        assert node.stop() == 0, "SIGTERM should stop the node cleanly"
    if node.pgdata is not None:
        assert not (node.pgdata / "postmaster.pid").exists(), "embedded PostgreSQL left running"
