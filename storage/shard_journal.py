"""A ledger shard's journal in PostgreSQL: one connection, psycopg errors translated.

Implements ``domain.ledger.ports.ShardJournal`` over ``storage/journal.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import psycopg

from paynode.domain.ledger.model import AccountSpec, Row
from paynode.domain.ledger.ports import JournalConflict, ShardSnapshot, StorageUnavailable
from paynode.storage import journal
from paynode.storage.database import connect


class PgShardJournal:
    def __init__(self, database_url: str, name: str) -> None:
        self._url = database_url
        self._name = name  # the connection's application_name (pg_stat_activity)
        self._conn: psycopg.AsyncConnection | None = None

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

    async def commit(self, accounts: Sequence[AccountSpec], rows: Sequence[Row]) -> None:
        try:
            await journal.commit(self._connection(), accounts, rows)
        except psycopg.errors.UniqueViolation as e:
            raise JournalConflict("id already journaled") from e
        except (psycopg.Error, OSError) as e:
            raise StorageUnavailable(type(e).__name__) from e

    async def existing_ids(self, ids: Sequence[str], fresh: bool = False) -> set[str]:
        try:
            if not fresh:
                return await journal.existing_ids(self._connection(), ids)
            async with await connect(self._url, self._name) as conn:
                return await journal.existing_ids(conn, ids)
        except (psycopg.Error, OSError) as e:
            raise StorageUnavailable(type(e).__name__) from e

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):  # dead: nothing to close
                await conn.close()

    def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None:
            raise StorageUnavailable("not connected")
        return self._conn
