"""Load and ledger audit shared by the fault tests (SIGKILL cycles, cluster mode).

The load mixes single transfers with two-transfer linked batches whose debit
accounts usually sit on different shards, so both the one-decider path and
the two-phase path are under way when something is killed. Every 2xx is
remembered; the audit then checks the ledger core's invariants against the
journal in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg

from paynode.storage.audit import currency_totals, journal_balances
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_HEADERS

CONSTRAINED = "debits_must_not_exceed_credits"


@dataclass
class LoadResult:
    acked: list[str] = field(default_factory=list)  # transfer ids answered 2xx
    answers: Counter = field(default_factory=Counter)  # status or problem code -> count
    latencies: list[float] = field(default_factory=list)
    fault_at: float | None = None  # monotonic time the fault was injected
    recovered_at: float | None = None  # first acknowledgement after it

    @property
    def recovery_s(self) -> float | None:
        if self.fault_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.fault_at

    def ack(self, ids: list[str]) -> None:
        self.acked += ids
        if ids and self.fault_at is not None and self.recovered_at is None:
            self.recovered_at = time.monotonic()


def create_accounts(url: str, prefix: str, count: int) -> list[str]:
    """Accounts alternating unconstrained / debits-must-not-exceed-credits, funded from
    the unconstrained ones so constrained accounts have something to spend."""
    ids = [f"{prefix}{i}" for i in range(count)]
    with httpx.Client(base_url=url, timeout=30, headers=ADMIN_HEADERS) as http:
        for i, a in enumerate(ids):
            flags = [CONSTRAINED] if i % 2 else []
            r = http.post("/v1/accounts", json={"id": a, "currency": "USD", "flags": flags})
            assert r.status_code == 201, r.text
        for i in range(1, count, 2):
            body = {"id": f"{prefix}fund{i}", "debit_account_id": ids[i - 1],
                    "credit_account_id": ids[i], "amount": 500, "currency": "USD"}  # fmt: skip
            r = http.post("/v1/transfers", json=body)
            assert r.status_code == 201, r.text
    return ids


async def drive(url: str, ids: list[str], prefix: str, stop: asyncio.Event, out: LoadResult,
                clients: int = 32, seed: int = 7) -> None:  # fmt: skip
    """Transfers from ``clients`` concurrent connections until ``stop`` is set."""
    rng = random.Random(seed)
    counter = itertools.count()

    def transfer(debit: str, credit: str, linked: bool = False) -> dict:
        body = {"id": f"{prefix}{next(counter)}", "debit_account_id": debit,
                "credit_account_id": credit, "amount": rng.randint(1, 40),
                "currency": "USD"}  # fmt: skip
        if linked:
            body["flags"] = ["linked"]
        return body

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            if rng.random() < 0.25:
                a, b, c, d = rng.sample(ids, 4)
                batch = [transfer(a, b, linked=True), transfer(c, d)]
                try:
                    r = await http.post("/v1/transfers/batch", json={"transfers": batch})
                except httpx.HTTPError:
                    out.answers["connection"] += 1
                    continue  # no answer: no acknowledgement
                if r.status_code == 200:
                    results = r.json()["results"]
                    out.ack([x["id"] for x in results if x.get("status")])
                    out.answers["batch"] += 1
                else:
                    out.answers[_code(r)] += 1
            else:
                a, b = rng.sample(ids, 2)
                try:
                    r = await http.post("/v1/transfers", json=transfer(a, b))
                except httpx.HTTPError:
                    out.answers["connection"] += 1
                    continue
                if r.status_code in (200, 201):
                    out.ack([r.json()["id"]])
                out.answers[_code(r)] += 1
            out.latencies.append(time.perf_counter() - t0)

    # Pools of 8: httpcore looks at every connection of a pool on each request, so one
    # big pool costs the machine's CPU that the node under test should have.
    pools = max(1, clients // 8)
    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(httpx.AsyncClient(
                base_url=url, timeout=20, headers=ADMIN_HEADERS,
                limits=httpx.Limits(max_connections=-(-clients // pools)),
            ))
            for _ in range(pools)
        ]  # fmt: skip
        await asyncio.gather(*(client(https[c % pools]) for c in range(clients)))


def _code(r: httpx.Response) -> str:
    if r.status_code < 300:
        return str(r.status_code)
    try:
        return str(r.json().get("code", r.status_code))
    except ValueError:
        return str(r.status_code)


def run_load_until(url: str, ids: list[str], prefix: str, fault, min_acked: int = 300,
                   after_s: float = 1.0, clients: int = 32) -> LoadResult:  # fmt: skip
    """Run the load, call ``fault()`` once ``min_acked`` transfers were acknowledged,
    keep the load going ``after_s`` seconds more, then stop it."""

    async def main() -> LoadResult:
        stop = asyncio.Event()
        result = LoadResult()
        task = asyncio.create_task(drive(url, ids, prefix, stop, result, clients))
        deadline = time.monotonic() + 60
        while len(result.acked) < min_acked and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(result.acked) >= min_acked, f"the load never got going: {result.answers}"
        result.fault_at = time.monotonic()
        await asyncio.to_thread(fault)
        await asyncio.sleep(after_s)
        stop.set()
        await task
        return result

    return asyncio.run(main())


def memory_vs_journal(http: httpx.Client, journal: dict, ids: list[str]) -> list[tuple]:
    """Accounts whose balances as the node reports them differ from ``journal``
    (``storage.audit.journal_balances``); a constrained account overdrawn fails at once."""
    mismatched: list[tuple] = []
    for a in ids:
        r = http.get(f"/v1/accounts/{a}")
        if r.status_code != 200:
            mismatched.append((a, r.status_code))
            continue
        b = r.json()
        mem = (b["debits_posted"], b["credits_posted"], b["debits_pending"],
               b["credits_pending"])  # fmt: skip
        if mem != journal.get(a, (0, 0, 0, 0)):
            mismatched.append((a, mem, journal.get(a)))
        if CONSTRAINED in b["flags"]:
            assert b["debits_posted"] <= b["credits_posted"], f"{a} overdrawn: {b}"
    return mismatched


def audit(url: str, database_url: str, ids: list[str], acked: list[str],
          settle_s: float = 60.0) -> int:  # fmt: skip
    """The ledger core's invariants after a fault; returns the transfers checked.

    - every acknowledged transfer is in the journal;
    - every account's balances as the node reports them equal the journal's
      (polled with a deadline: a shard's peers re-read the journal after it
      restarts, and refuse work while they do);
    - no constrained account is overdrawn, and debits equal credits.
    """
    with psycopg.connect(libpq_url(database_url)) as conn:
        journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
    lost = set(acked) - journaled
    assert not lost, f"{len(lost)} acknowledged transfers lost, e.g. {sorted(lost)[:5]}"
    journal = journal_balances(database_url)
    deadline = time.monotonic() + settle_s
    with httpx.Client(base_url=url, timeout=30, headers=ADMIN_HEADERS) as http:
        while mismatched := memory_vs_journal(http, journal, ids):
            assert time.monotonic() < deadline, f"memory differs from the journal: {mismatched}"
            time.sleep(0.1)
    assert currency_totals(database_url) == {"USD": 0}
    return len(journaled)
