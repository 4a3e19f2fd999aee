"""Instant payments on RTP: route, hold, send a pacs.008, apply the network's pacs.002.

A payment on RTP moves in three durable steps, each safe to repeat:

1. **Hold** (``execute``): two linked pending transfers, the amount to the RTP
   clearing account and the fee to the fee account (``domain/rails/rtp_rules.py``),
   with ids derived from the payment; then the payment is ``pending`` and its
   exchange recorded (``storage/rtp.py``) in one transaction.
2. **Send**: the pacs.008 goes to the network, and the call waits up to
   ``rtp.timeout_ms`` for its pacs.002.
3. **Apply** the answer: ``ACSC`` posts both holds, ``RJCT`` voids both; then
   the exchange and the payment (``completed`` or ``failed``) in one transaction.

An answer that does not come in time leaves the payment ``pending``: every
front's ``follow`` loop asks the network about exchanges unanswered past the
timeout (a network that never got the message is sent it again; the same
``EndToEndId`` is the same payment to it), and finishes ``processing`` RTP
payments whose maker died between the payment's row and its hold. The
network is open 24x7: nothing here waits for a banking day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Literal

from paynode.api import problems as p
from paynode.api.context import Context
from paynode.api.periodic import every
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE, Code
from paynode.domain.rails import iso20022 as iso
from paynode.domain.rails import rtp_rules as rules
from paynode.storage import payments, rtp

log = logging.getLogger("paynode.rtp")

RECOVER_BATCH = 100  # exchanges one pass asks about


def our_routing(ctx: Context) -> str:
    return ctx.settings.rtp.routing or ctx.settings.ach.odfi_routing


def check(ctx: Context, amount: int, currency: str, routing: str, field: str) -> None:
    """Refuse what RTP cannot carry, before anything is recorded."""
    if not ctx.settings.rtp.enabled or ctx.rtp_network is None:
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "this node is not connected to RTP", "$.rail")
    if routing not in ctx.rtp_participants:
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "the receiving bank is not on the RTP network",
                         field)  # fmt: skip
    if currency != rules.CURRENCY:
        raise p.ApiError(Code.CURRENCY_MISMATCH, "RTP moves USD", "$.currency")
    if not rules.within_limit(amount, ctx.settings.rtp.limit):
        raise p.ApiError(p.AMOUNT_OVER_RAIL_LIMIT,
                         f"RTP takes at most {ctx.settings.rtp.limit} minor units per payment",
                         "$.amount")  # fmt: skip


def fee_of(ctx: Context, amount: int) -> int:
    return rules.fee(amount, ctx.settings.rtp.fee_fixed, ctx.settings.rtp.fee_bps)


# -- 1. hold ------------------------------------------------------------------------------


def _holds(pay: payments.Payment) -> list[TransferIn]:
    meta = {"payment_id": pay.id}
    hold = TransferIn(
        id=rules.hold_transfer_id(pay.id), debit_account_id=pay.debit_account_id,
        credit_account_id=rules.CLEARING_ACCOUNT, amount=pay.amount, currency=pay.currency,
        flags=["pending", "linked"] if pay.fee else ["pending"], metadata=meta,
    )  # fmt: skip
    if not pay.fee:
        return [hold]
    fee = TransferIn(
        id=rules.fee_transfer_id(pay.id), debit_account_id=pay.debit_account_id,
        credit_account_id=rules.FEES_ACCOUNT, amount=pay.fee, currency=pay.currency,
        flags=["pending"], metadata=meta,
    )  # fmt: skip
    return [hold, fee]


def _resolutions(pay: payments.Payment, accept: bool) -> list[TransferIn]:
    """Post (accepted) or void (rejected) both holds, linked: both or neither."""
    ids = rules.post_transfer_ids(pay.id) if accept else rules.void_transfer_ids(pay.id)
    flag: Literal["post_pending", "void_pending"] = "post_pending" if accept else "void_pending"
    pendings = (rules.hold_transfer_id(pay.id), rules.fee_transfer_id(pay.id))
    n = 2 if pay.fee else 1
    meta = {"payment_id": pay.id}
    last = n - 1
    return [
        TransferIn(
            id=ids[i],
            pending_id=pendings[i],
            flags=[flag] if i == last else [flag, "linked"],
            metadata=meta,
        )
        for i in range(n)
    ]


async def execute(
    ctx: Context, pay: payments.Payment, request_id: str | None = None
) -> payments.Payment:
    """Hold, send and (if the network answers in time) finish a processing RTP payment."""
    assert pay.status == "processing" and pay.rail == rules.RAIL, (pay.status, pay.rail)
    outcomes = await ctx.client.transfer(_holds(pay), None)
    codes = [o.code for o in outcomes if o.code]
    if any(c in RETRYABLE for c in codes):
        raise p.ApiError(next(c for c in codes if c in RETRYABLE))  # retry with the same id
    async with ctx.engine.begin() as conn:
        if codes:  # e.g. the wallet cannot cover amount and fee: nothing is held
            first = next(c for c in codes if c != Code.LINKED_EVENT_FAILED)
            return await payments.transition(conn, pay.id, "failed", first)
        await rtp.add_transfer(conn, pay.id, rules.end_to_end_id(pay.id),
                               rules.message_id(pay.id), pay.bank_account_id,
                               request_id)  # fmt: skip
        pay = await payments.transition(conn, pay.id, "pending")
    return await send(ctx, pay)


# -- 2. send ------------------------------------------------------------------------------


async def _message(ctx: Context, pay: payments.Payment, t: rtp.RtpTransfer) -> str:
    async with ctx.engine.connect() as conn:
        creditor = await rtp.creditor(conn, ctx.keys, t)
    # The debtor is the wallet at our bank; its holder's name stays with us (the node
    # originates as the account-holding institution).
    debtor = iso.Party(ctx.settings.ach.company_name, pay.debit_account_id, our_routing(ctx))
    return iso.build_credit_transfer(iso.CreditTransfer(
        message_id=t.message_id, end_to_end_id=t.end_to_end_id, amount=pay.amount,
        currency=pay.currency, debtor=debtor, creditor=creditor, remittance=pay.memo,
        created_at=dt.datetime.now(dt.UTC),
    ))  # fmt: skip


async def send(ctx: Context, pay: payments.Payment) -> payments.Payment:
    """Hand the pacs.008 to the network and apply its answer if it comes in time; else
    the payment stays pending for ``follow`` to finish."""
    assert ctx.rtp_network is not None
    async with ctx.engine.connect() as conn:
        t = await rtp.transfer_of(conn, pay.id)
    assert t is not None, "the exchange is recorded before the message is sent"
    if t.status != "sending":
        return await _current(ctx, pay.id)
    text = await _message(ctx, pay, t)
    try:
        async with asyncio.timeout(ctx.settings.rtp.timeout_ms / 1000):
            answer = await ctx.rtp_network.submit.remote(text)
    except TimeoutError:
        log.warning("rtp: %s unanswered within %d ms", pay.id, ctx.settings.rtp.timeout_ms)
        return await _current(ctx, pay.id)
    except Exception as e:  # the network is unreachable: follow() sends it again
        log.warning("rtp: %s not sent: %s", pay.id, type(e).__name__)
        return await _current(ctx, pay.id)
    return await apply(ctx, pay.id, iso.parse_transfer_status(answer))


async def _current(ctx: Context, payment_id: str) -> payments.Payment:
    async with ctx.engine.connect() as conn:
        found = await payments.get(conn, payment_id)
    assert found is not None
    return found


# -- 3. apply -----------------------------------------------------------------------------


async def apply(ctx: Context, payment_id: str, answer: iso.TransferStatus) -> payments.Payment:
    """Move the holds as the pacs.002 says, then record it; a repeat is a replay."""
    pay = await _current(ctx, payment_id)
    if answer.status not in (iso.ACCEPTED_SETTLED, iso.REJECTED):
        return pay  # PDNG: the receiving bank has not decided yet
    accept = answer.status == iso.ACCEPTED_SETTLED
    outcomes = await ctx.client.transfer(_resolutions(pay, accept), None)
    codes = [o.code for o in outcomes if o.code]
    if codes:
        # RETRYABLE: the ledger is busy; anything else would be a broken invariant (the
        # holds are ours alone). Either way the exchange stays unanswered and is retried.
        level = logging.WARNING if all(c in RETRYABLE for c in codes) else logging.ERROR
        log.log(level, "rtp: %s answer %s not applied: %s", pay.id, answer.status, codes)
        return pay
    async with ctx.engine.begin() as conn:
        t = await rtp.transfer_of(conn, pay.id)
        await rtp.answer(conn, pay.id, "accepted" if accept else "rejected", answer.reason)
        extra = {"rtp": {"end_to_end_id": answer.original_end_to_end_id,
                         "status": answer.status, "reason": answer.reason}}  # fmt: skip
        if accept:
            return await payments.transition(conn, pay.id, "completed", extra=extra)
        if t is not None and t.request_id is not None:
            await rtp.reopen_request(conn, t.request_id, pay.id)
        return await payments.transition(conn, pay.id, "failed", "rtp_rejected", extra=extra)


# -- recovery -----------------------------------------------------------------------------


async def recover(ctx: Context) -> int:
    """One pass: finish what a crash or a slow network left; how many were looked at."""
    assert ctx.rtp_network is not None
    timeout = dt.timedelta(milliseconds=ctx.settings.rtp.timeout_ms)
    now = dt.datetime.now(dt.UTC)
    async with ctx.engine.begin() as conn:
        claimed = await rtp.claim_unanswered(conn, now - timeout, RECOVER_BATCH)
        stuck = await payments.stuck_processing(conn, rules.RAIL, now - timeout, RECOVER_BATCH)
        paying = {pay.id: await rtp.request_paid_by(conn, pay.id) for pay in stuck}
    for pay in stuck:  # its hold may or may not exist: execute makes it, or replays it
        await execute(ctx, pay, paying[pay.id])
    for t in claimed:
        answer = await ctx.rtp_network.status.remote(t.end_to_end_id)
        if answer:
            await apply(ctx, t.payment_id, iso.parse_transfer_status(answer))
        else:  # the network never got it: the same message again
            await send(ctx, await _current(ctx, t.payment_id))
    return len(claimed) + len(stuck)


async def follow(ctx: Context) -> None:
    """Run ``recover`` every ``rtp.recover_interval_ms`` for as long as the front runs
    (a failed pass loses nothing: the next claims the same exchanges again)."""
    await every(ctx.settings.rtp.recover_interval_ms, lambda: recover(ctx), log,
                "rtp: recovery pass")  # fmt: skip


# -- requests for payment -----------------------------------------------------------------


async def answer_request(ctx: Context, req: rtp.Request, accepted: bool) -> None:
    """Tell the creditor (pain.014): accepted (the payment follows) or declined by the
    payer. Best effort: the creditor learns of an accept from the payment itself."""
    if ctx.rtp_network is None:
        return
    text = iso.build_request_status(iso.RequestStatus(
        message_id=rules.message_id(f"rfp-answer:{req.id}"),
        original_message_id=req.message_id, original_end_to_end_id=req.end_to_end_id,
        status=iso.ACCEPTED_TECHNICAL if accepted else iso.REJECTED,
        reason=None if accepted else "CUST", created_at=dt.datetime.now(dt.UTC),
    ))  # fmt: skip
    try:
        await ctx.rtp_network.respond.remote(text)
    except Exception as e:  # the network unreachable: the request's state is ours anyway
        log.warning("rtp: answer to request %s not delivered: %s", req.id, type(e).__name__)
