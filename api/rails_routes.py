"""Routes for payments and refunds: decode, call ``api/payment_service.py``, render."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import contract, payment_service
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Context, Ctx, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response, public
from paynode.api.rails_schemas import (
    CardChargeOut,
    NextActionOut,
    PaymentIn,
    PaymentOut,
    PaymentPage,
    PaymentStatus,
    RefundIn,
    RefundOut,
    RiskOut,
    RiskReasonOut,
    RtpOut,
    StatusChangeOut,
)
from paynode.domain.rails.ach_rules import SAME_DAY_LIMIT, effective
from paynode.domain.rails.card_rules import RAIL as CARD_RAIL
from paynode.domain.rails.iso20022 import REASONS
from paynode.domain.rails.nacha import RETURN_CODES
from paynode.domain.rails.rtp_rules import RAIL
from paynode.storage import ach, cards, payments, rtp
from paynode.storage import risk as risk_store

router = APIRouter(tags=["payments"])


# -- payments -----------------------------------------------------------------------------


async def payment_out(ctx: Context, pay: payments.Payment) -> PaymentOut:
    next_action = review = None
    async with ctx.engine.connect() as conn:
        history = await payments.history(conn, pay.id)
        refunds = await payments.refunds_of(conn, pay.id)
        charge = await cards.charge_of(conn, pay.id) if pay.rail == CARD_RAIL else None
        if pay.status == "requires_action" and charge and charge.status == "requires_action":
            next_action = NextActionOut("three_d_secure", f"/v1/payments/{pay.id}/confirm-card",
                                        None, None)  # fmt: skip
        elif pay.status == "requires_action":
            state = await risk_store.challenge_state(conn, pay.id)
            if state is not None:
                next_action = NextActionOut(
                    "confirm_otp", f"/v1/payments/{pay.id}/confirm",
                    dt.datetime.fromtimestamp(state[0] + ctx.settings.otp.max_age_s, dt.UTC),
                    max(0, ctx.settings.otp.max_attempts - state[1]),
                    f"/v1/payments/{pay.id}/resend-code",
                )  # fmt: skip
        elif pay.status == "in_review":
            review = await risk_store.open_review_of(conn, "payment", pay.id)
    risk = None
    if pay.risk_score is not None and pay.risk_reasons is not None:
        reasons = msgspec.json.decode(pay.risk_reasons, type=list[RiskReasonOut])
        risk = RiskOut(pay.risk_score, pay.risk_level or "LOW", reasons)  # type: ignore[arg-type]
    return PaymentOut(
        risk=risk,
        next_action=next_action,
        review_id=review.id if review else None,
        id=pay.id,
        status=pay.status,  # type: ignore[arg-type]
        from_=pay.from_ref,
        to=pay.to_ref,
        debit_account_id=pay.debit_account_id,
        credit_account_id=pay.credit_account_id,
        amount=pay.amount,
        currency=pay.currency,
        rail=pay.rail,  # type: ignore[arg-type]
        memo=pay.memo,
        failure_code=pay.failure_code,
        transfer_id=pay.transfer_id,
        refunded_amount=pay.refunded_amount,
        created_at=pay.created_at,
        history=[StatusChangeOut(h.status, h.reason, h.at) for h in history],
        refunds=[_refund_out(r) for r in refunds],
        bank_account_id=pay.bank_account_id,
        ach_direction=pay.ach_direction,  # type: ignore[arg-type]
        same_day=pay.same_day,
        return_code=pay.return_code,
        return_reason=RETURN_CODES.get(pay.return_code) if pay.return_code else None,
        estimated_settlement_date=await _settlement_date(ctx, pay),
        fee=pay.fee,
        rtp=await _rtp_out(ctx, pay),
        card=await _card_out(ctx, pay, charge),
    )


async def _card_out(
    ctx: Context, pay: payments.Payment, charge: cards.Charge | None
) -> CardChargeOut | None:
    if pay.rail != CARD_RAIL or pay.payment_method_id is None:
        return None
    async with ctx.engine.connect() as conn:
        method = await cards.get_method(conn, pay.payment_method_id)
        events = await cards.events_of(conn, pay.id, 20) if charge else []
    assert method is not None
    return CardChargeOut(
        payment_method_id=method.id, brand=method.brand, last4=method.last4,
        status=charge.status if charge else "authorizing",  # type: ignore[arg-type]
        decline_code=charge.decline_code if charge else None,
        processor_fee=charge.fee if charge else 0,
        receipt_number=charge.receipt_number if charge else None,
        events=[kind for _, kind in events],
    )  # fmt: skip


async def _rtp_out(ctx: Context, pay: payments.Payment) -> RtpOut | None:
    if pay.rail != RAIL:
        return None
    async with ctx.engine.connect() as conn:
        t = await rtp.transfer_of(conn, pay.id)
        request_id = await rtp.request_paid_by(conn, pay.id)
    if t is None:  # processing: not held yet
        return None
    return RtpOut(
        end_to_end_id=t.end_to_end_id,
        status=t.status,  # type: ignore[arg-type]
        reason_code=t.reason,
        reason=REASONS.get(t.reason) if t.reason else None,
        request_id=t.request_id or request_id,
    )


async def _settlement_date(ctx: Context, pay: payments.Payment) -> dt.date | None:
    """ACH: the entry's effective date once a file took it, else the date the next
    cutoff would give it now. RTP settles as it completes, any day of the year."""
    if pay.rail == RAIL:
        return pay.updated_at.date() if pay.status == "completed" else None
    if pay.rail != "ach" or pay.status in ("failed", "canceled"):
        return None
    async with ctx.engine.connect() as conn:
        day = await ach.effective_date_of(conn, pay.id)
    if day is None:  # as the cutoff will decide it (ach_rules.build)
        same_day = pay.same_day and pay.amount <= SAME_DAY_LIMIT
        day = effective(dt.datetime.now(dt.UTC), same_day)[0]
    return day


def _refund_out(r: payments.Refund) -> RefundOut:
    return public(RefundOut, r)


@router.post(
    "/v1/payments",
    openapi_extra=contract.body(PaymentIn),
    responses=contract.replies(
        {
            201: (PaymentOut, "Made (completed or failed; ACH: pending; RTP: completed or"
                  " failed once the network answers, pending if it has not within"
                  " rtp.timeout_ms)"),
            200: (PaymentOut, "Replay"),
            202: (PaymentOut, "Waiting: requires_action (confirm with the one-time code"
                  " sent to your devices, or a card's 3-D Secure: next_action says which) or"
                  " in_review (held for a compliance review)"),
        },
        (400, 401, 403, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)  # fmt: skip
async def create_payment(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    body = await decode_body(request, PaymentIn, SMALL_BODY_LIMIT)
    pay, status = await payment_service.make(ctx, request, principal, body)
    return json_response(await payment_out(ctx, pay), status)


@router.get(
    "/v1/payments/{payment_id}",
    responses=contract.replies({200: (PaymentOut, "The payment")}, (401, 403, 404, 429)),
)
async def get_payment(
    payment_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
) -> Response:
    return json_response(
        await payment_out(ctx, await payment_service.visible(ctx, principal, payment_id))
    )


@router.get(
    "/v1/payments",
    responses=contract.replies({200: (PaymentPage, "Yours, by id")}, (401, 403, 422, 429)),
)
async def list_payments(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
    status: Annotated[PaymentStatus | None, Query()] = None,
    rail: Annotated[Literal["wallet", "ach", "rtp", "card"] | None, Query()] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    user = None if principal.admin else principal.user_id
    async with ctx.engine.connect() as conn:
        found = await payments.list_for(conn, user, status, rail, after, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    out = [await payment_out(ctx, x) for x in found]
    return json_response(PaymentPage(out, found[-1].id if more and found else None))


@router.post(
    "/v1/payments/{payment_id}/cancel",
    responses=contract.replies(
        {200: (PaymentOut, "Canceled, its hold released (also when it was canceled already)")},
        (401, 403, 404, 409, 429, 503),
    ),
)
async def cancel_payment(
    payment_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    pay = await payment_service.cancel(ctx, request, principal, payment_id)
    return json_response(await payment_out(ctx, pay))


@router.post(
    "/v1/payments/{payment_id}/refunds",
    openapi_extra=contract.body(RefundIn),
    responses=contract.replies(
        {201: (RefundOut, "Refunded (completed or failed)"), 200: (RefundOut, "Replay")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)
async def refund_payment(
    payment_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    body = await decode_body(request, RefundIn, SMALL_BODY_LIMIT)
    refund, status = await payment_service.refund(ctx, request, principal, payment_id, body)
    return json_response(_refund_out(refund), status)
