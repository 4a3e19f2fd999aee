"""The ledger checkpoint (storage/checkpoint.py) on a real PostgreSQL.

Recovery from the checkpoint plus the journal after it must equal a full replay,
whatever the journal holds and wherever the checkpoints fell: random traffic
(posted transfers, pendings with and without timeouts, posts, voids, expiries)
is decided by one pure ``Ledger`` holding every account, committed in random
batches, with checkpoints advanced at random between them and once while a
commit is in flight. Each shard of two is then rebuilt both ways and compared.
"""

from __future__ import annotations

import asyncio
import logging
import random

import psycopg
import pytest

from paynode.domain.ledger.model import (
    NO_METADATA,
    AccountFlags,
    AccountSpec,
    Status,
    TransferFlags,
    TransferOp,
)
from paynode.domain.ledger.rules import Ledger, rebuilt
from paynode.storage import checkpoint, journal
from paynode.storage.database import connect, libpq_url

SHARDS = 2
SECOND = 1_000_000_000
T0 = 1_750_000_000 * SECOND


def _state(ledger: Ledger) -> tuple:
    """Everything recovery must restore, as plain values."""
    live_timers = sorted((at, pid) for at, pid in ledger._expiry if pid in ledger.pendings)
    return (
        {a: (x.dp, x.cp, x.dpend, x.cpend) for a, x in ledger.accounts.items()},
        {
            pid: (p.amount, p.debit, p.credit, p.expires_at, p.state)
            for pid, p in ledger.pendings.items()
        },
        dict(ledger.credit_pendings),
        live_timers,
        ledger._clock,
    )


