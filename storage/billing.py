"""Products, prices, subscriptions, invoices and test clocks (migration 27).

The rules are domain/billing; this module only reads and writes rows. A
subscription row carries the domain ``Subscription`` as JSON (``state``) and the
columns the scheduler and the lists query, written together by ``update_subscriptions``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.billing import clocks as ck
from paynode.domain.billing import dunning as dn
from paynode.domain.billing import invoices as inv
from paynode.domain.billing import subscriptions as subs
from paynode.domain.billing.periods import Price as PriceRule
from paynode.storage.events import event_id
from paynode.storage.rows import record


class Product(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str
    name: str
    created_at: dt.datetime


class Price(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str
    product_id: str
    amount: int
    currency: str
    interval: str
    interval_count: int
    payout_account_id: str
    created_at: dt.datetime

    def rule(self) -> PriceRule:
        """The domain price (validated again: a row is only what the rules allow)."""
        return PriceRule(id=self.id, amount=self.amount, currency=self.currency.strip(),
                    interval=self.interval, interval_count=self.interval_count)  # type: ignore[arg-type]  # fmt: skip


class Clock(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str
    now: dt.datetime
    created_at: dt.datetime


class Sub(msgspec.Struct, kw_only=True):
    id: str
    customer_user_id: str
    merchant_user_id: str
    price_id: str
    source_kind: str
    source_account_id: str
    merchant_account_id: str
    status: str
    test_clock_id: str | None
    state: str  # the domain Subscription as JSON
    collecting: str | None
    created_at: dt.datetime

    def rule(self) -> subs.Subscription:
        return msgspec.json.decode(self.state, type=subs.Subscription)


class Invoice(msgspec.Struct, kw_only=True):
    id: str
    number: str
    subscription_id: str
    customer_user_id: str
    merchant_user_id: str
    period_index: int | None
    currency: str
    lines: str  # the domain Lines as JSON
    total: int
    amount_due: int
    credit: int
    status: str
    attempts: int
    in_flight: int | None
    due_at: dt.datetime
    last_code: str | None
    paid_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def line_items(self) -> list[inv.Line]:
        return msgspec.json.decode(self.lines, type=list[inv.Line])


def _cols(t: type[msgspec.Struct], prefix: str = "") -> str:
    return ", ".join(prefix + f for f in t.__struct_fields__)


async def _insert(conn: AsyncConnection, table: str, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (id) DO NOTHING; whether a row was made."""
    row = (
        await conn.execute(
            sa.text(
                f"INSERT INTO {table} ({', '.join(values)}) VALUES"
                f" ({', '.join(':' + k for k in values)}) ON CONFLICT (id) DO NOTHING"
                " RETURNING id"
            ),
            values,
        )
    ).first()
    return row is not None


async def _get(conn: AsyncConnection, t: type, table: str, key: str, lock: bool = False) -> Any:
    sql = f"SELECT {_cols(t)} FROM {table} WHERE id = :id" + (" FOR UPDATE" if lock else "")
    row = (await conn.execute(sa.text(sql), {"id": key})).first()
    return None if row is None else record(t, row)


async def _list(
    conn: AsyncConnection, t: type, table: str, where: str, params: dict[str, Any],
    after: str | None, limit: int,
) -> list[Any]:  # fmt: skip
    rows = await conn.execute(
        sa.text(f"SELECT {_cols(t)} FROM {table} WHERE id > :after AND ({where})"
                " ORDER BY id LIMIT :n"),
        {**params, "after": after or "", "n": limit},
    )  # fmt: skip
    return [record(t, r) for r in rows]


# -- products, prices, clocks -------------------------------------------------------


async def create_product(conn: AsyncConnection, product_id: str, owner: str, name: str) -> bool:
    values = {"id": product_id, "owner_user_id": owner, "name": name}
    return await _insert(conn, "billing_products", values)


async def get_product(conn: AsyncConnection, product_id: str) -> Product | None:
    return await _get(conn, Product, "billing_products", product_id)


async def list_products(
    conn: AsyncConnection, owner: str | None, after: str | None, limit: int
) -> list[Product]:
    where = "owner_user_id = :o" if owner is not None else "true"
    return await _list(conn, Product, "billing_products", where, {"o": owner}, after, limit)


