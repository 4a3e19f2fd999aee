"""Products, prices, subscriptions, invoices and test clocks over HTTP.

The rules are domain/billing; what they decide is stored and collected by
``api/billing_service.py``, the same code the fronts' scheduler runs. Every change
takes the subscription's row lock; a change whose payment is being collected waits
(``collection_in_flight``). Ownership: the customer and the merchant (the price's
owner) see a subscription and its invoices; anyone else gets 404.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import HTMLResponse, Response

from paynode.api import billing_service as svc
from paynode.api import card_service, contract
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.billing_schemas import (
    AdvanceIn,
    CancelIn,
    ClockIn,
    ClockOut,
    HostedLinkOut,
    InvoiceOut,
    InvoicePage,
    LineOut,
    PaymentSourceIn,
    PriceIn,
    PriceOut,
    ProductIn,
    ProductOut,
    SubscriptionChange,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPage,
)  # fmt: skip
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.invoice_pdf import render as invoice_pdf_render
from paynode.api.payment_service import BANK_ACCOUNT_ID
from paynode.domain.billing import clocks as ck
from paynode.domain.billing import dunning as dn
from paynode.domain.billing import subscriptions as subs
from paynode.domain.billing.errors import BillingError
from paynode.domain.ledger.model import Code
from paynode.domain.rails import card_rules
from paynode.storage import billing as store
from paynode.storage import cards

router = APIRouter(tags=["billing"])
ADVANCE_PASSES = 200  # passes an advance runs itself; the fronts' scheduler does the rest
_READ = Depends(require("billing:read"))
_WRITE = Depends(require("billing:write"))
Reader = Annotated[Principal, _READ]
Writer = Annotated[Principal, _WRITE]
After = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=200)]


def _policy(ctx: Context) -> dn.Policy:
    billing_s = ctx.settings.billing
    return svc.policy_of(billing_s.retry_days, billing_s.on_exhausted)


def _refused(e: BillingError) -> p.ApiError:
    return p.ApiError(e.code, str(e))


def _aware(t: dt.datetime, field: str) -> dt.datetime:
    if t.tzinfo is None:
        raise p.ApiError(p.INVALID_FIELD, "a time with its zone offset", field)
    return t.astimezone(dt.UTC)


def _viewer(principal: Principal) -> str | None:
    """Whose things a list shows: the user's, or every one for an admin."""
    return None if principal.admin else (principal.user_id or "")


# -- products and prices ------------------------------------------------------------


def _product_out(x: store.Product) -> ProductOut:
    return ProductOut(x.id, x.name, x.owner_user_id, x.created_at)


def _price_out(x: store.Price) -> PriceOut:
    return PriceOut(id=x.id, product=x.product_id, amount=x.amount, currency=x.currency.strip(),
                    interval=x.interval, interval_count=x.interval_count,  # type: ignore[arg-type]
                    payout_account_id=x.payout_account_id, owner_user_id=x.owner_user_id,
                    created_at=x.created_at)  # fmt: skip


@router.post(
    "/v1/products",
    openapi_extra=contract.body(ProductIn),
    responses=contract.replies(
        {201: (ProductOut, "Made"), 200: (ProductOut, "Replay")},
        contract.authed(400, 409, 413, 422),
    ),
    status_code=201,
)
async def create_product(request: Request, ctx: Ctx, principal: Writer) -> Response:
    body = await decode_body(request, ProductIn, SMALL_BODY_LIMIT)
    owner = principal.user_id or ""
    async with ctx.engine.begin() as conn:
        made = await store.create_product(conn, body.id, owner, body.name)
        found = await store.get_product(conn, body.id)
    assert found is not None
    if not made and (found.owner_user_id != owner or found.name != body.name):
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.id")
    return json_response(_product_out(found), 201 if made else 200)


@router.get(
    "/v1/products", responses=contract.replies({200: (list, "Yours")}, contract.authed(422))
)
async def list_products(ctx: Ctx, principal: Reader, after: After = None, limit: Limit = 50):
    async with ctx.engine.connect() as conn:
        found = await store.list_products(conn, _viewer(principal), after, limit)
    return json_response([_product_out(x) for x in found])


