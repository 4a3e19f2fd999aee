"""The journal on the hot path: group commit by COPY, and the shard's recovery load.

A shard hands ``commit`` everything it decided since the last commit; it is
written in one transaction (one fsync), and only when ``commit`` returns may
the shard answer any of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paynode.domain.ledger.model import (
    AccountSpec,
    Horizon,
    JournalRow,
    Recalled,
    Row,
    Status,
    shard_key,
)
from paynode.domain.ledger.ports import ShardSnapshot
from paynode.storage import checkpoint
from paynode.storage.schema import ACCOUNT_COLUMNS, TRANSFER_COLUMNS

_COPY_TRANSFERS = f"COPY transfers ({', '.join(TRANSFER_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# Binary COPY: integers go as 8 or 4 bytes, no text to format here nor to parse in the
# server. The text and json columns take their text as is (bpchar and json read it so).
_TRANSFER_TYPES = ["text", "text", "text", "int8", "text", "int4", "text", "int4", "text",
                   "text", "int8", "int8", "int8"]  # fmt: skip
assert len(_TRANSFER_TYPES) == len(TRANSFER_COLUMNS)
_COPY_ACCOUNTS = f"COPY accounts ({', '.join(ACCOUNT_COLUMNS)}) FROM STDIN"
assert JournalRow.__struct_fields__ == TRANSFER_COLUMNS, "COPY order must match JournalRow"


_NULL = "\\N"
_TXID = "SELECT pg_current_xact_id()::text::bigint"
_HORIZON = (
    "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,"
    " array(SELECT x::text::bigint FROM pg_snapshot_xip(s) x) FROM pg_current_snapshot() s"
)


def _text(value: str) -> str:
    # COPY text format: backslash starts an escape; ids never contain one or a
    # tab/newline (validated at the edge), JSON metadata may contain backslashes.
    return value.replace("\\", "\\\\") if "\\" in value else value


def account_lines(specs: Sequence[AccountSpec]) -> bytes:
    return "".join(
        f"{s.id}\t{s.currency}\t{s.flags}\t{_text(s.metadata)}\t{shard_key(s.id)}\t{s.ts}"
        f"\t{s.owner or _NULL}\n"
        for s in specs
    ).encode()


async def commit(
    conn: psycopg.AsyncConnection,
    accounts: Sequence[AccountSpec],
    rows: Sequence[Row],
) -> int:
    """Write accounts and journal rows in one transaction; return its id once durable.

    ``rows`` are tuples in JournalRow's field order (what the shards keep). Their
    events are not written: the journal is the outbox (storage/outbox.py).
    """
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_TXID)
        found = await cur.fetchone()
        assert found is not None
        txid: int = found[0]
        if accounts:
            async with cur.copy(_COPY_ACCOUNTS) as copy:
                await copy.write(account_lines(accounts))
        if rows:
            async with cur.copy(_COPY_TRANSFERS) as copy:
                copy.set_types(_TRANSFER_TYPES)
                for row in rows:
                    await copy.write_row(row)
    return txid


async def existing_ids(conn: psycopg.AsyncConnection, ids: Sequence[str]) -> dict[str, int]:
    """Which of ``ids`` are already journaled, each with its transaction's id."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT id, txid FROM transfers WHERE id = ANY(%s)", (list(ids),))
        return {r[0]: r[1] for r in await cur.fetchall()}


_RECALL_ROWS = (
    "SELECT "
    + ", ".join(f"{c}::text" if c == "metadata" else c for c in TRANSFER_COLUMNS)
    + " FROM transfers WHERE id = ANY(string_to_array(%s, ' '))"
)
# A pending's resolution names it in pending_id (partial index, migration 10).
_RECALL_RESOLUTIONS = (
    "SELECT pending_id, status FROM transfers"
    " WHERE pending_id = ANY(string_to_array(%s, ' ')) AND status <> 'pending'"
)
# Ids travel as one space-separated text parameter: they never hold a space (the edge
# allows [A-Za-z0-9._:~-]), and one string costs the shard a join where a text[] of
# thousands of strings cost it more CPU than the lookup cost PostgreSQL.


async def recall(
    conn: psycopg.AsyncConnection, ids: Sequence[str], pending_ids: Sequence[str]
) -> Recalled:
    """What the journal holds of ids a shard no longer remembers: one statement for the
    rows (``ids`` and ``pending_ids``), one for the pendings' resolutions."""
    wanted = " ".join({*ids, *pending_ids})
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_RECALL_ROWS, (wanted,))
        rows: dict[str, Row] = {r[0]: r for r in await cur.fetchall()}
        resolutions: dict[str, str] = {}
        if pending_ids:
            await cur.execute(_RECALL_RESOLUTIONS, (" ".join(pending_ids),))
            resolutions = {pid: status for pid, status in await cur.fetchall()}
    return Recalled(rows, resolutions)


def _replay_order(row: JournalRow) -> tuple[int, str]:
    return row.ts, row.id


