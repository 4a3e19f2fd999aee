"""Billing on the ledger: storing what the rules decide, collecting invoices, the scheduler.

A pass (``run_due``, from every front's loop and from a test clock's advance):

1. **Claim** (one transaction): subscriptions with an event due by their clock's
   now (``domain/billing/clocks.next_due``), row-locked with SKIP LOCKED. Each
   one's event is applied (``subscriptions.apply``) and its result stored: the
   subscription, the invoice it creates (derived id: a replay creates nothing),
   events. An invoice to collect gets its attempt recorded as ``in_flight`` and
   the subscription's ``collecting`` names it, in the same transaction.
2. **Move** (one batch to the ledger): each attempt's transfer customer wallet ->
   merchant wallet, id ``bill:<invoice>:<attempt>``.
3. **Record** (one transaction): paid, or refused -> the failure applied
   (``past_due`` and dunning). A ledger answer that is not final leaves the
   attempt in flight: the next pass moves the same transfer id again.

A crash anywhere repeats the same transfer ids: the ledger answers a replay, so no
invoice is paid twice and none is missed. Attempt numbers count the invoice's
recorded attempts (manual retries included), so every transfer id is fresh.

``collect`` moves each attempt by its subscription's payment source:

- ``wallet``: a ledger transfer ``bill:<invoice>:<attempt>``, customer wallet ->
  merchant wallet, all of a pass's in one batch.
- ``card``: a card payment of that same id (``api/card_service.py``: authorize at the
  processor, hold ``card-clearing-usd`` -> merchant wallet, capture, post with the
  processor's fee, a receipt), a few at a time. A decline is a failed attempt (its code
  on the invoice, dunning as for an empty wallet); 3-D Secure cannot be done off-session,
  so a card that asks for it fails the attempt with ``authentication_required``; a
  processor that does not answer in time leaves the attempt in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import msgspec
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paynode.api import card_service
from paynode.api import problems as p
from paynode.api.batcher import Overloaded
from paynode.api.context import Context
from paynode.api.ledger_client import LedgerClient, ShardLost, Unavailable
from paynode.api.schemas import TransferIn
from paynode.domain.billing import clocks as ck
from paynode.domain.billing import dunning as dn
from paynode.domain.billing import invoices as inv
from paynode.domain.billing import subscriptions as subs
from paynode.domain.billing.errors import BillingError
from paynode.domain.ledger.model import RETRYABLE, Code
from paynode.domain.rails import card_rules
from paynode.storage import billing as store
from paynode.storage import cards, payments

log = logging.getLogger("paynode.billing")
SOURCE_KINDS = frozenset({"wallet", "card"})  # how a subscription pays
CARD_CONCURRENCY = 8  # card attempts a pass has at the processor at once
PAID_CODES = frozenset({Code.OK, Code.EXISTS})  # applied now, or a replay of the same


class Attempt(msgspec.Struct, kw_only=True):
    """One collection attempt to move: the invoice, its attempt number and the parties."""

    subscription_id: str
    invoice_id: str
    attempt: int
    customer_user_id: str
    source_kind: str
    source_account_id: str  # the wallet account debited, or the card payment method charged
    merchant_account_id: str
    amount: int
    currency: str

    @property
    def transfer_id(self) -> str:
        """The wallet's transfer, or the card payment's id: the attempt's outcome key."""
        return inv.payment_transfer_id(self.invoice_id, self.attempt)

    @property
    def paid_by(self) -> str:
        """The ledger transfer that credits the merchant when the attempt succeeds."""
        if self.source_kind == "card":
            return card_rules.post_transfer_id(self.transfer_id)
        return self.transfer_id


def invoice_data(i: store.Invoice) -> dict[str, Any]:
    return {"id": i.id, "number": i.number, "subscription": i.subscription_id,
            "status": i.status, "total": i.total, "amount_due": i.amount_due,
            "currency": i.currency.strip(), "attempts": i.attempts}  # fmt: skip