@router.post(
    "/v1/prices",
    openapi_extra=contract.body(PriceIn),
    responses=contract.replies(
        {201: (PriceOut, "Made"), 200: (PriceOut, "Replay")},
        contract.authed(400, 404, 409, 413, 422),
    ),
    status_code=201,
)
async def create_price(request: Request, ctx: Ctx, principal: Writer) -> Response:
    body = await decode_body(request, PriceIn, SMALL_BODY_LIMIT)
    owner = principal.user_id or ""
    try:
        svc_price = store.Price(id=body.id, owner_user_id=owner, product_id=body.product,
                                amount=body.amount, currency=body.currency, interval=body.interval,
                                interval_count=body.interval_count,
                                payout_account_id=body.payout_account_id,
                                created_at=dt.datetime.now(dt.UTC))  # fmt: skip
        svc_price.rule()
    except BillingError as e:
        raise _refused(e) from None
    async with ctx.engine.connect() as conn:
        product = await store.get_product(conn, body.product)
    if product is None or not principal.owns(product.owner_user_id):
        raise p.ApiError(p.PRODUCT_NOT_FOUND, field="$.product")
    spec = (await ctx.client.resolve({body.payout_account_id})).get(body.payout_account_id)
    if spec is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.payout_account_id")
    check_owner(principal, spec.owner)
    if spec.currency != body.currency:
        raise p.ApiError(Code.CURRENCY_MISMATCH, field="$.currency")
    values = {f: getattr(svc_price, f) for f in store.Price.__struct_fields__ if f != "created_at"}
    async with ctx.engine.begin() as conn:
        made = await store.create_price(conn, values)
        found = await store.get_price(conn, body.id)
    assert found is not None
    fields = ("owner_user_id", "product_id", "amount", "interval", "interval_count",
              "payout_account_id")  # fmt: skip
    if not made and any(getattr(found, f) != getattr(svc_price, f) for f in fields):
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.id")
    return json_response(_price_out(found), 201 if made else 200)


@router.get("/v1/prices", responses=contract.replies({200: (list, "Yours")}, contract.authed(422)))
async def list_prices(ctx: Ctx, principal: Reader, after: After = None, limit: Limit = 50):
    async with ctx.engine.connect() as conn:
        found = await store.list_prices(conn, _viewer(principal), after, limit)
    return json_response([_price_out(x) for x in found])


@router.get(
    "/v1/prices/{price_id}",
    responses=contract.replies({200: (PriceOut, "The price")}, contract.authed(404)),
)
async def get_price(price_id: str, ctx: Ctx, principal: Reader) -> Response:
    """Any user may read a price (to subscribe to it): it is the merchant's offer."""
    async with ctx.engine.connect() as conn:
        found = await store.get_price(conn, price_id) if len(price_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.PRICE_NOT_FOUND)
    return json_response(_price_out(found))


# -- subscriptions ------------------------------------------------------------------


def _sub_out(row: store.Sub, policy: dn.Policy) -> SubscriptionOut:
    s = row.rule()
    period = subs.current_period(s)
    due = ck.next_due(s, policy)
    return SubscriptionOut(
        id=s.id, status=s.status, price=s.price.id, quantity=s.quantity,
        customer_user_id=row.customer_user_id, merchant_user_id=row.merchant_user_id,
        customer_account=row.source_account_id if row.source_kind == "wallet" else None,
        payment_method=row.source_account_id if row.source_kind == "card" else None,
        merchant_account=row.merchant_account_id,
        source_kind=row.source_kind,  # type: ignore[arg-type]
        current_period=s.period, current_period_start=period.start,
        current_period_end=period.end, trial_end=s.trial_end,
        cancel_at_period_end=s.cancel_at_period_end, canceled_at=s.canceled_at,
        paused_at=s.paused_at, dunning_failures=0 if s.dunning is None else s.dunning.failures,
        next_event_at=None if due is None else due.at, test_clock=s.test_clock,
        created_at=row.created_at,
    )  # fmt: skip


