"""Payments and refunds in PostgreSQL, each status change with its event.

A payment moves money through one ledger transfer whose id is derived from
the payment's (``pay:<id>``), so re-submitting it after a crash or a retry is
a replay, never a second movement. A status change, its history row and its
``payment.*`` event are one transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.rails.ach_rules import return_transfer_id
from paynode.domain.rails.rtp_rules import fee_transfer_id
from paynode.storage import risk
from paynode.storage.events import event_id, insert_statement
from paynode.storage.rows import record


class Payment(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str | None
    from_ref: str
    to_ref: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    rail: str
    memo: str
    status: str
    failure_code: str | None
    transfer_id: str | None
    refunded_amount: int
    created_at: dt.datetime
    updated_at: dt.datetime
    bank_account_id: str | None = None
    ach_direction: str | None = None
    same_day: bool = False
    return_code: str | None = None
    session_id: str | None = None  # the login session that made it (risk: new device)
    usage_amount: int | None = None  # counted toward the payer's limits; None: not gated
    risk_score: int | None = None  # None: not gated (an operator's payment)
    risk_level: str | None = None
    risk_reasons: str | None = None  # JSON list of {"rule", "points", "detail"}
    fee: int = 0  # paid by the payer on top of the amount (RTP), in minor units
    payment_method_id: str | None = None  # the card a card payment charges (migration 26)


class StatusChange(msgspec.Struct):
    status: str
    reason: str | None
    at: dt.datetime


class Refund(msgspec.Struct, kw_only=True):
    id: str
    payment_id: str
    amount: int
    status: str
    failure_code: str | None
    transfer_id: str
    created_at: dt.datetime


_COLS = ", ".join(Payment.__struct_fields__)


def transfer_id_of(payment_id: str) -> str:
    return f"pay:{payment_id}"


def refund_transfer_id(refund_id: str) -> str:
    return f"refund:{refund_id}"


async def register_rail(
    conn: AsyncConnection, transfer_ids: Iterable[str], rail: str, payment_id: str | None
) -> None:
    """Record that ``rail`` moves these transfers (analytics labels the journal by it).

    Run it in the transaction that reserves them, before any reaches a shard: the
    label is then committed before its journal row (migration 12)."""
    await conn.execute(
        sa.text(
            "INSERT INTO transfer_rails (id, rail, payment_id) VALUES (:id, :rail, :p)"
            " ON CONFLICT (id) DO NOTHING"
        ),
        [{"id": t, "rail": rail, "p": payment_id} for t in transfer_ids],
    )


def _rail_transfers(p: Payment) -> list[str]:
    """The transfers a payment may make: its own (wallet, or an ACH hold; the hold's post
    or void is labelled by it) and an ACH return's reversal of a settled entry."""
    assert p.transfer_id is not None, "a payment names its transfer when it is made"
    return [p.transfer_id] + ([return_transfer_id(p.id)] if p.rail == "ach" else [])


def payment_data(p: Payment, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of a ``payment.*`` event (no memo: it is the payer's free text)."""
    return {
        "payment": {
            "id": p.id, "status": p.status, "rail": p.rail, "amount": p.amount,
            "currency": p.currency, "debit_account_id": p.debit_account_id,
            "credit_account_id": p.credit_account_id, "transfer_id": p.transfer_id,
            "failure_code": p.failure_code, "refunded_amount": p.refunded_amount,
            "fee": p.fee,
        }
        | (extra or {})
    }  # fmt: skip


async def emit(conn: AsyncConnection, kind: str, p: Payment, extra: dict | None = None) -> None:
    """Record a ``payment.*`` event about ``p`` in ``conn``'s transaction."""
    now = time.time_ns()
    await conn.execute(
        sa.text(insert_statement()),
        {
            "id": event_id(now, f"{p.id}:{kind}:{now}"),
            "type": kind,
            "subject": p.id,
            "owner": p.owner_user_id,
            "debit": p.debit_account_id,
            "credit": p.credit_account_id,
            "data": msgspec.json.encode(payment_data(p, extra)).decode(),
            "created": now,
        },
    )


async def _history(conn: AsyncConnection, payment_id: str, status: str, reason: str | None):
    await conn.execute(
        sa.text(
            "INSERT INTO payment_status_history (payment_id, status, reason) VALUES (:p, :s, :r)"
        ),
        {"p": payment_id, "s": status, "r": reason},
    )


async def get(conn: AsyncConnection, payment_id: str, lock: bool = False) -> Payment | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_COLS} FROM payments WHERE id = :id" + (" FOR UPDATE" if lock else "")
            ),
            {"id": payment_id},
        )
    ).first()
    return None if row is None else record(Payment, row)


