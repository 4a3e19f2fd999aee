"""Card payments through the processor: authorize, hold, capture, post; 3-D Secure;
refunds; settlement.

A card payment (``rail: "card"``) moves money from the payer's card into a wallet in
durable steps, each safe to repeat (every id derives from the payment's):

1. **Authorize** (``execute``): the charge is recorded (``card_charges``,
   ``authorizing``), then the processor is asked (its idempotency key is the charge's
   ``charge_ref``). A decline fails the payment with the decline code and moves no
   money; 3-D Secure makes it ``requires_action`` until :func:`confirm`.
2. **Hold**: a pending transfer ``card-clearing-usd -> wallet``. A hold the ledger
   refuses (the wallet closed meanwhile, ...) voids the authorization and fails the
   payment.
3. **Capture** at the processor, then post the hold linked with the fee (``wallet ->
   card-fees-usd``: both or neither); then the charge ``captured``, its receipt number
   and the payment ``completed`` in one transaction. Only then is success answered.

A processor that does not answer within ``card.timeout_ms`` leaves the payment
``processing``; each front's ``follow`` loop runs ``execute`` again for card
payments processing past that timeout (a crash between steps is finished the same
way: the processor answers a repeated call with its first answer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request

from paynode.actors.card_sim import decode_authorization, decode_card
from paynode.actors.host import ServiceRef
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.context import Context
from paynode.api.ledger_client import LedgerClient
from paynode.api.periodic import every
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE, AccountSpec, Code
from paynode.domain.rails import card_rules as rules
from paynode.domain.rails.disputes import DISPUTES_ACCOUNT
from paynode.storage import ach, cards, payments

log = logging.getLogger("paynode.cards")

RECOVER_BATCH = 100  # stuck payments one recovery pass finishes
OPERATOR_ACCOUNTS = (rules.CLEARING_ACCOUNT, rules.FEES_ACCOUNT, rules.SETTLED_ACCOUNT,
                     DISPUTES_ACCOUNT)  # fmt: skip
# Fronts (their ledger clients) that made the card operator accounts: made at the first
# card movement rather than at start, so a node that takes no cards has none of them.
_ready: weakref.WeakSet[LedgerClient] = weakref.WeakSet()


async def ensure_accounts(ctx: Context) -> None:
    """The card operator accounts exist (creating one again is a no-op: EXISTS)."""
    if ctx.client in _ready:
        return
    for account_id in OPERATOR_ACCOUNTS:
        result = await ctx.client.create_account(AccountSpec(account_id, "USD", 0, "{}", 0, ""))
        if result.code not in (Code.OK, Code.EXISTS):
            raise p.ApiError(result.code)  # the ledger busy: retry
        # An admin may have made one by hand: it must still be the operator's.
        assert not result.spec.owner, f"{account_id} is owned by a user"
    _ready.add(ctx.client)


class ProcessorUnavailable(Exception):
    """The processor did not answer in time (or could not be reached)."""


def processor(ctx: Context) -> ServiceRef:
    if not ctx.settings.card.enabled or ctx.card_processor is None:
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "this node takes no cards", "$.rail")
    return ctx.card_processor


async def call(ctx: Context, pending: Awaitable[Any]) -> Any:
    """Await a processor call within ``card.timeout_ms``; ProcessorUnavailable if not."""
    try:
        async with asyncio.timeout(ctx.settings.card.timeout_ms / 1000):
            return await pending
    except TimeoutError:
        raise ProcessorUnavailable("timeout") from None
    except Exception as e:  # the processor (a Ray call) unreachable
        raise ProcessorUnavailable(type(e).__name__) from None


def check(ctx: Context, amount: int, currency: str) -> None:
    """Refuse what the processor cannot charge, before anything is recorded."""
    processor(ctx)
    card = ctx.settings.card
    low, high = card.min_amount, card.limit
    if currency != rules.CURRENCY:
        raise p.ApiError(Code.CURRENCY_MISMATCH, "cards are charged in USD", "$.currency")
    if not rules.chargeable(amount, low, high, card.fee_fixed, card.fee_bps):
        raise p.ApiError(p.AMOUNT_OVER_RAIL_LIMIT if amount > low else p.INVALID_FIELD,
                         f"a card charge is {low} to {high} minor units", "$.amount")  # fmt: skip


def fee_of(ctx: Context, amount: int) -> int:
    return rules.fee(amount, ctx.settings.card.fee_fixed, ctx.settings.card.fee_bps)


async def attach(ctx: Context, token: str) -> rules.Card:
    """The processor's card for a token (422 for a token it does not know)."""
    try:
        raw = await call(ctx, processor(ctx).attach.remote(token))
    except ProcessorUnavailable:
        raise p.ApiError(p.CARD_PROCESSOR_UNAVAILABLE) from None
    if not raw:
        raise p.ApiError(p.INVALID_CARD_TOKEN, field="$.token")
    return decode_card(raw)