def _sees(principal: Principal, customer: str, merchant: str) -> bool:
    return principal.admin or principal.user_id in (customer, merchant)


async def _visible_sub(ctx: Context, principal: Principal, sub_id: str) -> store.Sub:
    async with ctx.engine.connect() as conn:
        row = await store.get_subscription(conn, sub_id) if len(sub_id) <= 64 else None
    if row is None or not _sees(principal, row.customer_user_id, row.merchant_user_id):
        raise p.ApiError(p.SUBSCRIPTION_NOT_FOUND)  # someone else's does not exist
    return row


async def _clock_for(ctx: Context, principal: Principal, clock_id: str | None) -> dt.datetime:
    if clock_id is None:
        return dt.datetime.now(dt.UTC)
    async with ctx.engine.connect() as conn:
        clock = await store.get_clock(conn, clock_id)
    if clock is None or not principal.owns(clock.owner_user_id):
        raise p.ApiError(p.TEST_CLOCK_NOT_FOUND, field="$.test_clock")
    return clock.now


async def _source(
    ctx: Context, principal: Principal, body: SubscriptionIn | PaymentSourceIn,
    price: store.Price, quantity: int,
) -> tuple[str, str, str]:  # fmt: skip
    """What pays the subscription: (source_kind, wallet account or card, customer)."""
    currency = price.currency.strip()
    if body.customer_account is not None:
        if body.payment_method is not None:
            raise p.ApiError(p.INVALID_FIELD, "customer_account or payment_method, not both",
                             "$.payment_method")  # fmt: skip
        spec = (await ctx.client.resolve({body.customer_account})).get(body.customer_account)
        if spec is None:
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.customer_account")
        check_owner(principal, spec.owner)  # only the account's owner pays from it
        if not spec.owner:
            raise p.ApiError(p.INVALID_FIELD, "a wallet account owned by a user",
                             "$.customer_account")  # fmt: skip
        if spec.currency != currency:
            raise p.ApiError(Code.CURRENCY_MISMATCH, field="$.customer_account")
        if body.customer_account == price.payout_account_id:
            raise p.ApiError(Code.SAME_ACCOUNT, field="$.customer_account")
        return "wallet", body.customer_account, spec.owner
    method_id = body.payment_method
    if method_id is None:
        async with ctx.engine.connect() as conn:
            method_id = await cards.default_of(conn, principal.user_id or "")
        if method_id is None:
            raise p.ApiError(p.MISSING_FIELD, "customer_account or payment_method (you have no"
                             " default payment method)", "$.payment_method")  # fmt: skip
    if BANK_ACCOUNT_ID.match(method_id):
        await card_service.own_bank_method(ctx, principal, method_id)  # 404: not yours
        raise p.ApiError(p.PAYMENT_METHOD_NOT_CHARGEABLE,
                         "a bank account pays by ACH: subscribe with a card or a wallet",
                         "$.payment_method")  # fmt: skip
    method = await card_service.own_method(ctx, principal, method_id)  # 404: not yours
    if currency != card_rules.CURRENCY:
        raise p.ApiError(Code.CURRENCY_MISMATCH, "cards are charged in USD", "$.payment_method")
    card_service.check(ctx, price.amount * quantity, currency)
    return "card", method.id, method.owner_user_id


async def _still_attached(conn: AsyncConnection, kind: str, source: str) -> None:
    """A card detached meanwhile is not charged (a detach takes this lock, then looks for
    subscriptions charging it)."""
    if kind == "card":
        method = await cards.get_method(conn, source, lock=True)
        if method is None or method.status != "active":
            raise p.ApiError(p.PAYMENT_METHOD_NOT_FOUND, field="$.payment_method")


