"""Cards: payment methods, 3-D Secure confirmation, receipts, the processor's events and
settlement reconciliation. Paying by card is ``POST /v1/payments`` with ``rail: "card"``
(``api/payment_service.py`` -> ``api/card_service.py``).

Payment methods are a user's cards (tokenized by the processor: the node keeps brand,
last 4, expiry and the processor's reference, never a number or a token) and their
verified bank accounts (listed, referencing ``/v1/bank-accounts``). Someone else's
payment method does not exist (404).
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.actors.card_sim import PROVIDER
from paynode.api import card_service, contract, dispute_service, inbound, payment_service
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.card_schemas import (
    BankAccountMethodOut,
    CardConfirmIn,
    CardOut,
    CardSimSettleOut,
    ClearingOut,
    PaymentMethodIn,
    PaymentMethodOut,
    PaymentMethodPage,
    ReceiptOut,
    ReceiptRefundOut,
    SettlementOut,
    SettlementPage,
)
from paynode.api.deps import Context, Ctx, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response, public
from paynode.api.notify_schemas import InboundEvent
from paynode.api.rails_routes import payment_out
from paynode.api.rails_schemas import PaymentOut
from paynode.domain.rails import card_rules as rules
from paynode.storage import ach, cards, payments

log = logging.getLogger("paynode.api.cards")
router = APIRouter(tags=["cards"])

MAX_METHODS = 100  # payment methods one user may keep (cards; bank accounts are ACH's)


def _card_out(m: cards.PaymentMethod, default: str | None) -> PaymentMethodOut:
    return PaymentMethodOut(
        id=m.id, type="card", is_default=m.id == default, created_at=m.created_at,
        card=CardOut(brand=m.brand, last4=m.last4, exp_month=m.exp_month,
                     exp_year=m.exp_year),
    )  # fmt: skip


def _bank_out(b: ach.BankAccount, default: str | None) -> PaymentMethodOut:
    assert b.verified_at is not None or b.status == "verified"
    return PaymentMethodOut(
        id=b.id, type="bank_account", is_default=b.id == default, created_at=b.created_at,
        bank_account=BankAccountMethodOut(routing_number=b.routing_number,
                                          account_last4=b.account_last4,
                                          verification_method=b.verification_method),
    )  # fmt: skip


def _user(principal: Principal) -> str:
    """Payment methods belong to users: an operator key has none."""
    if principal.user_id is None:
        raise p.ApiError(p.FORBIDDEN, "payment methods belong to a user")
    return principal.user_id


async def _method_out(ctx: Context, principal: Principal, method_id: str) -> PaymentMethodOut:
    user = _user(principal)
    async with ctx.engine.connect() as conn:
        default = await cards.default_of(conn, user)
    if payment_service.BANK_ACCOUNT_ID.match(method_id):
        return _bank_out(await card_service.own_bank_method(ctx, principal, method_id), default)
    return _card_out(await card_service.own_method(ctx, principal, method_id), default)


# -- payment methods ----------------------------------------------------------------------


@router.post(
    "/v1/payment-methods",
    openapi_extra=contract.body(PaymentMethodIn),
    responses=contract.replies(
        {201: (PaymentMethodOut, "Attached: the processor's card for the token")},
        (400, 401, 403, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)
async def attach_payment_method(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    user = _user(principal)
    body = await decode_body(request, PaymentMethodIn, SMALL_BODY_LIMIT)
    async with ctx.engine.connect() as conn:
        if len(await cards.list_methods(conn, user, MAX_METHODS)) >= MAX_METHODS:
            raise p.ApiError(p.INVALID_FIELD, f"at most {MAX_METHODS} cards", "$.token",
                             status=409)  # fmt: skip
    card = await card_service.attach(ctx, body.token)
    async with ctx.engine.begin() as conn:
        m = await cards.add_method(conn, {
            "id": new_id("pm"), "owner_user_id": user, "processor": PROVIDER,
            "processor_ref": card.processor_ref, "brand": card.brand, "last4": card.last4,
            "exp_month": card.exp_month, "exp_year": card.exp_year,
        })  # fmt: skip
        await cards.emit_method(conn, "payment_method.attached", m)
        await audit(conn, request, principal, "payment_method.attach", m.id,
                    after={"brand": m.brand, "last4": m.last4})  # fmt: skip
        default = await cards.default_of(conn, user)
    return json_response(_card_out(m, default), 201)


@router.get(
    "/v1/payment-methods",
    responses=contract.replies(
        {200: (PaymentMethodPage, "Yours: active cards, then verified bank accounts")},
        (401, 403, 429),
    ),
)
async def list_payment_methods(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("payments:read"))]
) -> Response:
    user = _user(principal)
    async with ctx.engine.connect() as conn:
        default = await cards.default_of(conn, user)
        methods = await cards.list_methods(conn, user, MAX_METHODS)
        banks = [b for b in await ach.list_bank_accounts(conn, user) if b.status == "verified"]
    out = [_card_out(m, default) for m in methods] + [_bank_out(b, default) for b in banks]
    return json_response(PaymentMethodPage(out))


@router.get(
    "/v1/payment-methods/{payment_method_id}",
    responses=contract.replies({200: (PaymentMethodOut, "Yours")}, (401, 403, 404, 429)),
)
async def get_payment_method(
    payment_method_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
) -> Response:
    return json_response(await _method_out(ctx, principal, payment_method_id))


@router.delete(
    "/v1/payment-methods/{payment_method_id}",
    responses=contract.replies(
        {200: (PaymentMethodOut, "Detached: no new payment uses it")}, (401, 403, 404, 409, 429)
    ),
)
async def detach_payment_method(
    payment_method_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    found = await _method_out(ctx, principal, payment_method_id)  # 404 unless yours, active
    if found.type == "bank_account":
        raise p.ApiError(p.PAYMENT_METHOD_NOT_DETACHABLE)
    async with ctx.engine.begin() as conn:
        await cards.get_method(conn, payment_method_id, lock=True)  # a subscribe waits
        if await cards.in_use_by_active_subscription(conn, payment_method_id):
            raise p.ApiError(p.PAYMENT_METHOD_IN_USE)
        m = await cards.detach(conn, payment_method_id)
        await cards.emit_method(conn, "payment_method.detached", m)
        await audit(conn, request, principal, "payment_method.detach", m.id,
                    after={"status": "detached"})  # fmt: skip
    return json_response(msgspec.structs.replace(found, is_default=False))


@router.post(
    "/v1/payment-methods/{payment_method_id}/default",
    responses=contract.replies({200: (PaymentMethodOut, "Your default now")}, (401, 403, 404, 429)),
)
async def default_payment_method(
    payment_method_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    found = await _method_out(ctx, principal, payment_method_id)
    async with ctx.engine.begin() as conn:
        await cards.set_default(conn, _user(principal), found.id)
        await audit(conn, request, principal, "payment_method.default", found.id)
    return json_response(msgspec.structs.replace(found, is_default=True))


# -- card payments ------------------------------------------------------------------------


@router.post(
    "/v1/payments/{payment_id}/confirm-card",
    openapi_extra=contract.body(CardConfirmIn),
    responses=contract.replies(
        {200: (PaymentOut, "Decided: completed, or failed (authentication_failed)")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
)
async def confirm_card_payment(
    payment_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    """After the cardholder's 3-D Secure step (``next_action.type: three_d_secure``)."""
    body = await decode_body(request, CardConfirmIn, SMALL_BODY_LIMIT)
    pay = await payment_service.visible(ctx, principal, payment_id)
    done = await card_service.confirm(ctx, request, principal, pay,
                                      body.three_d_secure == "succeeded")  # fmt: skip
    return json_response(await payment_out(ctx, done))


