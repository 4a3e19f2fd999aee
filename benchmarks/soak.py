"""``paynode bench --mode soak``: memory over a long load, and restart time by journal size.

1. **Memory.** The batch load runs for ``--duration`` seconds in ``--samples``
   rounds. After each round: the journal's row count, the proportional set size
   (PSS: shared pages counted once) of the shard processes, and the RSS of the
   node's whole process tree. Shard bytes per journaled transfer is the slope of
   shard PSS over journal rows in the second half of the rounds: once the
   recent-id window (``id_window``) is full it should approach 0.
2. **Restarts.** The node is stopped cleanly (its last ledger checkpoint) and
   started again, timed from the start command to ``/ready``. Then ``--soak-rows``
   journal rows are written straight into PostgreSQL (balanced transfers between
   accounts of their own, time-ordered ids) and the node is killed -9 and
   started: no checkpoint covers those rows, so the shards replay every one.
   Then the checkpoint folds them (timed), and the node is killed -9 and
   started again: a crash with a current checkpoint, whatever the journal's
   size. Last, a clean stop and a start. The node runs with
   ``checkpoint_interval_s`` 0 here, so only clean stops and this bench
   advance the checkpoint.

The rows written in step 2 bypass the shards, so they are only audited after a
restart has read them: the memory-equals-journal check runs at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import psutil
import psycopg

from paynode.benchmarks import drivers, steps
from paynode.benchmarks.cpu import role
from paynode.benchmarks.workload import Workload
from paynode.domain.ledger.model import shard_key
from paynode.storage import checkpoint
from paynode.storage.audit import journal_balances
from paynode.storage.database import connect, libpq_url

SOAK_ACCOUNTS = 1000
INSERT_CHUNK = 1_000_000


def shard_pss(processes: list[psutil.Process]) -> int:
    """Bytes of PSS of the ledger shard workers among ``processes``."""
    total = 0
    for p in processes:
        try:
            if "LedgerShard" in " ".join(p.cmdline()):
                total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def _rows(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as conn:
        found = conn.execute("SELECT count(*) FROM transfers").fetchone()
    assert found is not None
    return int(found[0])


def _slope(points: list[tuple[int, int]]) -> float | None:
    """Least-squares bytes per row over (rows, bytes) points."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _write_rows(database_url: str, count: int) -> float:
    """``count`` balanced posted transfers between soak accounts, by INSERT ... SELECT;
    returns the seconds it took."""
    t0 = time.perf_counter()
    now = time.time_ns()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY accounts (id, currency, flags, metadata, shard_key, ts) FROM STDIN"
            ) as copy,
        ):
            for k in range(SOAK_ACCOUNTS):
                account = f"soak-a{k}"
                copy.write_row((account, "USD", 0, "{}", shard_key(account), now + k))
        done = 0
        while done < count:
            n = min(INSERT_CHUNK, count - done)
            # debit i % K and credit (7i + 1) % K differ for every i (6i + 1 is odd).
            conn.execute(
                "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount,"
                " currency, flags, pending_id, timeout_s, metadata, status, posted_amount,"
                " pending_delta, ts)"
                " SELECT 'soak-' || lpad(i::text, 11, '0'), 'soak-a' || (i %% %(k)s),"
                " 'soak-a' || ((7 * i + 1) %% %(k)s), 1 + i %% 997, 'USD', 0, NULL, 0, '{}',"
                " 'posted', 1 + i %% 997, 0, %(ts)s + i"
                " FROM generate_series(%(lo)s, %(hi)s) i",
                {"k": SOAK_ACCOUNTS, "ts": now + SOAK_ACCOUNTS, "lo": done + 1, "hi": done + n},
            )
            done += n
            print(f"  {done:,} journal rows written", flush=True)
        conn.execute("ANALYZE transfers")
    return time.perf_counter() - t0


async def _fold(database_url: str) -> float:
    """What the checkpointer does: fold the journal into the checkpoint until caught up."""
    t0 = time.perf_counter()
    conn = await connect(database_url, "paynode-soak-checkpoint")
    try:
        while not (await checkpoint.advance(conn))[2]:
            pass
    finally:
        await conn.close()
    return time.perf_counter() - t0


def _timed_start(node: Any) -> float:
    t0 = time.perf_counter()
    node.start(timeout=1800)
    return round(time.perf_counter() - t0, 2)


