"""Schedules and their runs (migration 16); the rules are domain/rails/schedule.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage.rows import record


class Schedule(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str | None
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    every: str
    start_at: dt.datetime
    end_at: dt.datetime | None
    max_runs: int | None
    catch_up: str
    metadata: str  # JSON object text
    state: str
    next_occurrence: int
    next_run_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class Run(msgspec.Struct, kw_only=True):
    schedule_id: str
    occurrence: int
    due_at: dt.datetime
    transfer_id: str
    status: str  # processing | posted | refused | skipped
    code: str | None
    ran_at: dt.datetime


_COLS = ", ".join(Schedule.__struct_fields__)
_RUN_COLS = ", ".join(Run.__struct_fields__)
_MADE = ("created_at", "updated_at")


async def create(conn: AsyncConnection, s: Schedule) -> tuple[Schedule, bool]:
    """Insert ``s``; (stored schedule, created). An existing id is returned as is."""
    values = {f: getattr(s, f) for f in Schedule.__struct_fields__ if f not in _MADE}
    row = (
        await conn.execute(
            sa.text(
                f"INSERT INTO schedules ({', '.join(values)}) VALUES"
                f" ({', '.join(':' + k for k in values)}) ON CONFLICT (id) DO NOTHING"
                f" RETURNING {_COLS}"
            ),
            values,
        )
    ).first()
    if row is not None:
        return record(Schedule, row), True
    existing = await get(conn, s.id)
    assert existing is not None
    return existing, False


async def get(conn: AsyncConnection, schedule_id: str, lock: bool = False) -> Schedule | None:
    sql = f"SELECT {_COLS} FROM schedules WHERE id = :id" + (" FOR UPDATE" if lock else "")
    row = (await conn.execute(sa.text(sql), {"id": schedule_id})).first()
    return None if row is None else record(Schedule, row)


async def list_of(
    conn: AsyncConnection, owner: str | None, after: str | None, limit: int
) -> list[Schedule]:
    """Schedules by id after ``after``: the owner's, or every one (``owner`` None)."""
    where = ["id > :after"] + (["owner_user_id = :owner"] if owner is not None else [])
    rows = await conn.execute(
        sa.text(f"SELECT {_COLS} FROM schedules WHERE {' AND '.join(where)} ORDER BY id"
                " LIMIT :n"),
        {"after": after or "", "owner": owner, "n": limit},
    )  # fmt: skip
    return [record(Schedule, r) for r in rows]


async def runs_of(conn: AsyncConnection, schedule_id: str, limit: int) -> list[Run]:
    """The latest ``limit`` runs, newest first."""
    rows = await conn.execute(
        sa.text(f"SELECT {_RUN_COLS} FROM schedule_runs WHERE schedule_id = :id"
                " ORDER BY occurrence DESC LIMIT :n"),
        {"id": schedule_id, "n": limit},
    )  # fmt: skip
    return [record(Run, r) for r in rows]


async def set_state(
    conn: AsyncConnection, schedule_id: str, state: str, next_occurrence: int,
    next_run_at: dt.datetime | None,
) -> Schedule:  # fmt: skip
    row = (
        await conn.execute(
            sa.text(
                "UPDATE schedules SET state = :s, next_occurrence = :n, next_run_at = :at,"
                f" updated_at = now() WHERE id = :id RETURNING {_COLS}"
            ),
            {"s": state, "n": next_occurrence, "at": next_run_at, "id": schedule_id},
        )
    ).one()
    return record(Schedule, row)


async def claim_due(conn: AsyncConnection, now: dt.datetime, limit: int) -> list[Schedule]:
    """Active schedules due at ``now``, locked for this transaction; another front's
    scheduler skips them (and would only replay the same transfer ids if it did not)."""
    rows = await conn.execute(
        sa.text(
            f"SELECT {_COLS} FROM schedules WHERE state = 'active' AND next_run_at <= :now"
            " ORDER BY next_run_at LIMIT :n FOR UPDATE SKIP LOCKED"
        ),
        {"now": now, "n": limit},
    )
    return [record(Schedule, r) for r in rows]


async def add_runs(conn: AsyncConnection, runs: Sequence[dict[str, Any]]) -> None:
    """Record runs (``processing`` or ``skipped``); one recorded before stays as it is."""
    if runs:
        await conn.execute(
            sa.text(
                "INSERT INTO schedule_runs (schedule_id, occurrence, due_at, transfer_id, status)"
                " VALUES (:schedule_id, :occurrence, :due_at, :transfer_id, :status)"
                " ON CONFLICT (schedule_id, occurrence) DO NOTHING"
            ),
            list(runs),
        )


async def finish_run(
    conn: AsyncConnection, schedule_id: str, occurrence: int, code: str | None
) -> None:
    await conn.execute(
        sa.text(
            "UPDATE schedule_runs SET status = :s, code = :c, ran_at = now()"
            " WHERE schedule_id = :id AND occurrence = :n AND status = 'processing'"
        ),
        {"s": "refused" if code else "posted", "c": code, "id": schedule_id, "n": occurrence},
    )
