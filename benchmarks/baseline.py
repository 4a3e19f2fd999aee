"""The conventional PostgreSQL ledger that ``paynode bench --baseline`` compares against.

This is what most ledgers do: one database transaction per transfer, on the
same PostgreSQL server as the node, durable at commit (``synchronous_commit``
left at the server default)::

    BEGIN;
    SELECT ... FROM accounts WHERE id IN (debit, credit) ORDER BY id FOR UPDATE;
    INSERT INTO transfers ... ON CONFLICT (id) DO NOTHING RETURNING id;  -- none: "exists"
    -- no-overdraft check on the locked debit row                       -- fails: rollback
    UPDATE accounts SET debits/credits = ... WHERE id IN (debit, credit);
    COMMIT;

Rows are locked in id order, so two transfers over the same pair of accounts
cannot deadlock. The duplicate check comes before the limit check so that a
replay of a committed transfer reports "exists" whatever the balance is now.
Integers only (bigint minor units). Each concurrent client has its own
connection (autocommit off) and runs a closed loop over ``Workload.transfer()``.

Funding transfers are stored in ``transfers`` too, so after any run every
account's balances must equal the aggregate of that table (see ``check``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg import errors, sql

from paynode.benchmarks.histogram import Histogram
from paynode.benchmarks.workload import Workload
from paynode.storage.database import libpq_url

# Bounded waits, like the node's own connections: a stuck lock is an error, not a hang.
_OPTIONS = "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000"

OK = "ok"
# SQLSTATEs that abort one transfer (rolled back and counted), not the run.
_REFUSALS = {
    "40P01": "deadlock",
    "40001": "serialization",
    "55P03": "lock_not_available",
    "57014": "timeout",
}


@dataclass
class BaselineResult:
    acked: int  # committed transfers
    refused: dict[str, int]  # code -> count: "insufficient_funds", "exists", "deadlock", ...
    elapsed_s: float
    latency: Histogram  # per committed transfer, seconds, from send (BEGIN) to COMMIT returned
    per_second: list[int] = field(default_factory=list)  # commits in each 1 s slot of the run

    @property
    def throughput(self) -> float:
        """Committed transfers per second over the whole run."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class _Statements:
    lock: str
    insert: str
    update: str


@functools.lru_cache(maxsize=16)
def _statements(schema: str) -> _Statements:
    accounts = sql.Identifier(schema, "accounts")
    transfers = sql.Identifier(schema, "transfers")
    return _Statements(
        lock=sql.SQL(
            "SELECT id, no_overdraft, debits, credits FROM {} "
            "WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
        )
        .format(accounts)
        .as_string(None),
        insert=sql.SQL(
            "INSERT INTO {} (id, debit_account_id, credit_account_id, amount) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        .format(transfers)
        .as_string(None),
        # One statement for both legs; %(d)s = debit id, %(c)s = credit id, %(a)s = amount.
        update=sql.SQL(
            "UPDATE {} SET "
            "debits = debits + CASE WHEN id = %(d)s THEN %(a)s::bigint ELSE 0 END, "
            "credits = credits + CASE WHEN id = %(c)s THEN %(a)s::bigint ELSE 0 END "
            "WHERE id IN (%(d)s, %(c)s)"
        )
        .format(accounts)
        .as_string(None),
    )


async def connect(database_url: str) -> psycopg.AsyncConnection:
    """One client's connection: autocommit off, server-default synchronous_commit."""
    return await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=False, connect_timeout=10, options=_OPTIONS
    )


