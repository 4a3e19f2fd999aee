"""Cluster mode on a real multi-process Ray cluster: ``ray start --head`` plus a worker
node, every address on 127.0.0.1, token authentication on.

``paynode actors`` starts detached, named shards on the cluster; ``paynode api
--workers 2`` serves HTTP from two processes sharing them. Under load, each
fault is followed by the ledger audit (``tests/fault_load.audit``):

1. SIGKILL of one API worker process (uvicorn's supervisor starts another);
2. SIGKILL of a shard's worker process (Ray restarts the actor);
3. SIGKILL of ``paynode actors`` itself, then a new one: it adopts the running
   shards (same processes, memory kept) and replaces the helpers.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from paynode.benchmarks.cluster_process import ClusterNode, RayCluster
from tests.support.fault_load import audit, create_accounts, run_load_until
from tests.support.node import ADMIN_KEY, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> RayCluster:
    ray = RayCluster(workers=1)
    try:
        ray.start()
        yield ray
    finally:
        ray.stop()


def _shard_pids(node: ClusterNode) -> dict[int, int]:
    """Shard index -> worker pid, from the processes' titles and the cluster's processes."""
    found = {}
    for p in node.cluster.processes():
        try:
            title = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "LedgerShard" in title:
            found[p.pid] = title
    return found


def test_two_api_processes_share_shards_across_two_ray_nodes(
    cluster: RayCluster, database_url: str, tmp_path: Path
) -> None:
    nodes = cluster.nodes()
    assert len(nodes) == 2 and all(n["alive"] for n in nodes), nodes
    assert {n["address"] for n in nodes} == {"127.0.0.1"}, "Ray must stay on loopback"
    assert cluster.listening_addresses() <= {"127.0.0.1"}, cluster.listening_addresses()

    node = ClusterNode(cluster, database_url, tmp_path / "data",
                       env={"PAYNODE_API_KEY": ADMIN_KEY,
                            "PAYNODE_NAMESPACE": f"c{os.getpid()}"})  # fmt: skip
    node.start_actors()
    node.start_api()
    try:
        workers = node.api_workers_pids()
        assert len(workers) == 2, workers
        ids = create_accounts(node.url, "c", 16)
        acked: list[str] = []

        # 1. An API worker dies; the other serves, and the supervisor replaces it.
        victim = workers[0]
        result = run_load_until(node.url, ids, "api-", lambda: os.kill(victim, signal.SIGKILL))
        acked += result.acked
        wait_until(lambda: len(set(node.api_workers_pids()) - {victim}) == 2, timeout=120,
                   what="uvicorn to replace the killed worker")  # fmt: skip
        audit(node.url, database_url, ids, acked)

        # 2. A shard's process dies; Ray restarts the actor, which rebuilds.
        shards = sorted(_shard_pids(node))
        assert len(shards) == 2, shards
        result = run_load_until(
            node.url, ids, "shard-", lambda: os.kill(shards[0], signal.SIGKILL), after_s=3.0
        )
        acked += result.acked
        wait_until(node.ready, timeout=60, what="the node to be ready after the shard restart")
        audit(node.url, database_url, ids, acked)
        now = sorted(_shard_pids(node))
        assert shards[0] not in now and shards[1] in now and len(now) == 2, (shards, now)

        # 3. The actors process dies; the shards live on (detached) and keep serving.
        before = set(now)
        result = run_load_until(node.url, ids, "ctl-", lambda: node.actors.kill(), after_s=1.0)
        acked += result.acked
        assert result.recovery_s is not None, "the shards stopped serving with their owner"
        node.start_actors()  # adopts the shards: same processes, nothing rebuilt
        assert set(_shard_pids(node)) == before
        result = run_load_until(node.url, ids, "again-", lambda: None, after_s=0.5)
        acked += result.acked
        checked = audit(node.url, database_url, ids, acked)
        print(f"\ncluster: 3 faults survived; {len(acked)} acknowledged transfers verified; "
              f"{checked} journaled transfers audited")  # fmt: skip
    finally:
        codes = node.stop()
    assert codes == {"api": 0, "actors": 0}, codes