@router.post(
    "/v1/subscriptions",
    openapi_extra=contract.body(SubscriptionIn),
    responses=contract.replies(
        {201: (SubscriptionOut, "Subscribed")}, contract.authed(400, 404, 409, 413, 422)
    ),
    status_code=201,
)
async def create_subscription(request: Request, ctx: Ctx, principal: Writer) -> Response:
    body = await decode_body(request, SubscriptionIn, SMALL_BODY_LIMIT)
    async with ctx.engine.connect() as conn:
        price = await store.get_price(conn, body.price)
    if price is None:
        raise p.ApiError(p.PRICE_NOT_FOUND, field="$.price")
    kind, source, customer = await _source(ctx, principal, body, price, body.quantity)
    now = await _clock_for(ctx, principal, body.test_clock)
    policy = _policy(ctx)
    try:
        step = subs.create(id="sub_" + secrets.token_hex(12), customer=customer,
                           price=price.rule(), quantity=body.quantity, at=now,
                           trial_days=body.trial_days, test_clock=body.test_clock)  # fmt: skip
    except BillingError as e:
        raise _refused(e) from None
    s = step.subscription
    row = store.Sub(
        id=s.id, customer_user_id=customer, merchant_user_id=price.owner_user_id,
        price_id=price.id, source_kind=kind, source_account_id=source,
        merchant_account_id=price.payout_account_id, status=s.status,
        test_clock_id=body.test_clock, state=msgspec.json.encode(s).decode(),
        collecting=None, created_at=now,
    )  # fmt: skip
    kept = ("customer_user_id", "merchant_user_id", "price_id", "source_kind",
            "source_account_id", "merchant_account_id", "test_clock_id")  # fmt: skip
    fixed = {k: getattr(row, k) for k in kept}
    async with ctx.engine.begin() as conn:
        await _still_attached(conn, kind, source)
        await store.insert_subscription(conn, s, fixed, policy, now)
        attempt = await svc.store_step(conn, row, step, now, policy)
    if attempt is not None:  # period 0 now: the answer waits for its collection
        await svc.settle(ctx, [attempt], policy)
    async with ctx.engine.connect() as conn:
        stored = await store.get_subscription(conn, s.id)
    assert stored is not None
    return json_response(_sub_out(stored, policy), 201)


@router.get(
    "/v1/subscriptions",
    responses=contract.replies(
        {200: (SubscriptionPage, "Yours, as customer or merchant")}, contract.authed(422)
    ),
)
async def list_subscriptions(ctx: Ctx, principal: Reader, after: After = None,
                             limit: Limit = 50) -> Response:  # fmt: skip
    async with ctx.engine.connect() as conn:
        found = await store.list_subscriptions(conn, _viewer(principal), after, limit + 1)
    page = [_sub_out(r, _policy(ctx)) for r in found[:limit]]
    more = len(found) > limit
    return json_response(SubscriptionPage(page, page[-1].id if more and page else None))


@router.get(
    "/v1/subscriptions/{sub_id}",
    responses=contract.replies({200: (SubscriptionOut, "The subscription")}, contract.authed(404)),
)
async def get_subscription(sub_id: str, ctx: Ctx, principal: Reader) -> Response:
    return json_response(_sub_out(await _visible_sub(ctx, principal, sub_id), _policy(ctx)))


async def _change(ctx: Context, principal: Principal, sub_id: str, make) -> Response:
    """Apply the event ``make(subscription, now)`` under the row lock; collect what it bills."""
    await _visible_sub(ctx, principal, sub_id)
    policy = _policy(ctx)
    async with ctx.engine.begin() as conn:
        row = await store.get_subscription(conn, sub_id, lock=True)
        assert row is not None
        if row.collecting is not None:
            raise p.ApiError(p.COLLECTION_IN_FLIGHT)
        now = await store.clock_now(conn, row.test_clock_id, dt.datetime.now(dt.UTC))
        try:
            event = await make(conn, row.rule(), now)
            step = subs.apply(row.rule(), event, policy)
        except BillingError as e:
            raise _refused(e) from None
        attempt = await svc.store_step(conn, row, step, now, policy)
    if attempt is not None:
        await svc.settle(ctx, [attempt], policy)
    return json_response(_sub_out(await _visible_sub(ctx, principal, sub_id), policy))


_CHANGED = contract.replies({200: (SubscriptionOut, "Its state now")},
                            contract.authed(400, 404, 409, 413, 422))  # fmt: skip


