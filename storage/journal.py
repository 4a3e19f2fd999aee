"""The journal on the hot path: group commit by COPY, and the shard's recovery load.

A shard hands ``commit`` everything it decided since the last commit; it is
written in one transaction (one fsync), and only when ``commit`` returns may
the shard answer any of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg

from paynode.domain.ledger.model import AccountSpec, JournalRow, shard_key
from paynode.storage.schema import ACCOUNT_COLUMNS, TRANSFER_COLUMNS

_COPY_TRANSFERS = f"COPY transfers ({', '.join(TRANSFER_COLUMNS)}) FROM STDIN"
_COPY_ACCOUNTS = f"COPY accounts ({', '.join(ACCOUNT_COLUMNS)}) FROM STDIN"
assert JournalRow.__struct_fields__ == TRANSFER_COLUMNS, "COPY order must match JournalRow"


_NULL = "\\N"


def _text(value: str) -> str:
    # COPY text format: backslash starts an escape; ids never contain one or a
    # tab/newline (validated at the edge), JSON metadata may contain backslashes.
    return value.replace("\\", "\\\\") if "\\" in value else value


def transfer_lines(rows: Sequence[JournalRow]) -> bytes:
    out = []
    for r in rows:
        pending_id = _NULL if r.pending_id is None else r.pending_id
        out.append(
            f"{r.id}\t{r.debit_account_id}\t{r.credit_account_id}\t{r.amount}\t{r.currency}\t"
            f"{r.flags}\t{pending_id}\t{r.timeout_s}\t"
            f"{_text(r.metadata)}\t{r.status}\t{r.posted_amount}\t{r.pending_delta}\t{r.ts}\n"
        )
    return "".join(out).encode()


def account_lines(specs: Sequence[AccountSpec]) -> bytes:
    return "".join(
        f"{s.id}\t{s.currency}\t{s.flags}\t{_text(s.metadata)}\t{shard_key(s.id)}\t{s.ts}"
        f"\t{s.owner or _NULL}\n"
        for s in specs
    ).encode()


async def commit(
    conn: psycopg.AsyncConnection,
    accounts: Sequence[AccountSpec],
    rows: Sequence[JournalRow],
) -> None:
    """Write accounts and journal rows in one transaction; return once durable."""
    async with conn.transaction(), conn.cursor() as cur:
        if accounts:
            async with cur.copy(_COPY_ACCOUNTS) as copy:
                await copy.write(account_lines(accounts))
        if rows:
            async with cur.copy(_COPY_TRANSFERS) as copy:
                await copy.write(transfer_lines(rows))


async def existing_ids(conn: psycopg.AsyncConnection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are already journaled (used after a unique violation)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT id FROM transfers WHERE id = ANY(%s)", (list(ids),))
        return {r[0] for r in await cur.fetchall()}


def _replay_order(row: JournalRow) -> tuple[int, str]:
    return row.ts, row.id


class ShardSnapshot(msgspec.Struct):
    accounts: list[AccountSpec]
    rows: list[JournalRow]


async def load_shard(
    conn: psycopg.AsyncConnection, index: int, count: int, chunk: int = 50_000
) -> ShardSnapshot:
    """Everything shard ``index`` of ``count`` owns, read in one consistent snapshot.

    Rows come in timestamp order per shard, so a pending is always replayed
    before its resolution.
    """
    accounts: list[AccountSpec] = []
    rows: list[JournalRow] = []
    cols = ", ".join(f"t.{c}::text" if c == "metadata" else f"t.{c}" for c in TRANSFER_COLUMNS)
    # Two hash semi-joins against this shard's accounts: one sequential pass of
    # the journal each, instead of an index probe per row.
    rows_sql = (
        "WITH mine AS (SELECT id FROM accounts WHERE shard_key %% %(n)s = %(i)s)"
        f" SELECT {cols} FROM transfers t WHERE t.debit_account_id IN (SELECT id FROM mine)"
        f" UNION ALL SELECT {cols} FROM transfers t"
        " WHERE t.credit_account_id IN (SELECT id FROM mine)"
        " AND t.debit_account_id NOT IN (SELECT id FROM mine)"
    )
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await conn.execute("SET LOCAL statement_timeout = 0")  # recovery reads it all
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT id, currency, flags, metadata::text, ts, coalesce(owner_user_id, '')"
                " FROM accounts"
                " WHERE shard_key %% %s = %s ORDER BY ts",
                (count, index),
            )
            accounts = [AccountSpec(*r) for r in await cur.fetchall()]
        async with conn.cursor(name="paynode_load") as cur:
            await cur.execute(rows_sql, {"n": count, "i": index})
            while batch := await cur.fetchmany(chunk):
                rows.extend(JournalRow(*r) for r in batch)
    rows.sort(key=_replay_order)
    return ShardSnapshot(accounts, rows)