def sub_data(row: store.Sub, s: subs.Subscription) -> dict[str, Any]:
    return {"id": s.id, "status": s.status, "price": s.price.id, "customer": s.customer,
            "cancel_at_period_end": s.cancel_at_period_end}  # fmt: skip


class Writes:
    """One billing transaction's writes, planned row by row (no I/O) and sent by ``flush``
    in one statement per table: a pass of 500 renewals is a handful of statements, not
    thousands. Each row's last write wins (one version per row and transaction); each
    carries the time it took effect (``version_at``, for the history triggers).

    ``invoices`` is the transaction's view of the invoices it read (locked) or changed.
    """

    def __init__(self, invoices: dict[str, store.Invoice] | None = None) -> None:
        self.invoices: dict[str, store.Invoice] = invoices or {}
        self._new: dict[str, dict[str, Any]] = {}  # invoices to insert (numbers at flush)
        self._changed: dict[str, dt.datetime] = {}  # invoice id -> version_at
        self._events: list[tuple[str | None, dict[str, Any]]] = []  # (new invoice, row)
        self._subs: dict[str, dict[str, Any]] = {}

    def new_invoice(self, row: store.Sub, order: subs.InvoiceOrder, at: dt.datetime) -> bool:
        """The order as a finalized invoice (open, or paid when it asks nothing); whether
        it wants collecting now."""
        total = order.total
        due = max(total, 0)
        status = "open" if due > 0 else "paid"
        collect = order.collect and due > 0
        currency = row.rule().price.currency
        self._new[order.id] = {
            "id": order.id, "number": None, "subscription_id": row.id,
            "customer_user_id": row.customer_user_id, "merchant_user_id": row.merchant_user_id,
            "period_index": order.period_index, "currency": currency,
            "lines": msgspec.json.encode(order.lines).decode(), "total": total,
            "amount_due": due, "credit": max(-total, 0), "status": status,
            "in_flight": 0 if collect else None, "due_at": at, "version_at": at,
        }  # fmt: skip
        data = {"id": order.id, "number": None, "subscription": row.id, "status": status,
                "total": total, "amount_due": due, "currency": currency,
                "attempts": 0}  # fmt: skip
        for kind in ("invoice.created", "invoice.finalized") + (
            ("invoice.paid",) if due == 0 else ()
        ):
            self.invoice_event(kind, row, data, new=order.id)
        return collect

    def collection(self, invoice_id: str) -> tuple[int, int, str] | None:
        """The invoice's attempt in flight, amount due and currency, as this transaction
        leaves it (made or changed here, or as read); None: no attempt in flight."""
        new = self._new.get(invoice_id)
        if new is not None:
            attempt, amount, currency = new["in_flight"], new["amount_due"], new["currency"]
        elif (i := self.invoices.get(invoice_id)) is not None:
            attempt, amount, currency = i.in_flight, i.amount_due, i.currency
        else:
            return None
        return None if attempt is None else (attempt, amount, currency)

    def change_invoice(self, i: store.Invoice, at: dt.datetime, **values: Any) -> store.Invoice:
        assert i.id not in self._new
        changed = msgspec.structs.replace(i, **values)
        self.invoices[i.id] = changed
        self._changed[i.id] = at
        return changed

    def invoice_event(
        self, kind: str, row: store.Sub, data: dict[str, Any], new: str | None = None
    ) -> None:
        """An ``invoice.*`` event with the invoice as it now is (``data``: built by the
        caller, which just wrote it); ``new``: the invoice is made at flush (its number)."""
        self._events.append((new, store.event_row(
            kind, data["id"], row.customer_user_id, row.source_account_id,
            row.merchant_account_id, data)))  # fmt: skip

    def sub_event(self, kind: str, row: store.Sub, s: subs.Subscription) -> None:
        self._events.append((None, store.event_row(
            kind, row.id, row.customer_user_id, row.source_account_id, row.merchant_account_id,
            sub_data(row, s))))  # fmt: skip

    def save(
        self, row: store.Sub, s: subs.Subscription, policy: dn.Policy, collecting: str | None,
        at: dt.datetime,
    ) -> None:  # fmt: skip
        self._subs[s.id] = store.sub_values(s, policy, collecting, at)
        row.state = msgspec.json.encode(s).decode()
        row.collecting = collecting

    async def flush(self, conn: AsyncConnection) -> set[str]:
        """Everything, in ``conn``'s transaction; the new invoices NOT made (their derived
        id existed: a replay, whose events and collection are dropped)."""
        counts: dict[str, int] = {}
        for r in self._new.values():
            counts[r["customer_user_id"]] = counts.get(r["customer_user_id"], 0) + 1
        numbers = await store.allocate_numbers(conn, counts)
        for r in self._new.values():  # in planning order: each customer's numbers ascend
            r["number"] = numbers[r["customer_user_id"]].pop(0)
        made = await store.insert_invoices(conn, list(self._new.values()))
        replays = set(self._new) - made
        await store.update_invoices(conn, [
            {"id": i.id, "status": i.status, "attempts": i.attempts, "in_flight": i.in_flight,
             "due_at": i.due_at, "last_code": i.last_code, "paid_by": i.paid_by,
             "version_at": at}
            for i, at in ((self.invoices[k], at) for k, at in sorted(self._changed.items()))
        ])  # fmt: skip
        events = []
        for new, e in self._events:
            if new in replays:
                continue
            if new is not None:
                data = msgspec.json.decode(e["data"])
                data["number"] = self._new[new]["number"]
                e = e | {"data": msgspec.json.encode(data).decode()}
            events.append(e)
        await store.insert_events(conn, events)
        subs_rows = [r | {"collecting": None} if r["collecting"] in replays else r
                     for _, r in sorted(self._subs.items())]  # fmt: skip
        await store.update_subscriptions(conn, subs_rows)
        return replays