@router.post("/v1/subscriptions/{sub_id}/cancel", openapi_extra=contract.body(CancelIn),
             responses=_CHANGED)  # fmt: skip
async def cancel_subscription(sub_id: str, request: Request, ctx: Ctx, principal: Writer):
    body = await decode_body(request, CancelIn, SMALL_BODY_LIMIT) if (
        request.headers.get("content-length", "0") != "0") else CancelIn()  # fmt: skip

    async def make(conn, s, now) -> subs.Event:
        if body.at_period_end:
            return subs.CancelAtPeriodEnd(at=now)
        return subs.CancelNow(at=now)

    return await _change(ctx, principal, sub_id, make)


@router.post("/v1/subscriptions/{sub_id}/pause", responses=_CHANGED)
async def pause_subscription(sub_id: str, ctx: Ctx, principal: Writer) -> Response:
    async def make(conn, s, now) -> subs.Event:
        return subs.Pause(at=now)

    return await _change(ctx, principal, sub_id, make)


@router.post("/v1/subscriptions/{sub_id}/resume", responses=_CHANGED)
async def resume_subscription(sub_id: str, ctx: Ctx, principal: Writer) -> Response:
    async def make(conn, s, now) -> subs.Event:
        return subs.Resume(at=now)

    return await _change(ctx, principal, sub_id, make)


@router.patch("/v1/subscriptions/{sub_id}", openapi_extra=contract.body(SubscriptionChange),
              responses=_CHANGED)  # fmt: skip
async def change_subscription(sub_id: str, request: Request, ctx: Ctx, principal: Writer):
    body = await decode_body(request, SubscriptionChange, SMALL_BODY_LIMIT)
    row = await _visible_sub(ctx, principal, sub_id)

    async def make(conn, s, now) -> subs.Event:
        price = await store.get_price(conn, body.price)
        # Another merchant's price is not a plan of this subscription.
        if price is None or price.owner_user_id != row.merchant_user_id:
            raise p.ApiError(p.PRICE_NOT_FOUND, field="$.price")
        if price.payout_account_id != row.merchant_account_id:
            raise p.ApiError(p.INVALID_FIELD, "a price paid to the same account", "$.price")
        return subs.PlanChange(at=now, price=price.rule(), quantity=body.quantity,
                               prorate=body.prorate)  # fmt: skip

    return await _change(ctx, principal, sub_id, make)


@router.post(
    "/v1/subscriptions/{sub_id}/payment-source",
    openapi_extra=contract.body(PaymentSourceIn),
    responses=_CHANGED,
)
async def change_payment_source(sub_id: str, request: Request, ctx: Ctx, principal: Writer):
    """The customer pays from another wallet or card from now on (a card that declined:
    the next dunning retry, or ``POST /v1/invoices/{id}/pay``, charges the new one)."""
    body = await decode_body(request, PaymentSourceIn, SMALL_BODY_LIMIT)
    found = await _visible_sub(ctx, principal, sub_id)
    if not principal.owns(found.customer_user_id):
        raise p.ApiError(p.FORBIDDEN, "only the customer changes how they pay")
    s = found.rule()
    async with ctx.engine.connect() as conn:
        price = await store.get_price(conn, s.price.id)
    assert price is not None
    kind, source, customer = await _source(ctx, principal, body, price, s.quantity)
    if customer != found.customer_user_id:  # an admin naming someone else's wallet or card
        field = "$.payment_method" if kind == "card" else "$.customer_account"
        raise p.ApiError(p.INVALID_FIELD, "the customer's own wallet or card", field)
    async with ctx.engine.begin() as conn:
        row = await store.get_subscription(conn, sub_id, lock=True)
        assert row is not None
        if row.collecting is not None:
            raise p.ApiError(p.COLLECTION_IN_FLIGHT)
        if row.status == "canceled":
            raise p.ApiError(p.TRANSITION_REFUSED, "a canceled subscription pays for nothing")
        await _still_attached(conn, kind, source)
        await store.set_source(conn, sub_id, kind, source)
        row.source_kind, row.source_account_id = kind, source
        w = svc.Writes()
        w.sub_event("customer.subscription.updated", row, row.rule())
        await w.flush(conn)
    return json_response(_sub_out(await _visible_sub(ctx, principal, sub_id), _policy(ctx)))


