"""Steps every bench mode shares: create the workload's accounts, drive the load, audit."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit

from paynode.benchmarks import drivers, http_load
from paynode.benchmarks.workload import AccountPlan, Workload
from paynode.storage.audit import journal_balances

# Bodies built before a run: enough for these rates (more are built during it if needed).
PREBUILT_TRANSFERS_PER_S = 60_000
PREBUILT_REQUESTS_PER_S = 6_000


def load(args: argparse.Namespace, url: str, w: Workload) -> list[drivers.RunResult]:
    """The load of ``args.mode`` (batch or single) on ``url``, with bodies built beforehand."""
    if args.mode == "batch":
        count = int(args.duration * PREBUILT_TRANSFERS_PER_S / args.batch_size) + args.concurrency
        bodies = w.bodies(lambda: w.batch_json(args.batch_size), count)
        return [asyncio.run(drivers.closed_batch(url, bodies, args.concurrency, args.batch_size,
                                                 args.duration))]  # fmt: skip
    if args.rate:
        return [open_single(url, single_requests(url, w, args.rate, args.duration), args.rate,
                            args.duration)]  # fmt: skip
    requests = single_requests(url, w, PREBUILT_REQUESTS_PER_S, args.duration)
    runs = [closed_single(url, requests, args.concurrency, args.duration)]
    if args.sweep:
        peak = runs[0].rate
        for share in (0.25, 0.5, 0.75):
            print(f"open loop at {share:.0%} of peak ({peak * share:,.0f}/s) ...", flush=True)
            runs.append(open_single(url, requests, peak * share, args.duration / 2))
    return runs


def single_target(url: str) -> http_load.Target:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return http_load.Target(parts.hostname, parts.port, "/v1/transfers", drivers.api_headers())


def single_requests(url: str, w: Workload, rate: float, duration: float) -> Iterator[bytes]:
    """Whole HTTP requests of one transfer each, enough for ``rate`` over ``duration``
    built now (before the run), more made on the fly if the run needs them."""
    target = single_target(url)
    return w.bodies(lambda: target.request(w.transfer_json()), int(rate * duration) + 64)


def closed_single(url: str, requests: Iterator[bytes], concurrency: int, duration: float,
                  mode: str = "single") -> drivers.RunResult:  # fmt: skip
    """One transfer per request, ``concurrency`` connections in a closed loop."""
    return http_load.run(lambda: http_load.closed_loop(single_target(url), requests, concurrency,
                                                       duration, mode))  # fmt: skip


def open_single(url: str, requests: Iterator[bytes], rate: float, duration: float
                ) -> drivers.RunResult:  # fmt: skip
    """One transfer per request at a fixed rate (latency from each request's due time)."""
    return http_load.run(lambda: http_load.open_loop(single_target(url), requests, rate, duration))


async def create_accounts(url: str, w: Workload, owners: dict[str, str] | None = None) -> None:
    sem = asyncio.Semaphore(64)
    owners = owners or {}
    async with drivers.session() as http:

        async def create(account_id: str, no_overdraft: bool) -> None:
            flags = ["debits_must_not_exceed_credits"] if no_overdraft else []
            body: dict = {"id": account_id, "currency": "USD", "flags": flags}
            if account_id in owners:
                body["owner_user_id"] = owners[account_id]
            async with sem, http.post(f"{url}/v1/accounts", json=body) as r:
                assert r.status in (200, 201), await r.text()

        await create(w.treasury(), False)
        await asyncio.gather(*(create(a.id, a.no_overdraft) for a in w.accounts))
        funding = w.funding()
        for k in range(0, len(funding), 4000):
            async with http.post(f"{url}/v1/transfers/batch",
                                 json={"transfers": funding[k : k + 4000]}) as r:  # fmt: skip
                results = (await r.json())["results"]
                assert all("status" in x for x in results), results[:3]


async def audit_http(url: str, database_url: str | None, w: Workload) -> dict:
    """Memory (every account over HTTP) == journal aggregate; zero sum; no overdraft."""
    problems: list[str] = []
    sem = asyncio.Semaphore(64)
    memory: dict[str, tuple[int, int, int, int]] = {}
    async with drivers.session() as http:

        async def get(account_id: str) -> None:
            async with sem, http.get(f"{url}/v1/accounts/{account_id}") as r:
                b = await r.json()
                memory[account_id] = (b["debits_posted"], b["credits_posted"],
                                      b["debits_pending"], b["credits_pending"])  # fmt: skip

        await asyncio.gather(*(get(a) for a in [w.treasury(), *w.ids]))
    total = sum(cp - dp for dp, cp, _, _ in memory.values())
    if total != 0:
        problems.append(f"balances sum to {total}, not 0")
    for a in w.accounts:
        dp, cp, dpend, _ = memory[a.id]
        if a.no_overdraft and dp + dpend > cp:
            problems.append(f"{a.id} overdrawn")
    checked_journal = False
    if database_url:
        journal = journal_balances(database_url)
        diff = [a for a, b in memory.items() if journal.get(a, (0, 0, 0, 0)) != b]
        if diff:
            problems.append(f"{len(diff)} accounts differ from the journal, e.g. {diff[:3]}")
        checked_journal = True
    return {"accounts": len(memory), "journal_checked": checked_journal, "problems": problems}


def create_accounts_direct(shards: list, w: Workload, n: int) -> None:
    """The workload's accounts and funding, straight through the shard actors."""
    import ray

    from paynode.domain.ledger.model import NO_METADATA, AccountFlags, AccountSpec, TransferOp
    from paynode.domain.ledger.wire import encode

    count = len(shards)
    specs: dict[int, list[AccountSpec]] = {}
    funding: dict[int, list[list[TransferOp]]] = {}
    no_overdraft = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    for a in [AccountPlan(w.treasury(), False), *w.accounts]:
        flags = no_overdraft if a.no_overdraft else 0
        specs.setdefault(shard_of(a.id, count), []).append(
            AccountSpec(a.id, "USD", flags, NO_METADATA)
        )
    for t in w.funding():
        op = TransferOp(t["id"], t["debit_account_id"], t["credit_account_id"], t["amount"],
                        "USD", 0, None, 0, NO_METADATA)  # fmt: skip
        funding.setdefault(shard_of(op.debit_account_id, count), []).append([op])
    print(f"creating {n} accounts ...", flush=True)
    ray.get([shards[s].create_accounts.remote(encode(v)) for s, v in specs.items()])
    ray.get([shards[s].execute.remote(encode(v)) for s, v in funding.items()])


def shard_of(account_id: str, count: int) -> int:
    from paynode.domain.ledger.model import shard_key

    return shard_key(account_id) % count


def wait_listening(port: int, timeout_s: float = 30.0) -> None:
    """Until a server answers on ``port`` (its socket was bound before it started)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on port {port}") from None
            time.sleep(0.1)
