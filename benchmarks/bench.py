"""``paynode bench``: start (or target) a node, load it, check it, compare with a baseline.

Every run ends with a correctness audit (a fast wrong answer is a failure)
and writes ``result.json``, ``summary.md`` and ``plot.png`` under
``--results/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from paynode.benchmarks import (
    cluster_bench,
    drivers,
    handles_bench,
    recon_check,
    renewals_bench,
    risk_bench,
    soak,
    steps,
    webhooks,
)
from paynode.benchmarks.cpu import CpuMeter
from paynode.benchmarks.node_process import NodeProcess, PeakRss, process_tree, total_rss
from paynode.benchmarks.receiver import Receiver, serve
from paynode.benchmarks.reference import ReferenceServer
from paynode.benchmarks.workload import Workload
from paynode.domain.settings import from_env
from paynode.node.plugins import Command
from paynode.storage.audit import journal_balances


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="target a running node instead of starting one")
    p.add_argument("--data-dir", help="data directory of the node started (default: a temp dir)")
    p.add_argument("--shards", type=int, default=None,
                   help="shards of the node started (default: the node's)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help="front processes of the node started (default: the node's)")  # fmt: skip
    p.add_argument("--mode",
                   choices=("single", "batch", "direct", "handles", "risk", "cluster", "soak",
                            "renewals"),
                   default="batch",
                   help="handles: resolve @handles in the directory actor (no HTTP); risk:"
                        " user payments through the risk gate vs operator payments; cluster:"
                        " one process vs a local Ray cluster, same --load; soak: memory over"
                        " --samples rounds of batch load, then restart times after writing"
                        " --soak-rows journal rows")  # fmt: skip
    p.add_argument("--samples", type=int, default=10, help="soak mode: rounds of load")
    p.add_argument("--soak-rows", type=int, default=1_000_000,
                   help="soak mode: journal rows written before the timed restarts")  # fmt: skip
    p.add_argument("--load", choices=("single", "batch"), default="batch",
                   help="cluster mode: the HTTP load both targets get")  # fmt: skip
    p.add_argument(
        "--ray-workers",
        type=int,
        default=1,
        help="cluster mode: Ray worker nodes besides the head (on 127.0.0.1)",
    )
    p.add_argument(
        "--api-workers",
        type=int,
        default=2,
        help="cluster mode: API processes (paynode api --workers)",
    )
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("-c", "--concurrency", type=int, default=None,
                   help="clients (default: 64 single, 4 batch/direct)")  # fmt: skip
    p.add_argument("-b", "--batch-size", type=int, default=2000)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, help="single mode: fixed arrival rate (open loop)")
    p.add_argument("--sweep", action="store_true",
                   help="single mode: then open loop at 25/50/75%% of the peak")  # fmt: skip
    p.add_argument("--skew", type=float, default=0.0, help="Zipf exponent for hot accounts")
    p.add_argument("--cross-shard-ratio", type=float, default=None)
    p.add_argument("--baseline", action="store_true",
                   help="also run a conventional PostgreSQL ledger, same server")  # fmt: skip
    p.add_argument("--baseline-concurrency", type=int, default=16)
    p.add_argument("--reference", action="store_true",
                   help="also single requests on the node, at half their peak (open loop),"
                        " and on a bare FastAPI + msgspec endpoint: the ratio")  # fmt: skip
    p.add_argument("--webhooks", action="store_true",
                   help="batch load 3 times: no endpoint, a healthy one, a hung one")  # fmt: skip
    p.add_argument("--results", default="results")


def main(args: argparse.Namespace) -> int:
    if args.shards is None:  # read here, not when the CLI's parser is built: bad settings
        args.shards = from_env().shard_count()  # are the node's to report
    if args.concurrency is None:
        single = args.mode == "single" or (args.mode == "cluster" and args.load == "single")
        args.concurrency = 64 if single else 4
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.results) / stamp
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": {k: v for k, v in vars(args).items() if k != "func"}}
    prefix = "b" + uuid.uuid4().hex[:6]
    w = Workload(args.accounts, args.shards, prefix=prefix, skew=args.skew,
                 cross_shard_ratio=args.cross_shard_ratio)  # fmt: skip

    with contextlib.ExitStack() as stack:
        target = _open_target(args, stack)
        report["database_url"] = target.database_url
        modes = {"direct": _run_direct, "handles": handles_bench.run, "risk": risk_bench.run,
                 "cluster": cluster_bench.run, "soak": soak.run,
                 "renewals": renewals_bench.run}  # fmt: skip
        run = modes.get(args.mode, _run_http)
        ok = run(args, w, target, report)
        if args.baseline:
            ok = _run_baseline(args, w, target.database_url, report) and ok

    (out / "result.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "summary.md").write_text(_markdown(report))
    _plot(report, out / "plot.png")
    print(_markdown(report))
    print(f"results in {out}")
    return 0 if ok else 1


# -- node over HTTP -----------------------------------------------------------


@dataclass
class Target:
    """What the bench drives: a node over HTTP, or shard actors in this process."""

    url: str | None
    database_url: str | None
    node: NodeProcess | None = None
    shards: list | None = None
    pgdata: Path | None = None
    namespace: str | None = None  # of the Ray actors started in this process


def _open_target(args: argparse.Namespace, stack: contextlib.ExitStack) -> Target:
    if args.url:
        return Target(args.url.rstrip("/"), os.environ.get("DATABASE_URL"))
    if args.mode == "cluster":
        return Target(None, None)  # starts both of its targets itself
    drivers.ensure_api_key()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="paynode-bench-"))
    if args.mode in ("direct", "handles"):
        from paynode.domain.settings import from_env
        from paynode.node.runtime import start

        settings = from_env(data_dir=str(data_dir), shards=args.shards,
                            namespace=f"bench{uuid.uuid4().hex[:6]}")  # fmt: skip
        services = start(settings)
        stack.callback(services.stop)
        pgdata = None if settings.database_url else data_dir / "pg"
        return Target(None, services.database_url, shards=services.shards, pgdata=pgdata,
                      namespace=settings.namespace)  # fmt: skip
    if args.webhooks:  # the receivers listen on loopback; attempts to the hung one time out
        os.environ.setdefault("PAYNODE_WEBHOOK_ALLOW_PRIVATE", "1")
        os.environ.setdefault("PAYNODE_WEBHOOK_TIMEOUT_S", "2")
    env = dict(os.environ)
    if args.mode == "soak":  # only clean stops advance the checkpoint (soak.py)
        env.setdefault("PAYNODE_CHECKPOINT_INTERVAL_S", "0")
    if args.workers:
        env["PAYNODE_WORKERS"] = str(args.workers)
    node = NodeProcess(data_dir, args.shards, env=env)
    print(f"starting a node ({args.shards} shards) in {data_dir} ...", flush=True)
    node.start()
    stack.callback(node.stop)
    return Target(node.url, node.database_url, node=node)


def _run_http(args: argparse.Namespace, w: Workload, target: Target, report: dict) -> bool:
    assert target.url is not None
    url, node = target.url, target.node
    customer = asyncio.run(webhooks.create_customer(url)) if args.webhooks else None
    print(f"creating {args.accounts} accounts ...", flush=True)
    asyncio.run(steps.create_accounts(url, w, webhooks.owner_of(w, customer)))
    before = _scrape(url)
    recon_before = recon_check.before_load(url, target.database_url)
    print(f"{args.mode}: {args.concurrency} clients for {args.duration:.0f}s ...", flush=True)
    with (
        PeakRss(node.rss_bytes) if node else _NoRss() as rss,
        _LagSampler(url) as lag,
        Measured(node, "transfer" if args.mode == "batch" else "request") as cpu,
    ):
        if customer is not None:
            runs = _webhook_phases(args, w, url, target.database_url, customer, report)
        else:
            runs = steps.load(args, url, w)
        cpu.count = runs[0].acked if args.mode == "batch" else runs[0].requests
    report["cpu"] = cpu.report
    after = _scrape(url)
    report["node"] = [r.summary() for r in runs]
    if args.reference:
        _single_against_reference(args, w, url, node, runs, report)
    report["peak_rss_mb"] = round(rss.peak / 2**20, 1) if node else None
    report["postgres"] = _commit_figures(before, after, runs[0].elapsed_s)
    report["analytics"] = lag.summary() | _catch_up(url, target.database_url)
    print("reconciling ...", flush=True)
    report["reconciliation"], recon_problems = recon_check.after_load(
        url, target.database_url, recon_before
    )
    print("auditing ...", flush=True)
    report["audit"] = asyncio.run(steps.audit_http(url, target.database_url, w))
    report["audit"]["problems"] += recon_problems
    if node is not None and target.database_url:
        report["audit"]["problems"] += _audit_analytics(node.data_dir, target.database_url)
        report["audit"]["analytics_checked"] = True
    return not report["audit"]["problems"]


class Measured:
    """CPU of the node's process tree (PostgreSQL included) and of this process (the load
    generator) over a phase; set ``count`` (transfers or requests) before leaving."""

    def __init__(self, node: NodeProcess | None, unit: str,
                 processes: Callable[[], list[psutil.Process]] | None = None) -> None:  # fmt: skip
        self.unit = unit
        self.count = 0
        tree = processes or (node.processes if node else None)
        self._node = CpuMeter(tree) if tree else None
        self._generator = CpuMeter(lambda: [psutil.Process()])
        self.report: dict = {}

    def __enter__(self) -> Measured:
        if self._node is not None:
            self._node.start()
        self._generator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        generator = self._generator.stop()
        per = generator.per_unit_us(self.count)
        self.report = {"unit": self.unit, "generator_cpu_s": round(generator.cpu_s, 3),
                       f"generator_cpu_us_per_{self.unit}": per}  # fmt: skip
        if self._node is not None:
            self.report |= self._node.stop().summary(self.count, self.unit)


def _single_against_reference(
    args: argparse.Namespace, w: Workload, url: str, node: NodeProcess | None,
    runs: list[drivers.RunResult], report: dict,
) -> None:  # fmt: skip
    """Single requests on the node, then on a bare FastAPI + msgspec endpoint, same generator.

    Also an open loop at half the node's single-request peak: the latency a client sees
    when the node is busy but not saturated.
    """
    c = 64 if args.mode == "batch" else args.concurrency
    rate = steps.PREBUILT_REQUESTS_PER_S
    if args.mode == "single" and not args.rate:
        single, single_cpu = runs[0], report["cpu"]
    else:
        requests = steps.single_requests(url, w, rate, args.duration)
        print(f"single: {c} connections for {args.duration:.0f}s ...", flush=True)
        with Measured(node, "request") as m:
            single = steps.closed_single(url, requests, c, args.duration)
            m.count = single.requests
        single_cpu = m.report
    half = single.rate / 2
    print(f"single, open loop at half that ({half:,.0f}/s) for {args.duration:.0f}s ...",
          flush=True)  # fmt: skip
    at_half = steps.open_single(url, steps.single_requests(url, w, half, args.duration), half,
                                args.duration)  # fmt: skip
    print(f"reference (bare FastAPI + msgspec echo): {c} connections for "
          f"{args.duration:.0f}s ...", flush=True)  # fmt: skip
    with ReferenceServer() as ref:
        ref_url = f"http://127.0.0.1:{ref.port}"
        requests = steps.single_requests(ref_url, w, 2 * rate, args.duration)
        steps.wait_listening(ref.port)
        assert ref.proc is not None  # started by the with
        pid = ref.proc.pid
        with Measured(None, "request", lambda: [psutil.Process(pid)]) as m:
            reference = steps.closed_single(ref_url, requests, c, args.duration, mode="reference")
            m.count = reference.requests
    report["single"] = single.summary() | {"cpu": single_cpu}
    report["single_at_half"] = at_half.summary()
    report["reference"] = reference.summary() | {"cpu": m.report}
    report["single_over_reference"] = (
        round(single.requests / single.elapsed_s / (reference.requests / reference.elapsed_s), 2)
        if reference.requests
        else None
    )


def _webhook_phases(
    args: argparse.Namespace,
    w: Workload,
    url: str,
    database_url: str | None,
    customer: webhooks.Customer,
    report: dict,
) -> list[drivers.RunResult]:
    """The same batch load with no endpoint, a healthy one, then a hanging one."""
    assert args.mode == "batch" and database_url, "--webhooks drives batch mode on a local node"
    healthy, hung = Receiver(), Receiver(hang=True)
    phases: list[dict] = []
    runs: list[drivers.RunResult] = []
    with serve(healthy) as ok_url, serve(hung) as hang_url:
        last_id = None
        # "off" again last: the journal grew meanwhile, and later phases run on a
        # bigger ledger; the two "off" runs bound that drift.
        plan = (("off", None, None), ("ok", healthy, ok_url), ("hang", hung, hang_url),
                ("off again", None, None))  # fmt: skip
        for name, receiver, hook in plan:
            if hook is not None and receiver is not None:
                created = asyncio.run(webhooks.endpoint(url, customer, hook, last_id))
                receiver.secret, last_id = created["secret"], created["id"]
            elif last_id is not None:
                asyncio.run(webhooks.disable(url, customer, last_id))
                last_id = None
            print(f"webhooks phase {name}: batch load for {args.duration:.0f}s ...", flush=True)
            since = time.time()
            run = steps.load(args, url, w)[0]
            runs.append(run)
            phase = {"phase": name, "transfers_per_s": round(run.rate, 1),
                     "p99_ms": run.latency.summary_ms()["p99"]}  # fmt: skip
            if name == "ok":
                assert last_id is not None  # the healthy endpoint was just created
                phase["catch_up_s"] = webhooks.wait_delivered(database_url, last_id)
            if receiver is not None:
                phase |= webhooks.lag_summary(receiver, since)
            phases.append(phase)
    report["webhooks"] = phases
    return runs


class _LagSampler:
    """Samples the node's commit-to-queryable lag (its last published segment) every 0.5 s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_rows = -1.0
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                m = _scrape(self.url)
                if m["analytics_rows"] != last_rows:  # a new segment since the last sample
                    self.samples.append(m["analytics_lag"])
                    last_rows = m["analytics_rows"]

    def summary(self) -> dict:
        s = sorted(self.samples)
        if not s:
            return {"lag_samples": 0}
        return {
            "lag_samples": len(s),
            "lag_p50_s": round(s[len(s) // 2], 3),
            "lag_p99_s": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3),
            "lag_max_s": round(s[-1], 3),
        }


def _catch_up(url: str, database_url: str | None, timeout: float = 60.0) -> dict:
    """After the load: how long until every committed journal row is queryable in DuckDB."""
    if not database_url:
        return {}
    import psycopg

    from paynode.storage.database import libpq_url

    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM transfers").fetchone()
    assert row is not None
    journal_rows = row[0]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _scrape(url)["analytics_rows"] >= journal_rows:
            return {"catch_up_s": round(time.monotonic() - started, 3), "rows": journal_rows}
        time.sleep(0.05)
    return {"catch_up_s": None, "rows": journal_rows}


def _audit_analytics(data_dir: Path, database_url: str) -> list[str]:
    """DuckDB's per-account totals == the journal's, after the load."""
    from paynode.storage.analytics import connect_views

    journal = journal_balances(database_url)
    con = connect_views(data_dir / "analytics")
    try:
        rows = con.execute(
            "SELECT account_id, debits_posted, credits_posted, debits_pending, credits_pending"
            " FROM balances"
        ).fetchall()
        row = con.execute("SELECT count(*) FROM journal").fetchone()
    finally:
        con.close()
    assert row is not None
    duck_rows = row[0]
    duck = {r[0]: tuple(r[1:]) for r in rows}
    diff = [a for a, b in journal.items() if duck.get(a) != b]
    problems = [f"{len(diff)} accounts differ in DuckDB, e.g. {diff[:3]}"] if diff else []
    print(f"analytics: {duck_rows} journal rows in DuckDB, {len(duck)} accounts compared")
    return problems


# -- shards without HTTP --------------------------------------------------------


def _run_direct(args: argparse.Namespace, w: Workload, target: Target, report: dict) -> bool:
    import ray

    from paynode.domain.ledger.wire import decode_balances, decode_stats

    shards = target.shards
    assert shards is not None and target.database_url is not None
    steps.create_accounts_direct(shards, w, args.accounts)
    print(f"direct: {args.concurrency} clients for {args.duration:.0f}s ...", flush=True)

    def committed() -> dict[str, float]:
        stats = [decode_stats(raw) for raw in ray.get([s.stats.remote() for s in shards])]
        return {"commits": sum(x.commits for x in stats),
                "rows": sum(x.rows_committed for x in stats)}  # fmt: skip

    before = committed()
    with PeakRss(lambda: total_rss(process_tree(os.getpid(), target.pgdata))) as rss:
        result = asyncio.run(
            drivers.direct(shards, w, args.concurrency, args.batch_size, args.duration)
        )
    report["node"] = [result.summary()]
    report["peak_rss_mb"] = round(rss.peak / 2**20, 1)
    report["postgres"] = _commit_figures(before, committed(), result.elapsed_s)
    memory = {}
    for raw in ray.get([s.balances.remote() for s in shards]):
        for b in decode_balances(raw) or []:
            assert b is not None  # balances() lists only existing accounts
            memory[b.id] = (b.debits_posted, b.credits_posted, b.debits_pending,
                            b.credits_pending)  # fmt: skip
    problems = []
    if memory != journal_balances(target.database_url):
        problems.append("shard memory differs from the journal")
    if sum(cp - dp for dp, cp, _, _ in memory.values()) != 0:
        problems.append("balances do not sum to zero")
    report["audit"] = {"accounts": len(memory), "journal_checked": True, "problems": problems}
    return not problems


class _NoRss:
    peak = 0

    def __enter__(self) -> _NoRss:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# -- baseline -------------------------------------------------------------------


def _run_baseline(
    args: argparse.Namespace, w: Workload, database_url: str | None, report: dict
) -> bool:
    from paynode.benchmarks import baseline

    if not database_url:
        report["baseline"] = {"error": "no DATABASE_URL for the baseline"}
        return False
    fresh = Workload(args.accounts, args.shards, prefix=w.prefix + "x", skew=args.skew,
                     cross_shard_ratio=args.cross_shard_ratio)  # fmt: skip
    print(f"baseline: {args.baseline_concurrency} clients for {args.duration:.0f}s ...",
          flush=True)  # fmt: skip
    asyncio.run(baseline.prepare(database_url, fresh))
    result = asyncio.run(baseline.run(database_url, fresh,
                                      concurrency=args.baseline_concurrency,
                                      duration_s=args.duration))  # fmt: skip
    problems = baseline.check(database_url)
    rate = result.acked / result.elapsed_s if result.elapsed_s else 0.0
    report["baseline"] = {
        "concurrency": args.baseline_concurrency,
        "elapsed_s": round(result.elapsed_s, 3),
        "acked": result.acked,
        "transfers_per_s": round(rate, 1),
        "latency_ms": result.latency.summary_ms(),
        "refused": dict(result.refused),
        "per_second": result.per_second,
        "problems": problems,
    }
    node_rate = report["node"][0]["transfers_per_s"]
    report["ratio_node_over_baseline"] = round(node_rate / rate, 2) if rate else None
    return not problems


# -- reporting ----------------------------------------------------------------------


def _commit_figures(before: dict, after: dict, seconds: float) -> dict[str, float]:
    commits = after["commits"] - before["commits"]
    rows = after["rows"] - before["rows"]
    return {
        "commits_per_s": round(commits / seconds, 1) if seconds else 0.0,
        "rows_per_commit": round(rows / commits, 1) if commits else 0.0,
    }


def _scrape(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10, headers=drivers.api_headers()).text
    total = {"commits": 0.0, "rows": 0.0}
    for name, key in (("paynode_shard_commits_total", "commits"),
                      ("paynode_shard_rows_committed_total", "rows")):  # fmt: skip
        for m in re.finditer(rf"^{name}{{[^}}]*}} ([0-9.e+]+)$", text, re.M):
            total[key] += float(m.group(1))
    for name, key in (("paynode_analytics_lag_seconds", "analytics_lag"),
                      ("paynode_analytics_rows_total", "analytics_rows")):  # fmt: skip
        found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        total[key] = float(found.group(1)) if found else -1.0
    return total


def _markdown(report: dict) -> str:
    lines = [
        "| run | transfers/s | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | refused | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report.get("node", []):
        name = r["mode"] + (f" @{r['offered_rate']:,.0f}/s" if r.get("offered_rate") else "")
        lat = r["latency_ms"]
        lines.append(
            f"| node {name} (c={r['concurrency']}, b={r['batch_size']}) | "
            f"{r['transfers_per_s']:,.0f} | {r['requests_per_s']:,.0f} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {lat['p99.9']} | {r['refused'] or '-'} | "
            f"{r['errors'] or '-'} |"
        )
    b = report.get("baseline")
    if b and "latency_ms" in b:
        lat = b["latency_ms"]
        lines.append(
            f"| baseline (c={b['concurrency']}) | {b['transfers_per_s']:,.0f} | "
            f"{b['transfers_per_s']:,.0f} | {lat['p50']} | {lat['p90']} | {lat['p99']} | "
            f"{lat['p99.9']} | {b['refused'] or '-'} | - |"
        )
    extra = soak.markdown(report["soak"]) if "soak" in report else []
    if report.get("ratio_node_over_baseline") is not None:
        extra.append(f"**node / baseline: {report['ratio_node_over_baseline']}x**")
    if report.get("cluster_over_one_process") is not None:
        extra.append(f"**cluster / one process: {report['cluster_over_one_process']}x**")
        extra += [f"peak RSS, {label}: {r['peak_rss_mb']} MB; audit: "
                  f"{'; '.join(r['audit']['problems']) or 'ok'}"
                  for label, r in report["cluster"].items()]  # fmt: skip
    if report.get("cpu", {}).get("cores_used") is not None:
        extra.append(_cpu_line(report["node"][0]["mode"], report["cpu"]))
    if report.get("single"):
        si, half, ref = report["single"], report["single_at_half"], report["reference"]
        lines.append(_run_line(f"node single (c={si['concurrency']})", si))
        lines.append(_run_line(f"node single, open loop @{half['offered_rate']:,.0f}/s", half))
        lines.append(_run_line(f"reference: bare FastAPI + msgspec (c={ref['concurrency']})", ref))
        extra.append(f"**node single / reference: {report['single_over_reference']}** (requests/s"
                     f" in the same run; p99 at half the node's peak: {half['latency_ms']['p99']}"
                     " ms)")  # fmt: skip
        if si["cpu"].get("cores_used") is not None:
            extra.append(_cpu_line("single", si["cpu"]))
        extra.append(f"reference CPU: {ref['cpu'].get('cpu_us_per_request')} us per request")
    if report.get("peak_rss_mb") is not None:
        extra.append(f"peak RSS of the node's processes: {report['peak_rss_mb']} MB")
    an = report.get("analytics")
    if an and an.get("lag_samples"):
        extra.append(
            f"analytics (commit to queryable in DuckDB) during the load: p50 {an['lag_p50_s']} s, "
            f"p99 {an['lag_p99_s']} s, max {an['lag_max_s']} s ({an['lag_samples']} segments "
            f"sampled); all {an.get('rows', '?')} journal rows queryable "
            f"{an.get('catch_up_s')} s after the load"
        )
    if report.get("reconciliation"):
        extra.append(recon_check.line(report["reconciliation"]))
    if report.get("postgres"):
        pg = report["postgres"]
        extra.append(f"PostgreSQL: {pg['commits_per_s']} commits/s, "
                     f"{pg['rows_per_commit']} rows per commit")  # fmt: skip
    if report.get("webhooks"):
        rows = [
            "| webhooks phase | transfers/s | p99 ms | delivered | lag p50 s | lag p99 s |"
            " lag max s | catch-up s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for ph in report["webhooks"]:
            rows.append(
                f"| {ph['phase']} | {ph['transfers_per_s']:,.0f} | {ph['p99_ms']} | "
                f"{ph.get('delivered', '-')} | {ph.get('lag_p50_s', '-')} | "
                f"{ph.get('lag_p99_s', '-')} | {ph.get('lag_max_s', '-')} | "
                f"{ph.get('catch_up_s', '-')} |"
            )
        extra.append("\n".join(rows))
    if report.get("handles"):
        h = report["handles"]
        rows = ["| @handle lookup | p50 us | p99 us | p99.9 us | max us | samples |",
                "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for key, name in (("in_actor", "inside the actor"), ("ray_call_1", "1 per Ray call"),
                          ("ray_call_1000", "1,000 per Ray call")):  # fmt: skip
            q = h[key]
            rows.append(f"| {name} | {q['p50_us']} | {q['p99_us']} | {q['p999_us']} | "
                        f"{q['max_us']} | {q['samples']} |")  # fmt: skip
        extra.append("\n".join(rows) + f"\n\n{h['handles']} handles; warm load at start "
                     f"{h['warm_load_s']} s")  # fmt: skip
    if report.get("risk"):
        r = report["risk"]
        rows = ["| payments | per s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---|"]
        for key, name in (("gated", "users (risk gate)"), ("baseline", "operator (no gate)")):
            q = r[key]
            rows.append(f"| {name} | {q['per_s']} | {q['p50_ms']} | {q['p99_ms']} |"
                        f" {q['errors'] or '-'} |")  # fmt: skip
        g, sc = r["gate_in_node"]["gate"], r["gate_in_node"]["score"]
        extra.append("\n".join(rows) + f"\n\ngate inside the node: p50 {g['p50_ms']} ms, p99 "
                     f"{g['p99_ms']} ms ({g['samples']} decisions); score alone: p50 "
                     f"{sc['p50_ms']} ms, p99 {sc['p99_ms']} ms; added end to end: p50 "
                     f"{r['added_p50_ms']} ms, p99 {r['added_p99_ms']} ms")  # fmt: skip
    audit = report.get("audit", {})
    extra.append(
        "audit: "
        + ("OK" if not audit.get("problems") else "FAILED " + "; ".join(audit["problems"]))
        + f" ({audit.get('accounts', 0)} accounts, journal checked: {audit.get('journal_checked')},"
        f" DuckDB checked: {audit.get('analytics_checked', False)})"
    )
    if b and b.get("problems"):
        extra.append("baseline audit FAILED: " + "; ".join(b["problems"]))
    return "\n".join(lines) + "\n\n" + "\n\n".join(extra) + "\n"


def _run_line(name: str, r: dict) -> str:
    lat = r["latency_ms"]
    return (f"| {name} | {r['transfers_per_s']:,.0f} | {r['requests_per_s']:,.0f} | {lat['p50']} |"
            f" {lat['p90']} | {lat['p99']} | {lat['p99.9']} | {r['refused'] or '-'} |"
            f" {r['errors'] or '-'} |")  # fmt: skip


def _cpu_line(label: str, c: dict) -> str:
    unit = c["unit"]
    return (f"**node CPU, {label}: {c['cpu_us_per_' + unit]} us per {unit}** ({c['cores_used']}"
            f" cores busy over {c['processes']} processes incl. PostgreSQL; by role, s:"
            f" {c['cpu_s_by_role']}); load generator: {c['generator_cpu_us_per_' + unit]:.1f} us"
            f" per {unit}")  # fmt: skip


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if not report.get("node"):
        return  # nothing over time to draw (--mode handles)
    main_run = report["node"][0]
    left.plot(range(len(main_run["per_second"])), main_run["per_second"], label="node")
    if report.get("baseline", {}).get("per_second"):
        series = report["baseline"]["per_second"]
        left.plot(range(len(series)), series, label="baseline")
    left.set(title="Durable transfers per second", xlabel="second of run", ylabel="transfers/s")
    left.legend()
    swept = [r for r in report["node"] if r.get("offered_rate")]
    if swept:
        rates = [r["offered_rate"] for r in swept]
        for q in ("p50", "p90", "p99"):
            right.plot(rates, [r["latency_ms"][q] for r in swept], marker="o", label=q)
        right.set(title="Latency vs offered rate", xlabel="offered transfers/s", ylabel="ms")
    else:
        qs = ["p50", "p90", "p99", "p99.9"]
        right.bar(qs, [main_run["latency_ms"][q] for q in qs])
        right.set(title="Latency per request", ylabel="ms")
    right.legend() if swept else None
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


COMMAND = Command("bench", "load a node, audit it, compare with a baseline", add_arguments, main)