# -- the payment --------------------------------------------------------------------------


async def _current(ctx: Context, payment_id: str) -> payments.Payment:
    async with ctx.engine.connect() as conn:
        found = await payments.get(conn, payment_id)
    assert found is not None
    return found


async def execute(ctx: Context, pay: payments.Payment) -> payments.Payment:
    """Authorize, hold, capture and post a processing card payment; safe to repeat."""
    assert pay.status == "processing" and pay.rail == rules.RAIL, (pay.status, pay.rail)
    assert pay.payment_method_id is not None
    ref = rules.charge_ref(pay.id)
    async with ctx.engine.begin() as conn:
        method = await cards.get_method(conn, pay.payment_method_id)
        await cards.add_charge(conn, pay.id, ref, fee_of(ctx, pay.amount))
        await payments.register_rail(conn, [rules.fee_transfer_id(pay.id)], "fee", pay.id)
        charge = await cards.charge_of(conn, pay.id)
    assert method is not None and charge is not None
    if charge.status == "authorizing":
        try:
            raw = await call(ctx, processor(ctx).authorize.remote(
                ref, pay.id, method.processor_ref, pay.amount, pay.currency))  # fmt: skip
        except ProcessorUnavailable as e:
            log.warning("card: %s not authorized yet: %s", pay.id, e)
            return await _current(ctx, pay.id)  # processing: follow() asks again
        answer = decode_authorization(raw)
        pay = await _record_answer(ctx, pay.id, answer)
        if pay.status != "processing":
            return pay
    elif charge.status in ("declined", "voided", "requires_action"):
        return await _current(ctx, pay.id)  # decided already (a replay)
    return await _capture(ctx, pay)


async def _record_answer(
    ctx: Context, payment_id: str, answer: rules.Authorization
) -> payments.Payment:
    async with ctx.engine.begin() as conn:
        if answer.status == "approved":
            await cards.set_charge(conn, payment_id, "authorized",
                                   authorization_code=answer.authorization_code)  # fmt: skip
            pay = await payments.get(conn, payment_id)
            assert pay is not None
            return pay
        if answer.status == "requires_action":
            await cards.set_charge(conn, payment_id, "requires_action")
            return await payments.transition(conn, payment_id, "requires_action", None,
                                             {"next_action": "three_d_secure"})  # fmt: skip
        code = answer.decline_code or rules.CARD_DECLINED
        await cards.set_charge(conn, payment_id, "declined", decline_code=code)
        return await payments.transition(conn, payment_id, "failed", code)


def _hold(pay: payments.Payment) -> TransferIn:
    return TransferIn(
        id=rules.hold_transfer_id(pay.id), debit_account_id=rules.CLEARING_ACCOUNT,
        credit_account_id=pay.credit_account_id, amount=pay.amount, currency=pay.currency,
        flags=["pending"], metadata={"payment_id": pay.id},
    )  # fmt: skip


def _post_and_fee(pay: payments.Payment, fee: int) -> list[TransferIn]:
    meta = {"payment_id": pay.id}
    post = TransferIn(id=rules.post_transfer_id(pay.id), pending_id=rules.hold_transfer_id(pay.id),
                      flags=["post_pending", "linked"] if fee else ["post_pending"],
                      metadata=meta)  # fmt: skip
    if not fee:
        return [post]
    return [post, TransferIn(
        id=rules.fee_transfer_id(pay.id), debit_account_id=pay.credit_account_id,
        credit_account_id=rules.FEES_ACCOUNT, amount=fee, currency=pay.currency, metadata=meta,
    )]  # fmt: skip