async def execute_transfer(
    conn: psycopg.AsyncConnection, transfer: dict, *, schema: str = "baseline"
) -> str:
    """Run one transfer as one transaction; return "ok" or the refusal code.

    Refusals ("exists", "insufficient_funds", "account_not_found", "invalid_amount",
    and the transient "deadlock", "serialization", "lock_not_available", "timeout")
    leave the transaction rolled back and nothing changed. Other errors propagate.
    """
    s = _statements(schema)
    debit, credit, amount = (
        transfer["debit_account_id"],
        transfer["credit_account_id"],
        int(transfer["amount"]),
    )
    if amount <= 0:
        return "invalid_amount"
    try:
        async with conn.cursor() as cur:
            await cur.execute(s.lock, ([debit, credit],))  # BEGIN is sent implicitly first
            rows = {r[0]: r for r in await cur.fetchall()}
            if debit not in rows or credit not in rows:
                await conn.rollback()
                return "account_not_found"
            await cur.execute(s.insert, (transfer["id"], debit, credit, amount))
            if await cur.fetchone() is None:
                await conn.rollback()
                return "exists"
            _, no_overdraft, debits, credits = rows[debit]
            if no_overdraft and credits - (debits + amount) < 0:
                await conn.rollback()
                return "insufficient_funds"
            await cur.execute(s.update, {"d": debit, "c": credit, "a": amount})
        await conn.commit()
        return OK
    except errors.Error as exc:
        code = _REFUSALS.get(exc.sqlstate or "")
        if code is None or conn.closed:
            raise
        await conn.rollback()
        return code


async def prepare(database_url: str, workload: Workload, schema: str = "baseline") -> None:
    """(Re)create schema ``schema``: accounts (workload's plus the treasury) and funding.

    Funding is applied in bulk (COPY of the transfer rows and of the accounts with
    their funded balances): this is setup, not measured.
    """
    ident = sql.Identifier(schema)
    accounts = sql.Identifier(schema, "accounts")
    transfers = sql.Identifier(schema, "transfers")
    funding = workload.funding()
    debits: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for f in funding:
        debits[f["debit_account_id"]] += int(f["amount"])
        credits[f["credit_account_id"]] += int(f["amount"])
    plans = [(a.id, a.no_overdraft) for a in workload.accounts]
    plans.append((workload.treasury(), False))

    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True, connect_timeout=10
    ) as conn:
        async with conn.transaction():
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE {} ("
                    " id text PRIMARY KEY,"
                    " no_overdraft boolean NOT NULL DEFAULT false,"
                    " debits bigint NOT NULL DEFAULT 0,"
                    " credits bigint NOT NULL DEFAULT 0)"
                ).format(accounts)
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE {} ("
                    " id text PRIMARY KEY,"
                    " debit_account_id text NOT NULL REFERENCES {},"
                    " credit_account_id text NOT NULL REFERENCES {},"
                    " amount bigint NOT NULL CHECK (amount > 0),"
                    " ts timestamptz NOT NULL DEFAULT now())"
                ).format(transfers, accounts, accounts)
            )
            async with conn.cursor() as cur:
                copy_accounts = sql.SQL(
                    "COPY {} (id, no_overdraft, debits, credits) FROM STDIN"
                ).format(accounts)
                async with cur.copy(copy_accounts) as copy:
                    for account_id, no_overdraft in plans:
                        await copy.write_row(
                            (account_id, no_overdraft, debits[account_id], credits[account_id])
                        )
                copy_transfers = sql.SQL(
                    "COPY {} (id, debit_account_id, credit_account_id, amount) FROM STDIN"
                ).format(transfers)
                async with cur.copy(copy_transfers) as copy:
                    for f in funding:
                        await copy.write_row(
                            (f["id"], f["debit_account_id"], f["credit_account_id"], f["amount"])
                        )
        await conn.execute(sql.SQL("ANALYZE {}").format(accounts))
        await conn.execute(sql.SQL("ANALYZE {}").format(transfers))