async def create(conn: AsyncConnection, p: Payment) -> tuple[Payment, bool]:
    """Insert ``p`` as processing; (stored payment, created). An existing id is returned as is."""
    values = {f: getattr(p, f) for f in Payment.__struct_fields__
              if f not in ("created_at", "updated_at")}  # fmt: skip
    row = (
        await conn.execute(
            sa.text(
                f"INSERT INTO payments ({', '.join(values)}) VALUES"
                f" ({', '.join(':' + k for k in values)}) ON CONFLICT (id) DO NOTHING"
                f" RETURNING {_COLS}"
            ),
            values,
        )
    ).first()
    if row is None:
        existing = await get(conn, p.id)
        assert existing is not None
        return existing, False
    stored = record(Payment, row)
    await register_rail(conn, _rail_transfers(stored), stored.rail, stored.id)
    if stored.fee:  # its own label: a rail's volume adds up to its payments' amounts
        await register_rail(conn, [fee_transfer_id(stored.id)], "fee", stored.id)
    await _history(conn, stored.id, stored.status, None)
    await emit(conn, "payment.created", stored)
    return stored, True


# Which status may follow which: anything else is a no-op (a replayed step).
TRANSITIONS: dict[str, frozenset[str]] = {
    # requires_action (a code) and in_review (an operator) wait before money moves.
    "processing": frozenset({"requires_action", "in_review"}),
    # Cards: the issuer asks for 3-D Secure after the processor saw the payment.
    "requires_action": frozenset({"processing"}),
    # RTP: pending (held, sent) until the network's pacs.002 accepts or rejects it.
    "completed": frozenset({"processing", "pending"}),
    "failed": frozenset({"processing", "requires_action", "in_review", "pending"}),
    "pending": frozenset({"processing"}),
    "submitted": frozenset({"pending"}),
    "settled": frozenset({"submitted"}),
    "returned": frozenset({"pending", "submitted", "settled"}),
    # ACH, by its payer, while the entry waits for a file (storage.ach.cancel_entry).
    "canceled": frozenset({"pending"}),
}


async def transition(
    conn: AsyncConnection,
    payment_id: str,
    status: str,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Payment:
    """Move a payment to ``status`` with its history row and event, if the move is allowed.

    ``reason`` is the failure or return code. A move that is not allowed from
    the current status (already done, or overtaken) changes nothing.
    """
    current = await get(conn, payment_id, lock=True)
    assert current is not None
    if current.status not in TRANSITIONS[status]:
        return current
    code_column = "return_code" if status == "returned" else "failure_code"
    row = (
        await conn.execute(
            sa.text(
                f"UPDATE payments SET status = :s, {code_column} = coalesce(:f, {code_column}),"
                f" updated_at = now() WHERE id = :id RETURNING {_COLS}"
            ),
            {"s": status, "f": reason, "id": payment_id},
        )
    ).one()
    done = record(Payment, row)
    if status in ("failed", "canceled") and done.usage_amount is not None and done.owner_user_id:
        # No money moved: the payment stops counting toward the payer's limits.
        await risk.release_usage(conn, done.owner_user_id, done.usage_amount, done.created_at)
    await _history(conn, payment_id, status, reason)
    await emit(conn, f"payment.{status}", done, extra)
    return done


async def finish(
    conn: AsyncConnection, payment_id: str, ok: bool, failure_code: str | None
) -> Payment:
    """A wallet payment: processing -> completed or failed (a no-op if it already finished)."""
    return await transition(conn, payment_id, "completed" if ok else "failed", failure_code)


async def stuck_processing(
    conn: AsyncConnection, rail: str, before: dt.datetime, limit: int
) -> list[Payment]:
    """Payments of ``rail`` made before ``before`` and still processing: their maker died
    between recording them and moving their money (a retry finishes them)."""
    rows = await conn.execute(
        sa.text(
            f"SELECT {_COLS} FROM payments WHERE status = 'processing' AND rail = :rail"
            " AND updated_at < :before ORDER BY updated_at LIMIT :limit"
        ),
        {"rail": rail, "before": before, "limit": limit},
    )
    return [record(Payment, r) for r in rows]


async def history(conn: AsyncConnection, payment_id: str) -> list[StatusChange]:
    rows: Iterable[tuple[Any, ...]] = await conn.execute(
        sa.text(
            "SELECT status, reason, at FROM payment_status_history WHERE payment_id = :p"
            " ORDER BY id"
        ),
        {"p": payment_id},
    )
    return [StatusChange(*r) for r in rows]


async def list_for(
    conn: AsyncConnection,
    user: str | None,
    status: str | None,
    rail: str | None,
    after: str | None,
    limit: int,
) -> list[Payment]:
    where: list[str] = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if user is not None:
        where.append("owner_user_id = :user")
        params["user"] = user
    for name, value in (("status", status), ("rail", rail)):
        if value is not None:
            where.append(f"{name} = :{name}")
            params[name] = value
    if after is not None:
        where.append("id > :after")
        params["after"] = after
    rows = await conn.execute(
        sa.text(
            f"SELECT {_COLS} FROM payments WHERE {' AND '.join(where)} ORDER BY id LIMIT :limit"
        ),
        params,
    )
    return [record(Payment, r) for r in rows]


# -- refunds ------------------------------------------------------------------------------

_REFUND_COLS = ", ".join(Refund.__struct_fields__)


class RefundRefused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def reserve_refund(
    conn: AsyncConnection, payment_id: str, refund_id: str, amount: int | None
) -> tuple[Refund, bool]:
    """Reserve a refund under the payment's row lock; (refund, new). Never above the payment."""
    p = await get(conn, payment_id, lock=True)
    if p is None:
        raise RefundRefused("payment_not_found")
    existing = (
        await conn.execute(
            sa.text(f"SELECT {_REFUND_COLS} FROM refunds WHERE id = :id"), {"id": refund_id}
        )
    ).first()
    if existing is not None:
        r = record(Refund, existing)
        if r.payment_id != payment_id or (amount is not None and amount != r.amount):
            raise RefundRefused("exists_with_different_fields")
        return r, False
    if p.status != "completed":
        raise RefundRefused("payment_not_completed")
    left = p.amount - p.refunded_amount
    want = left if amount is None else amount
    if want <= 0 or want > left:
        raise RefundRefused("refund_exceeds_payment")
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO refunds (id, payment_id, amount, status, transfer_id)"
                f" VALUES (:id, :p, :a, 'processing', :t) RETURNING {_REFUND_COLS}"
            ),
            {"id": refund_id, "p": payment_id, "a": want, "t": refund_transfer_id(refund_id)},
        )
    ).one()
    await conn.execute(
        sa.text("UPDATE payments SET refunded_amount = refunded_amount + :a, updated_at = now()"
                " WHERE id = :p"),
        {"a": want, "p": payment_id},
    )  # fmt: skip
    refund = record(Refund, row)
    await register_rail(conn, [refund.transfer_id], p.rail, payment_id)
    return refund, True