def plan_step(
    w: Writes, row: store.Sub, step: subs.Step, at: dt.datetime, policy: dn.Policy
) -> str | None:
    """Everything ``step`` produces; the invoice to collect now. An invoice it closes is
    in ``w.invoices`` (read under its lock)."""
    collecting = row.collecting
    if step.replay:
        return None
    if step.invoice is not None and w.new_invoice(row, step.invoice, at):
        collecting = step.invoice.id
    if step.close_invoice is not None:
        closed = w.invoices.get(step.close_invoice)
        if closed is not None and inv.can_move(closed.status, "uncollectible"):
            w.change_invoice(closed, at, status="uncollectible")
            data = invoice_data(closed) | {"status": "uncollectible"}
            w.invoice_event("invoice.marked_uncollectible", row, data)
    for kind in step.events:
        if kind.startswith("customer.subscription."):
            w.sub_event(kind, row, step.subscription)
    w.save(row, step.subscription, policy, collecting, at)
    return collecting


async def store_step(
    conn: AsyncConnection, row: store.Sub, step: subs.Step, at: dt.datetime, policy: dn.Policy
) -> Attempt | None:
    """``plan_step`` for one subscription (a request's), written; the attempt to move."""
    found = {}
    if step.close_invoice is not None:
        found = {i.id: i for i in await store.lock_invoices(conn, {step.close_invoice})}
    w = Writes(found)
    plan_step(w, row, step, at, policy)
    attempt = _in_flight(row, w)
    if await w.flush(conn):
        return None  # the invoice existed (a replay): nothing new to collect
    return attempt


def _in_flight(row: store.Sub, w: Writes) -> Attempt | None:
    """The attempt in flight of the row's ``collecting`` invoice (None: nothing to move)."""
    if row.collecting is None:
        return None
    found = w.collection(row.collecting)
    if found is None:
        return None
    attempt, amount, currency = found
    return Attempt(
        subscription_id=row.id, invoice_id=row.collecting, attempt=attempt,
        customer_user_id=row.customer_user_id, source_kind=row.source_kind,
        source_account_id=row.source_account_id, merchant_account_id=row.merchant_account_id,
        amount=amount, currency=currency.strip(),
    )  # fmt: skip


