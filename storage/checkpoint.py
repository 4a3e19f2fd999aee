"""The ledger checkpoint: the journal folded up to a transaction horizon.

A shard's recovery (``storage/journal.load_shard``) reads the checkpoint and
replays only the rows of later transactions, instead of the whole journal.

``advance`` folds, in one transaction, the rows of every transaction between
the last horizon and the oldest one still running (``pg_snapshot_xmin``):
below it every transaction has ended, so a range ``[below, xmin)`` read now
holds all of its committed rows, and the ranges of successive checkpoints
never overlap nor leave a gap. Per account it adds the four balance sums and
keeps the latest row stamp; it records the pendings opened and drops those
resolved. The work is PostgreSQL's (one range scan on ``transfers_txid`` per
checkpoint), in the background: the shards do not pause for it.

The checkpoint is per account, not per shard: any shard count reads it. A
reader checks it against the totals stored with it and falls back to a full
replay when they differ (``read``).
"""

from __future__ import annotations

import logging

import psycopg

from paynode.domain.ledger.model import JournalRow
from paynode.domain.ledger.ports import Checkpoint
from paynode.storage.schema import TRANSFER_COLUMNS

log = logging.getLogger("paynode.checkpoint")

_RANGE = "txid >= %(lo)s AND txid < %(hi)s"
_FOLD_BALANCES = f"""
INSERT INTO checkpoint_balances AS c (account_id, dp, cp, dpend, cpend, last_ts)
SELECT id, sum(dp), sum(cp), sum(dpend), sum(cpend), max(ts) FROM (
    SELECT debit_account_id AS id, posted_amount AS dp, 0 AS cp, pending_delta AS dpend,
           0 AS cpend, ts FROM transfers WHERE {_RANGE}
    UNION ALL
    SELECT credit_account_id, 0, posted_amount, 0, pending_delta, ts
      FROM transfers WHERE {_RANGE}
) d GROUP BY id
ON CONFLICT (account_id) DO UPDATE SET
    dp = c.dp + excluded.dp, cp = c.cp + excluded.cp,
    dpend = c.dpend + excluded.dpend, cpend = c.cpend + excluded.cpend,
    last_ts = greatest(c.last_ts, excluded.last_ts)
"""
_OPEN_PENDINGS = f"""
INSERT INTO checkpoint_pendings (id, debit_account_id, credit_account_id)
SELECT id, debit_account_id, credit_account_id FROM transfers
 WHERE {_RANGE} AND status = 'pending'
"""
_CLOSE_PENDINGS = """
DELETE FROM checkpoint_pendings p USING transfers t
 WHERE t.txid >= %(lo)s AND t.txid < %(hi)s AND t.pending_id = p.id AND t.status <> 'pending'
"""
_TOTALS = (
    "SELECT (SELECT count(*) FROM checkpoint_balances), (SELECT count(*) FROM checkpoint_pendings),"
    " coalesce(sum(dp), 0), coalesce(sum(cp), 0), coalesce(sum(dpend), 0),"
    " coalesce(sum(cpend), 0) FROM checkpoint_balances"
)
_SAVE = """
INSERT INTO ledger_checkpoint AS k
    (id, below, taken_at, accounts, pendings, sum_dp, sum_cp, sum_dpend, sum_cpend)
VALUES (1, %s, now(), %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET below = excluded.below, taken_at = excluded.taken_at,
    accounts = excluded.accounts, pendings = excluded.pendings, sum_dp = excluded.sum_dp,
    sum_cp = excluded.sum_cp, sum_dpend = excluded.sum_dpend, sum_cpend = excluded.sum_cpend
"""


MAX_ROWS_PER_STEP = 1_000_000  # one transaction folds at most about this many rows


