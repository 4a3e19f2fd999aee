"""``paynode sim``: run the deterministic simulator for one seed or many.

paynode sim --seed 42          # one run, replayed exactly from its seed
paynode sim --seeds 100000     # many runs; every failing seed is printed
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from paynode.node.plugins import Command
from paynode.sim.run import Report, run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="run this seed only, and print its report")
    p.add_argument("--seeds", type=int, default=200, help="how many seeds to run (default 200)")
    p.add_argument("--first", type=int, default=0, help="the first seed of --seeds (default 0)")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--steps", type=int, default=25, help="requests per client (default 25)")
    p.add_argument("--verbose", action="store_true", help="the code under test's own logs too")


def _line(r: Report) -> str:
    state = "ok" if r.ok else "FAILED"
    return (f"seed {r.seed}: {state}; {r.requests} requests, {r.acked} acknowledged transfers,"
            f" {r.commits} commits ({r.torn_commits} torn), {r.kills} shard kills,"
            f" {r.calls} calls, {r.virtual_s:.1f} s virtual in {r.wall_s:.2f} s;"
            f" journal {r.fingerprint}")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    if not args.verbose:  # the code under test logs every injected fault
        logging.disable(logging.CRITICAL)
    if not 1 <= args.shards <= 16 or not 1 <= args.clients <= 64 or not args.steps >= 1:
        print("paynode sim: --shards 1..16, --clients 1..64, --steps >= 1", file=sys.stderr)
        return 2
    options = {"shards": args.shards, "clients": args.clients, "steps": args.steps}
    if args.seed is not None:
        report = run(args.seed, **options)
        print(_line(report))
        if not report.ok:
            print(f"  {report.failure}")
        return 0 if report.ok else 1
    t0, failed = time.perf_counter(), []
    for seed in range(args.first, args.first + args.seeds):
        report = run(seed, **options)
        if not report.ok:
            failed.append(report)
            print(f"{_line(report)}\n  {report.failure}", flush=True)
    wall_s = time.perf_counter() - t0
    replay = f": replay one with `paynode sim --seed {failed[0].seed}`" if failed else ""
    print(f"{args.seeds} seeds in {wall_s:.1f} s ({args.seeds / wall_s:.1f} seeds/s);"
          f" {len(failed)} failed{replay}")  # fmt: skip
    return 1 if failed else 0


COMMAND = Command("sim", "run the deterministic simulator of the ledger core", add_arguments, main)
