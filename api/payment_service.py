"""The payments workflow: plan, decide, record, move the money, refund.

Routes (``api/rails_routes.py``, ``api/risk_routes.py``) decode and render;
this module holds the steps between. A payment names its parties as
``@handle`` or account id and picks a rail; the wallet rail is one ledger
transfer whose id is derived from the payment's, so a retried or crashed
payment is a replay, never a second movement. A refund reserves its amount
under the payment's row lock before its reversing transfer, so concurrent
refunds never exceed the payment.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable

from starlette.requests import Request

from paynode.api import ach_routes, card_service, risk_gate, rtp_service
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Context, check_owner
from paynode.api.handle_routes import lookup, normalized
from paynode.api.periodic import every
from paynode.api.rails_schemas import PaymentIn, RefundIn
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE, Code
from paynode.domain.rails import card_rules, rtp_rules
from paynode.domain.rails.ach_rules import (
    CLEARING_ACCOUNT,
    SAME_DAY_LIMIT,
    cancel_transfer_id,
    hold_transfer_id,
)
from paynode.storage import ach, link, payments, rtp

# Bank account ids as api/ach_routes.py makes them (new_id("ba")); anything else is an account.
BANK_ACCOUNT_ID = re.compile(r"ba_[0-9a-f]{32}\Z")
RECOVER_BATCH = 100  # stuck refunds one recovery pass finishes
log = logging.getLogger("paynode.payments")

_SAME_FIELDS = ("owner_user_id", "debit_account_id", "credit_account_id", "amount", "currency",
                "rail", "memo", "same_day", "bank_account_id", "payment_method_id")  # fmt: skip
_WAITING = ("requires_action", "in_review")  # answered 202: money has not moved yet


async def make(
    ctx: Context, request: Request, principal: Principal, body: PaymentIn
) -> tuple[payments.Payment, int]:
    """Make the payment ``body`` asks for, or replay it: (the payment, HTTP status).
    201 made (completed or failed; ACH: pending), 200 a replay, 202 waiting
    (a one-time code or a compliance review) with no money moved."""
    banks = [bool(BANK_ACCOUNT_ID.match(r)) for r in (body.from_, body.to)]
    if body.rail == card_rules.RAIL:
        wanted, payee_owner = await _plan_card(ctx, principal, body)
    elif not body.from_:
        raise p.ApiError(p.MISSING_FIELD, "from is required", "$.from")
    elif body.payment_method is not None:
        raise p.ApiError(p.INVALID_FIELD, "payment_method is for rail card", "$.payment_method")
    elif all(banks) or (body.rail == "wallet" and any(banks)):
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "one side must be a wallet", "$.rail")
    elif any(banks):
        wanted, payee_owner = await _plan_bank(ctx, principal, body, push=banks[1])
    elif body.rail in ("ach", "rtp"):
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, f"{body.rail.upper()} needs a linked bank account",
                         "$.rail")  # fmt: skip
    else:
        wanted, payee_owner = await _plan_wallet(ctx, principal, body)
    stored, created = await _record(ctx, request, principal, wanted, payee_owner)
    if not created and any(getattr(stored, f) != getattr(wanted, f) for f in _SAME_FIELDS):
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.id")
    if stored.status in _WAITING:
        return stored, 202
    if stored.status != "processing":
        return stored, 201 if created else 200
    done = await execute(ctx, stored)
    if done.status in _WAITING:  # a card's issuer asks for 3-D Secure: still no money moved
        return done, 202
    return done, 201 if created else 200


async def _account_of(ctx: Context, ref: str, field: str) -> str:
    if ref.startswith("@"):
        found = await lookup(ctx, normalized(ref, field))
        if found is None:
            raise p.ApiError(p.HANDLE_NOT_FOUND, field=field, status=422)
        return found.account_id
    if not 1 <= len(ref) <= 64:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field=field)
    return ref


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
    if created and stored.status == "requires_action":
        await risk_gate.code_queued(ctx)
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


async def _plan_bank(
    ctx: Context, principal: Principal, body: PaymentIn, push: bool
) -> tuple[payments.Payment, str | None]:
    """Between a wallet and a bank account: RTP when asked for (``rail: "rtp"``, or
    ``instant`` with ``rail: "auto"``), which only sends (wallet -> bank); else ACH:
    wallet -> bank is a NACHA credit (push), bank -> wallet a NACHA debit (pull)."""
    bank_ref, wallet_ref = (body.to, body.from_) if push else (body.from_, body.to)
    field = "$.to" if push else "$.from"
    bank = await ach_routes.own_bank_account(ctx, principal, bank_ref)
    if bank.status == "closed":
        raise p.ApiError(p.BANK_ACCOUNT_CLOSED, field=field)
    if bank.status != "verified":
        raise p.ApiError(p.BANK_ACCOUNT_NOT_VERIFIED, field=field)
    async with ctx.engine.connect() as conn:
        # Linked through an aggregator whose bank wants a new login: no new payment (a
        # replay of one made before still answers with it).
        if (await link.payment_block(conn, bank.id) == "login_required"
                and await payments.get(conn, body.id) is None):  # fmt: skip
            raise p.ApiError(p.BANK_LINK_LOGIN_REQUIRED, field=field)
    if body.rail == "rtp" or (body.rail == "auto" and body.instant):
        if not push:
            detail = "RTP only sends; pull from a bank account with ACH"
            raise p.ApiError(p.RAIL_NOT_AVAILABLE, detail, "$.rail")
        if body.same_day:
            raise p.ApiError(p.INVALID_FIELD, "same_day is an ACH option", "$.same_day")
        rtp_service.check(ctx, body.amount, body.currency, bank.routing_number, field)
        return await _plan_rtp(ctx, principal, body, bank.id), None
    if body.instant:
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "ACH is not instant: ask for rail rtp or auto",
                         "$.instant")  # fmt: skip
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


async def _plan_rtp(
    ctx: Context, principal: Principal, body: PaymentIn, bank_account_id: str | None,
    to_ref: str | None = None,
) -> payments.Payment:  # fmt: skip
    """wallet -> an account at another bank, now: a pacs.008 on RTP."""
    wallet = await _account_of(ctx, body.from_, "$.from")
    spec = (await ctx.client.resolve({wallet})).get(wallet)
    if spec is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.from")
    check_owner(principal, spec.owner)
    now = dt.datetime.now(dt.UTC)
    return payments.Payment(
        id=body.id, owner_user_id=principal.user_id, from_ref=body.from_,
        to_ref=to_ref or body.to, debit_account_id=wallet,
        credit_account_id=rtp_rules.CLEARING_ACCOUNT, amount=body.amount,
        currency=body.currency, rail=rtp_rules.RAIL, memo=body.memo, status="processing",
        failure_code=None, transfer_id=rtp_rules.hold_transfer_id(body.id), refunded_amount=0,
        created_at=now, updated_at=now, bank_account_id=bank_account_id,
        fee=rtp_service.fee_of(ctx, body.amount),
    )  # fmt: skip


async def _plan_card(
    ctx: Context, principal: Principal, body: PaymentIn
) -> tuple[payments.Payment, str | None]:
    """Your card -> a wallet (yours or anyone's): the processor charges the card, the
    wallet is credited through the card clearing account (``api/card_service.py``)."""
    if body.payment_method is None:
        raise p.ApiError(p.MISSING_FIELD, "rail card needs payment_method", "$.payment_method")
    if body.from_ and body.from_ != body.payment_method:
        raise p.ApiError(p.INVALID_FIELD, "from, if given, is the payment method", "$.from")
    if body.same_day or body.instant:
        raise p.ApiError(p.INVALID_FIELD, "same_day and instant are bank options", "$.rail")
    card_service.check(ctx, body.amount, body.currency)
    if BANK_ACCOUNT_ID.match(body.payment_method):
        await card_service.own_bank_method(ctx, principal, body.payment_method)  # 404: not yours
        raise p.ApiError(p.PAYMENT_METHOD_NOT_CHARGEABLE, "a bank account pays by ACH",
                         "$.payment_method")  # fmt: skip
    method = await card_service.own_method(ctx, principal, body.payment_method)
    wallet = await _account_of(ctx, body.to, "$.to")
    spec = (await ctx.client.resolve({wallet})).get(wallet)
    if spec is None or not spec.owner:  # into a user's wallet, never an operator account
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.to")
    if spec.currency != body.currency:
        raise p.ApiError(Code.CURRENCY_MISMATCH, field="$.to")
    now = dt.datetime.now(dt.UTC)
    wanted = payments.Payment(
        id=body.id, owner_user_id=principal.user_id, from_ref=method.id, to_ref=body.to,
        debit_account_id=card_rules.CLEARING_ACCOUNT, credit_account_id=wallet,
        amount=body.amount, currency=body.currency, rail=card_rules.RAIL, memo=body.memo,
        status="processing", failure_code=None,
        transfer_id=card_rules.hold_transfer_id(body.id), refunded_amount=0, created_at=now,
        updated_at=now, payment_method_id=method.id,
    )  # fmt: skip
    return wanted, spec.owner


async def execute(ctx: Context, pay: payments.Payment) -> payments.Payment:
    """Move the money of a processing payment; safe to repeat (the transfer id is fixed).

    Wallet: one transfer, then completed or failed. ACH: the wallet is held now
    (push: its money; pull: the incoming credit, not yet available) and the
    entry waits for the next cutoff. Ownership was checked when it was made.
    """
    assert pay.status == "processing", pay.status
    if pay.rail == card_rules.RAIL:
        return await card_service.execute(ctx, pay)
    if pay.rail == rtp_rules.RAIL:
        async with ctx.engine.connect() as conn:
            request_id = await rtp.request_paid_by(conn, pay.id)
        return await rtp_service.execute(ctx, pay, request_id)
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


async def visible(ctx: Context, principal: Principal, payment_id: str) -> payments.Payment:
    """The payment, if this principal may see it (someone else's does not exist: 404)."""
    async with ctx.engine.connect() as conn:
        found = await payments.get(conn, payment_id) if len(payment_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.PAYMENT_NOT_FOUND)
    # The payer made it (a card payment's debit side is the card clearing account).
    if not principal.admin and not principal.owns(found.owner_user_id or ""):
        specs = await ctx.client.resolve({found.debit_account_id, found.credit_account_id})
        if not any(principal.owns(s.owner) for s in specs.values()):
            raise p.ApiError(p.PAYMENT_NOT_FOUND)  # someone else's payment does not exist
    return found


async def refund(
    ctx: Context, request: Request, principal: Principal, payment_id: str, body: RefundIn
) -> tuple[payments.Refund, int]:
    """Refund (part of) a payment, or replay the refund: (the refund, HTTP status)."""
    pay = await visible(ctx, principal, payment_id)
    if pay.rail == rtp_rules.RAIL:
        raise p.ApiError(p.PAYMENT_NOT_REFUNDABLE)
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
        return refund, 200
    done = await _complete_refund(ctx, pay, refund, None if principal.admin else principal.owns)
    return done, 201 if new else 200


async def _complete_refund(
    ctx: Context, pay: payments.Payment, refund: payments.Refund,
    may_debit: Callable[[str], bool] | None,
) -> payments.Refund:  # fmt: skip
    """Move a reserved refund's money back (the payee's account -> the payer's side; a
    card's through the processor) and finish it; every step safe to repeat (the ids are
    the refund's). A busy ledger or an unanswering processor raises: still processing."""
    transfer = TransferIn(
        id=refund.transfer_id, debit_account_id=pay.credit_account_id,
        credit_account_id=pay.debit_account_id, amount=refund.amount, currency=pay.currency,
        metadata={"payment_id": pay.id, "refund_id": refund.id},
    )  # fmt: skip
    (outcome,) = await ctx.client.transfer([transfer], may_debit)
    if outcome.code in RETRYABLE:
        raise p.ApiError(outcome.code)  # reserved and processing: retry with the same id
    if pay.rail == card_rules.RAIL and not outcome.code:
        await card_service.refund_at_processor(ctx, pay, refund)  # 503: retry, same id
    async with ctx.engine.begin() as conn:
        return await payments.finish_refund(conn, refund.id, not outcome.code, outcome.code or None)


async def recover_refunds(ctx: Context) -> int:
    """One pass: finish refunds left processing (the request that reserved one died, or
    its client never retried after a 503) once they are older than twice the card
    processor's timeout (a live request is done by then); how many were looked at."""
    stuck_ms = 2 * ctx.settings.card.timeout_ms
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=stuck_ms)
    async with ctx.engine.connect() as conn:
        stuck = await payments.stuck_refunds(conn, before, RECOVER_BATCH)
        pays = {r.payment_id: await payments.get(conn, r.payment_id) for r in stuck}
    for r in stuck:
        pay = pays[r.payment_id]
        assert pay is not None  # a foreign key
        try:
            await _complete_refund(ctx, pay, r, None)  # authorized when it was reserved
        except p.ApiError as e:  # the ledger busy or the processor away: the next pass
            log.info("refund %s left for the next pass: %s", r.id, e.code)
    return len(stuck)


async def follow_refunds(ctx: Context) -> None:
    """Run ``recover_refunds`` every ``card.recover_interval_ms`` while the front runs."""
    await every(ctx.settings.card.recover_interval_ms, lambda: recover_refunds(ctx), log,
                "refund recovery pass")  # fmt: skip


async def cancel(
    ctx: Context, request: Request, principal: Principal, payment_id: str
) -> payments.Payment:
    """Cancel an ACH payment whose entry no file has taken yet, and release its hold.

    The cancel commits first (under the entry's row lock, against the cutoff), then
    the hold is voided with a fixed id. If the ledger cannot answer now, the payment
    stays canceled and the call is 503: calling it again voids the hold (a replay
    for the ledger), as does every call on a canceled payment.
    """
    pay = await visible(ctx, principal, payment_id)
    if not principal.admin and pay.owner_user_id != principal.user_id:
        raise p.ApiError(p.FORBIDDEN, "only the payer may cancel a payment")
    if pay.rail != "ach":
        raise p.ApiError(p.PAYMENT_NOT_CANCELABLE, "only an ACH payment waits to be sent")
    if pay.status != "canceled":
        async with ctx.engine.begin() as conn:
            entry = await ach.cancel_entry(conn, pay.id)
            if entry != "canceled":  # in a file already (or not yet held: processing)
                raise p.ApiError(p.PAYMENT_NOT_CANCELABLE,
                                 f"the payment is {pay.status}: no longer cancelable")  # fmt: skip
            pay = await payments.transition(conn, pay.id, "canceled")
            await audit(conn, request, principal, "payment.cancel", pay.id,
                        after={"status": "canceled"})  # fmt: skip
    void = TransferIn(id=cancel_transfer_id(pay.id), pending_id=hold_transfer_id(pay.id),
                      flags=["void_pending"], metadata={"payment_id": pay.id})  # fmt: skip
    (outcome,) = await ctx.client.transfer([void], None)
    if outcome.code in RETRYABLE:
        raise p.ApiError(outcome.code, "canceled; the hold is released when you call again")
    assert not outcome.code, f"the hold of a canceled payment refused its void: {outcome.code}"
    return pay


async def pay_request(
    ctx: Context, request: Request, principal: Principal, request_id: str, payment_id: str,
    memo: str,
) -> tuple[payments.Payment, int]:  # fmt: skip
    """Accept a request for payment: pay its creditor now on RTP, or replay the accept.

    The request is marked accepted (naming the payment) before the payment exists, under
    its row lock: two accepts never make two payments, and an accept repeated after a
    crash (same ``payment_id``) goes on where the first stopped. A payment the network
    rejects gives the request back to the payer (``rtp_service.apply``).
    """
    req = await visible_request(ctx, principal, request_id)
    rtp_service.check(ctx, req.amount, req.currency, req.creditor_routing, "$.payment_id")
    expired = False
    async with ctx.engine.begin() as conn:
        req = await rtp.get_request(conn, req.id, lock=True) or req
        if req.status == "pending" and req.expires_at <= dt.datetime.now(dt.UTC):
            req = await rtp.decide_request(conn, req.id, "expired", None)
            expired = True
        elif req.status == "pending":
            req = await rtp.decide_request(conn, req.id, "accepted", payment_id)
    if expired or req.status == "expired":
        raise p.ApiError(p.RTP_REQUEST_EXPIRED)
    if req.status != "accepted" or req.payment_id != payment_id:
        raise p.ApiError(p.RTP_REQUEST_ANSWERED, f"the request is {req.status}")
    body = PaymentIn(
        id=payment_id, to=f"rfp:{req.id}", amount=req.amount, currency=req.currency,
        from_=req.account_id, rail="rtp", memo=memo,
    )  # fmt: skip
    wanted = await _plan_rtp(ctx, principal, body, None, body.to)
    stored, created = await _record(ctx, request, principal, wanted, None)
    if not created and any(getattr(stored, f) != getattr(wanted, f) for f in _SAME_FIELDS):
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.payment_id")
    if created:
        await rtp_service.answer_request(ctx, req, accepted=True)
    if stored.status in _WAITING:
        return stored, 202
    if stored.status != "processing":
        return stored, 201 if created else 200
    return await execute(ctx, stored), 201 if created else 200


async def visible_request(ctx: Context, principal: Principal, request_id: str) -> rtp.Request:
    """A request for payment this principal may see (someone else's does not exist: 404)."""
    async with ctx.engine.connect() as conn:
        found = await rtp.get_request(conn, request_id) if len(request_id) <= 64 else None
    if found is None or not principal.owns(found.owner_user_id):
        raise p.ApiError(p.RTP_REQUEST_NOT_FOUND)
    return found
