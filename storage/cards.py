"""Cards in PostgreSQL (migration 26): payment methods, charges, refunds handed to the
processor, the processor's events and settlement batches.

No card number is ever stored (the node never receives one): a payment method is what
the processor tells about the card and its reference for it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.rails.card_rules import Expected, Reconciled
from paynode.storage.events import event_id, insert_statement
from paynode.storage.rows import record


class PaymentMethod(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str
    type: str
    processor: str
    processor_ref: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    status: str  # active | detached
    created_at: dt.datetime
    detached_at: dt.datetime | None


class Charge(msgspec.Struct, kw_only=True):
    payment_id: str
    charge_ref: str
    status: str  # authorizing | requires_action | authorized | captured | declined | voided
    decline_code: str | None
    authorization_code: str | None
    fee: int
    receipt_number: str | None
    settlement_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SettlementRecord(msgspec.Struct, kw_only=True):
    id: str
    gross: int
    refunds: int
    fees: int
    net: int
    expected_gross: int
    expected_refunds: int
    expected_fees: int
    lines: int
    differences: list[dict]
    status: str  # matched | mismatched
    received_at: dt.datetime


_PM_COLS = ", ".join(PaymentMethod.__struct_fields__)
_CH_COLS = ", ".join(Charge.__struct_fields__)
_ST_COLS = ", ".join(SettlementRecord.__struct_fields__)


# -- payment methods ----------------------------------------------------------------------


async def add_method(conn: AsyncConnection, values: dict[str, Any]) -> PaymentMethod:
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO payment_methods (id, owner_user_id, type, processor, processor_ref,"
                " brand, last4, exp_month, exp_year) VALUES (:id, :owner_user_id, 'card',"
                " :processor, :processor_ref, :brand, :last4, :exp_month, :exp_year)"
                f" RETURNING {_PM_COLS}"
            ),
            values,
        )
    ).one()
    return record(PaymentMethod, row)


async def get_method(
    conn: AsyncConnection, method_id: str, lock: bool = False
) -> PaymentMethod | None:
    """``lock``: row-locked, so detaching it and subscribing with it go one after the other."""
    sql = f"SELECT {_PM_COLS} FROM payment_methods WHERE id = :id" + (" FOR UPDATE" if lock else "")
    row = (await conn.execute(sa.text(sql), {"id": method_id})).first()
    return None if row is None else record(PaymentMethod, row)


async def list_methods(conn: AsyncConnection, owner: str, limit: int) -> list[PaymentMethod]:
    rows = await conn.execute(
        sa.text(
            f"SELECT {_PM_COLS} FROM payment_methods WHERE owner_user_id = :o"
            " AND status = 'active' ORDER BY created_at, id LIMIT :n"
        ),
        {"o": owner, "n": limit},
    )
    return [record(PaymentMethod, r) for r in rows]


async def detach(conn: AsyncConnection, method_id: str) -> PaymentMethod:
    """Detached for good (payments that used it still name it); again is a no-op."""
    row = (
        await conn.execute(
            sa.text(
                "UPDATE payment_methods SET status = 'detached',"
                " detached_at = coalesce(detached_at, now()) WHERE id = :id"
                f" RETURNING {_PM_COLS}"
            ),
            {"id": method_id},
        )
    ).one()
    await conn.execute(
        sa.text("DELETE FROM payment_method_defaults WHERE payment_method_id = :id"),
        {"id": method_id},
    )
    return record(PaymentMethod, row)


async def in_use_by_active_subscription(conn: AsyncConnection, method_id: str) -> bool:
    """Whether a subscription that is not canceled charges this payment method (its
    invoices would have nothing to be paid from)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT 1 FROM billing_subscriptions WHERE source_kind = 'card'"
                " AND source_account_id = :m AND status <> 'canceled' LIMIT 1"
            ),
            {"m": method_id},
        )
    ).first()
    return row is not None


async def default_of(conn: AsyncConnection, owner: str) -> str | None:
    return (
        await conn.execute(
            sa.text(
                "SELECT payment_method_id FROM payment_method_defaults WHERE owner_user_id = :o"
            ),
            {"o": owner},
        )
    ).scalar_one_or_none()


async def set_default(conn: AsyncConnection, owner: str, method_id: str) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO payment_method_defaults (owner_user_id, payment_method_id)"
            " VALUES (:o, :m) ON CONFLICT (owner_user_id) DO UPDATE"
            " SET payment_method_id = :m, updated_at = now()"
        ),
        {"o": owner, "m": method_id},
    )