async def load_shard(
    conn: psycopg.AsyncConnection, index: int, count: int, chunk: int = 50_000,
    use_checkpoint: bool = True,
) -> ShardSnapshot:  # fmt: skip
    """Everything shard ``index`` of ``count`` owns, read in one consistent snapshot:
    the ledger checkpoint's part (``storage/checkpoint.py``) and the rows after it, or
    every row when there is no sound checkpoint (or ``use_checkpoint`` is off).

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
    # After a checkpoint, only the rows of later transactions (the transfers_txid index).
    rows_sql = rows_sql.replace("WHERE t.", "WHERE t.txid >= %(below)s AND t.")
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await conn.execute("SET LOCAL statement_timeout = 0")  # recovery reads it all
        async with conn.cursor() as cur:
            await cur.execute(_HORIZON)  # the first read: the snapshot every later one sees
            seen = await cur.fetchone()
            assert seen is not None
            horizon = Horizon(seen[0], seen[1], frozenset(seen[2]))
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT id, currency, flags, metadata::text, ts, coalesce(owner_user_id, '')"
                " FROM accounts"
                " WHERE shard_key %% %s = %s ORDER BY ts",
                (count, index),
            )
            accounts = [AccountSpec(*r) for r in await cur.fetchall()]
            folded = (
                await checkpoint.read(cur, index, count, horizon.xmin) if use_checkpoint else None
            )
        params = {"n": count, "i": index, "below": folded.below if folded else 0}
        async with conn.cursor(name="paynode_load") as cur:
            await cur.execute(rows_sql, params)
            while batch := await cur.fetchmany(chunk):
                rows.extend(JournalRow(*r) for r in batch)
    rows.sort(key=_replay_order)
    return ShardSnapshot(accounts, rows, horizon, folded)


# -- what the front reads of the journal (SQLAlchemy connections of its pool) ---------------


async def account_specs(conn: AsyncConnection, ids: Collection[str]) -> dict[str, AccountSpec]:
    """The immutable facts of the accounts among ``ids`` that exist."""
    rows: Iterable[tuple[Any, ...]] = await conn.execute(
        sa.text(
            "SELECT id, currency, flags, metadata::text, ts, coalesce(owner_user_id, '')"
            " FROM accounts WHERE id = ANY(:ids)"
        ),
        {"ids": list(ids)},
    )
    return {r[0]: AccountSpec(*r) for r in rows}


async def pending_parties(
    conn: AsyncConnection, ids: Collection[str]
) -> dict[str, tuple[str, str, str]]:
    """(debit, credit, currency) of the transfers among ``ids`` that are pendings."""
    rows = await conn.execute(
        sa.text(
            "SELECT id, debit_account_id, credit_account_id, currency FROM transfers"
            " WHERE id = ANY(:ids) AND status = 'pending'"
        ),
        {"ids": list(ids)},
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def statuses(conn: AsyncConnection, ids: Collection[str]) -> dict[str, str]:
    """The status of every journaled transfer among ``ids``."""
    rows = await conn.execute(
        sa.text("SELECT id, status FROM transfers WHERE id = ANY(:ids)"), {"ids": list(ids)}
    )
    return {r[0]: r[1] for r in rows}


class EngineReads:
    """``ports.JournalReads`` over the front's pool: one short connection per call."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def account_specs(self, ids: Collection[str]) -> dict[str, AccountSpec]:
        async with self._engine.connect() as conn:
            return await account_specs(conn, ids)

    async def pending_parties(self, ids: Collection[str]) -> dict[str, tuple[str, str, str]]:
        async with self._engine.connect() as conn:
            return await pending_parties(conn, ids)

    async def statuses(self, ids: Collection[str]) -> dict[str, str]:
        async with self._engine.connect() as conn:
            return await statuses(conn, ids)


def _row_columns() -> str:
    return ", ".join(f"{c}::text" if c == "metadata" else c for c in TRANSFER_COLUMNS)


async def transfer(conn: AsyncConnection, transfer_id: str) -> JournalRow | None:
    """One journaled transfer, or None."""
    row: tuple[Any, ...] | None = (
        await conn.execute(
            sa.text(f"SELECT {_row_columns()} FROM transfers WHERE id = :id"), {"id": transfer_id}
        )
    ).first()
    return None if row is None else JournalRow(*row)


async def pending_outcomes(
    conn: AsyncConnection, rows: Iterable[JournalRow]
) -> dict[str, tuple[str, str]]:
    """For the resolved pendings among ``rows``: (the status that resolved it, the id of
    the row that did). One query on the pending_id index; none without pendings."""
    pending = [r.id for r in rows if r.status == Status.PENDING]
    if not pending:
        return {}
    found: Iterable[tuple[Any, ...]] = await conn.execute(
        sa.text(
            "SELECT pending_id, status, id FROM transfers"
            " WHERE pending_id = ANY(:ids) AND status <> 'pending'"
        ),
        {"ids": pending},
    )
    return {pid: (status, rid) for pid, status, rid in found}


async def transfers_of(
    conn: AsyncConnection, account_id: str, limit: int, before: tuple[int, str] | None
) -> list[JournalRow]:
    """An account's transfers (either side), newest first, strictly before ``(ts, id)``.

    Each side is read on its own ``(account, ts)`` index, then merged: at most
    ``limit`` rows from each, whatever the account's history.
    """
    where = "" if before is None else " AND (ts, id) < (:ts, :id)"
    side = (
        f"(SELECT {_row_columns()} FROM transfers WHERE {{col}} = :account{where}"
        " ORDER BY ts DESC, id DESC LIMIT :limit)"
    )
    query = (
        f"SELECT * FROM ({side.format(col='debit_account_id')} UNION ALL"
        f" {side.format(col='credit_account_id')}) s ORDER BY ts DESC, id DESC LIMIT :limit"
    )
    params: dict = {"account": account_id, "limit": limit}
    if before is not None:
        params |= {"ts": before[0], "id": before[1]}
    rows: Iterable[tuple[Any, ...]] = await conn.execute(sa.text(query), params)
    return [JournalRow(*r) for r in rows]
