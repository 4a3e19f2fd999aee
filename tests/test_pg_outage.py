"""PostgreSQL goes away during load and comes back: refusals, not-ready, recovery by itself.

The node (``paynode run``) runs on a PostgreSQL server of its own, which the test
stops (fast shutdown) while clients keep sending transfers and payments, then
starts again. While it is down every request is acknowledged durably or refused
with a retryable 503 (never a 2xx it did not commit, never a 500) and ``/ready``
says so. When it returns the node answers again without a restart, every
acknowledged transfer is in the journal once, memory equals the journal, and the
refused transfers, retried with their ids, apply exactly once.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from paynode.benchmarks.node_process import NodeProcess
from paynode.storage.audit import journal_balances
from paynode.storage.database import libpq_url
from tests.conftest import wait_until
from tests.fault_load import memory_vs_journal

pytestmark = pytest.mark.slow

ACCOUNTS = [f"o{i}" for i in range(8)]


def _transfer(tid: str, i: int) -> dict:
    debit, credit = ACCOUNTS[i % 8], ACCOUNTS[(i + 3) % 8]
    return {"id": tid, "debit_account_id": debit, "credit_account_id": credit,
            "amount": 1 + i % 7, "currency": "USD"}  # fmt: skip


def test_postgres_outage_refuses_then_recovers(tmp_path: Path) -> None:
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    database_url = server.get_uri()
    key = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"DATABASE_URL": database_url, "PAYNODE_API_KEY": key}
    node = NodeProcess(tmp_path / "node", shards=2, env=env)
    node.start()
    http = httpx.Client(base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {key}"})
    try:
        for a in ACCOUNTS:
            assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
        acked: set[str] = set()
        refused: dict[str, dict] = {}
        unexpected: list[str] = []
        stop = threading.Event()

        def client(c: int) -> None:
            i = 0
            with httpx.Client(base_url=node.url, timeout=30, headers=http.headers) as h:
                while not stop.is_set():
                    body = _transfer(f"c{c}-{i}", i)
                    try:
                        r = h.post("/v1/transfers", json=body)
                    except httpx.HTTPError as e:  # no answer: neither acked nor refused
                        unexpected.append(f"{body['id']}: {type(e).__name__}")
                        continue
                    if r.status_code in (200, 201):
                        acked.add(body["id"])
                    elif r.status_code == 503 and r.json().get("retryable"):
                        refused[body["id"]] = body
                    else:
                        unexpected.append(f"{body['id']}: {r.status_code} {r.text[:200]}")
                    i += 1

        threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 50, what="load before the outage")

        # Down: a fast shutdown, as an operator or a failover would do it.
        pid = server.get_pid()
        down_at = time.monotonic()
        os.kill(pid, signal.SIGINT)
        wait_until(lambda: http.get("/ready").status_code == 503, timeout=30,
                   what="/ready to say not ready")  # fmt: skip
        ready = http.get("/ready").json()
        assert ready["database"] is False
        wait_until(lambda: len(refused) >= 20, what="refusals during the outage")
        payment = {"id": "p-out", "from": "o1", "to": "o2", "amount": 1, "currency": "USD"}
        r = http.post("/v1/payments", json=payment)
        assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
        outage_s = time.monotonic() - down_at

        # Up again, as it was (same socket, same data): the node is not restarted.
        wait_until(lambda: not psutil.pid_exists(pid), what="PostgreSQL to stop")
        server.ensure_postgres_running()
        up_at = time.monotonic()
        wait_until(lambda: http.get("/ready").status_code == 200, timeout=60,
                   what="/ready after PostgreSQL returns")  # fmt: skip
        ready_after_s = time.monotonic() - up_at
        acked_before = len(acked)
        wait_until(lambda: len(acked) >= acked_before + 50, timeout=60,
                   what="transfers acknowledged again")  # fmt: skip
        recovery_s = time.monotonic() - up_at
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not unexpected, unexpected[:10]

        # Every acknowledged transfer is journaled, once; memory equals the journal.
        with psycopg.connect(libpq_url(database_url)) as conn:
            journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
        assert acked <= journaled, sorted(acked - journaled)[:10]
        # Refused ones, retried with their ids, apply exactly once.
        for body in list(refused.values())[:200]:
            r = http.post("/v1/transfers", json=body)
            assert r.status_code in (200, 201), r.text
        with psycopg.connect(libpq_url(database_url)) as conn:
            (dupes,) = conn.execute(
                "SELECT count(*) - count(DISTINCT id) FROM transfers").fetchone()  # fmt: skip
        assert dupes == 0
        assert not memory_vs_journal(http, journal_balances(database_url), list(ACCOUNTS))

        # The node owns the database again (its advisory lock is held; trying to take
        # it here could race the node's own retry and stop it).
        def claimed_again() -> bool:
            from paynode.node.runtime import _OWNER_LOCK

            sql = (
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s"
            )
            with psycopg.connect(libpq_url(database_url)) as conn:
                return conn.execute(sql, (_OWNER_LOCK,)).fetchone()[0] == 1

        wait_until(claimed_again, timeout=30, what="the ownership lock to be taken again")
        print(
            f"outage: {len(acked)} acked, {len(refused)} refused with 503; refusing "
            f"{outage_s:.1f}s; ready {ready_after_s:.1f}s and acknowledging "
            f"{recovery_s:.1f}s after PostgreSQL returned"
        )
    finally:
        http.close()
        node.stop()
        server.cleanup()
