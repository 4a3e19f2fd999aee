"""Disputes in PostgreSQL (migration 28): one row per processor dispute, its status and
the merchant's evidence (sealed), with a ``charge.dispute.*`` event per change written
in the same transaction."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.rails import disputes as rules
from paynode.storage import pii
from paynode.storage.events import event_id, insert_statement
from paynode.storage.keyring import Keyring
from paynode.storage.rows import record


class Dispute(msgspec.Struct, kw_only=True):
    id: str
    payment_id: str
    owner_user_id: str | None
    account_id: str
    amount: int
    currency: str
    reason: str
    status: str
    held: bool
    unrecovered: int
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None


_COLS = ", ".join(Dispute.__struct_fields__)


async def emit(conn: AsyncConnection, kind: str, d: Dispute) -> None:
    """A ``charge.dispute.*`` event to the merchant (no evidence: it may hold PII)."""
    now = time.time_ns()
    data = {"dispute": {"id": d.id, "payment_id": d.payment_id, "amount": d.amount,
                        "currency": d.currency, "reason": d.reason, "status": d.status,
                        "unrecovered": d.unrecovered}}  # fmt: skip
    await conn.execute(
        sa.text(insert_statement()),
        {"id": event_id(now, f"{d.id}:{kind}:{now}"), "type": kind, "subject": d.id,
         "owner": d.owner_user_id, "debit": d.account_id, "credit": None,
         "data": msgspec.json.encode(data).decode(), "created": now},
    )  # fmt: skip


async def add(conn: AsyncConnection, values: dict[str, Any]) -> tuple[Dispute, bool]:
    """Record a dispute the processor opened; (stored, new). Delivered twice: the first."""
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO disputes (id, payment_id, owner_user_id, account_id, amount,"
                " currency, reason, status, held) VALUES (:id, :payment_id, :owner_user_id,"
                " :account_id, :amount, :currency, :reason, 'needs_response', :held)"
                f" ON CONFLICT (id) DO NOTHING RETURNING {_COLS}"
            ),
            values,
        )
    ).first()
    if row is None:
        found = await get(conn, values["id"])
        assert found is not None
        return found, False
    d = record(Dispute, row)
    await emit(conn, "charge.dispute.created", d)
    return d, True


async def get(conn: AsyncConnection, dispute_id: str, lock: bool = False) -> Dispute | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_COLS} FROM disputes WHERE id = :id" + (" FOR UPDATE" if lock else "")
            ),
            {"id": dispute_id},
        )
    ).first()
    return None if row is None else record(Dispute, row)


async def list_for(
    conn: AsyncConnection, owner: str | None, after: str | None, limit: int
) -> list[Dispute]:
    where = ["true"]
    if owner is not None:
        where.append("owner_user_id = :owner")
    if after is not None:
        where.append("id > :after")
    rows = await conn.execute(
        sa.text(f"SELECT {_COLS} FROM disputes WHERE {' AND '.join(where)} ORDER BY id LIMIT :n"),
        {"owner": owner, "after": after, "n": limit},
    )
    return [record(Dispute, r) for r in rows]


async def move(
    conn: AsyncConnection, dispute_id: str, status: str, unrecovered: int = 0
) -> Dispute:
    """Move to ``status`` with its event, if allowed from the current one (else as is)."""
    d = await get(conn, dispute_id, lock=True)
    assert d is not None
    if not rules.allowed(d.status, status):
        return d
    row = (
        await conn.execute(
            sa.text(
                "UPDATE disputes SET status = :s, unrecovered = :u, updated_at = now(),"
                " closed_at = CASE WHEN :s IN ('won', 'lost') THEN now() END"
                f" WHERE id = :id RETURNING {_COLS}"
            ),
            {"s": status, "u": unrecovered, "id": dispute_id},
        )
    ).one()
    done = record(Dispute, row)
    kind = "charge.dispute.closed" if status in ("won", "lost") else "charge.dispute.updated"
    await emit(conn, kind, done)
    return done


async def keep_evidence(conn: AsyncConnection, keys: Keyring, dispute_id: str, text: str) -> None:
    sealed = pii.seal(keys, text, "disputes", "evidence_ct", dispute_id,
                      limit=rules.MAX_EVIDENCE_CHARS * 4)  # fmt: skip
    await conn.execute(
        sa.text("UPDATE disputes SET evidence_ct = :e, updated_at = now() WHERE id = :id"),
        {"e": sealed, "id": dispute_id},
    )
