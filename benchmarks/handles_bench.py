"""``paynode bench --mode handles``: @handle resolution from the directory actor's memory.

Claims one handle per account, restarts the directory (the warm load is
timed), then measures a lookup three ways: inside the actor's process (what
the directory itself costs), one Ray call per handle, and 1,000 handles per
call. A tenth of the names looked up do not exist.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from paynode.benchmarks import steps
from paynode.benchmarks.workload import Workload


def _quantiles(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)

    def q(f: float) -> float:
        return round(s[min(len(s) - 1, int(f * len(s)))] / 1000, 2)

    return {"p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999),
            "max_us": round(s[-1] / 1000, 2), "samples": len(s)}  # fmt: skip


def run(args: argparse.Namespace, w: Workload, target, report: dict) -> bool:
    import ray

    from paynode.actors.handles import decode_claimed, decode_handles, decode_timings
    from paynode.actors.host import find_service
    from paynode.actors.names import HANDLES_NAME

    assert target.shards is not None and target.namespace is not None
    steps.create_accounts_direct(target.shards, w, args.accounts)
    directory: Any = find_service(HANDLES_NAME, target.namespace)
    names = [f"u{i}.{w.accounts[i].id[-6:]}".lower()[:30] for i in range(len(w.accounts))]
    print(f"claiming {len(names)} handles ...", flush=True)
    for k in range(0, len(names), 500):
        chunk = range(k, min(k + 500, len(names)))
        claimed = ray.get([directory.claim.remote(names[i], w.accounts[i].id, "") for i in chunk])
        assert all(not decode_claimed(c).code for c in claimed)
    t0 = time.perf_counter()
    loaded = ray.get(directory.start.remote())  # a restart: every live handle from PostgreSQL
    warm_s = time.perf_counter() - t0
    assert loaded == len(names)

    rng = random.Random(7)
    lookups = [rng.choice(names) if rng.random() < 0.9 else f"missing{i}" for i in range(100_000)]
    print("resolving inside the actor ...", flush=True)
    inside = decode_timings(ray.get(directory.timed_resolve.remote(lookups)))
    print("resolving over Ray, one per call ...", flush=True)
    single = []
    for name in lookups[:3000]:
        t = time.perf_counter_ns()
        ray.get(directory.resolve.remote([name]))
        single.append(time.perf_counter_ns() - t)
    batched = []
    for k in range(0, 50_000, 1000):
        t = time.perf_counter_ns()
        found = decode_handles(ray.get(directory.resolve.remote(lookups[k : k + 1000])))
        batched.append(time.perf_counter_ns() - t)
        assert len(found) == 1000
    report["handles"] = {
        "handles": len(names),
        "warm_load_s": round(warm_s, 3),
        "in_actor": _quantiles(inside),
        "ray_call_1": _quantiles(single),
        "ray_call_1000": _quantiles(batched),
    }
    h = report["handles"]
    print(
        f"{h['handles']} handles, warm load {h['warm_load_s']} s\n"
        f"inside the actor: p50 {h['in_actor']['p50_us']} us, p99 {h['in_actor']['p99_us']} us, "
        f"max {h['in_actor']['max_us']} us ({h['in_actor']['samples']} lookups)\n"
        f"one Ray call per lookup: p50 {h['ray_call_1']['p50_us']} us, "
        f"p99 {h['ray_call_1']['p99_us']} us\n"
        f"1,000 lookups per Ray call: p50 {h['ray_call_1000']['p50_us']} us per call",
        flush=True,
    )
    report["audit"] = {"accounts": len(names), "journal_checked": False, "problems": []}
    return True
