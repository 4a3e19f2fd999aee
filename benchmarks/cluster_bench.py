"""``paynode bench --mode cluster``: one process vs a Ray cluster, same load, same run.

Baseline: ``paynode run`` (API, Ray and shards in one process tree). Then a
local Ray cluster of a head and ``--ray-workers`` worker nodes (every address
on 127.0.0.1, token auth) running ``paynode actors`` and ``paynode api
--workers --api-workers``. Each gets a fresh database and the same workload
(the ``--mode`` of ``--load``: batch by default); each run ends with the
usual audit (memory equals the journal, zero sum, no overdraft).

On one machine the cluster cannot be faster than its cores; what it shows is
the cost of the extra processes and hops, and that several API processes
share the shards correctly. On several machines the same commands spread
shards and fronts over their cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from paynode.benchmarks import drivers, steps
from paynode.benchmarks.cluster_process import ClusterNode, RayCluster
from paynode.benchmarks.node_process import NodeProcess, PeakRss
from paynode.benchmarks.workload import Workload
from paynode.storage.database import libpq_url
from paynode.storage.migrations import migrate


def run(args: argparse.Namespace, w: Workload, target: object, report: dict) -> bool:
    """``target`` is unused: this mode starts both of its targets itself."""

    drivers.ensure_api_key()
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="paynode-cluster-bench-"))
    args.mode = args.load  # what _load drives
    ok = True
    with contextlib.ExitStack() as stack:
        admin_url = _postgres(root, stack)
        for label in ("one process", "cluster"):
            database_url = _fresh_database(admin_url)
            data_dir = root / label.replace(" ", "-")
            env = dict(os.environ, DATABASE_URL=database_url)
            stop: Callable[[], object]  # NodeProcess.stop or ClusterNode.stop
            if label == "one process":
                node = NodeProcess(data_dir, args.shards, env=env)
                print(f"starting paynode run ({args.shards} shards) ...", flush=True)
                node.start()
                url, rss, stop = node.url, node.rss_bytes, node.stop
            else:
                cluster = RayCluster(workers=args.ray_workers)
                stack.callback(cluster.stop)
                print(f"starting a Ray cluster (head + {args.ray_workers} worker nodes), "
                      f"paynode actors and paynode api --workers {args.api_workers} ...",
                      flush=True)  # fmt: skip
                cluster.start()
                key = {"PAYNODE_API_KEY": os.environ["PAYNODE_API_KEY"]}
                cnode = ClusterNode(cluster, database_url, data_dir,
                                    shards=args.shards,
                                    api_workers=args.api_workers, env=key)  # fmt: skip
                cnode.start_actors()
                cnode.start_api()
                url, rss, stop = cnode.url, cnode.rss_bytes, cnode.stop
            try:
                lw = Workload(args.accounts, args.shards, prefix="c" + uuid.uuid4().hex[:6],
                              skew=args.skew, cross_shard_ratio=args.cross_shard_ratio)  # fmt: skip
                asyncio.run(steps.create_accounts(url, lw))
                print(f"{label}: {args.load}, {args.concurrency} clients for "
                      f"{args.duration:.0f}s ...", flush=True)  # fmt: skip
                with PeakRss(rss) as peak:
                    runs = steps.load(args, url, lw)
                audit = asyncio.run(steps.audit_http(url, database_url, lw))
            finally:
                stop()
            summary = runs[0].summary() | {"mode": f"{args.load}, {label}"}
            report.setdefault("node", []).append(summary)
            report.setdefault("cluster", {})[label] = {
                "peak_rss_mb": round(peak.peak / 2**20, 1), "audit": audit,
                "transfers_per_s": summary["transfers_per_s"],
            }  # fmt: skip
            ok = ok and not audit["problems"]
    base, other = report["cluster"]["one process"], report["cluster"]["cluster"]
    if base["transfers_per_s"]:
        report["cluster_over_one_process"] = round(
            other["transfers_per_s"] / base["transfers_per_s"], 2
        )
    audits = [r["audit"] for r in report["cluster"].values()]
    report["audit"] = {
        "accounts": sum(a["accounts"] for a in audits),
        "journal_checked": all(a["journal_checked"] for a in audits),
        "problems": [p for a in audits for p in a["problems"]],
    }
    return ok


def _postgres(root: Path, stack: contextlib.ExitStack) -> str:
    """DATABASE_URL's server, or an embedded one (every process must reach the same one)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    import pgserver

    server = pgserver.get_server(root / "pg", cleanup_mode="stop")
    stack.callback(server.cleanup)
    return server.get_uri()


def _fresh_database(admin_url: str) -> str:
    from sqlalchemy.engine import make_url

    name = f"paynode_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    return url