async def emit_method(conn: AsyncConnection, kind: str, m: PaymentMethod) -> None:
    """A ``payment_method.*`` event to its owner (brand, last 4, expiry: never a token)."""
    now = time.time_ns()
    data = {"payment_method": {"id": m.id, "type": m.type, "brand": m.brand, "last4": m.last4,
                               "exp_month": m.exp_month, "exp_year": m.exp_year,
                               "status": m.status}}  # fmt: skip
    await conn.execute(
        sa.text(insert_statement()),
        {"id": event_id(now, f"{m.id}:{kind}"), "type": kind, "subject": m.id,
         "owner": m.owner_user_id, "debit": None, "credit": None,
         "data": msgspec.json.encode(data).decode(), "created": now},
    )  # fmt: skip


# -- charges ------------------------------------------------------------------------------


async def add_charge(conn: AsyncConnection, payment_id: str, charge_ref: str, fee: int) -> None:
    """Record the charge before the processor first hears of it (again: a no-op)."""
    await conn.execute(
        sa.text(
            "INSERT INTO card_charges (payment_id, charge_ref, status, fee)"
            " VALUES (:p, :c, 'authorizing', :f) ON CONFLICT (payment_id) DO NOTHING"
        ),
        {"p": payment_id, "c": charge_ref, "f": fee},
    )


async def charge_of(conn: AsyncConnection, payment_id: str) -> Charge | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_CH_COLS} FROM card_charges WHERE payment_id = :p"),
            {"p": payment_id},
        )
    ).first()
    return None if row is None else record(Charge, row)


async def set_charge(
    conn: AsyncConnection, payment_id: str, status: str, decline_code: str | None = None,
    authorization_code: str | None = None,
) -> None:  # fmt: skip
    await conn.execute(
        sa.text(
            "UPDATE card_charges SET status = :s, decline_code = coalesce(:d, decline_code),"
            " authorization_code = coalesce(:a, authorization_code), updated_at = now()"
            " WHERE payment_id = :p"
        ),
        {"s": status, "d": decline_code, "a": authorization_code, "p": payment_id},
    )


async def assign_receipt(
    conn: AsyncConnection, payment_id: str, number_of: Callable[[str, int], str]
) -> str:
    """The payment's receipt number, made once (``number_of(day, sequence)``)."""
    found: str | None = (
        await conn.execute(
            sa.text("SELECT receipt_number FROM card_charges WHERE payment_id = :p FOR UPDATE"),
            {"p": payment_id},
        )
    ).scalar_one()
    if found is not None:
        return found
    seq: int = (await conn.execute(sa.text("SELECT nextval('card_receipt_seq')"))).scalar_one()
    number = number_of(dt.datetime.now(dt.UTC).strftime("%Y%m%d"), seq)
    await conn.execute(
        sa.text("UPDATE card_charges SET receipt_number = :r WHERE payment_id = :p"),
        {"r": number, "p": payment_id},
    )
    return number


async def add_refund(conn: AsyncConnection, refund_id: str, payment_id: str, amount: int) -> None:
    """A refund the processor has taken (again: a no-op)."""
    await conn.execute(
        sa.text(
            "INSERT INTO card_refunds (refund_id, payment_id, amount) VALUES (:r, :p, :a)"
            " ON CONFLICT (refund_id) DO NOTHING"
        ),
        {"r": refund_id, "p": payment_id, "a": amount},
    )


# -- the processor's events ---------------------------------------------------------------


async def add_event(
    conn: AsyncConnection, event: str, kind: str, payment_id: str | None, data: dict
) -> bool:
    """Store an event as received; False if it was stored before (delivered twice)."""
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO card_events (id, type, payment_id, data)"
                " VALUES (:id, :t, :p, CAST(:d AS jsonb)) ON CONFLICT (id) DO NOTHING"
                " RETURNING id"
            ),
            {"id": event, "t": kind, "p": payment_id, "d": msgspec.json.encode(data).decode()},
        )
    ).first()
    return row is not None


async def events_of(conn: AsyncConnection, payment_id: str, limit: int) -> list[tuple[str, str]]:
    rows = await conn.execute(
        sa.text(
            "SELECT id, type FROM card_events WHERE payment_id = :p ORDER BY received_at, id"
            " LIMIT :n"
        ),
        {"p": payment_id, "n": limit},
    )
    return [(r[0], r[1]) for r in rows]