async def create_price(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    return await _insert(conn, "billing_prices", values)


async def get_price(conn: AsyncConnection, price_id: str) -> Price | None:
    return await _get(conn, Price, "billing_prices", price_id)


async def list_prices(
    conn: AsyncConnection, owner: str | None, after: str | None, limit: int
) -> list[Price]:
    where = "owner_user_id = :o" if owner is not None else "true"
    return await _list(conn, Price, "billing_prices", where, {"o": owner}, after, limit)


async def create_clock(conn: AsyncConnection, clock_id: str, owner: str, now: dt.datetime) -> bool:
    values = {"id": clock_id, "owner_user_id": owner, "now": now}
    return await _insert(conn, "billing_test_clocks", values)


async def get_clock(conn: AsyncConnection, clock_id: str, lock: bool = False) -> Clock | None:
    return await _get(conn, Clock, "billing_test_clocks", clock_id, lock)


async def set_clock(conn: AsyncConnection, clock_id: str, now: dt.datetime) -> None:
    await conn.execute(sa.text("UPDATE billing_test_clocks SET now = :t WHERE id = :id"),
                       {"t": now, "id": clock_id})  # fmt: skip


async def clock_now(conn: AsyncConnection, clock_id: str | None, wall: dt.datetime) -> dt.datetime:
    """The "now" of a subscription on ``clock_id`` (the wall clock without one)."""
    if clock_id is None:
        return wall
    clock = await get_clock(conn, clock_id)
    assert clock is not None  # a foreign key
    return clock.now


# -- subscriptions ------------------------------------------------------------------


def _sub_columns(s: subs.Subscription, policy: dn.Policy) -> dict[str, Any]:
    """The queried columns, derived from the domain state (written together)."""
    period = subs.current_period(s)
    due = ck.next_due(s, policy)
    return {
        "status": s.status, "anchor": s.anchor, "current_period": s.period,
        "current_period_start": period.start, "current_period_end": period.end,
        "trial_end": s.trial_end, "cancel_at_period_end": s.cancel_at_period_end,
        "paused_at": s.paused_at,
        "dunning": None if s.dunning is None else msgspec.json.encode(s.dunning).decode(),
        "state": msgspec.json.encode(s).decode(), "next_due_at": None if due is None else due.at,
    }  # fmt: skip


async def insert_subscription(
    conn: AsyncConnection, s: subs.Subscription, fixed: dict[str, Any], policy: dn.Policy,
    at: dt.datetime,
) -> None:  # fmt: skip
    values = {"id": s.id, **fixed, **_sub_columns(s, policy), "version_at": at}
    await conn.execute(
        sa.text(f"INSERT INTO billing_subscriptions ({', '.join(values)}) VALUES"
                f" ({', '.join(':' + k for k in values)})"),
        values,
    )  # fmt: skip


async def set_source(conn: AsyncConnection, sub_id: str, kind: str, source: str) -> None:
    """What pays the subscription from now on (its row locked by the caller)."""
    await conn.execute(
        sa.text("UPDATE billing_subscriptions SET source_kind = :k, source_account_id = :s,"
                " updated_at = now() WHERE id = :id"),
        {"k": kind, "s": source, "id": sub_id},
    )  # fmt: skip


async def get_subscription(conn: AsyncConnection, sub_id: str, lock: bool = False) -> Sub | None:
    return await _get(conn, Sub, "billing_subscriptions", sub_id, lock)


async def list_subscriptions(
    conn: AsyncConnection, user: str | None, after: str | None, limit: int
) -> list[Sub]:
    """The user's subscriptions as customer or merchant; every one for ``user`` None."""
    where = "customer_user_id = :u OR merchant_user_id = :u" if user is not None else "true"
    return await _list(conn, Sub, "billing_subscriptions", where, {"u": user}, after, limit)


async def claim_due(
    conn: AsyncConnection, wall: dt.datetime, limit: int, clock_id: str | None = None
) -> list[Sub]:
    """Subscriptions with an event due by their clock's now (the wall clock without a
    test clock) or an attempt to finish, row-locked; another front's pass skips them.
    ``clock_id``: only that test clock's."""
    only = " AND s.test_clock_id = :clock" if clock_id is not None else ""
    rows = await conn.execute(
        sa.text(
            f"SELECT {_cols(Sub, 's.')} FROM billing_subscriptions s"
            " LEFT JOIN billing_test_clocks c ON c.id = s.test_clock_id"
            " WHERE (s.collecting IS NOT NULL OR s.next_due_at <= coalesce(c.now, :wall))"
            f"{only} ORDER BY s.next_due_at NULLS FIRST, s.id LIMIT :n FOR UPDATE OF s SKIP LOCKED"
        ),
        {"wall": wall, "n": limit, "clock": clock_id},
    )
    return [record(Sub, r) for r in rows]


async def lock_subscriptions(conn: AsyncConnection, ids: list[str]) -> list[Sub]:
    """The subscriptions, row-locked in id order in one statement: two passes recording
    the same attempts (claimed in different orders) then wait on each other instead of
    deadlocking. Their invoices are locked after them, as every path does."""
    rows = await conn.execute(
        sa.text(f"SELECT {_cols(Sub)} FROM billing_subscriptions WHERE id = ANY(:ids)"
                " ORDER BY id FOR UPDATE"),
        {"ids": sorted(set(ids))},
    )  # fmt: skip
    return [record(Sub, r) for r in rows]


async def lock_invoices(conn: AsyncConnection, ids: set[str]) -> list[Invoice]:
    """The invoices, row-locked in id order (under their subscriptions' locks)."""
    if not ids:
        return []
    rows = await conn.execute(
        sa.text(f"SELECT {_cols(Invoice)} FROM billing_invoices WHERE id = ANY(:ids)"
                " ORDER BY id FOR UPDATE"),
        {"ids": sorted(ids)},
    )  # fmt: skip
    return [record(Invoice, r) for r in rows]


async def clocks_now(conn: AsyncConnection, ids: set[str]) -> dict[str, dt.datetime]:
    """Each test clock's now, in one statement."""
    if not ids:
        return {}
    rows = await conn.execute(
        sa.text("SELECT id, now FROM billing_test_clocks WHERE id = ANY(:ids)"),
        {"ids": sorted(ids)},
    )
    return {r[0]: r[1] for r in rows}


# -- many rows in one statement ---------------------------------------------------------
# A pass writes hundreds of invoices, events and subscriptions: one statement per table
# (rows as a JSON array read by jsonb_to_recordset) instead of one per row. Each row
# carries its version_at: the history triggers stamp its version with it (migration 31).

_INVOICE_NEW = ("id text, number text, subscription_id text, customer_user_id text,"
                " merchant_user_id text, period_index integer, currency text, lines text,"
                " total bigint, amount_due bigint, credit bigint, status text,"
                " in_flight integer, due_at timestamptz, version_at timestamptz")  # fmt: skip
_INVOICE_SET = ("id text, status text, attempts integer, in_flight integer, due_at timestamptz,"
                " last_code text, paid_by text, version_at timestamptz")  # fmt: skip
_SUB_SET = ("id text, status text, anchor timestamptz, current_period integer,"
            " current_period_start timestamptz, current_period_end timestamptz,"
            " trial_end timestamptz, cancel_at_period_end boolean, paused_at timestamptz,"
            " dunning text, state text, next_due_at timestamptz, collecting text,"
            " version_at timestamptz")  # fmt: skip
_EVENT = ("id text, type text, subject_id text, owner_user_id text, debit_account_id text,"
          " credit_account_id text, data text, created bigint")  # fmt: skip


def _names(typed: str) -> list[str]:
    return [c.split()[0] for c in typed.split(",")]


def _rows(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {"rows": msgspec.json.encode(rows).decode()}


async def allocate_numbers(conn: AsyncConnection, counts: dict[str, int]) -> dict[str, list[str]]:
    """``counts[user]`` new invoice numbers for each customer, in one statement (the
    customers' rows are locked in user id order: concurrent passes cannot deadlock)."""
    if not counts:
        return {}
    rows = [{"user_id": u, "prefix": _prefix(u), "n": n} for u, n in sorted(counts.items())]
    found = await conn.execute(
        sa.text(
            "INSERT INTO billing_customers (user_id, prefix, last_seq)"
            " SELECT user_id, prefix, n FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
            " AS x(user_id text, prefix text, n bigint) ORDER BY user_id"
            " ON CONFLICT (user_id) DO UPDATE SET"
            " last_seq = billing_customers.last_seq + EXCLUDED.last_seq"
            " RETURNING user_id, prefix, last_seq"
        ),
        _rows(rows),
    )
    numbers: dict[str, list[str]] = {}
    for row in found:
        user, prefix, last = str(row[0]), str(row[1]), int(row[2])
        n = counts[user]
        numbers[user] = [inv.number(prefix, seq) for seq in range(last - n + 1, last + 1)]
    assert numbers.keys() == counts.keys()
    return numbers


async def insert_invoices(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """New invoices; the ids made (one whose derived id exists is a replay: left alone)."""
    if not rows:
        return set()
    cols = ", ".join(_names(_INVOICE_NEW))
    made = await conn.execute(
        sa.text(f"INSERT INTO billing_invoices ({cols}) SELECT {cols} FROM"
                f" jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({_INVOICE_NEW})"
                " ON CONFLICT (id) DO NOTHING RETURNING id"),
        _rows(rows),
    )  # fmt: skip
    return {r[0] for r in made}


async def _update_many(
    conn: AsyncConnection, table: str, typed: str, rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    sets = ", ".join(f"{c} = x.{c}" for c in _names(typed) if c != "id")
    await conn.execute(
        sa.text(f"UPDATE {table} t SET {sets}, updated_at = now() FROM"
                f" jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({typed}) WHERE t.id = x.id"),
        _rows(rows),
    )  # fmt: skip


async def update_invoices(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Each invoice's collection state (every column of ``_INVOICE_SET``) and version time."""
    await _update_many(conn, "billing_invoices", _INVOICE_SET, rows)


async def update_subscriptions(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Each subscription's state (``sub_values``), ``collecting`` and version time."""
    await _update_many(conn, "billing_subscriptions", _SUB_SET, rows)


async def insert_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """``invoice.*`` and ``customer.subscription.*`` events (``event_row``)."""
    if not rows:
        return
    cols = ", ".join(_names(_EVENT))
    # data travels as text: the body is stored as written (jsonb would reorder its keys).
    picked = ", ".join("CAST(data AS json)" if c == "data" else c for c in _names(_EVENT))
    await conn.execute(
        sa.text(f"INSERT INTO events ({cols}) SELECT {picked} FROM"
                f" jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({_EVENT})"),
        _rows(rows),
    )  # fmt: skip


def event_row(
    kind: str, subject: str, owner: str, debit: str | None, credit: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """One ``events`` row; the customer owns it, the merchant sees it through the account
    it credits."""
    now = time.time_ns()
    return {"id": event_id(now, f"{subject}:{kind}:{now}"), "type": kind, "subject_id": subject,
            "owner_user_id": owner, "debit_account_id": debit, "credit_account_id": credit,
            "data": msgspec.json.encode(data).decode(), "created": now}  # fmt: skip


def sub_values(
    s: subs.Subscription, policy: dn.Policy, collecting: str | None, at: dt.datetime
) -> dict[str, Any]:
    """A row of ``update_subscriptions``."""
    return {"id": s.id, **_sub_columns(s, policy), "collecting": collecting, "version_at": at}


async def count_due(conn: AsyncConnection, clock_id: str) -> int:
    """How many of the clock's subscriptions have something due (0: the clock is ready)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT count(*) FROM billing_subscriptions s JOIN billing_test_clocks c"
                " ON c.id = s.test_clock_id WHERE s.test_clock_id = :clock AND"
                " (s.collecting IS NOT NULL OR s.next_due_at <= c.now)"
            ),
            {"clock": clock_id},
        )
    ).one()
    return int(row[0])


# -- invoices -----------------------------------------------------------------------


def _prefix(user_id: str) -> str:
    # Derived from the user id: the same customer keeps one prefix (domain: 3-12 A-Z 0-9).
    return hashlib.sha256(user_id.encode()).hexdigest()[:8].upper()


async def get_invoice(conn: AsyncConnection, invoice_id: str, lock: bool = False) -> Invoice | None:
    return await _get(conn, Invoice, "billing_invoices", invoice_id, lock)


async def list_invoices(
    conn: AsyncConnection, user: str | None, subscription: str | None, after: str | None,
    limit: int,
) -> list[Invoice]:  # fmt: skip
    where = ["customer_user_id = :u OR merchant_user_id = :u"] if user is not None else []
    where += ["subscription_id = :s"] if subscription is not None else []
    clause = " AND ".join(f"({w})" for w in where) or "true"
    params = {"u": user, "s": subscription}
    return await _list(conn, Invoice, "billing_invoices", clause, params, after, limit)


async def update_invoice(conn: AsyncConnection, invoice_id: str, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    await conn.execute(
        sa.text(f"UPDATE billing_invoices SET {sets}, updated_at = now() WHERE id = :id"),
        {**values, "id": invoice_id},
    )


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def invoice_by_token(conn: AsyncConnection, token: str) -> Invoice | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_cols(Invoice)} FROM billing_invoices WHERE token_hash = :h"),
            {"h": token_hash(token)},
        )
    ).first()
    return None if row is None else record(Invoice, row)