# -- invoices -----------------------------------------------------------------------


def _invoice_out(i: store.Invoice) -> InvoiceOut:
    lines = [LineOut(x.description, x.unit_amount, x.quantity, x.amount, x.period_start,
                     x.period_end, x.proration) for x in i.line_items()]  # fmt: skip
    return InvoiceOut(
        id=i.id, number=i.number, subscription=i.subscription_id,
        status=i.status, currency=i.currency.strip(), lines=lines,  # type: ignore[arg-type]
        total=i.total, amount_due=i.amount_due, credit=i.credit, attempts=i.attempts,
        collecting=i.in_flight is not None, last_code=i.last_code, paid_by=i.paid_by,
        customer_user_id=i.customer_user_id, merchant_user_id=i.merchant_user_id,
        created_at=i.created_at,
    )  # fmt: skip


async def _visible_invoice(ctx: Context, principal: Principal, invoice_id: str) -> store.Invoice:
    async with ctx.engine.connect() as conn:
        i = await store.get_invoice(conn, invoice_id) if len(invoice_id) <= 96 else None
    if i is None or not _sees(principal, i.customer_user_id, i.merchant_user_id):
        raise p.ApiError(p.INVOICE_NOT_FOUND)
    return i


@router.get(
    "/v1/invoices",
    responses=contract.replies({200: (InvoicePage, "Yours, by id")}, contract.authed(422)),
)
async def list_invoices(
    ctx: Ctx, principal: Reader, after: Annotated[str | None, Query(max_length=96)] = None,
    subscription: Annotated[str | None, Query(max_length=64)] = None, limit: Limit = 50,
) -> Response:  # fmt: skip
    async with ctx.engine.connect() as conn:
        found = await store.list_invoices(conn, _viewer(principal), subscription, after,
                                          limit + 1)  # fmt: skip
    page = [_invoice_out(i) for i in found[:limit]]
    more = len(found) > limit
    return json_response(InvoicePage(page, page[-1].id if more and page else None))


@router.get(
    "/v1/invoices/{invoice_id}",
    responses=contract.replies({200: (InvoiceOut, "The invoice")}, contract.authed(404)),
)
async def get_invoice(invoice_id: str, ctx: Ctx, principal: Reader) -> Response:
    return json_response(_invoice_out(await _visible_invoice(ctx, principal, invoice_id)))


_INVOICE_CHANGED = contract.replies({200: (InvoiceOut, "Its state now")}, contract.authed(404, 409))


@router.post("/v1/invoices/{invoice_id}/pay", responses=_INVOICE_CHANGED)
async def pay_invoice(invoice_id: str, ctx: Ctx, principal: Writer) -> Response:
    """Try collecting now (a new attempt, its own transfer id); a failure here does not
    use up a dunning retry."""
    found = await _visible_invoice(ctx, principal, invoice_id)
    policy = _policy(ctx)
    async with ctx.engine.begin() as conn:
        row = await store.get_subscription(conn, found.subscription_id, lock=True)
        i = await store.get_invoice(conn, invoice_id, lock=True)
        assert row is not None and i is not None
        if row.collecting is not None:
            raise p.ApiError(p.COLLECTION_IN_FLIGHT)
        if i.status not in ("open", "uncollectible"):
            raise p.ApiError(p.INVOICE_NOT_PAYABLE, f"the invoice is {i.status}")
        now = await store.clock_now(conn, row.test_clock_id, dt.datetime.now(dt.UTC))
        attempt = await svc.start_attempt(conn, row, i, now, policy)
    await svc.settle(ctx, [attempt], policy)
    return json_response(_invoice_out(await _visible_invoice(ctx, principal, invoice_id)))


