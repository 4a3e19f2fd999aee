"""Step-up confirmation of a payment, and compliance reviews of sanctions matches.

``POST /v1/payments/{id}/confirm`` checks the one-time code under the
challenge's row lock, so concurrent guesses are counted one by one; the
attempt is committed before a wrong code is answered. A confirmed payment
then moves money through the same transfer id as any other (the payment id
stays the idempotency key).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import contract, payment_service, rails_routes
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, require
from paynode.api.http import decode_body, json_response
from paynode.api.rails_schemas import ConfirmIn, PaymentOut
from paynode.api.risk_schemas import MatchOut, ReviewDecisionIn, ReviewOut, ReviewPage
from paynode.domain.risk import otp
from paynode.storage import identity, payments
from paynode.storage import risk as store

router = APIRouter()
_BODY_LIMIT = 4 * 1024
_OUTCOME_CODES = {
    "otp_invalid": p.OTP_INVALID,
    "otp_expired": p.OTP_EXPIRED,
    "otp_reused": p.OTP_REUSED,
    "otp_locked": p.OTP_LOCKED,
}
REVIEW_REJECTED = "rejected_in_review"  # failure code of a payment a reviewer stopped


@router.post(
    "/v1/payments/{payment_id}/confirm",
    openapi_extra=contract.body(ConfirmIn),
    responses=contract.replies(
        {200: (PaymentOut, "Confirmed: the payment went ahead (completed, failed or pending)")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    tags=["payments"],
)
async def confirm_payment(
    payment_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    body = await decode_body(request, ConfirmIn, _BODY_LIMIT)
    pay = await payment_service.visible(ctx, principal, payment_id)
    if pay.owner_user_id is None or pay.owner_user_id != principal.user_id:
        raise p.ApiError(p.FORBIDDEN, "only the payer confirms a payment")
    s = ctx.settings
    async with ctx.engine.begin() as conn:
        ch = await store.load_challenge(conn, ctx.keys, payment_id, lock=True)
        if ch is None:
            raise p.ApiError(p.NO_ACTION_REQUIRED)
        checked, outcome = otp.check(ch, body.otp, time.time(), s.otp.max_age_s,
                                     s.otp.max_attempts)  # fmt: skip
        if checked != ch:
            await store.save_challenge(conn, payment_id, checked)
        if outcome == "otp_invalid" and checked.attempts >= s.otp.max_attempts:
            outcome = "otp_locked"  # that was the last try
        pay = await payments.get(conn, payment_id, lock=True) or pay
        if outcome == "ok":
            pay = await payments.transition(conn, payment_id, "processing")
        elif outcome in ("otp_expired", "otp_locked"):
            pay = await payments.transition(conn, payment_id, "failed", outcome)
        await audit(conn, request, principal, "payment.confirm", payment_id,
                    after={"outcome": outcome, "status": pay.status})  # fmt: skip
    ctx.risk_stats.otp[outcome] += 1
    # A retry after a confirm whose transfer did not finish (503): the code was accepted
    # then, so the payment goes on instead of being refused as a reuse.
    if outcome != "ok" and not (outcome == "otp_reused" and pay.status == "processing"):
        left = max(0, s.otp.max_attempts - checked.attempts)
        detail = f"{left} attempts left" if outcome == "otp_invalid" else ""
        raise p.ApiError(_OUTCOME_CODES[outcome], detail, "$.otp")
    if pay.status == "processing":
        pay = await payment_service.execute(ctx, pay)
    return json_response(await rails_routes.payment_out(ctx, pay))


# -- reviews ------------------------------------------------------------------------------


def _review_out(r: store.Review) -> ReviewOut:
    return ReviewOut(
        id=r.id, kind=r.kind, subject_id=r.subject_id, user_id=r.user_id,  # type: ignore[arg-type]
        status=r.status, reason=r.reason,  # type: ignore[arg-type]
        matches=msgspec.json.decode(r.matches, type=list[MatchOut]), created_at=r.created_at,
        decided_at=r.decided_at, decided_by=r.decided_by, note=r.note,
    )  # fmt: skip


@router.get(
    "/v1/reviews",
    responses=contract.replies({200: (ReviewPage, "Oldest id first")}, (401, 403, 422, 429)),
    tags=["compliance"],
)
async def list_reviews(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("kyc:review"))],
    status: Annotated[Literal["open", "approved", "rejected"] | None, Query()] = "open",
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await store.list_reviews(conn, status, after, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return json_response(
        ReviewPage([_review_out(r) for r in found], found[-1].id if more and found else None)
    )


@router.get(
    "/v1/reviews/{review_id}",
    responses=contract.replies({200: (ReviewOut, "The review")}, (401, 403, 404, 429)),
    tags=["compliance"],
)
async def get_review(
    review_id: str, ctx: Ctx, _: Annotated[Principal, Depends(require("kyc:review"))]
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await store.get_review(conn, review_id) if len(review_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.REVIEW_NOT_FOUND)
    return json_response(_review_out(found))


@router.post(
    "/v1/reviews/{review_id}",
    openapi_extra=contract.body(ReviewDecisionIn),
    responses=contract.replies(
        {200: (ReviewOut, "Decided; an approved payment goes ahead")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    tags=["compliance"],
)
async def decide_review(
    review_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("kyc:review"))],
) -> Response:
    body = await decode_body(request, ReviewDecisionIn, _BODY_LIMIT)
    approve = body.decision == "approve"
    proceed = None
    async with ctx.engine.begin() as conn:
        review = None
        if len(review_id) <= 64:
            review = await store.get_review(conn, review_id, lock=True)
        if review is None:
            raise p.ApiError(p.REVIEW_NOT_FOUND)
        if review.status != "open":
            raise p.ApiError(p.REVIEW_DECIDED)
        if review.user_id is not None and review.user_id == principal.user_id:
            raise p.ApiError(p.FORBIDDEN, "nobody reviews their own case")  # separation of duties
        decided = await store.decide(conn, review_id, "approved" if approve else "rejected",
                                     principal.id, body.note or None)  # fmt: skip
        if review.kind == "payment":
            status = "processing" if approve else "failed"
            reason = None if approve else REVIEW_REJECTED
            proceed = await payments.transition(conn, review.subject_id, status, reason)
        elif review.kind == "user" and approve:
            # A false positive: cleared for this list; a new list screens the user again.
            await store.set_screening(conn, "users", review.subject_id, False,
                                      ctx.policy.list_version)  # fmt: skip
        elif review.kind == "user":
            kyc = await identity.lock_kyc_status(conn, review.subject_id)
            if kyc is not None and kyc != "rejected":
                await identity.set_kyc(
                    conn, ctx.keys, review.subject_id, from_status=kyc, to_status="rejected",
                    actor=principal.id, reason="sanctions match confirmed in review",
                )  # fmt: skip
        await audit(conn, request, principal, f"review.{body.decision}", review_id,
                    before={"status": review.status},
                    after={"status": decided.status, "kind": review.kind,
                           "subject": review.subject_id})  # fmt: skip
    if proceed is not None and proceed.status == "processing":
        await payment_service.execute(ctx, proceed)
    return json_response(_review_out(decided))
