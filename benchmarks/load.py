"""A closed-loop HTTP load generator for a running node.

    python -m benchmarks.load --url http://127.0.0.1:8000 --mode single -c 64 -d 10
    python -m benchmarks.load --mode batch --batch-size 2000 -c 4 -d 10

Prints acknowledged (durable) transfers per second and latency percentiles
per request. Accounts are created first (half of them with no-overdraft and
funded), transfers pick random pairs so most cross shards.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time
import uuid

import aiohttp


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _setup(http: aiohttp.ClientSession, url: str, n: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-a{i}" for i in range(n)]

    async def create(i: int, a: str) -> None:
        flags = ["debits_must_not_exceed_credits"] if i % 2 else []
        async with http.post(f"{url}/v1/accounts", json={"id": a, "currency": "USD",
                                                         "flags": flags}) as r:  # fmt: skip
            assert r.status in (200, 201), await r.text()

    sem = asyncio.Semaphore(64)

    async def guarded(i: int, a: str) -> None:
        async with sem:
            await create(i, a)

    await asyncio.gather(*(guarded(i, a) for i, a in enumerate(ids)))
    funding = [
        {"id": f"{prefix}-fund{i}", "debit_account_id": ids[0], "credit_account_id": a,
         "amount": 10**9, "currency": "USD"}
        for i, a in enumerate(ids) if i % 2
    ]  # fmt: skip
    for k in range(0, len(funding), 4000):
        async with http.post(f"{url}/v1/transfers/batch",
                             json={"transfers": funding[k:k + 4000]}) as r:  # fmt: skip
            assert r.status == 200
    return ids


async def run(args: argparse.Namespace) -> None:
    prefix = uuid.uuid4().hex[:8]
    rng = random.Random(1)
    connector = aiohttp.TCPConnector(limit=args.concurrency + 8)
    async with aiohttp.ClientSession(connector=connector) as http:
        ids = await _setup(http, args.url, args.accounts, prefix)
        seq = itertools.count()
        latencies: list[float] = []
        acked = 0
        refused = 0
        stop_at = time.perf_counter() + args.duration

        def body() -> dict:
            dr, cr = rng.sample(ids, 2)
            amount = rng.randint(1, 1000)
            return {"id": f"{prefix}-{next(seq)}", "debit_account_id": dr,
                    "credit_account_id": cr, "amount": amount, "currency": "USD"}  # fmt: skip

        async def single() -> None:
            nonlocal acked, refused
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with http.post(f"{args.url}/v1/transfers", json=body()) as r:
                    await r.read()
                    latencies.append(time.perf_counter() - t0)
                    if r.status in (200, 201):
                        acked += 1
                    else:
                        refused += 1

        async def batch() -> None:
            nonlocal acked, refused
            while time.perf_counter() < stop_at:
                payload = {"transfers": [body() for _ in range(args.batch_size)]}
                t0 = time.perf_counter()
                async with http.post(f"{args.url}/v1/transfers/batch", json=payload) as r:
                    results = (await r.json())["results"]
                    latencies.append(time.perf_counter() - t0)
                ok = sum(1 for x in results if "status" in x)
                acked += ok
                refused += len(results) - ok

        worker = single if args.mode == "single" else batch
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    print(
        f"mode={args.mode} concurrency={args.concurrency} "
        f"batch={args.batch_size if args.mode == 'batch' else 1} duration={elapsed:.1f}s\n"
        f"  transfers/s (acknowledged): {acked / elapsed:,.0f}   refused: {refused}\n"
        f"  requests/s: {len(latencies) / elapsed:,.0f}\n"
        f"  latency per request ms: p50={_percentile(latencies, 0.5) * 1e3:.1f} "
        f"p90={_percentile(latencies, 0.9) * 1e3:.1f} p99={_percentile(latencies, 0.99) * 1e3:.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--mode", choices=("single", "batch"), default="single")
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--accounts", type=int, default=1000)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
