"""The risk gate in front of every user payment: screening, limits, score, what happens next.

Order, for a payment a user initiates (operator credentials are not gated):

1. In the transaction that records the payment, :func:`decide` counts the
   payment toward the user's usage and reads their standing in one statement
   (which locks the user's usage row), with the stored screening results of
   the payer, the payee's owner and the bank account holder. A party not yet
   screened against this list is screened now (a call to the risk actor only
   then). A payment over a limit is refused (422, nothing written); otherwise
   it is scored with the pure rules. A sanctions match holds the payment for
   review; otherwise HIGH asks for a one-time code; otherwise it proceeds.
2. :func:`after_create` opens the review or the code challenge in that same
   transaction, so neither exists without its payment nor the other way round.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.actors.risk.actor import decode_screened
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.context import Context
from paynode.api.metrics import RiskStats
from paynode.api.schemas import TransferIn
from paynode.domain.ledger.plan import TransferResult
from paynode.domain.rails import fx as fx_rules
from paynode.domain.risk import limits, otp, rules
from paynode.storage import ach, code_sends, identity, payments
from paynode.storage import fx as fx_store
from paynode.storage import risk as store
from paynode.storage.events import STEP_UP_EVENT
from paynode.storage.payments import Payment

log = logging.getLogger("paynode.risk")

_LIMIT_CODES = {
    limits.PER_TRANSACTION: p.LIMIT_PER_TRANSACTION,
    limits.DAILY: p.LIMIT_DAILY,
    limits.MONTHLY: p.LIMIT_MONTHLY,
}


class Hit(msgspec.Struct, frozen=True):
    party: str  # payer | payee | bank_account
    matches: list[dict]  # the listed entries (public list data), never the screened name


def _match_list(screened) -> list[dict]:
    return [
        {"ent_num": m.ent_num, "listed_name": m.listed_name, "matched_name": m.matched_name,
         "score": round(m.score, 4), "program": m.program}
        for m in screened.matches
    ]  # fmt: skip


async def _screen(ctx: Context, name: str | None) -> list[dict]:
    if not name:
        return []
    (screened,) = decode_screened(await ctx.risk.screen.remote([name]))
    return _match_list(screened)


async def screen_row(
    ctx: Context, conn: AsyncConnection, table: str, row_id: str, name: str | None = None
) -> list[dict]:
    """Screen a user's or a bank account holder's name now and store the result in
    ``conn``'s transaction; a user's match also opens a review of the user."""
    if name is None and table == "users":
        user = await identity.get_user(conn, ctx.keys, row_id)
        name = user.profile.name if user else None
    elif name is None:
        name = (await ach.details(conn, ctx.keys, row_id)).holder_name
    matches = await _screen(ctx, name)
    await store.set_screening(conn, table, row_id, bool(matches), ctx.policy.list_version)
    if matches and table == "users":
        await store.open_review(conn, "user", row_id, row_id, "sanctions_match", matches)
    return matches


async def screen_user(ctx: Context, user_id: str) -> list[dict]:
    """Screen a user now (at every KYC submission), whatever was stored before."""
    async with ctx.engine.begin() as conn:
        return await screen_row(ctx, conn, "users", user_id)


async def screen_bank_holder(ctx: Context, bank_id: str, holder: str) -> list[dict]:
    """Screen a bank account's holder (at link time, when the name is at hand)."""
    async with ctx.engine.begin() as conn:
        return await screen_row(ctx, conn, "bank_accounts", bank_id, holder)


async def _hits(
    ctx: Context, conn: AsyncConnection, f: store.Features, payer: str,
    payee_owner: str | None, bank_id: str | None,
) -> list[Hit]:  # fmt: skip
    """Parties matching the list. The stored results came with the usage statement; a
    party not screened against this list (or a stored match, to name its entries) is
    screened now, which costs a call to the risk actor only then."""
    parties = [("payer", "users", payer, f.sanctions_hit)]
    if payee_owner and payee_owner != payer:
        parties.append(("payee", "users", payee_owner, f.payee_hit))
    if bank_id:
        parties.append(("bank_account", "bank_accounts", bank_id, f.bank_hit))
    hits = []
    for party, table, row_id, stored in parties:
        if stored is not False and (matches := await screen_row(ctx, conn, table, row_id)):
            hits.append(Hit(party, matches))
    return hits


