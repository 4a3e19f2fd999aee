"""Balance monitors (migration 20); the rules are domain/ledger/monitors.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.ledger.monitors import CLEARED_EVENT, CROSSED_EVENT, Monitor, Transition
from paynode.domain.ledger.ports import StorageUnavailable
from paynode.storage.database import connect
from paynode.storage.events import event_id, insert_statement
from paynode.storage.rows import record

MAX_PER_ACCOUNT = 100


class Stored(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    owner_user_id: str | None
    condition: str
    threshold: int
    crossed: bool | None
    seq: int
    created_at: dt.datetime
    deleted_at: dt.datetime | None


_COLS = ", ".join(Stored.__struct_fields__)
_MONITOR_COLS = "m.id, m.account_id, m.owner_user_id, m.condition, m.threshold, m.crossed, m.seq"


def as_monitor(s: Stored) -> Monitor:
    fields = {f: getattr(s, f) for f in Monitor.__struct_fields__}
    return Monitor(**fields)


async def create(conn: AsyncConnection, m: Monitor) -> Stored | None:
    """Insert ``m``; None when its account holds ``MAX_PER_ACCOUNT`` monitors already."""
    live = "SELECT count(*) FROM balance_monitors WHERE account_id = :a AND deleted_at IS NULL"
    count: Any = (await conn.execute(sa.text(live), {"a": m.account_id})).scalar_one()
    if count >= MAX_PER_ACCOUNT:
        return None
    values = {"id": m.id, "a": m.account_id, "o": m.owner_user_id, "c": m.condition}
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO balance_monitors (id, account_id, owner_user_id, condition, threshold)"
                f" VALUES (:id, :a, :o, :c, :t) RETURNING {_COLS}"
            ),
            values | {"t": m.threshold},
        )
    ).one()
    return record(Stored, row)


async def get(conn: AsyncConnection, monitor_id: str) -> Stored | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_COLS} FROM balance_monitors WHERE id = :id AND deleted_at IS NULL"),
            {"id": monitor_id},
        )
    ).first()
    return None if row is None else record(Stored, row)


async def list_of(conn: AsyncConnection, owner: str | None, limit: int) -> list[Stored]:
    where = "deleted_at IS NULL" + ("" if owner is None else " AND owner_user_id = :o")
    rows = await conn.execute(
        sa.text(f"SELECT {_COLS} FROM balance_monitors WHERE {where} ORDER BY id LIMIT :n"),
        {"o": owner, "n": limit},
    )
    return [record(Stored, r) for r in rows]


async def delete(conn: AsyncConnection, monitor_id: str) -> None:
    await conn.execute(
        sa.text("UPDATE balance_monitors SET deleted_at = now() WHERE id = :id"), {"id": monitor_id}
    )


# -- the shard's side (psycopg, on the shard's own connection) -------------------------


async def for_shard(conn: psycopg.AsyncConnection, index: int, count: int) -> list[Monitor]:
    """The live monitors of the accounts shard ``index`` of ``count`` owns (in a
    transaction of its own: the connection is not autocommit)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            f"SELECT {_MONITOR_COLS} FROM balance_monitors m JOIN accounts a ON a.id = m.account_id"
            " WHERE m.deleted_at IS NULL AND a.shard_key %% %(n)s = %(i)s",
            {"n": count, "i": index},
        )
        return [
            Monitor(id=r[0], account_id=r[1], owner_user_id=r[2], condition=r[3], threshold=r[4],
                    crossed=r[5], seq=r[6])
            for r in await cur.fetchall()
        ]  # fmt: skip


async def record_transitions(
    conn: psycopg.AsyncConnection, transitions: Sequence[Transition]
) -> list[Transition]:
    """Record each change (and, unless it is the first evaluation, its event) in one
    transaction; the ones that applied (a monitor changed or deleted meanwhile: skipped)."""
    done: list[Transition] = []
    now = time.time_ns()
    async with conn.transaction(), conn.cursor() as cur:
        for t in transitions:
            m = t.monitor
            await cur.execute(
                "UPDATE balance_monitors SET crossed = %s, seq = seq + 1"
                " WHERE id = %s AND seq = %s AND deleted_at IS NULL",
                (t.crossed, m.id, m.seq),
            )
            if cur.rowcount != 1:
                continue
            done.append(t)
            if t.silent:
                continue
            kind = CROSSED_EVENT if t.crossed else CLEARED_EVENT
            data = {"monitor": {"id": m.id, "account_id": m.account_id, "condition": m.condition,
                                "threshold": m.threshold, "state": "crossed" if t.crossed
                                else "clear"},
                    "balance": t.balance, "available": t.available}  # fmt: skip
            await cur.execute(
                _INSERT_EVENT,
                (event_id(now, f"{m.id}:{m.seq + 1}"), kind, m.id, m.owner_user_id, m.account_id,
                 None, msgspec.json.encode(data).decode(), now),
            )  # fmt: skip
    return done


# storage/events.insert_statement with psycopg's placeholders
_INSERT_EVENT = (
    insert_statement()
    .replace(":id", "%s").replace(":type", "%s").replace(":subject", "%s")
    .replace(":owner", "%s").replace(":debit", "%s").replace(":credit", "%s")
    .replace(":data", "%s").replace(":created", "%s")
)  # fmt: skip


class PgMonitorStore:
    """``domain/ledger/ports.MonitorStore`` on a connection of its own (a shard's)."""

    def __init__(self, database_url: str, name: str) -> None:
        self._url = database_url
        self._name = name
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self._url, self._name)
        return self._conn

    async def load(self, index: int, count: int) -> list[Monitor]:
        try:
            return await for_shard(await self._connection(), index, count)
        except (psycopg.Error, OSError) as e:
            await self.close()
            raise StorageUnavailable(type(e).__name__) from e

    async def record(self, transitions: Sequence[Transition]) -> list[Transition]:
        try:
            return await record_transitions(await self._connection(), transitions)
        except (psycopg.Error, OSError) as e:
            await self.close()
            raise StorageUnavailable(type(e).__name__) from e

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
