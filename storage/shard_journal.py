"""A ledger shard's journal in PostgreSQL: one connection, psycopg errors translated.

Implements ``domain.ledger.ports.ShardJournal`` over ``storage/journal.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import psycopg

from paynode.domain.ledger.model import AccountSpec, Recalled, Row
from paynode.domain.ledger.ports import JournalConflict, ShardSnapshot, StorageUnavailable
from paynode.storage import journal
from paynode.storage.database import connect


class PgShardJournal:
    def __init__(self, database_url: str, name: str) -> None:
        self._url = database_url
        self._name = name  # the connection's application_name (pg_stat_activity)
        self._conn: psycopg.AsyncConnection | None = None
        # Lookups of ids beyond the window: beside the commits, never inside their transaction.
        self._reads: psycopg.AsyncConnection | None = None
        # One lookup at a time, and the connection closed only under it: closing a psycopg
        # connection while another task awaits a query on it frees what that task reads
        # (the shard process aborted when PostgreSQL killed the backend under load).
        self._reads_lock = asyncio.Lock()

    async def open(self) -> None:
        await self.close()
        try:
            self._conn = await connect(self._url, self._name)
        except (psycopg.Error, OSError) as e:
            raise StorageUnavailable(type(e).__name__) from e

    async def load(self, index: int, count: int) -> ShardSnapshot:
        try:
            return await journal.load_shard(self._connection(), index, count)
        except (psycopg.Error, OSError) as e:
            raise StorageUnavailable(type(e).__name__) from e

    async def commit(self, accounts: Sequence[AccountSpec], rows: Sequence[Row]) -> int:
        try:
            return await journal.commit(self._connection(), accounts, rows)
        except psycopg.errors.UniqueViolation as e:
            raise JournalConflict("id already journaled") from e
        except (psycopg.Error, OSError) as e:
            raise StorageUnavailable(type(e).__name__) from e

    async def existing_ids(self, ids: Sequence[str], fresh: bool = False) -> dict[str, int]:
        try:
            if not fresh:
                return await journal.existing_ids(self._connection(), ids)
            async with await connect(self._url, self._name) as conn:
                return await journal.existing_ids(conn, ids)
        except (psycopg.Error, OSError) as e:
            raise StorageUnavailable(type(e).__name__) from e

    async def recall(self, ids: Sequence[str], pending_ids: Sequence[str]) -> Recalled:
        async with self._reads_lock:
            try:
                if self._reads is None or self._reads.closed:
                    self._reads = await connect(self._url, self._name)
                return await journal.recall(self._reads, ids, pending_ids)
            except (psycopg.Error, OSError) as e:
                reads, self._reads = self._reads, None
                await _close(reads)
                raise StorageUnavailable(type(e).__name__) from e

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await _close(conn)
        async with self._reads_lock:
            reads, self._reads = self._reads, None
            await _close(reads)

    def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None:
            raise StorageUnavailable("not connected")
        return self._conn


async def _close(conn: psycopg.AsyncConnection | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error, OSError):  # dead: nothing to close
            await conn.close()
