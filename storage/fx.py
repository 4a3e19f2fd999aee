"""FX rates, quotes and conversions (migration 18); the arithmetic is domain/rails/fx.py."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage.rows import record


class Rate(msgspec.Struct, kw_only=True):
    base: str
    quote: str
    rate_e9: int
    as_of: dt.datetime
    source: str


class Quote(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str | None
    sell_currency: str
    buy_currency: str
    sell_amount: int
    buy_amount: int
    mid_e9: int
    rate_e9: int
    rate_as_of: dt.datetime
    expires_at: dt.datetime
    created_at: dt.datetime
    used_by: str | None


class Conversion(msgspec.Struct, kw_only=True):
    id: str
    quote_id: str
    owner_user_id: str | None
    debit_account_id: str
    credit_account_id: str
    status: str  # processing | completed | failed
    failure_code: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


_RATE_COLS = ", ".join(Rate.__struct_fields__)
_QUOTE_COLS = ", ".join(Quote.__struct_fields__)
_CONV_COLS = ", ".join(Conversion.__struct_fields__)


async def put_rates(conn: AsyncConnection, rates: list[Rate]) -> None:
    """Each pair's latest rate (an older ``as_of`` than the stored one is ignored)."""
    await conn.execute(
        sa.text(
            "INSERT INTO fx_rates (base, quote, rate_e9, as_of, source)"
            " VALUES (:base, :quote, :rate_e9, :as_of, :source)"
            " ON CONFLICT (base, quote) DO UPDATE SET rate_e9 = EXCLUDED.rate_e9,"
            " as_of = EXCLUDED.as_of, source = EXCLUDED.source, updated_at = now()"
            " WHERE fx_rates.as_of <= EXCLUDED.as_of"
        ),
        [msgspec.structs.asdict(r) for r in rates],
    )


async def rates(conn: AsyncConnection) -> list[Rate]:
    rows = await conn.execute(sa.text(f"SELECT {_RATE_COLS} FROM fx_rates ORDER BY base, quote"))
    return [record(Rate, r) for r in rows]


async def rate_for(conn: AsyncConnection, sell: str, buy: str) -> tuple[Rate, bool] | None:
    """The stored pair for selling ``sell`` for ``buy``: (rate, inverse) where ``inverse``
    says it is stored as buy/sell."""
    row: Any = (
        await conn.execute(
            sa.text(
                f"SELECT {_RATE_COLS} FROM fx_rates WHERE (base, quote) IN ((:s, :b), (:b, :s))"
                " ORDER BY base = :s DESC LIMIT 1"
            ),
            {"s": sell, "b": buy},
        )
    ).first()
    if row is None:
        return None
    found = record(Rate, row)
    return found, found.base != sell


async def add_quote(conn: AsyncConnection, q: Quote) -> None:
    values = msgspec.structs.asdict(q)
    await conn.execute(
        sa.text(f"INSERT INTO fx_quotes ({_QUOTE_COLS}) VALUES"
                f" ({', '.join(':' + k for k in values)})"),
        values,
    )  # fmt: skip


async def get_quote(conn: AsyncConnection, quote_id: str) -> Quote | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_QUOTE_COLS} FROM fx_quotes WHERE id = :id"), {"id": quote_id}
        )
    ).first()
    return None if row is None else record(Quote, row)


async def get_conversion(conn: AsyncConnection, conversion_id: str) -> Conversion | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_CONV_COLS} FROM fx_conversions WHERE id = :id"),
            {"id": conversion_id},
        )
    ).first()
    return None if row is None else record(Conversion, row)


async def start_conversion(conn: AsyncConnection, c: Conversion) -> bool:
    """Take the quote for ``c`` and record ``c`` as processing; False if another
    conversion took the quote first."""
    taken = await conn.execute(
        sa.text("UPDATE fx_quotes SET used_by = :c WHERE id = :q AND used_by IS NULL"),
        {"c": c.id, "q": c.quote_id},
    )
    if not taken.rowcount:
        return False
    values = {k: v for k, v in msgspec.structs.asdict(c).items()
              if k not in ("created_at", "updated_at")}  # fmt: skip
    await conn.execute(
        sa.text(f"INSERT INTO fx_conversions ({', '.join(values)}) VALUES"
                f" ({', '.join(':' + k for k in values)})"),
        values,
    )  # fmt: skip
    return True


async def record_trade(conn: AsyncConnection, c: Conversion, q: Quote, pnl: int) -> None:
    """A completed conversion, for analytics (migration 19); once per conversion."""
    await conn.execute(
        sa.text(
            "INSERT INTO fx_trades (id, sell_currency, buy_currency, sell_amount, buy_amount,"
            " mid_e9, rate_e9, pnl, ts) VALUES (:id, :s, :b, :sa, :ba, :mid, :rate, :pnl, :ts)"
            " ON CONFLICT (id) DO NOTHING"
        ),
        {"id": c.id, "s": q.sell_currency, "b": q.buy_currency, "sa": q.sell_amount,
         "ba": q.buy_amount, "mid": q.mid_e9, "rate": q.rate_e9, "pnl": pnl,
         "ts": time.time_ns()},
    )  # fmt: skip


async def finish_conversion(
    conn: AsyncConnection, conversion_id: str, failure_code: str | None
) -> Conversion:
    status = "failed" if failure_code else "completed"
    row = (
        await conn.execute(
            sa.text(
                "UPDATE fx_conversions SET status = :s, failure_code = :f, updated_at = now()"
                f" WHERE id = :id RETURNING {_CONV_COLS}"
            ),
            {"s": status, "f": failure_code, "id": conversion_id},
        )
    ).one()
    return record(Conversion, row)
