"""Fault torture: cycles of load and SIGKILL, with the ledger audited after each.

Two kinds of cycle, each against the real ``paynode run`` process tree:

- the whole node (API, Ray, shard workers, embedded PostgreSQL) killed at
  once, then started again on the same data;
- one shard actor's worker process killed while the node keeps serving: Ray
  restarts the actor, which rebuilds from the journal on its first message
  and has its peers re-read the journal (credit legs it committed but never
  forwarded).

After every cycle: every acknowledged transfer is journaled, every balance
the node reports equals the journal, no constrained account is overdrawn,
debits equal credits (``tests/support/fault_load.audit``). The whole-node test
is also the durability test: after its cycles the node keeps serving, analytics
holds every journal row once, and SIGTERM stops the tree and the embedded
PostgreSQL cleanly.

CI runs ``PAYNODE_TORTURE_CYCLES`` (default 2) cycles of each; on demand, e.g.
``PAYNODE_TORTURE_CYCLES=25 pytest -m torture -s`` prints what survived.
(Killing the API process alone is the cluster-mode test's, where the API is a
process of its own: ``tests/system/test_cluster.py``.)
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from paynode.benchmarks.node_process import NodeProcess
from paynode.storage.analytics import connect_views
from paynode.storage.database import libpq_url
from tests.support.fault_load import audit, create_accounts, run_load_until
from tests.support.node import ADMIN_HEADERS, process_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.torture]

CYCLES = int(os.environ.get("PAYNODE_TORTURE_CYCLES", "2"))
ACCOUNTS = 16


def _node(tmp_path: Path, request: pytest.FixtureRequest) -> NodeProcess:
    # The ledger checkpoint advances all the time: kills land inside its transaction, and
    # every restart recovers from a checkpoint plus the journal after it.
    env = process_env(request, PAYNODE_CHECKPOINT_INTERVAL_S="0.1")
    return NodeProcess(tmp_path / "data", shards=2, env=env)


def _shard_workers(node: NodeProcess) -> list[psutil.Process]:
    found = []
    for p in node.processes():
        try:
            if "LedgerShard" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return sorted(found, key=lambda p: p.pid)


def _all_shards_ready(http: httpx.Client) -> bool:
    try:
        r = http.get("/ready")
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and all(r.json()["shards"])


def test_whole_node_sigkill_cycles(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Also the durability test: what a 2xx promised is journaled after SIGKILL, the
    restarted node keeps serving, analytics resumes with every journal row once, and
    SIGTERM stops it all cleanly."""
    node = _node(tmp_path, request)
    node.start()
    try:
        ids = create_accounts(node.url, "w", ACCOUNTS)
        acked: list[str] = []
        for cycle in range(CYCLES):
            result = run_load_until(node.url, ids, f"w{cycle}-", node.kill, after_s=0.3)
            acked += result.acked
            node.start()
            checked = audit(node.url, node.database_url, ids, acked)
        print(
            f"\ntorture, whole node: {CYCLES} SIGKILL cycles survived; {len(acked)} "
            f"acknowledged transfers verified; {checked} journaled transfers audited"
        )
        with httpx.Client(base_url=node.url, timeout=30, headers=ADMIN_HEADERS) as http:
            after = {"id": "after", "debit_account_id": ids[0], "credit_account_id": ids[2],
                     "amount": 1, "currency": "USD"}  # fmt: skip
            assert http.post("/v1/transfers", json=after).status_code == 201
        _analytics_has_every_journal_row_once(node, tmp_path / "data" / "analytics")
    finally:
        if node.proc is not None and node.proc.poll() is None:
            assert node.stop() == 0, "SIGTERM should stop the node cleanly"
    if node.pgdata is not None:
        assert not (node.pgdata / "postmaster.pid").exists(), "embedded PostgreSQL left running"


def _analytics_has_every_journal_row_once(node: NodeProcess, root: Path) -> None:
    """The analytics stream resumed where each kill stopped it: no gap, no row twice."""
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}

    def published() -> list[str]:
        con = connect_views(root)
        try:
            return [r[0] for r in con.execute("SELECT id FROM journal").fetchall()]
        finally:
            con.close()

    rows = wait_until(lambda: (ids := published()) and len(ids) >= len(journaled) and ids,
                      timeout=60, what="analytics to catch up after the restarts")  # fmt: skip
    assert len(rows) == len(set(rows)), "a journal row published twice"
    assert set(rows) == journaled, "a gap in the analytics stream"


def test_shard_sigkill_cycles(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    node = _node(tmp_path, request)
    node.start()
    try:
        ids = create_accounts(node.url, "s", ACCOUNTS)
        acked: list[str] = []
        recoveries: list[float] = []
        answers: Counter = Counter()
        for cycle in range(CYCLES):
            workers = _shard_workers(node)
            assert len(workers) == 2, "expected one worker process per shard"
            victim = workers[cycle % 2]

            def kill_and_wait(victim: psutil.Process = victim) -> None:
                t0 = time.monotonic()
                victim.send_signal(signal.SIGKILL)
                with httpx.Client(base_url=node.url, timeout=5) as http:
                    wait_until(lambda: _all_shards_ready(http), timeout=60,
                               what="the killed shard to be back")  # fmt: skip
                recoveries.append(time.monotonic() - t0)

            result = run_load_until(node.url, ids, f"s{cycle}-", kill_and_wait, after_s=1.0)
            answers.update(result.answers)
            acked += result.acked
            checked = audit(node.url, node.database_url, ids, acked)
            assert victim.pid not in {p.pid for p in _shard_workers(node)}
        print(
            f"\ntorture, one shard: {CYCLES} SIGKILL cycles survived (Ray restarted the shard "
            f"each time); {len(acked)} acknowledged transfers verified; {checked} journaled "
            f"transfers audited; killed shard ready again after "
            + ", ".join(f"{r:.2f} s" for r in recoveries)
            + f"; answers during the cycles: {dict(answers)}"
        )
    finally:
        assert node.stop() == 0