async def _capture(ctx: Context, pay: payments.Payment) -> payments.Payment:
    ref = rules.charge_ref(pay.id)
    await ensure_accounts(ctx)
    (held,) = await ctx.client.transfer([_hold(pay)], None)
    if held.code in RETRYABLE:
        raise p.ApiError(held.code)  # still processing: retry with the same id
    if held.code:  # the wallet cannot take it: give the authorization back
        try:
            await call(ctx, processor(ctx).void.remote(ref))
        except ProcessorUnavailable as e:
            log.warning("card: %s not voided yet: %s", pay.id, e)
            return await _current(ctx, pay.id)
        async with ctx.engine.begin() as conn:
            await cards.set_charge(conn, pay.id, "voided")
            return await payments.transition(conn, pay.id, "failed", held.code)
    try:
        captured = await call(ctx, processor(ctx).capture.remote(ref))
    except ProcessorUnavailable as e:
        log.warning("card: %s not captured yet: %s", pay.id, e)
        return await _current(ctx, pay.id)
    if not captured:  # the processor lost the authorization: nothing was charged
        void = TransferIn(id=rules.void_transfer_id(pay.id),
                          pending_id=rules.hold_transfer_id(pay.id), flags=["void_pending"],
                          metadata={"payment_id": pay.id})  # fmt: skip
        (voided,) = await ctx.client.transfer([void], None)
        if voided.code:
            raise p.ApiError(voided.code if voided.code in RETRYABLE else p.INTERNAL)
        async with ctx.engine.begin() as conn:
            await cards.set_charge(conn, pay.id, "voided")
            return await payments.transition(conn, pay.id, "failed", "capture_failed")
    async with ctx.engine.connect() as conn:
        charge = await cards.charge_of(conn, pay.id)
    assert charge is not None
    outcomes = await ctx.client.transfer(_post_and_fee(pay, charge.fee), None)
    codes = [o.code for o in outcomes if o.code]
    if codes:
        # RETRYABLE: the ledger is busy. Anything else would be a broken invariant (the
        # hold is ours alone, and the post credits the wallet before the fee debits it).
        # Either way the payment stays processing and follow() posts it again.
        level = logging.WARNING if all(c in RETRYABLE for c in codes) else logging.ERROR
        log.log(level, "card: %s captured, not posted: %s", pay.id, codes)
        raise p.ApiError(next((c for c in codes if c in RETRYABLE), p.INTERNAL))
    async with ctx.engine.begin() as conn:
        await cards.set_charge(conn, pay.id, "captured")
        number = await cards.assign_receipt(conn, pay.id, rules.receipt_number)
        return await payments.transition(conn, pay.id, "completed", None,
                                         {"receipt_number": number})  # fmt: skip


async def confirm(
    ctx: Context, request: Request, principal: Principal, pay: payments.Payment,
    authenticated: bool,
) -> payments.Payment:  # fmt: skip
    """The cardholder finished 3-D Secure: the processor's final answer decides."""
    if pay.owner_user_id is None or not principal.owns(pay.owner_user_id):
        raise p.ApiError(p.FORBIDDEN, "only the payer confirms a payment")
    async with ctx.engine.connect() as conn:
        charge = await cards.charge_of(conn, pay.id) if pay.rail == rules.RAIL else None
    if charge is not None and pay.status == "processing" and charge.status == "authorized":
        return await execute(ctx, pay)  # a retry after a confirm that did not finish
    if charge is None or charge.status != "requires_action" or pay.status != "requires_action":
        raise p.ApiError(p.NO_CARD_ACTION_REQUIRED)
    try:
        raw = await call(ctx, processor(ctx).confirm.remote(charge.charge_ref, authenticated))
    except ProcessorUnavailable:
        raise p.ApiError(p.CARD_PROCESSOR_UNAVAILABLE) from None
    answer = decode_authorization(raw)
    async with ctx.engine.begin() as conn:
        if answer.status == "approved":
            await cards.set_charge(conn, pay.id, "authorized",
                                   authorization_code=answer.authorization_code)  # fmt: skip
            pay = await payments.transition(conn, pay.id, "processing")
        elif answer.status == "declined":
            code = answer.decline_code or rules.CARD_DECLINED
            await cards.set_charge(conn, pay.id, "declined", decline_code=code)
            pay = await payments.transition(conn, pay.id, "failed", code)
        await audit(conn, request, principal, "payment.confirm_card", pay.id,
                    after={"three_d_secure": authenticated, "status": pay.status})  # fmt: skip
    if pay.status == "processing":
        return await execute(ctx, pay)
    return pay


async def refund_at_processor(ctx: Context, pay: payments.Payment, refund: payments.Refund) -> None:
    """Give the card its money back, after the ledger took it from the wallet (a retry
    with the same refund id repeats both as replays)."""
    try:
        done = await call(ctx, processor(ctx).refund.remote(
            refund.id, rules.charge_ref(pay.id), refund.amount))  # fmt: skip
    except ProcessorUnavailable:
        raise p.ApiError(p.CARD_PROCESSOR_UNAVAILABLE,
                         "taken from the wallet; retry with the same id") from None  # fmt: skip
    if not done:  # never above the capture: reserve_refund bounds it first
        log.error("card: processor refused refund %s of %s", refund.id, pay.id)
        raise p.ApiError(p.INTERNAL)
    async with ctx.engine.begin() as conn:
        await cards.add_refund(conn, refund.id, pay.id, refund.amount)


