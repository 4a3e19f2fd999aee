"""Card disputes: what the processor's dispute events do, and the merchant's answers.

Opened (``charge.dispute.created``): the disputed amount is held out of the credited
wallet (a pending transfer to ``card-disputes-usd``, ``domain/rails/disputes.py``),
then the dispute is recorded with a ``charge.dispute.created`` event. Decided
(``charge.dispute.closed``): won voids the hold, lost posts it (or, when the wallet
could not be held, takes back what it can and records the rest as unrecovered). The
ledger moves first, with ids derived from the dispute, so a webhook delivered twice,
or retried after a crash, is a replay.
"""

from __future__ import annotations

import logging
from typing import Literal

from paynode.api import card_service
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.context import Context
from paynode.api.notify_schemas import InboundEvent
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.model import RETRYABLE, Code
from paynode.domain.rails import disputes as rules
from paynode.storage import disputes, payments

log = logging.getLogger("paynode.disputes")


def _field(event: InboundEvent, name: str, kind: type) -> object:
    value = event.data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, f"data.{name}")
    return value


async def _ledger(ctx: Context, moves: list[TransferIn]) -> list[str]:
    """Submit ``moves``; their refusal codes. A busy ledger fails the webhook (503): the
    processor delivers it again, and the same ids replay."""
    await card_service.ensure_accounts(ctx)
    outcomes = await ctx.client.transfer(moves, None)
    codes = [o.code for o in outcomes if o.code]
    if any(c in RETRYABLE for c in codes):
        raise p.ApiError(next(c for c in codes if c in RETRYABLE))
    return codes


async def opened(ctx: Context, event: InboundEvent) -> str:
    dispute_id = str(_field(event, "dispute", str))[:64]
    payment_id = str(_field(event, "payment_id", str))[:64]
    amount = _field(event, "amount", int)
    reason = str(event.data.get("reason") or "general")[:64]
    async with ctx.engine.connect() as conn:
        pay = await payments.get(conn, payment_id)
        known = await disputes.get(conn, dispute_id)
    if known is not None:
        return "charge.dispute"  # delivered again
    if pay is None or pay.rail != "card" or not isinstance(amount, int) or amount <= 0:
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, "not a dispute of one of our card payments")
    amount = min(amount, pay.amount)
    hold = TransferIn(
        id=rules.hold_transfer_id(dispute_id), debit_account_id=pay.credit_account_id,
        credit_account_id=rules.DISPUTES_ACCOUNT, amount=amount, currency=pay.currency,
        flags=["pending"], metadata={"payment_id": pay.id, "dispute_id": dispute_id},
    )  # fmt: skip
    codes = await _ledger(ctx, [hold])
    if codes:  # spent already: the processor took it anyway; we record what we could not hold
        log.warning("dispute %s: the wallet could not be held (%s)", dispute_id, codes[0])
    owner = (await ctx.client.resolve({pay.credit_account_id})).get(pay.credit_account_id)
    async with ctx.engine.begin() as conn:
        await payments.register_rail(conn, [hold.id], "card", pay.id)
        await disputes.add(conn, {
            "id": dispute_id, "payment_id": pay.id,
            "owner_user_id": (owner.owner or None) if owner else None,
            "account_id": pay.credit_account_id, "amount": amount, "currency": pay.currency,
            "reason": reason, "held": not codes,
        })  # fmt: skip
    return "charge.dispute"


async def closed(ctx: Context, event: InboundEvent) -> str:
    dispute_id = str(_field(event, "dispute", str))[:64]
    status = _field(event, "status", str)
    if status not in ("won", "lost"):
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, "data.status")
    async with ctx.engine.connect() as conn:
        d = await disputes.get(conn, dispute_id)
    if d is None:
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, "unknown dispute")  # redelivered later
    if d.status in ("won", "lost"):
        return "charge.dispute"
    unrecovered = 0
    if d.held:
        won = status == "won"
        flag: Literal["void_pending", "post_pending"] = "void_pending" if won else "post_pending"
        resolve = TransferIn(
            id=rules.release_transfer_id(d.id) if won else rules.settle_transfer_id(d.id),
            pending_id=rules.hold_transfer_id(d.id), flags=[flag],
            metadata={"dispute_id": d.id},
        )  # fmt: skip
        codes = await _ledger(ctx, [resolve])
        assert not codes, f"dispute {d.id}: its own hold refused {flag}: {codes}"
    elif status == "lost":
        back = TransferIn(
            id=rules.settle_transfer_id(d.id), debit_account_id=d.account_id,
            credit_account_id=rules.DISPUTES_ACCOUNT, amount=d.amount, currency=d.currency,
            metadata={"dispute_id": d.id},
        )  # fmt: skip
        if await _ledger(ctx, [back]):
            unrecovered = d.amount  # the wallet cannot pay it: an operator must
            log.error("dispute %s lost: %d minor units unrecovered", d.id, d.amount)
    async with ctx.engine.begin() as conn:
        await disputes.move(conn, d.id, status, unrecovered)
    return "charge.dispute"


async def own(ctx: Context, principal: Principal, dispute_id: str) -> disputes.Dispute:
    """The dispute, if it is this merchant's (someone else's does not exist: 404)."""
    async with ctx.engine.connect() as conn:
        d = await disputes.get(conn, dispute_id) if len(dispute_id) <= 64 else None
    if d is None or not principal.owns(d.owner_user_id or ""):
        raise p.ApiError(p.DISPUTE_NOT_FOUND)
    return d


async def answer(
    ctx: Context, principal: Principal, dispute_id: str, evidence: str | None
) -> disputes.Dispute:
    """The merchant's evidence (``evidence``) or acceptance (None) goes to the processor;
    the dispute is under review (or lost at once when accepted)."""
    d = await own(ctx, principal, dispute_id)
    if d.status not in rules.OPEN:
        raise p.ApiError(p.DISPUTE_CLOSED, f"the dispute was {d.status}")
    if d.status == "under_review":
        raise p.ApiError(p.DISPUTE_CLOSED, "evidence was submitted already")
    processor = card_service.processor(ctx)
    try:
        if evidence is None:
            sent = await card_service.call(ctx, processor.accept_dispute.remote(d.id))
        else:
            sent = await card_service.call(ctx, processor.submit_evidence.remote(d.id, evidence))
    except card_service.ProcessorUnavailable:
        raise p.ApiError(Code.STORAGE_UNAVAILABLE, "the card processor did not answer") from None
    if not sent:
        raise p.ApiError(p.DISPUTE_NOT_FOUND, "the processor does not know this dispute")
    async with ctx.engine.begin() as conn:
        if evidence is not None:
            await disputes.keep_evidence(conn, ctx.keys, d.id, evidence)
        return await disputes.move(conn, d.id, "under_review")
