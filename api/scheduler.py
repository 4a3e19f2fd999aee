"""The scheduler: runs the due occurrences of schedules, from every front.

Each pass, in three steps:

1. **Claim** (one transaction): due active schedules, row-locked with SKIP
   LOCKED (another front's pass takes others); each one's due occurrences
   (``domain/rails/schedule.due``, the catch-up policy applied) recorded as
   ``processing`` runs, or ``skipped``.
2. **Move** (one batch to the ledger): each run's transfer, whose id is derived
   from the schedule and the occurrence.
3. **Record** (one transaction): each run posted or refused, and the
   schedule's next occurrence moved on. An answer that is not final (the
   ledger unavailable) leaves its run ``processing`` and the schedule where it
   was: the next pass moves the same transfer id again.

A crash anywhere in between is the same case: the occurrence runs again under
its id and the ledger answers a replay. None is doubled, none is missed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import msgspec
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.api.batcher import Overloaded
from paynode.api.ledger_client import LedgerClient, ShardLost, Unavailable
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE
from paynode.domain.rails import schedule as rules
from paynode.storage import schedules as store

log = logging.getLogger("paynode.schedules")


def _run(s: store.Schedule, n: int, status: str) -> dict:
    return {"schedule_id": s.id, "occurrence": n, "due_at": rules.due_at(s.start_at, s.every, n),
            "transfer_id": rules.transfer_id(s.id, n), "status": status}  # fmt: skip


def next_run_at(s: store.Schedule, n: int) -> dt.datetime | None:
    """When occurrence ``n`` is due, or None if there is none (finished)."""
    if not rules.exists(s.start_at, s.every, n, s.end_at, s.max_runs):
        return None
    return rules.due_at(s.start_at, s.every, n)


async def run_due(engine: AsyncEngine, client: LedgerClient, now: dt.datetime, limit: int) -> int:
    """One pass; how many occurrences ran (posted or refused)."""
    plans: list[tuple[store.Schedule, list[int], list[int]]] = []
    async with engine.begin() as conn:
        for s in await store.claim_due(conn, now, limit):
            due = rules.due(s.start_at, s.every, s.next_occurrence, now, s.end_at, s.max_runs)
            run, skipped = rules.split(due, s.catch_up)
            await store.add_runs(conn, [_run(s, n, "skipped") for n in skipped]
                                 + [_run(s, n, "processing") for n in run])  # fmt: skip
            plans.append((s, run, skipped))
    if not plans:
        return 0
    moves = [
        TransferIn(
            id=rules.transfer_id(s.id, n), debit_account_id=s.debit_account_id,
            credit_account_id=s.credit_account_id, amount=s.amount, currency=s.currency,
            metadata={**msgspec.json.decode(s.metadata), "schedule_id": s.id,
                      "occurrence": str(n)},
        )
        for s, run, _ in plans for n in run
    ]  # fmt: skip
    try:
        outcomes = {o.id: o.code for o in await client.transfer(moves, None)} if moves else {}
    except (Unavailable, ShardLost, Overloaded):
        return 0  # nothing recorded: the next pass moves the same ids
    ran = 0
    async with engine.begin() as conn:
        for s, run, skipped in plans:
            upto = (skipped[-1] + 1) if skipped else s.next_occurrence
            for n in run:
                code = outcomes[rules.transfer_id(s.id, n)]
                if code in RETRYABLE:
                    break  # not final: this occurrence and the later ones run again
                await store.finish_run(conn, s.id, n, code or None)
                ran += 1
                upto = n + 1
            at = next_run_at(s, upto)
            await store.set_state(conn, s.id, "active" if at else "finished", upto, at)
    return ran


async def follow(engine: AsyncEngine, client: LedgerClient, interval_ms: int, batch: int) -> None:
    """Run passes forever, every ``interval_ms`` (sooner while a pass found a full batch)."""
    while True:
        try:
            ran = await run_due(engine, client, dt.datetime.now(dt.UTC), batch)
        except (SQLAlchemyError, OSError) as e:  # PostgreSQL away: the next pass retries
            log.warning("scheduler pass failed: %s", type(e).__name__)
            ran = 0
        if ran < batch:
            await asyncio.sleep(interval_ms / 1000)