# -- settlement ---------------------------------------------------------------------------


async def expected_lines(
    conn: AsyncConnection, charge_refs: list[str], refund_ids: list[str]
) -> dict[str, Expected]:
    """What our records say the processor owes for these charges and refunds."""
    out: dict[str, Expected] = {}
    rows = await conn.execute(
        sa.text(
            "SELECT c.charge_ref, p.amount, c.fee FROM card_charges c"
            " JOIN payments p ON p.id = c.payment_id"
            " WHERE c.charge_ref = ANY(:refs) AND c.status = 'captured'"
        ),
        {"refs": charge_refs},
    )
    for row in rows:
        out[str(row[0])] = Expected(int(row[1]), int(row[2]))
    rows = await conn.execute(
        sa.text("SELECT refund_id, amount FROM card_refunds WHERE refund_id = ANY(:ids)"),
        {"ids": refund_ids},
    )
    for row in rows:
        out[str(row[0])] = Expected(int(row[1]))
    return out


async def add_settlement(
    conn: AsyncConnection, settlement_id: str, r: Reconciled, lines: int,
    charge_refs: list[str], refund_ids: list[str],
) -> bool:  # fmt: skip
    """Record a batch and what reconciling it found; False if it was recorded before."""
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO card_settlements (id, gross, refunds, fees, net, expected_gross,"
                " expected_refunds, expected_fees, lines, differences, status) VALUES (:id,"
                " :gross, :refunds, :fees, :net, :eg, :er, :ef, :lines, CAST(:d AS jsonb), :s)"
                " ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            {
                "id": settlement_id,
                "gross": r.gross,
                "refunds": r.refunds,
                "fees": r.fees,
                "net": r.net,
                "eg": r.expected_gross,
                "er": r.expected_refunds,
                "ef": r.expected_fees,
                "lines": lines,
                "d": msgspec.json.encode(r.differences).decode(),
                "s": "mismatched" if r.differences else "matched",
            },
        )
    ).first()
    if row is None:
        return False
    await conn.execute(
        sa.text("UPDATE card_charges SET settlement_id = :s WHERE charge_ref = ANY(:refs)"),
        {"s": settlement_id, "refs": charge_refs},
    )
    await conn.execute(
        sa.text("UPDATE card_refunds SET settlement_id = :s WHERE refund_id = ANY(:ids)"),
        {"s": settlement_id, "ids": refund_ids},
    )
    return True


async def get_settlement(conn: AsyncConnection, settlement_id: str) -> SettlementRecord | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_ST_COLS} FROM card_settlements WHERE id = :id"),
            {"id": settlement_id},
        )
    ).first()
    return None if row is None else record(SettlementRecord, row)


async def list_settlements(conn: AsyncConnection, limit: int) -> list[SettlementRecord]:
    rows = await conn.execute(
        sa.text(f"SELECT {_ST_COLS} FROM card_settlements ORDER BY received_at DESC LIMIT :n"),
        {"n": limit},
    )
    return [record(SettlementRecord, r) for r in rows]


class ClearingTotals(msgspec.Struct, kw_only=True):
    captured: int
    refunded: int
    fees: int
    settled_captured: int
    settled_refunded: int
    settled_fees: int


async def clearing_totals(conn: AsyncConnection) -> ClearingTotals:
    """Our records' totals through the clearing account (captures, refunds, fees), and
    how much of each was settled."""
    c = (
        await conn.execute(
            sa.text(
                "SELECT coalesce(sum(p.amount), 0), coalesce(sum(c.fee), 0),"
                " coalesce(sum(p.amount) FILTER (WHERE c.settlement_id IS NOT NULL), 0),"
                " coalesce(sum(c.fee) FILTER (WHERE c.settlement_id IS NOT NULL), 0)"
                " FROM card_charges c JOIN payments p ON p.id = c.payment_id"
                " WHERE c.status = 'captured'"
            )
        )
    ).one()
    r = (
        await conn.execute(
            sa.text(
                "SELECT coalesce(sum(amount), 0),"
                " coalesce(sum(amount) FILTER (WHERE settlement_id IS NOT NULL), 0)"
                " FROM card_refunds"
            )
        )
    ).one()
    return ClearingTotals(captured=int(c[0]), fees=int(c[1]), settled_captured=int(c[2]),
                          settled_fees=int(c[3]), refunded=int(r[0]),
                          settled_refunded=int(r[1]))  # fmt: skip