@router.get(
    "/v1/payments/{payment_id}/receipt",
    responses=contract.replies(
        {200: (ReceiptOut, "The receipt of a succeeded card payment")}, (401, 403, 404, 409, 429)
    ),
)
async def get_receipt(
    payment_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
) -> Response:
    pay = await payment_service.visible(ctx, principal, payment_id)
    async with ctx.engine.connect() as conn:
        charge = await cards.charge_of(conn, pay.id) if pay.rail == rules.RAIL else None
        if charge is None or charge.receipt_number is None:
            raise p.ApiError(p.RECEIPT_NOT_AVAILABLE)
        method = await cards.get_method(conn, pay.payment_method_id or "")
        refunds = await payments.refunds_of(conn, pay.id)
        history = await payments.history(conn, pay.id)
    assert method is not None
    paid_at = next((h.at for h in history if h.status == "completed"), pay.updated_at)
    return json_response(ReceiptOut(
        receipt_number=charge.receipt_number, payment_id=pay.id, amount=pay.amount,
        currency=pay.currency, paid_to=pay.credit_account_id, card_brand=method.brand,
        card_last4=method.last4, memo=pay.memo, paid_at=paid_at,
        refunded_amount=pay.refunded_amount,
        refunds=[ReceiptRefundOut(r.id, r.amount, r.status, r.created_at) for r in refunds],
    ))  # fmt: skip