def _start(w: Writes, row: store.Sub, i: store.Invoice, at: dt.datetime,
           policy: dn.Policy) -> Attempt:  # fmt: skip
    """Record the invoice's next attempt as in flight (before any money moves)."""
    w.change_invoice(i, at, in_flight=i.attempts, due_at=at)
    w.save(row, row.rule(), policy, i.id, at)
    found = _in_flight(row, w)
    assert found is not None
    return found


async def start_attempt(
    conn: AsyncConnection, row: store.Sub, invoice: store.Invoice, at: dt.datetime,
    policy: dn.Policy,
) -> Attempt:  # fmt: skip
    """A request's: the invoice's next attempt in flight, written."""
    w = Writes({invoice.id: invoice})
    attempt = _start(w, row, invoice, at, policy)
    await w.flush(conn)
    return attempt


def _due_event(w: Writes, row: store.Sub, now: dt.datetime, policy: dn.Policy) -> Attempt | None:
    """Apply the subscription's next event if due by ``now``; the attempt to move, if any.
    Its invoices (in dunning) are in ``w.invoices``."""
    s = row.rule()
    due = ck.next_due(s, policy)
    if due is None or due.at > now:
        w.save(row, s, policy, None, now)  # next_due_at was stale
        return None
    if due.kind == "dunning_retry":
        assert due.invoice_id is not None
        i = w.invoices.get(due.invoice_id)
        if i is not None and i.status in ("open", "uncollectible"):
            return _start(w, row, i, due.at, policy)
        # Settled or voided by hand meanwhile: nothing left to retry.
        w.save(row, msgspec.structs.replace(s, dunning=None, status="active"), policy, None,
               due.at)  # fmt: skip
        return None
    event: subs.Event
    if due.kind == "trial_end":
        event = subs.TrialEnd(at=due.at)
    elif due.kind == "period_end":
        assert due.index is not None
        event = subs.PeriodEnd(at=due.at, index=due.index)
    else:
        assert due.invoice_id is not None
        event = subs.DunningExhausted(at=due.at, invoice_id=due.invoice_id)
    plan_step(w, row, subs.apply(s, event, policy), due.at, policy)  # may raise: nothing planned
    return _in_flight(row, w)


async def collect(ctx: Context, attempts: list[Attempt]) -> dict[str, str]:
    """Move the attempts' money: {transfer id: code} of those with an answer (an attempt
    left out stays in flight: the next pass moves it again under the same id)."""
    assert all(a.source_kind in SOURCE_KINDS for a in attempts)
    outcomes = await _from_wallets(ctx.client, [a for a in attempts if a.source_kind == "wallet"])
    by_card = [a for a in attempts if a.source_kind == "card"]
    if by_card:
        gate = asyncio.Semaphore(CARD_CONCURRENCY)

        async def one(a: Attempt) -> None:
            async with gate:
                code = await _by_card(ctx, a)
            if code is not None:
                outcomes[a.transfer_id] = code

        await asyncio.gather(*(one(a) for a in by_card))
    return outcomes


async def _from_wallets(client: LedgerClient, attempts: list[Attempt]) -> dict[str, str]:
    """Wallet attempts in ONE ledger batch; nothing when the ledger did not answer."""
    moves = [
        TransferIn(
            id=a.transfer_id, debit_account_id=a.source_account_id,
            credit_account_id=a.merchant_account_id, amount=a.amount, currency=a.currency,
            metadata={"invoice_id": a.invoice_id, "subscription_id": a.subscription_id},
        )
        for a in attempts
    ]  # fmt: skip
    if not moves:
        return {}
    try:
        return {o.id: o.code for o in await client.transfer(moves, None)}
    except (Unavailable, ShardLost, Overloaded):
        return {}


