"""Foreign exchange: the operator's mid rates, quotes with a short life, conversions.

A conversion executes one quote as two linked transfers (all or nothing, across
shards as any linked chain): the customer's debit account pays ``sell_amount``
into the node's ``fx-<sell currency>`` account, and ``fx-<buy currency>`` pays
``buy_amount`` to the customer's credit account. The FX accounts are the node's
position per currency (no balance limit); the spread stays with the node.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.fx_schemas import (
    ConversionIn,
    ConversionOut,
    QuoteIn,
    QuoteOut,
    RateOut,
    RatesIn,
    RatesOut,
)
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE, AccountSpec, Code
from paynode.domain.rails import fx as rules
from paynode.storage import fx, payments

router = APIRouter(tags=["fx"])
log = logging.getLogger("paynode.api")


FX_ACCOUNT_PREFIX = "fx-"  # reserved: only operators create accounts named so


def fx_account(currency: str) -> str:
    return f"{FX_ACCOUNT_PREFIX}{currency.lower()}"


def _refused(e: rules.FxError, field: str | None = None) -> p.ApiError:
    return p.ApiError(e.code, str(e), field)


@router.put(
    "/v1/fx/rates",
    openapi_extra=contract.body(RatesIn),
    responses=contract.replies({200: (RatesOut, "Every rate now")}, (400, 401, 403, 413, 422, 429)),
)
async def put_rates(
    request: Request, ctx: Ctx, principal: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    body = await decode_body(request, RatesIn, SMALL_BODY_LIMIT)
    now = dt.datetime.now(dt.UTC)
    parsed = []
    for i, r in enumerate(body.rates):
        where = f"$.rates[{i}]"
        try:
            rules.exponent(r.base)
            rules.exponent(r.quote)
            rate = rules.parse_rate(r.rate)
        except rules.FxError as e:
            raise _refused(e, where) from None
        if r.base == r.quote:
            raise p.ApiError(p.INVALID_FIELD, "base and quote differ", f"{where}.quote")
        if r.as_of is not None and r.as_of.tzinfo is None:
            raise p.ApiError(p.INVALID_FIELD, "a time with its zone offset", f"{where}.as_of")
        as_of = r.as_of.astimezone(dt.UTC) if r.as_of else now
        parsed.append(fx.Rate(base=r.base, quote=r.quote, rate_e9=rate, as_of=as_of,
                              source=body.source))  # fmt: skip
    async with ctx.engine.begin() as conn:
        await fx.put_rates(conn, parsed)
        await audit(conn, request, principal, "fx.rates", body.source,
                    after={"pairs": len(parsed)})  # fmt: skip
    return await get_rates(ctx, principal)


@router.get(
    "/v1/fx/rates", responses=contract.replies({200: (RatesOut, "Mid rates")}, (401, 403, 429))
)
async def get_rates(
    ctx: Ctx, _: Annotated[Principal, Depends(require("transfers:read"))]
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await fx.rates(conn)
    return json_response(RatesOut([RateOut(r.base, r.quote, rules.format_rate(r.rate_e9),
                                           r.as_of, r.source) for r in found]))  # fmt: skip


def _quote_out(q: fx.Quote) -> QuoteOut:
    return QuoteOut(
        q.id, q.sell_currency, q.buy_currency, q.sell_amount, q.buy_amount,
        rules.format_rate(q.rate_e9), rules.format_rate(q.mid_e9), q.rate_as_of, q.expires_at,
    )  # fmt: skip


@router.post(
    "/v1/fx/quotes",
    openapi_extra=contract.body(QuoteIn),
    responses=contract.replies(
        {201: (QuoteOut, "Valid until expires_at")}, (400, 401, 403, 409, 413, 422, 429)
    ),
    status_code=201,
)
async def create_quote(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("transfers:write"))],
) -> Response:
    body = await decode_body(request, QuoteIn, SMALL_BODY_LIMIT)
    if (body.sell_amount is None) == (body.buy_amount is None):
        raise p.ApiError(p.INVALID_FIELD, "exactly one of sell_amount and buy_amount")
    if body.sell_currency == body.buy_currency:
        raise p.ApiError(Code.CURRENCY_MISMATCH, "two different currencies", "$.buy_currency")
    try:
        rules.exponent(body.sell_currency)
        rules.exponent(body.buy_currency)
    except rules.FxError as e:
        raise _refused(e) from None
    now = dt.datetime.now(dt.UTC)
    async with ctx.engine.connect() as conn:
        found = await fx.rate_for(conn, body.sell_currency, body.buy_currency)
    if found is None:
        pair = f"{body.sell_currency}/{body.buy_currency}"
        raise p.ApiError(p.RATE_NOT_AVAILABLE, f"no rate for {pair}")
    rate, inverse = found
    if (now - rate.as_of).total_seconds() > ctx.settings.fx.max_rate_age_s:
        raise p.ApiError(p.RATE_STALE, f"the rate is from {rate.as_of.isoformat()}")
    mid = rules.cross(rate.rate_e9, inverse)
    customer = rules.customer_rate(mid, ctx.settings.fx.spread_bps)
    s_ccy, b_ccy = body.sell_currency, body.buy_currency
    if body.sell_amount is not None:
        sell, buy = body.sell_amount, rules.buy_amount(body.sell_amount, s_ccy, b_ccy, customer)
    else:
        assert body.buy_amount is not None
        sell, buy = rules.sell_amount(body.buy_amount, s_ccy, b_ccy, customer), body.buy_amount
    if buy <= 0 or sell <= 0:
        raise p.ApiError(p.INVALID_FIELD, "too small to convert at this rate")
    quote = fx.Quote(
        id=new_id("fxq"), owner_user_id=principal.user_id, sell_currency=s_ccy,
        buy_currency=b_ccy, sell_amount=sell, buy_amount=buy, mid_e9=mid, rate_e9=customer,
        rate_as_of=rate.as_of, expires_at=now + dt.timedelta(seconds=ctx.settings.fx.quote_ttl_s),
        created_at=now, used_by=None,
    )  # fmt: skip
    async with ctx.engine.begin() as conn:
        await fx.add_quote(conn, quote)
    return json_response(_quote_out(quote), 201)


def _legs(c: fx.Conversion, q: fx.Quote) -> list[TransferIn]:
    meta = {"fx_conversion_id": c.id, "fx_quote_id": q.id}
    return [
        TransferIn(id=f"fx:{c.id}:sell", debit_account_id=c.debit_account_id,
                   credit_account_id=fx_account(q.sell_currency), amount=q.sell_amount,
                   currency=q.sell_currency, flags=["linked"], metadata=meta),
        TransferIn(id=f"fx:{c.id}:buy", debit_account_id=fx_account(q.buy_currency),
                   credit_account_id=c.credit_account_id, amount=q.buy_amount,
                   currency=q.buy_currency, metadata=meta),
    ]  # fmt: skip


def _conversion_out(c: fx.Conversion, q: fx.Quote) -> ConversionOut:
    return ConversionOut(
        c.id, q.id, c.status, c.failure_code, c.debit_account_id,  # type: ignore[arg-type]
        c.credit_account_id, q.sell_currency, q.sell_amount, q.buy_currency, q.buy_amount,
        rules.format_rate(q.rate_e9), [t.id for t in _legs(c, q)], c.created_at,
    )  # fmt: skip


async def _fx_accounts(ctx: Context, q: fx.Quote) -> None:
    """The node's position accounts of both currencies (made once; again is a no-op)."""
    for ccy in (q.sell_currency, q.buy_currency):
        result = await ctx.client.create_account(AccountSpec(fx_account(ccy), ccy, 0, "{}", 0, ""))
        if result.code not in (Code.OK, Code.EXISTS):
            raise p.ApiError(result.code)
        s = result.spec
        # The position must be the node's: an account of that name owned by a user (made
        # before the name was reserved) would receive every conversion's sold currency.
        if (s.owner, s.currency, s.flags) != ("", ccy, 0):
            log.error("fx: account %s is not the node's position account; FX in %s refused",
                      s.id, ccy)  # fmt: skip
            raise p.ApiError(p.FX_UNAVAILABLE, f"FX in {ccy} is unavailable")