async def finish_refund(
    conn: AsyncConnection, refund_id: str, ok: bool, failure_code: str | None
) -> Refund:
    """processing -> completed, or failed with its reservation given back."""
    row = (
        await conn.execute(
            sa.text(f"SELECT {_REFUND_COLS} FROM refunds WHERE id = :id FOR UPDATE"),
            {"id": refund_id},
        )
    ).one()
    r = record(Refund, row)
    if r.status != "processing":
        return r
    status = "completed" if ok else "failed"
    await conn.execute(
        sa.text("UPDATE refunds SET status = :s, failure_code = :f, updated_at = now()"
                " WHERE id = :id"),
        {"s": status, "f": failure_code, "id": refund_id},
    )  # fmt: skip
    if not ok:
        await conn.execute(
            sa.text("UPDATE payments SET refunded_amount = refunded_amount - :a,"
                    " updated_at = now() WHERE id = :p"),
            {"a": r.amount, "p": r.payment_id},
        )  # fmt: skip
    p = await get(conn, r.payment_id)
    assert p is not None
    await _history(conn, p.id, f"refund_{status}", f"{refund_id}:{r.amount}")
    kind = "payment.refunded" if ok else "payment.refund_failed"
    await emit(conn, kind, p, {"refund": {"id": refund_id, "amount": r.amount,
                                             "failure_code": failure_code}})  # fmt: skip
    return msgspec.structs.replace(r, status=status, failure_code=failure_code)


async def stuck_refunds(conn: AsyncConnection, before: dt.datetime, limit: int) -> list[Refund]:
    """Refunds reserved before ``before`` and still processing, oldest first."""
    rows = await conn.execute(
        sa.text(f"SELECT {_REFUND_COLS} FROM refunds WHERE status = 'processing'"
                " AND updated_at < :before ORDER BY updated_at LIMIT :limit"),
        {"before": before, "limit": limit},
    )  # fmt: skip
    return [record(Refund, r) for r in rows]


async def refunds_of(conn: AsyncConnection, payment_id: str) -> list[Refund]:
    rows = await conn.execute(
        sa.text(
            f"SELECT {_REFUND_COLS} FROM refunds WHERE payment_id = :p ORDER BY created_at, id"
        ),
        {"p": payment_id},
    )
    return [record(Refund, r) for r in rows]