async def _traffic(url: str, seed: int, commits: int) -> int:
    """Journal random traffic, checkpointing at random; returns the checkpoints taken."""
    rng = random.Random(seed)
    truth = Ledger()
    ids = [f"c{seed}-{k}" for k in range(8)]
    specs = [
        AccountSpec(a, "USD", AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS if k % 3 == 0 else 0,
                    NO_METADATA, T0 + k)
        for k, a in enumerate(ids)
    ]  # fmt: skip
    for s in specs:
        truth.create_account(s)
    now = T0 + SECOND
    n = 0
    taken = 0
    conn = await connect(url)
    side = await connect(url)
    try:
        await journal.commit(conn, specs, [])
        for c in range(commits):
            rows = []
            for _ in range(rng.randint(1, 12)):
                n += 1
                kind = rng.random()
                dr, cr = rng.sample(ids, 2)
                open_ = [pid for pid, p in truth.pendings.items() if p.state == Status.PENDING]
                if kind < 0.5 or not open_:
                    flags = TransferFlags.PENDING if kind >= 0.35 else 0
                    timeout = rng.choice((0, 1, 3, 3600)) if flags else 0
                    op = TransferOp(f"t{seed}-{n}", dr, cr, rng.randint(1, 500), "USD", flags,
                                    None, timeout, NO_METADATA)  # fmt: skip
                else:
                    pid = rng.choice(open_)
                    p = truth.pendings[pid]
                    flags = rng.choice((TransferFlags.POST_PENDING, TransferFlags.VOID_PENDING))
                    op = TransferOp(f"t{seed}-{n}", p.debit, p.credit, None, "USD", flags, pid, 0,
                                    NO_METADATA)  # fmt: skip
                (outcome,) = truth.execute([op], now)
                if outcome.row is not None and not outcome.replayed:
                    rows.append(outcome.row)
            now += rng.choice((0, SECOND // 3, SECOND, 2 * SECOND))
            rows += truth.expire_due(now, limit=100)
            tuples = [tuple(msgspec_tuple(r)) for r in rows]
            if c == commits // 2:
                # A commit in flight while the checkpoint advances: the horizon stops below
                # it, and the next checkpoint folds it in.
                async with side.transaction():
                    await journal_copy(side, tuples)
                    cur = await side.execute("SELECT pg_current_xact_id()::text::bigint")
                    in_flight = (await cur.fetchone())[0]  # type: ignore[index]
                    _, below, _ = await checkpoint.advance(conn)
                    assert below <= in_flight, "the horizon passed a commit in flight"
                    taken += 1
                continue
            await journal.commit(conn, [], tuples)
            if rng.random() < 0.3:
                # Small steps too: a horizon between two commits of the journal.
                await checkpoint.advance(conn, max_rows=rng.choice((1, 7, 40, 10**6)))
                taken += 1
        while not (await checkpoint.advance(conn))[2]:  # the in-flight one is folded by now
            taken += 1
        return taken + 1
    finally:
        await conn.close()
        await side.close()


def msgspec_tuple(row) -> tuple:
    import msgspec

    return msgspec.structs.astuple(row)


async def journal_copy(conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
    """``journal.commit``'s COPY inside the caller's open transaction."""
    async with conn.cursor() as cur, cur.copy(journal._COPY_TRANSFERS) as copy:
        copy.set_types(journal._TRANSFER_TYPES)
        for row in rows:
            await copy.write_row(row)


async def _both_ways(url: str, index: int) -> tuple[tuple, tuple, bool]:
    conn = await connect(url)
    try:
        folded = await journal.load_shard(conn, index, SHARDS)
        full = await journal.load_shard(conn, index, SHARDS, use_checkpoint=False)
    finally:
        await conn.close()
    assert full.checkpoint is None
    assert len(folded.rows) <= len(full.rows)
    return (
        _state(rebuilt(folded, window=16)),
        _state(rebuilt(full, window=16)),
        (folded.checkpoint is not None),
    )


@pytest.mark.parametrize("seed", range(6))
def test_checkpoint_plus_tail_equals_a_full_replay(database_url: str, seed: int) -> None:
    taken = asyncio.run(_traffic(database_url, seed, commits=40))
    assert taken >= 2
    for index in range(SHARDS):
        from_checkpoint, from_journal, used = asyncio.run(_both_ways(database_url, index))
        assert used, "the checkpoint was not read"
        assert from_checkpoint == from_journal


def test_a_damaged_checkpoint_falls_back_to_a_full_replay(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(_traffic(database_url, 99, commits=12))
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(
            "UPDATE checkpoint_balances SET dp = dp + 1"
            " WHERE account_id = (SELECT min(account_id) FROM checkpoint_balances)"
        )
    with caplog.at_level(logging.WARNING, logger="paynode.checkpoint"):
        for index in range(SHARDS):
            from_checkpoint, from_journal, used = asyncio.run(_both_ways(database_url, index))
            assert not used
            assert from_checkpoint == from_journal
    assert "damaged" in caplog.text and "replays the whole journal" in caplog.text


def test_a_checkpoint_killed_midway_changes_nothing(database_url: str) -> None:
    """The writer's backend dies inside its transaction (as when the node is killed -9):
    the previous checkpoint stands, and the next one completes from it."""
    asyncio.run(_traffic(database_url, 7, commits=10))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        before = conn.execute("SELECT below, accounts, sum_dp FROM ledger_checkpoint").fetchone()
        # More journal, then a checkpoint whose backend is terminated inside its transaction.
        conn.execute(
            "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency,"
            " flags, pending_id, timeout_s, metadata, status, posted_amount, pending_delta, ts)"
            " SELECT 'k' || i, 'c7-1', 'c7-2', 1, 'USD', 0, NULL, 0, '{}', 'posted', 1, 0, %s + i"
            " FROM generate_series(1, 20000) i",
            (T0 + 10**6 * SECOND,),
        )

    async def killed() -> None:
        # A lock on one account's checkpoint row stops the fold inside its statement,
        # after its transaction began and part of its writes are made.
        blocker = await connect(database_url)
        victim = await connect(database_url, "paynode-checkpoint")
        try:
            async with blocker.transaction():
                await blocker.execute(
                    "SELECT 1 FROM checkpoint_balances WHERE account_id = 'c7-2' FOR UPDATE"
                )
                advancing = asyncio.create_task(checkpoint.advance(victim))
                async with await connect(database_url) as admin:
                    for _ in range(200):  # until the fold waits on the lock
                        cur = await admin.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                            " AND wait_event_type = 'Lock'", (victim.info.backend_pid,),
                        )  # fmt: skip
                        if (await cur.fetchone())[0]:  # type: ignore[index]
                            break
                        await asyncio.sleep(0.02)
                    else:
                        raise AssertionError("the checkpoint never reached the locked row")
                    await admin.execute("SELECT pg_terminate_backend(%s)",
                                        (victim.info.backend_pid,))  # fmt: skip
                    await admin.commit()
                with pytest.raises(psycopg.OperationalError):
                    await advancing
        finally:
            await blocker.close()
            await victim.close()

    asyncio.run(killed())
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        after = conn.execute("SELECT below, accounts, sum_dp FROM ledger_checkpoint").fetchone()
        assert after == before
    for index in range(SHARDS):
        from_checkpoint, from_journal, used = asyncio.run(_both_ways(database_url, index))
        assert used and from_checkpoint == from_journal