def run(args: argparse.Namespace, w: Workload, target: Any, report: dict) -> bool:
    node, url, database_url = target.node, target.url, target.database_url
    assert node is not None and url and database_url, "soak starts its own node"
    idle = idle_tree(node.processes())
    print(f"idle tree: {idle['pss_mb']} MB PSS", flush=True)
    print(f"creating {args.accounts} accounts ...", flush=True)
    asyncio.run(steps.create_accounts(url, w))
    samples: list[dict] = []
    round_s = args.duration / args.samples
    t0 = time.perf_counter()
    for k in range(args.samples):
        one = argparse.Namespace(**{**vars(args), "duration": round_s, "mode": "batch"})
        run_ = steps.load(one, url, w)[0]
        processes = node.processes()
        sample = {
            "t_s": round(time.perf_counter() - t0, 1),
            "journal_rows": _rows(database_url),
            "shard_pss_mb": round(shard_pss(processes) / 2**20, 1),
            "tree_rss_mb": round(sum(_rss(p) for p in processes) / 2**20, 1),
            "tree_pss_mb": round(sum(_pss(p) for p in processes) / 2**20, 1),
            "transfers_per_s": round(run_.rate),
        }
        samples.append(sample)
        print(f"  round {k + 1}/{args.samples}: {sample}", flush=True)
    half = samples[len(samples) // 2 :]
    slope = _slope([(s["journal_rows"], int(s["shard_pss_mb"] * 2**20)) for s in half])
    per_row = None if slope is None else round(slope, 1)
    soak: dict = {
        "idle_tree": idle,
        "samples": samples,
        "shard_bytes_per_transfer_second_half": per_row,
    }

    print("restart after a clean stop ...", flush=True)
    node.stop()
    soak["restart_clean_s"] = _timed_start(node)
    soak["journal_rows_before_restarts"] = _rows(database_url)

    print(f"writing {args.soak_rows:,} journal rows ...", flush=True)
    soak["rows_written"] = args.soak_rows
    soak["rows_write_s"] = round(_write_rows(database_url, args.soak_rows), 1)
    soak["journal_rows"] = _rows(database_url)
    print("kill -9, restart: every row after the checkpoint replayed ...", flush=True)
    node.kill()
    soak["restart_replaying_s"] = _timed_start(node)
    print("checkpoint folds them; kill -9, restart ...", flush=True)
    soak["checkpoint_fold_s"] = round(asyncio.run(_fold(database_url)), 1)
    node.kill()
    soak["restart_after_kill_with_checkpoint_s"] = _timed_start(node)
    print("clean stop, restart ...", flush=True)
    t1 = time.perf_counter()
    node.stop(timeout=1800)
    soak["stop_s"] = round(time.perf_counter() - t1, 1)
    soak["restart_from_checkpoint_s"] = _timed_start(node)
    soak["shard_pss_after_restart_mb"] = round(shard_pss(node.processes()) / 2**20, 1)
    report["soak"] = soak
    report["audit"] = asyncio.run(steps.audit_http(url, database_url, w))
    report["audit"]["problems"] += _audit_soak_accounts(url, database_url)
    return not report["audit"]["problems"]


def idle_tree(processes: list[psutil.Process]) -> dict:
    """The started node's memory before any load, in all and by role (PSS: pages shared
    between the Ray workers counted once)."""
    by_role: dict[str, int] = {}
    for p in processes:
        by_role[role(p)] = by_role.get(role(p), 0) + _pss(p)
    return {
        "pss_mb": round(sum(by_role.values()) / 2**20, 1),
        "pss_mb_by_role": {k: round(v / 2**20, 1) for k, v in sorted(by_role.items())},
    }


def _audit_soak_accounts(url: str, database_url: str) -> list[str]:
    """The rows written behind the shards' back are in their memory after the restarts."""
    journal = journal_balances(database_url)
    problems = []
    with httpx.Client(base_url=url, timeout=30, headers=drivers.api_headers()) as http:
        for k in range(0, SOAK_ACCOUNTS, 37):
            b = http.get(f"/v1/accounts/soak-a{k}").json()
            memory = (b["debits_posted"], b["credits_posted"], b["debits_pending"],
                      b["credits_pending"])  # fmt: skip
            if journal.get(f"soak-a{k}", (0, 0, 0, 0)) != memory:
                problems.append(f"soak-a{k}: memory {memory} != journal")
    return problems


def _rss(p: psutil.Process) -> int:
    try:
        return int(p.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def _pss(p: psutil.Process) -> int:
    """Shared pages (PostgreSQL's buffers, Ray's object store) counted once over the tree."""
    try:
        return int(p.memory_full_info().pss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def markdown(soak: dict) -> list[str]:
    """The soak section of the bench's summary."""
    lines = ["| t s | journal rows | shard PSS MB | tree PSS MB | tree RSS MB | transfers/s |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for s in soak["samples"]:
        lines.append(f"| {s['t_s']} | {s['journal_rows']:,} | {s['shard_pss_mb']} |"
                     f" {s['tree_pss_mb']} | {s['tree_rss_mb']} |"
                     f" {s['transfers_per_s']:,} |")  # fmt: skip
    lines = ["\n".join(lines)]  # one block: the summary puts blank lines between entries
    lines += [
        f"idle tree before the load: {soak['idle_tree']['pss_mb']} MB PSS",
        f"**shard bytes per journaled transfer (second half): "
        f"{soak['shard_bytes_per_transfer_second_half']}**",
        f"restart after a clean stop: {soak['restart_clean_s']} s at "
        f"{soak['journal_rows_before_restarts']:,} rows",
        f"{soak['rows_written']:,} rows written in {soak['rows_write_s']} s; journal "
        f"{soak['journal_rows']:,} rows",
        f"restart replaying them (kill -9, no checkpoint over them): "
        f"{soak['restart_replaying_s']} s",
        f"checkpoint folding them: {soak['checkpoint_fold_s']} s; then kill -9 and restart: "
        f"{soak['restart_after_kill_with_checkpoint_s']} s",
        f"clean stop: {soak['stop_s']} s; restart: {soak['restart_from_checkpoint_s']} s "
        f"(shard PSS {soak['shard_pss_after_restart_mb']} MB)",
    ]
    return lines