async def in_limits_currency(
    conn: AsyncConnection, amount: int, currency: str, target: str
) -> int | None:
    """``amount`` in minor units of the limits' currency: as is, or converted at the
    pair's mid rate (rounded up); None when no rate sizes it (the score's
    ``currency_unrated`` rule covers that payment instead)."""
    if currency == target:
        return amount
    if amount <= 0 or currency not in fx_rules.EXPONENTS or target not in fx_rules.EXPONENTS:
        return None
    found = await fx_store.rate_for(conn, currency, target)
    if found is None:
        return None
    rate, inverse = found
    return fx_rules.value_in(amount, currency, target, fx_rules.cross(rate.rate_e9, inverse))


def _limit_error(refusal: limits.Refusal, currency: str, field: str) -> p.ApiError:
    detail = f"limit {refusal.limit}, remaining {refusal.remaining} {currency} minor units"
    return p.ApiError(_LIMIT_CODES[refusal.code], detail, field)


def gated(principal: Principal) -> bool:
    """User payments are gated; an operator's (admin key, no user) are not."""
    return principal.user_id is not None and not principal.admin


async def decide(
    ctx: Context,
    conn: AsyncConnection,
    principal: Principal,
    wanted: Payment,
    payee_owner: str | None,
    stats: RiskStats,
) -> tuple[Payment, list[Hit]]:
    """``wanted`` with its decision and next status; raises a 422 over a limit.

    Run in the transaction that records the payment: the usage it counts is then
    committed with the payment, or rolled back with it.
    """
    t0 = time.perf_counter()
    user = principal.user_id
    assert user is not None
    policy = ctx.policy
    limit_ccy = policy.limits.currency
    sized = await in_limits_currency(conn, wanted.amount, wanted.currency, limit_ccy)
    counted = sized or 0
    now = dt.datetime.now(dt.UTC)
    f = await store.take_usage(
        conn, user, amount=counted, session_id=principal.session_id,
        payee_account=wanted.bank_account_id or wanted.credit_account_id,
        payee_owner=payee_owner, bank_id=wanted.bank_account_id,
        list_version=policy.list_version, now=now,
    )  # fmt: skip
    if f is None:
        raise p.ApiError(p.USER_NOT_FOUND)
    hits = await _hits(ctx, conn, f, user, payee_owner, wanted.bank_account_id)
    usage = limits.Usage(f.amount_today, f.amount_month)
    refusal = limits.check(sized, limit_ccy, f.kyc_status, usage, policy.limits) if sized else None
    if refusal is not None:  # the caller's transaction rolls back: nothing was counted
        raise _limit_error(refusal, limit_ccy, "$.amount")
    t1 = time.perf_counter()
    decision = rules.score(
        rules.RiskInput(
            # In the limits' currency when a rate sizes it: then the amount rules apply.
            amount=sized or wanted.amount, currency=limit_ccy if sized else wanted.currency,
            payments_today=f.payments_today,
            amount_today=f.amount_today, sanctions_hit=bool(hits), kyc_status=f.kyc_status,
            new_payee=not f.paid_payee_before,
            # A device is new when the user has paid before, but never from this session.
            new_device=f.paid_before and not f.paid_from_session,
        ),
        policy.rules,
    )  # fmt: skip
    stats.score_seconds.append(time.perf_counter() - t1)
    status, failure = "processing", None
    if hits:
        status = "in_review"
    elif decision.level == "HIGH":
        # Every user can get a code: push, SMS or at least email (registration needs one).
        status = "requires_action"
    stats.seconds.append(time.perf_counter() - t0)
    stats.decisions[status] += 1
    decided = msgspec.structs.replace(
        wanted, status=status, failure_code=failure, session_id=principal.session_id,
        usage_amount=counted, risk_score=decision.score, risk_level=decision.level,
        risk_reasons=msgspec.json.encode(decision.reasons).decode(),
    )  # fmt: skip
    return decided, hits