# -- settlement ---------------------------------------------------------------------------


def _settlement_transfers(batch_id: str, r: rules.Reconciled) -> list[TransferIn]:
    """The processor paid out ``net`` (captures - refunds - its fees) and kept its fees
    (the payees paid them into the fee account): both leave the clearing account, so a
    settled charge no longer counts in its balance. Linked: both or neither."""
    net_id, fee_id = rules.settlement_transfer_ids(batch_id)
    moves = []
    net = r.net
    if net:
        debit, credit = ((rules.SETTLED_ACCOUNT, rules.CLEARING_ACCOUNT) if net > 0
                         else (rules.CLEARING_ACCOUNT, rules.SETTLED_ACCOUNT))  # fmt: skip
        moves.append((net_id, debit, credit, abs(net)))
    if r.fees:
        moves.append((fee_id, rules.FEES_ACCOUNT, rules.CLEARING_ACCOUNT, r.fees))
    return [
        TransferIn(id=i, debit_account_id=d, credit_account_id=c, amount=a,
                   currency=rules.CURRENCY, flags=["linked"] if n < len(moves) - 1 else [],
                   metadata={"settlement_id": batch_id})
        for n, (i, d, c, a) in enumerate(moves)
    ]  # fmt: skip


async def settle(ctx: Context, batch: rules.Settlement) -> None:
    """Reconcile a settlement batch with our records, move it on the ledger, record it.
    A batch delivered twice changes nothing the second time."""
    charge_refs = [x.ref for x in batch.lines if x.kind == "charge"]
    refund_ids = [x.ref for x in batch.lines if x.kind == "refund"]
    async with ctx.engine.begin() as conn:
        if await cards.get_settlement(conn, batch.id) is not None:
            return
        ours = await cards.expected_lines(conn, charge_refs, refund_ids)
        reconciled = rules.reconcile(batch, ours)
        moves = _settlement_transfers(batch.id, reconciled)
        await payments.register_rail(conn, [t.id for t in moves], rules.RAIL, None)
    if moves:
        await ensure_accounts(ctx)
    outcomes = await ctx.client.transfer(moves, None) if moves else []
    codes = [o.code for o in outcomes if o.code]
    if codes:  # the processor delivers again (a webhook not handled is retried)
        log.warning("card: settlement %s not moved: %s", batch.id, codes)
        raise p.ApiError(next((c for c in codes if c in RETRYABLE), p.INTERNAL))
    async with ctx.engine.begin() as conn:
        await cards.add_settlement(conn, batch.id, reconciled, len(batch.lines), charge_refs,
                                   refund_ids)  # fmt: skip
    if reconciled.differences:
        log.warning("card: settlement %s has %d differences", batch.id,
                    len(reconciled.differences))  # fmt: skip


# -- recovery -----------------------------------------------------------------------------


async def recover(ctx: Context) -> int:
    """One pass: finish card payments processing past the timeout; how many."""
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=ctx.settings.card.timeout_ms)
    async with ctx.engine.connect() as conn:
        stuck = await payments.stuck_processing(conn, rules.RAIL, before, RECOVER_BATCH)
    for pay in stuck:
        try:
            await execute(ctx, pay)
        except p.ApiError as e:  # the ledger busy: the next pass
            log.info("card: %s left for the next pass: %s", pay.id, e.code)
    return len(stuck)


async def follow(ctx: Context) -> None:
    """Run ``recover`` every ``card.recover_interval_ms`` for as long as the front runs."""
    await every(ctx.settings.card.recover_interval_ms, lambda: recover(ctx), log,
                "card: recovery pass")  # fmt: skip


async def own_method(ctx: Context, principal: Principal, method_id: str) -> cards.PaymentMethod:
    """A card of this principal's (someone else's, or a detached one, does not exist: 404)."""
    async with ctx.engine.connect() as conn:
        found = await cards.get_method(conn, method_id) if len(method_id) <= 64 else None
    if found is None or found.status != "active" or not principal.owns(found.owner_user_id):
        raise p.ApiError(p.PAYMENT_METHOD_NOT_FOUND)
    return found


async def own_bank_method(ctx: Context, principal: Principal, bank_id: str) -> ach.BankAccount:
    """A verified bank account of this principal's, as a payment method (else 404)."""
    async with ctx.engine.connect() as conn:
        found = await ach.get_bank_account(conn, bank_id) if len(bank_id) <= 64 else None
    if (found is None or found.status != "verified"
            or not principal.owns(found.owner_user_id or "")):  # fmt: skip
        raise p.ApiError(p.PAYMENT_METHOD_NOT_FOUND)
    return found