@router.post("/v1/invoices/{invoice_id}/void", responses=_INVOICE_CHANGED)
async def void_invoice(invoice_id: str, ctx: Ctx, principal: Writer) -> Response:
    """The merchant gives the invoice up: nothing more is collected for it."""
    found = await _visible_invoice(ctx, principal, invoice_id)
    if not principal.owns(found.merchant_user_id):
        raise p.ApiError(p.FORBIDDEN, "only the merchant voids an invoice")
    policy = _policy(ctx)
    async with ctx.engine.begin() as conn:
        row = await store.get_subscription(conn, found.subscription_id, lock=True)
        i = await store.get_invoice(conn, invoice_id, lock=True)
        assert row is not None and i is not None
        if row.collecting == i.id:
            raise p.ApiError(p.COLLECTION_IN_FLIGHT)
        if i.status not in ("open", "uncollectible"):
            raise p.ApiError(p.INVOICE_NOT_PAYABLE, f"the invoice is {i.status}")
        now = await store.clock_now(conn, row.test_clock_id, dt.datetime.now(dt.UTC))
        w = svc.Writes({i.id: i})
        voided = w.change_invoice(i, now, status="void")
        s = row.rule()
        if s.dunning is not None and s.dunning.invoice_id == i.id:  # nothing left to retry
            status = "active" if s.status == "past_due" else s.status
            s = msgspec.structs.replace(s, dunning=None, status=status)
            w.save(row, s, policy, None, now)
        w.invoice_event("invoice.voided", row, svc.invoice_data(voided))
        await w.flush(conn)
    return json_response(_invoice_out(await _visible_invoice(ctx, principal, invoice_id)))


@router.post(
    "/v1/invoices/{invoice_id}/hosted-link",
    responses=contract.replies({200: (HostedLinkOut, "A new link")}, contract.authed(404)),
)
async def hosted_link(invoice_id: str, ctx: Ctx, principal: Writer) -> Response:
    await _visible_invoice(ctx, principal, invoice_id)
    token = secrets.token_urlsafe(32)  # 256 bits: unguessable; only its hash is kept
    async with ctx.engine.begin() as conn:
        await store.update_invoice(conn, invoice_id, token_hash=store.token_hash(token))
    return json_response(HostedLinkOut(f"{ctx.settings.front_url()}/i/{token}"))


@router.get(
    "/v1/invoices/{invoice_id}/pdf",
    responses={
        **contract.replies({}, contract.authed(404)),
        200: {"description": "The invoice as a PDF", "content": {"application/pdf": {}}},
    },
)
async def invoice_pdf(invoice_id: str, ctx: Ctx, principal: Reader) -> Response:
    i = await _visible_invoice(ctx, principal, invoice_id)
    return _pdf_response(ctx, i)


def _pdf_response(ctx: Context, i: store.Invoice) -> Response:
    return Response(
        invoice_pdf_render(i, ctx.settings.ach.company_name), media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="invoice-{i.number}.pdf"',
                 "Cache-Control": "no-store"},
    )  # fmt: skip


@router.get("/i/{token}/pdf", include_in_schema=False)
async def hosted_pdf(token: str, ctx: Ctx) -> Response:
    """The hosted page's PDF: no login, the token is the credential."""
    async with ctx.engine.connect() as conn:
        i = await store.invoice_by_token(conn, token) if 20 <= len(token) <= 64 else None
    if i is None:
        return HTMLResponse("<!doctype html><title>Not found</title><p>No such invoice.</p>",
                            404)  # fmt: skip
    return _pdf_response(ctx, i)