async def after_create(ctx: Context, conn: AsyncConnection, pay: Payment, hits: list[Hit]) -> None:
    """The review or the code challenge of a newly recorded payment (same transaction)."""
    if pay.status == "in_review":
        matches = [{"party": h.party, **m} for h in hits for m in h.matches]
        review = await store.open_review(conn, "payment", pay.id, pay.owner_user_id,
                                         "sanctions_match", matches)  # fmt: skip
        await payments.emit(conn, "payment.in_review", pay, {"review_id": review.id})
    elif pay.status == "requires_action":
        ch = otp.new_challenge(time.time())
        await store.store_challenge(conn, ctx.keys, pay.id, ch)
        # Neither the event nor the queued send carries the code: the notifier derives it
        # from the sealed secret when it sends (actors/notify/codes.py), so the code
        # exists only in the message to the user.
        await code_sends.queue(conn, pay.id, 0)
        expires = dt.datetime.fromtimestamp(ch.issued_at + ctx.settings.otp.max_age_s, dt.UTC)
        await payments.emit(conn, STEP_UP_EVENT, pay, {"expires_at": expires.isoformat()})


async def code_queued(ctx: Context) -> None:
    """Tell the notifier a code is waiting (after the commit); its own poll finds it anyway
    within a second if this call is lost."""
    try:
        await ctx.notifier.wake_codes.remote()
    except Exception as e:  # the send is committed: the poll picks it up
        log.warning("notifier wake failed: %s", type(e).__name__)


# -- transfers a user makes directly ------------------------------------------------------


class Counted(msgspec.Struct, frozen=True):
    """What a user's transfer request counted toward their limits."""

    amounts: dict[str, int]  # transfer id -> minor units counted (limits' currency)
    count: int
    at: dt.datetime


def _new_sends(transfers: list[TransferIn]) -> list[TransferIn]:
    """The transfers that send money (plain or pending); posts and voids settle a pending
    that was counted when it was made."""
    return [t for t in transfers if not {"post_pending", "void_pending"} & set(t.flags)]


async def take_transfer_usage(
    ctx: Context, principal: Principal, transfers: list[TransferIn]
) -> Counted | None:
    """Count a user's transfer request toward their limits, or refuse it (422) whole.

    Transfers are the ledger's primitive, not payments: they get the limits but not
    the score or a step-up (those need the payment's states); ``POST /v1/payments`` is
    the path for paying people. Counted before the ledger call, so a crash in between
    over-counts (never under-counts) until the day or month turns.
    """
    user = principal.user_id
    assert user is not None
    sends = _new_sends(transfers)
    if not sends:
        return None
    cur = ctx.policy.limits.currency
    now = dt.datetime.now(dt.UTC)
    async with ctx.engine.begin() as conn:
        amounts = {t.id: await in_limits_currency(conn, t.amount or 0, t.currency or "", cur) or 0
                   for t in sends}  # fmt: skip
        f = await store.take_usage(
            conn, user, amount=sum(amounts.values()), session_id=principal.session_id,
            payee_account=sends[0].credit_account_id or "", list_version=ctx.policy.list_version,
            now=now, count=len(sends),
        )  # fmt: skip
        if f is None:
            raise p.ApiError(p.USER_NOT_FOUND)
        usage = limits.Usage(f.amount_today, f.amount_month)
        counted = [a for a in amounts.values() if a > 0]
        refusal = limits.check_many(counted, f.kyc_status, usage, ctx.policy.limits)
        if refusal is not None:
            raise _limit_error(refusal, cur, "$.amount")
    return Counted(amounts, len(sends), now)


async def release_unmoved(
    ctx: Context, principal: Principal, counted: Counted, outcomes: Sequence[TransferResult] | None
) -> None:
    """Give back what refused or replayed transfers counted (they moved nothing now);
    ``outcomes`` None: the whole request was refused."""
    if outcomes is None:
        unmoved = list(counted.amounts)
    else:
        unmoved = [o.id for o in outcomes if o.id in counted.amounts and (o.code or o.replayed)]
    if not unmoved or principal.user_id is None:
        return
    async with ctx.engine.begin() as conn:
        await store.release_usage(conn, principal.user_id,
                                  sum(counted.amounts[i] for i in unmoved), counted.at,
                                  len(unmoved))  # fmt: skip
