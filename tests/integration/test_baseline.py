"""The conventional PostgreSQL ledger used as the benchmark's baseline."""

from __future__ import annotations

import asyncio

import psycopg

from paynode.benchmarks.baseline import check, connect, execute_transfer, prepare, run
from paynode.benchmarks.workload import FUND, Workload
from paynode.storage.database import libpq_url


def _balance(database_url: str, account_id: str) -> tuple[int, int]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT debits, credits FROM baseline.accounts WHERE id = %s", (account_id,)
        ).fetchone()
        assert row is not None
        return row[0], row[1]


def _transfers(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM baseline.transfers").fetchone()  # type: ignore[misc]
        return n


def test_baseline_runs_consistently_and_refuses_overdraft(database_url: str) -> None:
    workload = Workload(50, 2, prefix="b")
    asyncio.run(prepare(database_url, workload))
    assert check(database_url) == []
    funded = len(workload.funding())
    assert _transfers(database_url) == funded

    result = asyncio.run(run(database_url, workload, concurrency=8, duration_s=2.0))
    assert result.acked > 0
    assert result.refused.get("deadlock", 0) == 0  # locks are taken in id order
    assert sum(result.per_second) == result.acked
    assert result.latency.total == result.acked
    assert 2.0 <= result.elapsed_s < 4.0
    assert _transfers(database_url) == funded + result.acked
    assert check(database_url) == []

    limited = next(a.id for a in workload.accounts if a.no_overdraft)
    source = workload.treasury()

    async def edge_cases() -> None:
        conn = await connect(database_url)
        try:
            debits, credits = _balance(database_url, limited)
            available = credits - debits
            assert available > 0

            def transfer(tid: str, debit: str, credit: str, amount: int) -> dict:
                return {"id": tid, "debit_account_id": debit, "credit_account_id": credit,
                        "amount": amount, "currency": "USD"}  # fmt: skip

            # One unit more than the balance: refused, nothing written.
            over = transfer("b-over", limited, source, available + 1)
            assert await execute_transfer(conn, over) == "insufficient_funds"
            assert _balance(database_url, limited) == (debits, credits)
            # Exactly the balance: accepted, down to zero.
            drain = transfer("b-drain", limited, source, available)
            assert await execute_transfer(conn, drain) == "ok"
            assert _balance(database_url, limited) == (debits + available, credits)
            # Now even one unit overdraws.
            assert await execute_transfer(conn, transfer("b-one", limited, source, 1)) == (
                "insufficient_funds"
            )
            # A replay of the committed transfer is idempotent, even though it
            # would overdraw now.
            assert await execute_transfer(conn, drain) == "exists"
            assert _balance(database_url, limited) == (debits + available, credits)
            # An unrestricted account may go negative.
            free = next(a.id for a in workload.accounts if not a.no_overdraft)
            big = transfer("b-big", free, limited, 10 * FUND)
            assert await execute_transfer(conn, big) == "ok"
            assert await execute_transfer(conn, transfer("b-ghost", "nope", source, 1)) == (
                "account_not_found"
            )
        finally:
            await conn.close()

    asyncio.run(edge_cases())
    assert check(database_url) == []

    # The checker does catch a corrupted ledger.
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("UPDATE baseline.accounts SET debits = credits + 1 WHERE id = %s", (limited,))
    problems = check(database_url)
    assert any("is at -1" in p for p in problems)
    assert any("not 0" in p for p in problems)
    assert any(f"account {limited}:" in p for p in problems)