async def _by_card(ctx: Context, a: Attempt) -> str | None:
    """The attempt's card payment (made once, under the attempt's id) run to an answer:
    Code.OK paid, a decline code, or None (the processor or the ledger not done yet)."""
    now = dt.datetime.now(dt.UTC)
    wanted = payments.Payment(
        id=a.transfer_id, owner_user_id=a.customer_user_id, from_ref=a.source_account_id,
        to_ref=a.merchant_account_id, debit_account_id=card_rules.CLEARING_ACCOUNT,
        credit_account_id=a.merchant_account_id, amount=a.amount, currency=a.currency,
        rail=card_rules.RAIL, memo=f"invoice {a.invoice_id}", status="processing",
        failure_code=None, transfer_id=card_rules.hold_transfer_id(a.transfer_id),
        refunded_amount=0, created_at=now, updated_at=now, payment_method_id=a.source_account_id,
    )  # fmt: skip
    try:
        async with ctx.engine.begin() as conn:
            pay, _ = await payments.create(conn, wanted)
        if pay.status == "processing":
            pay = await card_service.execute(ctx, pay)
        if pay.status == "requires_action":  # nobody is there to authenticate
            async with ctx.engine.begin() as conn:
                await cards.set_charge(conn, pay.id, "declined",
                                       decline_code=card_rules.AUTHENTICATION_REQUIRED)  # fmt: skip
                pay = await payments.transition(conn, pay.id, "failed",
                                                card_rules.AUTHENTICATION_REQUIRED)  # fmt: skip
    except card_service.ProcessorUnavailable:
        return None
    except p.ApiError as e:  # the ledger busy, or no card rail now: the next pass
        log.info("billing: card attempt %s left in flight: %s", a.transfer_id, e.code)
        return None
    if pay.status == "completed":
        return Code.OK
    if pay.status == "failed":
        return pay.failure_code or card_rules.CARD_DECLINED
    return None  # processing: the processor has not answered


async def record(
    engine: AsyncEngine, attempts: list[Attempt], outcomes: dict[str, str], wall: dt.datetime,
    policy: dn.Policy,
) -> int:  # fmt: skip
    """Each final outcome recorded (under the rows' locks, once: an attempt recorded by
    another pass is left alone), in one transaction of a few statements; how many were."""
    final = [a for a in attempts if outcomes.get(a.transfer_id) not in (None, *RETRYABLE)]
    # Not final: moved again by the next pass under the same id.
    if not final:
        return 0
    done = 0
    async with engine.begin() as conn:
        rows = {r.id: r for r in await store.lock_subscriptions(
            conn, [a.subscription_id for a in final])}  # fmt: skip
        w = Writes({i.id: i for i in await store.lock_invoices(
            conn, {a.invoice_id for a in final})})  # fmt: skip
        clocks = await store.clocks_now(conn, {r.test_clock_id for r in rows.values()
                                               if r.test_clock_id})  # fmt: skip
        for a in final:
            code = outcomes[a.transfer_id]
            row, i = rows[a.subscription_id], w.invoices[a.invoice_id]
            if i.in_flight != a.attempt:
                continue
            s = row.rule()
            paid = code in PAID_CODES
            # A failure counts from when the attempt was due (a late pass does not
            # push the dunning timeline back); a manual one before a retry is due
            # does not use a retry up (domain/billing/dunning.record_failure). "Now"
            # is the subscription's clock: a test clock's, else the wall clock.
            now = clocks[row.test_clock_id] if row.test_clock_id else wall
            at = i.due_at if paid or i.due_at <= now else now
            i = w.change_invoice(
                i, at, in_flight=None, attempts=i.attempts + 1,
                status="paid" if paid else i.status, last_code=None if paid else code,
                paid_by=a.paid_by if paid else None,
            )  # fmt: skip
            row.collecting = None
            w.invoice_event("invoice.paid" if paid else "invoice.payment_failed", row,
                            invoice_data(i))  # fmt: skip
            event: subs.Event = (
                subs.InvoicePaid(at=at, invoice_id=i.id) if paid
                else subs.InvoicePaymentFailed(at=at, invoice_id=i.id)
            )  # fmt: skip
            try:
                step = subs.apply(s, event, policy)
            except BillingError:  # e.g. a subscription canceled meanwhile: the invoice only
                step = subs.Step(subscription=s)
            plan_step(w, row, step, at, policy)
            done += 1
        await w.flush(conn)
    return done