_CONVERTED = contract.replies(
    {201: (ConversionOut, "Executed (completed, or failed with its code)"),
     200: (ConversionOut, "Replay")},
    (400, 401, 403, 404, 409, 413, 422, 429, 503),
)  # fmt: skip


@router.post(
    "/v1/fx/conversions",
    openapi_extra=contract.body(ConversionIn),
    responses=_CONVERTED,
    status_code=201,
)
async def convert(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("transfers:write"))],
) -> Response:
    body = await decode_body(request, ConversionIn, SMALL_BODY_LIMIT)
    async with ctx.engine.connect() as conn:
        quote = await fx.get_quote(conn, body.quote_id)
        existing = await fx.get_conversion(conn, body.id)
    if quote is None or not (principal.admin or quote.owner_user_id == principal.user_id):
        raise p.ApiError(p.QUOTE_NOT_FOUND, field="$.quote_id")
    new = existing is None
    if existing is not None:
        same = (existing.quote_id, existing.debit_account_id, existing.credit_account_id) == (
            body.quote_id, body.debit_account_id, body.credit_account_id)  # fmt: skip
        if not same:
            raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.id")
        conversion = existing
    else:
        if quote.used_by is not None:
            raise p.ApiError(p.QUOTE_USED)
        if dt.datetime.now(dt.UTC) >= quote.expires_at:
            raise p.ApiError(p.QUOTE_EXPIRED, f"it expired at {quote.expires_at.isoformat()}")
        specs = await ctx.client.resolve({body.debit_account_id, body.credit_account_id})
        for field, ccy in (("debit_account_id", quote.sell_currency),
                           ("credit_account_id", quote.buy_currency)):  # fmt: skip
            spec = specs.get(getattr(body, field))
            if spec is None:
                raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field=f"$.{field}")
            if spec.currency != ccy:
                raise p.ApiError(Code.CURRENCY_MISMATCH, f"the account holds {spec.currency}",
                                 f"$.{field}")  # fmt: skip
        check_owner(principal, specs[body.debit_account_id].owner)
        await _fx_accounts(ctx, quote)
        now = dt.datetime.now(dt.UTC)
        conversion = fx.Conversion(
            id=body.id, quote_id=quote.id, owner_user_id=principal.user_id,
            debit_account_id=body.debit_account_id, credit_account_id=body.credit_account_id,
            status="processing", failure_code=None, created_at=now, updated_at=now,
        )  # fmt: skip
        async with ctx.engine.begin() as conn:
            if not await fx.start_conversion(conn, conversion):
                raise p.ApiError(p.QUOTE_USED)
            await payments.register_rail(conn, [t.id for t in _legs(conversion, quote)], "fx",
                                         None)  # fmt: skip
            await audit(conn, request, principal, "fx.convert", body.id,
                        after={"quote_id": quote.id, "sell_amount": quote.sell_amount})  # fmt: skip
    if conversion.status == "processing":  # new, or a retry after a non-final answer
        outcomes = await ctx.client.transfer(_legs(conversion, quote), None)
        code = next((o.code for o in outcomes if o.code), "")
        if code in RETRYABLE:
            raise p.ApiError(code, "retry with the same conversion id")
        async with ctx.engine.begin() as conn:
            conversion = await fx.finish_conversion(conn, conversion.id, code or None)
            if not code:  # what the spread kept, in the bought currency's minor units
                at_mid = rules.buy_amount(quote.sell_amount, quote.sell_currency,
                                          quote.buy_currency, quote.mid_e9)  # fmt: skip
                await fx.record_trade(conn, conversion, quote, at_mid - quote.buy_amount)
    return json_response(_conversion_out(conversion, quote), 201 if new else 200)