async def advance(
    conn: psycopg.AsyncConnection, max_rows: int = MAX_ROWS_PER_STEP
) -> tuple[int, int, bool]:
    """Fold the journal toward the oldest running transaction, about ``max_rows`` rows at
    most; return (old horizon, new horizon, whether it caught up).

    A bounded step keeps each transaction short: a stop interrupted midway keeps the
    steps done, and a checkpointer far behind (a journal loaded from elsewhere) catches
    up step by step. Any horizon at or below ``pg_snapshot_xmin`` is sound: every
    transaction below it has ended.

    Raises ``psycopg.errors.SerializationFailure`` when another node's checkpoint
    committed meanwhile (nothing changed here: the next one goes on from theirs).
    """
    assert max_rows >= 1
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # A first checkpoint of a long journal reads all of it; it runs in the background.
        await cur.execute("SET LOCAL statement_timeout = 0")
        await cur.execute("SET LOCAL work_mem = '64MB'")
        await cur.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
            " (SELECT below FROM ledger_checkpoint WHERE id = 1 FOR UPDATE)"
        )
        found = await cur.fetchone()
        assert found is not None
        xmin, lo = found[0], found[1] or 0
        assert lo <= xmin, (lo, xmin)  # xmin never goes back
        if lo == xmin:
            return lo, xmin, True
        # The transaction of the row max_rows past the horizon bounds this step (its rows
        # wait for the next one: a horizon splits no transaction).
        await cur.execute(
            "SELECT txid FROM transfers WHERE txid >= %s ORDER BY txid OFFSET %s LIMIT 1",
            (lo, max_rows),
        )
        far = await cur.fetchone()
        hi = xmin if far is None or far[0] >= xmin or far[0] <= lo else far[0]
        span = {"lo": lo, "hi": hi}
        await cur.execute(_FOLD_BALANCES, span)
        await cur.execute(_OPEN_PENDINGS, span)
        await cur.execute(_CLOSE_PENDINGS, span)
        await cur.execute(_TOTALS)
        totals = await cur.fetchone()
        assert totals is not None
        await cur.execute(_SAVE, (hi, *totals))
    return lo, hi, hi == xmin


_COLS = ", ".join(f"t.{c}::text" if c == "metadata" else f"t.{c}" for c in TRANSFER_COLUMNS)
_MINE = "mine AS (SELECT id FROM accounts WHERE shard_key %% %(n)s = %(i)s)"


async def read(cur: psycopg.AsyncCursor, index: int, count: int, xmin: int) -> Checkpoint | None:
    """Shard ``index`` of ``count``'s part of the checkpoint, in the caller's snapshot
    (whose ``xmin`` bounds it); None when there is none or it fails its totals."""
    await cur.execute(
        "SELECT below, accounts, pendings, sum_dp, sum_cp, sum_dpend, sum_cpend"
        " FROM ledger_checkpoint WHERE id = 1"
    )
    saved = await cur.fetchone()
    if saved is None:
        return None
    await cur.execute(_TOTALS)
    totals = await cur.fetchone()
    if tuple(saved[1:]) != tuple(totals or ()) or saved[0] > xmin:
        log.warning(
            "the ledger checkpoint is damaged (its totals or horizon disagree with its rows):"
            " shard %d replays the whole journal", index,
        )  # fmt: skip
        return None
    params = {"n": count, "i": index}
    await cur.execute(
        f"WITH {_MINE} SELECT c.account_id, c.dp, c.cp, c.dpend, c.cpend, c.last_ts"
        " FROM checkpoint_balances c WHERE c.account_id IN (SELECT id FROM mine)",
        params,
    )
    balances: dict[str, tuple[int, int, int, int]] = {}
    clock = 0
    for account_id, dp, cp, dpend, cpend, last_ts in await cur.fetchall():
        balances[account_id] = (dp, cp, dpend, cpend)
        clock = max(clock, last_ts)
    await cur.execute(
        f"WITH {_MINE} SELECT {_COLS} FROM checkpoint_pendings p JOIN transfers t ON t.id = p.id"
        " WHERE p.debit_account_id IN (SELECT id FROM mine)"
        " OR p.credit_account_id IN (SELECT id FROM mine)",
        params,
    )
    pendings = [JournalRow(*r) for r in await cur.fetchall()]
    return Checkpoint(saved[0], balances, pendings, clock)