async def run_due(
    ctx: Context, wall: dt.datetime, limit: int, policy: dn.Policy, clock_id: str | None = None
) -> int:
    """One pass; how many subscriptions it moved on (events applied or attempts recorded)."""
    attempts: list[Attempt] = []
    applied = 0
    async with ctx.engine.begin() as conn:
        rows = await store.claim_due(conn, wall, limit, clock_id)
        wanted = {r.collecting for r in rows if r.collecting}
        wanted |= {d.invoice_id for d in (r.rule().dunning for r in rows) if d is not None}
        w = Writes({i.id: i for i in await store.lock_invoices(conn, wanted)})
        clocks = await store.clocks_now(conn, {r.test_clock_id for r in rows if r.test_clock_id})
        for row in rows:
            found = _in_flight(row, w)
            if found is None:
                row.collecting = None  # a stale mark (recorded meanwhile) is dropped
                now = clocks[row.test_clock_id] if row.test_clock_id else wall
                try:
                    found = _due_event(w, row, now, policy)
                except BillingError as e:  # a rule refused: logged, the row waits for a person
                    log.warning("billing: %s: %s", row.id, e.code)
                    continue
                applied += 1
            if found is not None:
                attempts.append(found)
        replays = await w.flush(conn)
    attempts = [a for a in attempts if a.invoice_id not in replays]
    if not attempts:
        return applied
    outcomes = await collect(ctx, attempts)
    return applied + await record(ctx.engine, attempts, outcomes, wall, policy)


async def settle(ctx: Context, attempts: list[Attempt], policy: dn.Policy) -> None:
    """Move and record attempts a request started (its answer waits for them)."""
    outcomes = await collect(ctx, attempts)
    if outcomes:
        await record(ctx.engine, attempts, outcomes, dt.datetime.now(dt.UTC), policy)


def _lost_race(e: sa_exc.DBAPIError) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): retrying is safe."""
    return str(getattr(e.orig, "sqlstate", "") or "").startswith("40")


async def drain_clock(
    ctx: Context, clock_id: str, limit: int, policy: dn.Policy, passes: int
) -> bool:
    """Passes over one test clock's subscriptions until nothing is due (at most
    ``passes``); whether the clock is ready (the front loop finishes the rest)."""
    for _ in range(passes):
        try:
            moved = await run_due(ctx, dt.datetime.now(dt.UTC), limit, policy, clock_id)
        except sa_exc.DBAPIError as e:
            if not _lost_race(e):
                raise
            continue  # rolled back whole: the next pass redoes it
        if moved == 0:
            break
    async with ctx.engine.connect() as conn:
        return await store.count_due(conn, clock_id) == 0


async def follow(ctx: Context) -> None:
    """Passes forever, every ``billing.interval_ms`` (at once again while a pass was full)."""
    billing_s = ctx.settings.billing
    interval_ms, batch = billing_s.interval_ms, billing_s.batch
    policy = policy_of(billing_s.retry_days, billing_s.on_exhausted)
    while True:
        try:
            moved = await run_due(ctx, dt.datetime.now(dt.UTC), batch, policy)
        except (SQLAlchemyError, OSError) as e:  # PostgreSQL away: the next pass retries
            log.warning("billing pass failed: %s", type(e).__name__)
            moved = 0
        if moved < batch:
            await asyncio.sleep(interval_ms / 1000)


def policy_of(retry_days: str, on_exhausted: str) -> dn.Policy:
    """The dunning policy of the ``billing`` settings (a bad one stops the front at start)."""
    days = [int(x) for x in retry_days.split(",") if x]
    return dn.Policy(retry_days=days, on_exhausted=on_exhausted)  # type: ignore[arg-type]
