"""Routes for @handles, payments and refunds.

A payment names its parties as ``@handle`` or account id and picks a rail;
the wallet rail is one ledger transfer whose id is derived from the
payment's, so a retried or crashed payment is a replay, never a second
movement. A refund reserves its amount under the payment's row lock before
its reversing transfer, so concurrent refunds never exceed the payment.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import ach_routes, contract, risk_gate
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.handle_routes import lookup, normalized
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response, public
from paynode.api.rails_schemas import (
    NextActionOut,
    PaymentIn,
    PaymentOut,
    PaymentPage,
    PaymentStatus,
    RefundIn,
    RefundOut,
    RiskOut,
    RiskReasonOut,
    StatusChangeOut,
)
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE, Code
from paynode.domain.rails.ach_rules import CLEARING_ACCOUNT, SAME_DAY_LIMIT, hold_transfer_id
from paynode.domain.rails.nacha import RETURN_CODES
from paynode.storage import ach, payments
from paynode.storage import risk as risk_store

router = APIRouter(tags=["payments"])
# Bank account ids as api/ach_routes.py makes them (new_id("ba")); anything else is an account.
BANK_ACCOUNT_ID = re.compile(r"ba_[0-9a-f]{32}\Z")


# -- payments -----------------------------------------------------------------------------


async def _account_of(ctx: Context, ref: str, field: str) -> str:
    if ref.startswith("@"):
        found = await lookup(ctx, normalized(ref, field))
        if found is None:
            raise p.ApiError(p.HANDLE_NOT_FOUND, field=field, status=422)
        return found.account_id
    if not 1 <= len(ref) <= 64:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field=field)
    return ref


async def payment_out(ctx: Context, pay: payments.Payment) -> PaymentOut:
    next_action = review = None
    async with ctx.engine.connect() as conn:
        history = await payments.history(conn, pay.id)
        refunds = await payments.refunds_of(conn, pay.id)
        if pay.status == "requires_action":
            state = await risk_store.challenge_state(conn, pay.id)
            if state is not None:
                next_action = NextActionOut(
                    "confirm_otp", f"/v1/payments/{pay.id}/confirm",
                    dt.datetime.fromtimestamp(state[0] + ctx.settings.otp_max_age_s, dt.UTC),
                    max(0, ctx.settings.otp_max_attempts - state[1]),
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
    )


def _refund_out(r: payments.Refund) -> RefundOut:
    return public(RefundOut, r)


_SAME_FIELDS = ("owner_user_id", "debit_account_id", "credit_account_id", "amount", "currency",
                "rail", "memo", "same_day")  # fmt: skip
_WAITING = ("requires_action", "in_review")  # answered 202: money has not moved yet


@router.post(
    "/v1/payments",
    openapi_extra=contract.body(PaymentIn),
    responses=contract.replies(
        {
            201: (PaymentOut, "Made (completed or failed; ACH: pending)"),
            200: (PaymentOut, "Replay"),
            202: (PaymentOut, "Waiting: requires_action (confirm with the one-time code"
                  " sent to your devices) or in_review (held for a compliance review)"),
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
    banks = [bool(BANK_ACCOUNT_ID.match(r)) for r in (body.from_, body.to)]
    if all(banks) or (body.rail == "wallet" and any(banks)):
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "one side must be a wallet", "$.rail")
    if any(banks):
        wanted, payee_owner = await _plan_ach(ctx, principal, body, push=banks[1])
    elif body.rail == "ach":
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "ACH needs a linked bank account", "$.rail")
    else:
        wanted, payee_owner = await _plan_wallet(ctx, principal, body)
    stored, created = await _record(ctx, request, principal, wanted, payee_owner)
    if not created and any(getattr(stored, f) != getattr(wanted, f) for f in _SAME_FIELDS):
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.id")
    if stored.status in _WAITING:
        return json_response(await payment_out(ctx, stored), 202)
    if stored.status != "processing":
        return json_response(await payment_out(ctx, stored), 201 if created else 200)
    done = await execute(ctx, stored)
    return json_response(await payment_out(ctx, done), 201 if created else 200)


async def _record(
    ctx: Context, request: Request, principal: Principal, wanted: payments.Payment,
    payee_owner: str | None,
) -> tuple[payments.Payment, bool]:  # fmt: skip
    """Decide (for a user) and record the payment; (stored, created). A replay changes nothing."""
    async with ctx.engine.connect() as conn:
        existing = await payments.get(conn, wanted.id)
    if existing is not None:
        return existing, False
    gate = risk_gate.gated(principal)
    hits: list[risk_gate.Hit] = []
    async with ctx.engine.begin() as conn:
        if gate:
            wanted, hits = await risk_gate.decide(ctx, conn, principal, wanted, payee_owner,
                                                  ctx.risk_stats)  # fmt: skip
        stored, created = await payments.create(conn, wanted)
        if created:
            await risk_gate.after_create(ctx, conn, stored, hits)
            await audit(conn, request, principal, "payment.create", stored.id,
                        after=_audited(stored))  # fmt: skip
    return stored, created


def _audited(pay: payments.Payment) -> dict:
    """What the audit log keeps of a payment: ids, amounts, states; no memo (free text)."""
    return {
        "status": pay.status, "rail": pay.rail, "amount": pay.amount, "currency": pay.currency,
        "debit_account_id": pay.debit_account_id, "credit_account_id": pay.credit_account_id,
        "bank_account_id": pay.bank_account_id, "risk_score": pay.risk_score,
        "risk_level": pay.risk_level, "failure_code": pay.failure_code,
    }  # fmt: skip


async def _plan_wallet(
    ctx: Context, principal: Principal, body: PaymentIn
) -> tuple[payments.Payment, str | None]:
    debit = await _account_of(ctx, body.from_, "$.from")
    credit = await _account_of(ctx, body.to, "$.to")
    specs = await ctx.client.resolve({debit, credit})
    for acct, field in ((debit, "$.from"), (credit, "$.to")):
        if acct not in specs:
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field=field)
    check_owner(principal, specs[debit].owner)
    now = dt.datetime.now(dt.UTC)
    wanted = payments.Payment(
        id=body.id, owner_user_id=principal.user_id, from_ref=body.from_, to_ref=body.to,
        debit_account_id=debit, credit_account_id=credit, amount=body.amount,
        currency=body.currency, rail="wallet", memo=body.memo, status="processing",
        failure_code=None, transfer_id=payments.transfer_id_of(body.id), refunded_amount=0,
        created_at=now, updated_at=now,
    )  # fmt: skip
    return wanted, specs[credit].owner or None


async def _plan_ach(
    ctx: Context, principal: Principal, body: PaymentIn, push: bool
) -> tuple[payments.Payment, str | None]:
    """wallet -> bank is a NACHA credit (push); bank -> wallet a NACHA debit (pull)."""
    bank_ref, wallet_ref = (body.to, body.from_) if push else (body.from_, body.to)
    field = "$.to" if push else "$.from"
    bank = await ach_routes.own_bank_account(ctx, principal, bank_ref)
    if bank.status != "verified":
        raise p.ApiError(p.BANK_ACCOUNT_NOT_VERIFIED, field=field)
    if body.currency != "USD":
        raise p.ApiError(Code.CURRENCY_MISMATCH, "ACH moves USD", "$.currency")
    if body.same_day and body.amount > SAME_DAY_LIMIT:
        raise p.ApiError(p.INVALID_FIELD, "same-day ACH is limited to $1,000,000", "$.amount")
    wallet = await _account_of(ctx, wallet_ref, "$.from" if push else "$.to")
    spec = (await ctx.client.resolve({wallet})).get(wallet)
    if spec is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.from" if push else "$.to")
    check_owner(principal, spec.owner)  # pushes and pulls: only into or out of your wallet
    debit, credit = (wallet, CLEARING_ACCOUNT) if push else (CLEARING_ACCOUNT, wallet)
    now = dt.datetime.now(dt.UTC)
    wanted = payments.Payment(
        id=body.id, owner_user_id=principal.user_id, from_ref=body.from_, to_ref=body.to,
        debit_account_id=debit, credit_account_id=credit, amount=body.amount,
        currency=body.currency, rail="ach", memo=body.memo, status="processing",
        failure_code=None, transfer_id=hold_transfer_id(body.id), refunded_amount=0,
        created_at=now, updated_at=now, bank_account_id=bank.id,
        ach_direction="credit" if push else "debit", same_day=body.same_day,
    )  # fmt: skip
    return wanted, None


async def execute(ctx: Context, pay: payments.Payment) -> payments.Payment:
    """Move the money of a processing payment; safe to repeat (the transfer id is fixed).

    Wallet: one transfer, then completed or failed. ACH: the wallet is held now
    (push: its money; pull: the incoming credit, not yet available) and the
    entry waits for the next cutoff. Ownership was checked when it was made.
    """
    assert pay.status == "processing", pay.status
    ach_rail = pay.rail == "ach"
    transfer = TransferIn(
        id=pay.transfer_id or "", debit_account_id=pay.debit_account_id,
        credit_account_id=pay.credit_account_id, amount=pay.amount, currency=pay.currency,
        flags=["pending"] if ach_rail else [], metadata={"payment_id": pay.id},
    )  # fmt: skip
    (outcome,) = await ctx.client.transfer([transfer], None)
    if outcome.code in RETRYABLE:
        raise p.ApiError(outcome.code)  # still processing: retry with the same id
    async with ctx.engine.begin() as conn:
        if not ach_rail:
            return await payments.finish(conn, pay.id, not outcome.code, outcome.code or None)
        if outcome.code:
            return await payments.transition(conn, pay.id, "failed", outcome.code)
        done = await payments.transition(conn, pay.id, "pending")
        if done.status == "pending" and not await ach.entry_of(conn, pay.id):
            assert pay.bank_account_id is not None and pay.ach_direction is not None
            await ach.add_entry(conn, pay.bank_account_id, pay.ach_direction, pay.amount, pay.id,
                                pay.same_day)  # fmt: skip
    return done


async def visible_payment(ctx: Context, principal: Principal, payment_id: str):
    async with ctx.engine.connect() as conn:
        found = await payments.get(conn, payment_id) if len(payment_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.PAYMENT_NOT_FOUND)
    if not principal.admin:
        specs = await ctx.client.resolve({found.debit_account_id, found.credit_account_id})
        if not any(principal.owns(s.owner) for s in specs.values()):
            raise p.ApiError(p.PAYMENT_NOT_FOUND)  # someone else's payment does not exist
    return found


@router.get(
    "/v1/payments/{payment_id}",
    responses=contract.replies({200: (PaymentOut, "The payment")}, (401, 403, 404, 429)),
)
async def get_payment(
    payment_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
) -> Response:
    return json_response(await payment_out(ctx, await visible_payment(ctx, principal, payment_id)))


@router.get(
    "/v1/payments",
    responses=contract.replies({200: (PaymentPage, "Yours, by id")}, (401, 403, 422, 429)),
)
async def list_payments(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
    status: Annotated[PaymentStatus | None, Query()] = None,
    rail: Annotated[Literal["wallet", "ach"] | None, Query()] = None,
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
    pay = await visible_payment(ctx, principal, payment_id)
    # The payee gives the money back: only whoever may debit the credited account.
    payee = (await ctx.client.resolve({pay.credit_account_id})).get(pay.credit_account_id)
    check_owner(principal, payee.owner if payee else "")
    try:
        async with ctx.engine.begin() as conn:
            refund, new = await payments.reserve_refund(conn, payment_id, body.id, body.amount)
            if new:
                await audit(conn, request, principal, "refund.create", refund.id,
                            after={"payment_id": payment_id, "amount": refund.amount})  # fmt: skip
    except payments.RefundRefused as e:
        raise p.ApiError(e.code) from None
    if refund.status != "processing":
        return json_response(_refund_out(refund), 200)
    transfer = TransferIn(
        id=refund.transfer_id, debit_account_id=pay.credit_account_id,
        credit_account_id=pay.debit_account_id, amount=refund.amount, currency=pay.currency,
        metadata={"payment_id": pay.id, "refund_id": refund.id},
    )  # fmt: skip
    (outcome,) = await ctx.client.transfer([transfer], None if principal.admin else principal.owns)
    if outcome.code in RETRYABLE:
        raise p.ApiError(outcome.code)  # reserved and processing: retry with the same id
    async with ctx.engine.begin() as conn:
        done = await payments.finish_refund(conn, refund.id, not outcome.code, outcome.code or None)
    return json_response(_refund_out(done), 201 if new else 200)