@router.get("/i/{token}", include_in_schema=False)
async def hosted_page(token: str, ctx: Ctx) -> Response:
    """The hosted invoice page: no login, the token is the credential."""
    async with ctx.engine.connect() as conn:
        i = await store.invoice_by_token(conn, token) if 20 <= len(token) <= 64 else None
    if i is None:
        return HTMLResponse("<!doctype html><title>Not found</title><p>No such invoice.</p>",
                            404)  # fmt: skip
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(x.description)}</td><td>{x.period_start:%Y-%m-%d} - {x.period_end:%Y-%m-%d}"
        f"</td><td>{x.amount}</td></tr>" for x in i.line_items()
    )  # fmt: skip
    cur = e(i.currency.strip())
    page = (
        f"<!doctype html><meta charset=utf-8><title>Invoice {e(i.number)}</title>"
        f"<h1>Invoice {e(i.number)}</h1><p>Status: <b>{e(i.status)}</b></p>"
        f"<table><tr><th>Description</th><th>Period</th><th>Amount ({cur}, minor units)</th>"
        f"</tr>{rows}</table><p>Total: {i.total} {cur}; amount due: {i.amount_due} {cur}</p>"
        f'<p><a href="{e(token)}/pdf">PDF</a></p>'
    )
    return HTMLResponse(
        page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


# -- test clocks --------------------------------------------------------------------


async def _clock_out(ctx: Context, clock: store.Clock) -> ClockOut:
    async with ctx.engine.connect() as conn:
        waiting = await store.count_due(conn, clock.id)
    return ClockOut(clock.id, clock.now, "advancing" if waiting else "ready")


async def _visible_clock(ctx: Context, principal: Principal, clock_id: str) -> store.Clock:
    async with ctx.engine.connect() as conn:
        clock = await store.get_clock(conn, clock_id) if len(clock_id) <= 64 else None
    if clock is None or not principal.owns(clock.owner_user_id):
        raise p.ApiError(p.TEST_CLOCK_NOT_FOUND)
    return clock


@router.post(
    "/v1/test-clocks",
    openapi_extra=contract.body(ClockIn),
    responses=contract.replies({201: (ClockOut, "Made")}, contract.authed(400, 409, 413, 422)),
    status_code=201,
)
async def create_clock(request: Request, ctx: Ctx, principal: Writer) -> Response:
    body = await decode_body(request, ClockIn, SMALL_BODY_LIMIT)
    at = _aware(body.frozen_time, "$.frozen_time") if body.frozen_time else dt.datetime.now(dt.UTC)
    try:
        ck.create(body.id, at)
    except BillingError as e:
        raise _refused(e) from None
    async with ctx.engine.begin() as conn:
        made = await store.create_clock(conn, body.id, principal.user_id or "", at)
    if not made:
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, "a test clock with this id exists",
                         "$.id")  # fmt: skip
    return json_response(await _clock_out(ctx, await _visible_clock(ctx, principal, body.id)), 201)


@router.get(
    "/v1/test-clocks/{clock_id}",
    responses=contract.replies({200: (ClockOut, "The clock")}, contract.authed(404)),
)
async def get_clock(clock_id: str, ctx: Ctx, principal: Reader) -> Response:
    return json_response(await _clock_out(ctx, await _visible_clock(ctx, principal, clock_id)))


@router.post(
    "/v1/test-clocks/{clock_id}/advance",
    openapi_extra=contract.body(AdvanceIn),
    responses=contract.replies({200: (ClockOut, "Advanced")}, contract.authed(400, 404, 413, 422)),
)
async def advance_clock(clock_id: str, request: Request, ctx: Ctx, principal: Writer):
    """Move the clock, then run what fell due on it (renewals, trials, dunning) before
    answering; ``advancing`` if more is left, which the fronts' scheduler finishes."""
    body = await decode_body(request, AdvanceIn, SMALL_BODY_LIMIT)
    to = _aware(body.to, "$.to")
    await _visible_clock(ctx, principal, clock_id)
    async with ctx.engine.begin() as conn:
        clock = await store.get_clock(conn, clock_id, lock=True)
        assert clock is not None
        try:
            moved = ck.advance(ck.TestClock(id=clock.id, now=clock.now), to)
        except BillingError as e:
            raise _refused(e) from None
        await store.set_clock(conn, clock_id, moved.now)
    billing_s = ctx.settings.billing
    await svc.drain_clock(ctx, clock_id, billing_s.batch, _policy(ctx), ADVANCE_PASSES)
    return json_response(await _clock_out(ctx, await _visible_clock(ctx, principal, clock_id)))