# -- operators: settlement and the simulated processor ------------------------------------


@router.get(
    "/v1/cards/settlements",
    responses=contract.replies(
        {200: (SettlementPage, "The processor's batches, newest first, as reconciled")},
        (401, 403, 422, 429),
    ),
)
async def list_settlements(
    ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))], limit: int = 50
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await cards.list_settlements(conn, max(1, min(limit, 200)))
    return json_response(SettlementPage([public(SettlementOut, s) for s in found]))


@router.get(
    "/v1/cards/clearing",
    responses=contract.replies(
        {200: (ClearingOut, "The card clearing account: our records against the ledger")},
        (401, 403, 429),
    ),
)
async def clearing_report(ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]) -> Response:
    async with ctx.engine.connect() as conn:
        t = await cards.clearing_totals(conn)
    acct = await ctx.client.account(rules.CLEARING_ACCOUNT)
    ledger = 0 if acct is None else acct.debits_posted - acct.credits_posted
    expected = (t.captured - t.settled_captured) - (t.refunded - t.settled_refunded)
    return json_response(ClearingOut(
        account_id=rules.CLEARING_ACCOUNT, captured=t.captured, refunded=t.refunded,
        fees=t.fees, settled_captured=t.settled_captured, settled_refunded=t.settled_refunded,
        settled_fees=t.settled_fees, expected_outstanding=expected,
        ledger_outstanding=ledger, balanced=ledger == expected,
    ))  # fmt: skip


@router.post(
    "/v1/card-sim/settle",
    responses=contract.replies(
        {200: (CardSimSettleOut, "The simulated processor sent a settlement batch")},
        (401, 403, 404, 429),
    ),
)
async def simulate_settlement(
    ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    """Development and tests: the simulated processor pays out what it captured and
    refunded since its last batch (it arrives as a signed ``card.settlement`` webhook)."""
    if ctx.card_processor is None:
        raise p.ApiError(p.NOT_FOUND, "the card simulator is off")
    return json_response(CardSimSettleOut(await ctx.card_processor.settle.remote()))


# -- what the processor sends us ----------------------------------------------------------

_decode_settlement = msgspec.json.Decoder(rules.Settlement).decode


async def _from_processor(ctx: Context, provider: str, event: InboundEvent) -> str:
    if event.type == "card.settlement":
        try:
            batch = msgspec.convert(event.data, rules.Settlement)
        except msgspec.ValidationError as e:
            raise p.ApiError(p.INVALID_WEBHOOK_BODY, str(e)) from None
        await card_service.settle(ctx, batch)
        return "card.settlement"
    if event.type.startswith("charge.dispute."):
        pid = event.data.get("payment_id")
        async with ctx.engine.begin() as conn:  # kept as received, and shown on the payment
            pid = pid if isinstance(pid, str) else None
            if await cards.add_event(conn, event.id, event.type, pid, event.data):
                log.info("card: %s for %s stored", event.type, pid)
        if event.type == "charge.dispute.created":
            return await dispute_service.opened(ctx, event)
        if event.type == "charge.dispute.closed":
            return await dispute_service.closed(ctx, event)
        return "card.events"
    raise p.ApiError(p.INVALID_WEBHOOK_BODY, "unknown event type")


inbound.register(PROVIDER, "card.", _from_processor)
inbound.register(PROVIDER, "charge.", _from_processor)

__all__ = ["router"]
