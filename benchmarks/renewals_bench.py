"""``paynode bench --mode renewals``: many subscriptions renewed at the same instant.

Set-up (not timed): a merchant with a monthly price, ``--accounts`` customer wallets
(funded in batches of transfers), one subscription each with a one-day trial, all on
one test clock. Timed: the clock is advanced past the trial end, so every subscription
falls due at once; the fronts' billing scheduler claims them ``billing.batch`` at a
time and collects each pass's invoices in one ledger batch. The run ends when every
first invoice is paid (read from PostgreSQL). Reported: renewals per second, and the
node's CPU per renewal over its whole process tree (PostgreSQL included).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time

import aiohttp
import psycopg

from paynode.benchmarks import drivers
from paynode.benchmarks.cpu import CpuMeter
from paynode.benchmarks.workload import Workload
from paynode.storage.database import libpq_url

PASSWORD = "a long enough passphrase"
PRICE = 1_000  # minor units a month
FUNDS = 10 * PRICE
TRANSFERS_PER_CALL = 8_000
WAIT_S = 1_800  # the longest a run may take before it is called failed


async def _check(r: aiohttp.ClientResponse, *ok: int) -> dict:
    body = await r.json(content_type=None)
    if r.status not in ok:
        raise RuntimeError(f"{r.method} {r.url.path}: {r.status} {body}")
    return body


async def _pool(n: int, concurrency: int, one) -> None:
    """Run ``one(i)`` for i in range(n), ``concurrency`` at a time."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _setup(
    s: aiohttp.ClientSession, url: str, n: int, tag: str, concurrency: int
) -> tuple[str, float]:
    """The merchant, price, wallets and subscriptions; the test clock's id and how many
    subscriptions a second ``POST /v1/subscriptions`` made (``concurrency`` at a time)."""
    creds = {"email": f"renew-{tag}@example.com", "password": PASSWORD}
    customer = (await _check(await s.post(f"{url}/v1/auth/register", json=creds), 201))["user_id"]
    for account_id, owner in ((f"rn-{tag}-treasury", None), (f"rn-{tag}-merchant", customer)):
        body = {"id": account_id, "currency": "USD"} | ({"owner_user_id": owner} if owner else {})
        await _check(await s.post(f"{url}/v1/accounts", json=body), 201)
    await _check(await s.post(f"{url}/v1/products", json={"id": f"rn-{tag}", "name": "Plan"}), 201)
    await _check(await s.post(f"{url}/v1/prices", json={
        "id": f"rn-{tag}-monthly", "product": f"rn-{tag}", "amount": PRICE, "currency": "USD",
        "interval": "month", "payout_account_id": f"rn-{tag}-merchant"}), 201)  # fmt: skip
    start = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    clock = f"rn-{tag}-clock"
    body = {"id": clock, "frozen_time": start.isoformat()}
    await _check(await s.post(f"{url}/v1/test-clocks", json=body), 201)
    print(f"renewals: {n} wallets ...", flush=True)

    async def wallet(i: int) -> None:
        await _check(await s.post(f"{url}/v1/accounts", json={
            "id": f"rn-{tag}-w{i}", "currency": "USD", "owner_user_id": customer,
            "flags": ["debits_must_not_exceed_credits"]}), 201)  # fmt: skip

    await _pool(n, concurrency, wallet)
    for first in range(0, n, TRANSFERS_PER_CALL):
        batch = [{"id": f"rn-{tag}-fund{i}", "debit_account_id": f"rn-{tag}-treasury",
                  "credit_account_id": f"rn-{tag}-w{i}", "amount": FUNDS, "currency": "USD"}
                 for i in range(first, min(n, first + TRANSFERS_PER_CALL))]  # fmt: skip
        got = await _check(await s.post(f"{url}/v1/transfers/batch", json={"transfers": batch}),
                           200)  # fmt: skip
        assert all("status" in r for r in got["results"]), "a funding transfer was refused"
    print(f"renewals: {n} subscriptions (1-day trials) ...", flush=True)

    async def subscribe(i: int) -> None:
        await _check(await s.post(f"{url}/v1/subscriptions", json={
            "price": f"rn-{tag}-monthly", "customer_account": f"rn-{tag}-w{i}",
            "trial_days": 1, "test_clock": clock}), 201)  # fmt: skip

    t0 = time.perf_counter()
    await _pool(n, concurrency, subscribe)
    per_s = n / (time.perf_counter() - t0)
    print(f"renewals: {n} subscriptions made at {per_s:.0f}/s", flush=True)
    return clock, per_s


def _paid(database_url: str, tag: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM billing_invoices i JOIN billing_subscriptions s"
            " ON s.id = i.subscription_id"
            " WHERE s.price_id = %s AND i.status = 'paid'", (f"rn-{tag}-monthly",),
        ).fetchone()  # fmt: skip
    return int(row[0]) if row else 0


async def _renew(url: str, database_url: str, n: int, concurrency: int, node) -> dict:
    tag = hex(time.time_ns())[-8:]
    async with drivers.session(concurrency) as s:
        clock, subscribe_per_s = await _setup(s, url, n, tag, concurrency)
        meter = CpuMeter(node.processes) if node is not None else None
        print(f"renewals: the clock passes the trial end: {n} renewals due at once ...",
              flush=True)  # fmt: skip
        if meter is not None:
            meter.start()
        t0 = time.perf_counter()
        to = dt.datetime(2027, 1, 2, 1, tzinfo=dt.UTC).isoformat()
        await _check(await s.post(f"{url}/v1/test-clocks/{clock}/advance", json={"to": to}), 200)
        paid = 0
        while paid < n and time.perf_counter() - t0 < WAIT_S:
            await asyncio.sleep(0.25)
            paid = await asyncio.to_thread(_paid, database_url, tag)
        elapsed = time.perf_counter() - t0
        window = meter.stop() if meter is not None else None
    out: dict = {"subscriptions": n, "renewed": paid, "seconds": round(elapsed, 2),
           "renewals_per_s": round(paid / elapsed, 1) if elapsed else None,
           "subscriptions_made_per_s": round(subscribe_per_s, 1)}  # fmt: skip
    if window is not None:
        out["node_cpu"] = window.summary(paid, "renewal")
    return out


def run(args: argparse.Namespace, w: Workload, target, report: dict) -> bool:
    assert target.url is not None and target.database_url, "renewals: a local node"
    n = args.accounts
    result = asyncio.run(_renew(target.url, target.database_url, n, 32, target.node))
    report["renewals"] = result
    cpu = result.get("node_cpu", {})
    print(f"renewals: {result['renewed']}/{n} paid in {result['seconds']} s:"
          f" {result['renewals_per_s']} renewals/s, node CPU"
          f" {cpu.get('cpu_us_per_renewal')} us per renewal"
          f" ({cpu.get('cores_used')} cores busy)")  # fmt: skip
    return result["renewed"] == n
