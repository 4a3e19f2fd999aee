"""PostgreSQL goes away during load and comes back: refusals, not-ready, recovery by itself
(an outside server restarted by its operator; the embedded one restarted by the node).

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
from tests.support.fault_load import memory_vs_journal
from tests.support.node import wait_until

pytestmark = pytest.mark.slow

ACCOUNTS = [f"o{i}" for i in range(8)]


def _transfer(tid: str, i: int) -> dict:
    debit, credit = ACCOUNTS[i % 8], ACCOUNTS[(i + 3) % 8]
    return {"id": tid, "debit_account_id": debit, "credit_account_id": credit,
            "amount": 1 + i % 7, "currency": "USD"}  # fmt: skip


class _Load:
    """Four clients posting transfers until stopped; every answer sorted into acknowledged,
    refused with a retryable 503, or unexpected (anything else, or no answer)."""

    def __init__(self, url: str, headers: httpx.Headers) -> None:
        self.acked: set[str] = set()
        self.refused: dict[str, dict] = {}
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(url, headers, c)) for c in range(4)
        ]
        for t in self._threads:
            t.start()

    def _client(self, url: str, headers: httpx.Headers, c: int) -> None:
        i = 0
        with httpx.Client(base_url=url, timeout=30, headers=headers) as h:
            while not self._stop.is_set():
                body = _transfer(f"c{c}-{i}", i)
                try:
                    r = h.post("/v1/transfers", json=body)
                except httpx.HTTPError as e:  # no answer: neither acked nor refused
                    self.unexpected.append(f"{body['id']}: {type(e).__name__}")
                    continue
                if r.status_code in (200, 201):
                    self.acked.add(body["id"])
                elif r.status_code == 503 and r.json().get("retryable"):
                    self.refused[body["id"]] = body
                else:
                    self.unexpected.append(f"{body['id']}: {r.status_code} {r.text[:200]}")
                i += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _start_node(tmp_path: Path, database_url: str | None) -> tuple[NodeProcess, httpx.Client]:
    key = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "DATABASE_URL"))}
    env |= {"PAYNODE_API_KEY": key} | ({"DATABASE_URL": database_url} if database_url else {})
    node = NodeProcess(tmp_path / "node", shards=2, env=env)
    node.start()
    http = httpx.Client(base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {key}"})
    for a in ACCOUNTS:
        assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
    return node, http


def _recovered(http: httpx.Client, load: _Load, database_url: str) -> None:
    """After the outage: every acknowledged transfer journaled once, memory equals the
    journal, refused transfers retried with their ids apply exactly once, the node owns
    the database again."""
    assert not load.unexpected, load.unexpected[:10]
    with psycopg.connect(libpq_url(database_url)) as conn:
        journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
    assert load.acked <= journaled, sorted(load.acked - journaled)[:10]
    for body in list(load.refused.values())[:200]:
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


def test_postgres_outage_refuses_then_recovers(tmp_path: Path) -> None:
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    database_url = server.get_uri()
    node, http = _start_node(tmp_path, database_url)
    load = None
    try:
        load = _Load(node.url, http.headers)
        wait_until(lambda: len(load.acked) >= 50, what="load before the outage")

        # Down: a fast shutdown, as an operator or a failover would do it.
        pid = server.get_pid()
        down_at = time.monotonic()
        os.kill(pid, signal.SIGINT)
        wait_until(lambda: http.get("/ready").status_code == 503, timeout=30,
                   what="/ready to say not ready")  # fmt: skip
        ready = http.get("/ready").json()
        assert ready["database"] is False
        wait_until(lambda: len(load.refused) >= 20, what="refusals during the outage")
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
        acked_before = len(load.acked)
        wait_until(lambda: len(load.acked) >= acked_before + 50, timeout=60,
                   what="transfers acknowledged again")  # fmt: skip
        recovery_s = time.monotonic() - up_at
        load.stop()
        _recovered(http, load, database_url)
        print(
            f"outage: {len(load.acked)} acked, {len(load.refused)} refused with 503; refusing "
            f"{outage_s:.1f}s; ready {ready_after_s:.1f}s and acknowledging "
            f"{recovery_s:.1f}s after PostgreSQL returned"
        )
    finally:
        if load is not None:
            load.stop()
        http.close()
        node.stop()
        server.cleanup()


def test_embedded_postgres_killed_is_restarted_by_the_node(tmp_path: Path) -> None:
    """The default ``paynode run`` (embedded PostgreSQL): its postmaster is killed with
    SIGKILL under load (an OOM kill looks the same); the node restarts it, PostgreSQL's
    crash recovery replays the WAL, and nothing acknowledged is lost."""
    from pgserver.utils import PostmasterInfo

    node, http = _start_node(tmp_path, None)
    pgdata = tmp_path / "node" / "pg"
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None and info.is_running()
    database_url = info.get_uri()
    load = None
    try:
        load = _Load(node.url, http.headers)
        wait_until(lambda: len(load.acked) >= 50, what="load before the kill")
        killed_at = time.monotonic()
        os.kill(info.pid, signal.SIGKILL)
        # (Not ready in between: for as long as the restart takes, which may be shorter
        # than a poll here; the new postmaster below is the proof it happened.)
        wait_until(lambda: not psutil.pid_exists(info.pid), what="the postmaster to die")
        wait_until(
            lambda: http.get("/ready").status_code == 200,
            timeout=30,
            what="/ready within 30 s of the kill, nobody restarting PostgreSQL by hand",
        )
        ready_s = time.monotonic() - killed_at
        after = PostmasterInfo.read_from_pgdata(pgdata)
        assert after is not None and after.pid != info.pid and after.is_running()
        acked_before = len(load.acked)
        wait_until(lambda: len(load.acked) >= acked_before + 50, timeout=60,
                   what="transfers acknowledged again")  # fmt: skip
        load.stop()
        _recovered(http, load, database_url)
        print(
            f"postmaster SIGKILL: ready again {ready_s:.1f}s after the kill; "
            f"{len(load.acked)} acked (all journaled), {len(load.refused)} refused with 503"
        )
    finally:
        if load is not None:
            load.stop()
        http.close()
        node.stop()