async def run(
    database_url: str,
    workload: Workload,
    *,
    concurrency: int,
    duration_s: float,
    schema: str = "baseline",
) -> BaselineResult:
    """Closed loop: ``concurrency`` clients each run ``workload.transfer()`` as one
    transaction, back to back, until ``duration_s`` has elapsed.

    Connections are opened before the clock starts. Transfers in flight at the
    deadline are finished and counted; ``elapsed_s`` runs until the last one ends,
    and ``per_second`` gets a short last slot for them when they cross a slot edge.
    """
    assert concurrency >= 1 and duration_s > 0
    conns = await asyncio.gather(*(connect(database_url) for _ in range(concurrency)))
    latency = Histogram()
    refused: Counter[str] = Counter()
    per_second = [0] * math.ceil(duration_s)
    acked = 0
    start = time.perf_counter()
    deadline = start + duration_s

    async def client(conn: psycopg.AsyncConnection) -> None:
        nonlocal acked
        while time.perf_counter() < deadline:
            transfer = workload.transfer()
            sent = time.perf_counter()
            outcome = await execute_transfer(conn, transfer, schema=schema)
            done = time.perf_counter()
            if outcome != OK:
                refused[outcome] += 1
                continue
            acked += 1
            latency.record(done - sent)
            slot = int(done - start)
            while slot >= len(per_second):
                per_second.append(0)
            per_second[slot] += 1

    try:
        await asyncio.gather(*(client(c) for c in conns))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return BaselineResult(acked, dict(refused), elapsed, latency, per_second)


def check(database_url: str, schema: str = "baseline") -> list[str]:
    """Correctness after a run; returns the problems found (empty: consistent).

    - the ledger balances: sum(credits - debits) over all accounts is 0;
    - no no-overdraft account is below zero;
    - every account's debits and credits equal the sums of the transfers table
      (which holds the funding transfers as well).
    """
    accounts = sql.Identifier(schema, "accounts")
    transfers = sql.Identifier(schema, "transfers")
    problems: list[str] = []
    with psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            sql.SQL("SELECT coalesce(sum(credits - debits), 0) FROM {}").format(accounts)
        ).fetchone()
        assert row is not None
        net = row[0]
        if net != 0:
            problems.append(f"sum(credits - debits) over accounts is {net}, not 0")

        for account_id, balance in conn.execute(
            sql.SQL(
                "SELECT id, credits - debits FROM {} "
                "WHERE no_overdraft AND credits - debits < 0 ORDER BY id"
            ).format(accounts)
        ):
            problems.append(f"no-overdraft account {account_id} is at {balance}")

        mismatches = conn.execute(
            sql.SQL(
                "WITH d AS (SELECT debit_account_id AS id, sum(amount) AS s FROM {t} GROUP BY 1),"
                " c AS (SELECT credit_account_id AS id, sum(amount) AS s FROM {t} GROUP BY 1) "
                "SELECT a.id, a.debits, coalesce(d.s, 0), a.credits, coalesce(c.s, 0) "
                "FROM {a} a LEFT JOIN d ON d.id = a.id LEFT JOIN c ON c.id = a.id "
                "WHERE a.debits <> coalesce(d.s, 0) OR a.credits <> coalesce(c.s, 0) "
                "ORDER BY a.id"
            ).format(t=transfers, a=accounts)
        ).fetchall()
        for account_id, debits, sum_debits, credits, sum_credits in mismatches[:20]:
            problems.append(
                f"account {account_id}: debits {debits} vs transfers {sum_debits}, "
                f"credits {credits} vs transfers {sum_credits}"
            )
        if len(mismatches) > 20:
            problems.append(f"... and {len(mismatches) - 20} more accounts disagree with transfers")

        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {t} t WHERE NOT EXISTS "
                "(SELECT 1 FROM {a} a WHERE a.id = t.debit_account_id) OR NOT EXISTS "
                "(SELECT 1 FROM {a} a WHERE a.id = t.credit_account_id)"
            ).format(t=transfers, a=accounts)
        ).fetchone()
        assert row is not None
        orphans = row[0]
        if orphans:
            problems.append(f"{orphans} transfers name an account that does not exist")
    return problems
