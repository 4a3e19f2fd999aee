"""Subscriptions: statuses, the events that move them, and what each move produces.

Pure. ``apply(subscription, event, policy)`` returns a ``Step``: the subscription
after the event, the invoice to create (its derived id, the period it bills,
its lines, whether to collect it now), an invoice to close (dunning given up)
and the webhook event names to emit. The caller stores all of it in one
transaction; nothing here reads a clock, a table or the ledger.

Statuses are Stripe's. ``TRANSITIONS`` is the whole table: a (status, event)
pair that is not in it is refused with ``transition_refused``. In short:

* created with a trial: ``trialing``; ``trial_end`` -> ``active`` and bills
  period 0 (``canceled`` instead if it was set to cancel at period end);
* created without one: ``incomplete`` with period 0 billed at once;
  ``invoice_paid`` -> ``active``;
* ``period_end`` renews: the next period is billed, the status stays
  (``canceled`` instead when ``cancel_at_period_end``);
* ``invoice_payment_failed`` -> ``past_due`` and dunning starts
  (``dunning.py``); ``invoice_paid`` -> ``active``; ``dunning_exhausted`` ->
  ``canceled`` (or stays ``past_due``, by policy) and the invoice is marked
  ``uncollectible``;
* ``pause`` (from ``active``) stops renewals at once and credits the unused
  time like a cancellation; ``resume`` starts a new cycle anchored at the
  resume instant and bills its first period;
* ``plan_change`` within the same interval keeps the anchor and prorates
  (``proration.py``); to another interval it re-anchors at the change and
  bills a whole new period less the unused-time credit (as Stripe does);
  refused while ``past_due`` (settle first) and between currencies;
* ``cancel_now`` credits the unused time of what was billed for the current
  period when the subscription is ``active`` (a ``past_due`` period was not
  paid, a trial cost nothing).

Exactly once: period ``n`` of subscription ``s`` is billed by invoice
``in_<s>_<n>`` (``invoices.renewal_invoice_id``), collected by ledger transfers
``bill:<invoice>:<attempt>``. A ``period_end`` for a period already renewed is
a replay (``Step.replay``): a renewal run repeated after a crash finds every
invoice id it would create already there and creates none twice. Periods are
numbered for the whole life of the subscription: a new cycle (resume, interval
change) continues the numbering (``base``), so ids never repeat.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from paynode.domain.billing import dunning as dn
from paynode.domain.billing import invoices as inv
from paynode.domain.billing import proration as pr
from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import (
    Period,
    Price,
    check_id,
    check_utc,
    period_start,
)

Status = Literal["trialing", "active", "past_due", "paused", "canceled", "incomplete"]
STATUSES: tuple[Status, ...] = (
    "trialing", "active", "past_due", "paused", "canceled", "incomplete",
)  # fmt: skip
MAX_TRIAL_DAYS = 730  # Stripe's bound on a trial
MAX_CHANGES = 1_000  # plan changes in a subscription's life: its change invoice ids


class TrialEnd(msgspec.Struct, frozen=True, tag="trial_end"):
    at: dt.datetime


class PeriodEnd(msgspec.Struct, frozen=True, tag="period_end"):
    at: dt.datetime
    index: int  # the period that ends (global index)


class InvoicePaid(msgspec.Struct, frozen=True, tag="invoice_paid"):
    at: dt.datetime
    invoice_id: str


class InvoicePaymentFailed(msgspec.Struct, frozen=True, tag="invoice_payment_failed"):
    at: dt.datetime
    invoice_id: str


class DunningExhausted(msgspec.Struct, frozen=True, tag="dunning_exhausted"):
    at: dt.datetime
    invoice_id: str


class CancelNow(msgspec.Struct, frozen=True, tag="cancel_now"):
    at: dt.datetime
    prorate: bool = True


class CancelAtPeriodEnd(msgspec.Struct, frozen=True, tag="cancel_at_period_end"):
    at: dt.datetime
    value: bool = True  # False takes a scheduled cancellation back


class Pause(msgspec.Struct, frozen=True, tag="pause"):
    at: dt.datetime


class Resume(msgspec.Struct, frozen=True, tag="resume"):
    at: dt.datetime


class PlanChange(msgspec.Struct, frozen=True, tag="plan_change"):
    at: dt.datetime
    price: Price
    quantity: int = 1
    prorate: bool = True


Event = (
    TrialEnd | PeriodEnd | InvoicePaid | InvoicePaymentFailed | DunningExhausted | CancelNow
    | CancelAtPeriodEnd | Pause | Resume | PlanChange
)  # fmt: skip
EVENT_KINDS: tuple[str, ...] = (
    "trial_end", "period_end", "invoice_paid", "invoice_payment_failed", "dunning_exhausted",
    "cancel_now", "cancel_at_period_end", "pause", "resume", "plan_change",
)  # fmt: skip

_ = frozenset
# (status, event kind) -> the statuses it may lead to; anything else is refused.
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    ("trialing", "trial_end"): _({"active", "canceled"}),
    ("trialing", "cancel_now"): _({"canceled"}),
    ("trialing", "cancel_at_period_end"): _({"trialing"}),
    ("trialing", "plan_change"): _({"trialing"}),
    ("incomplete", "invoice_paid"): _({"active"}),
    ("incomplete", "invoice_payment_failed"): _({"incomplete"}),
    ("incomplete", "cancel_now"): _({"canceled"}),
    ("active", "period_end"): _({"active", "canceled"}),
    ("active", "invoice_paid"): _({"active"}),
    ("active", "invoice_payment_failed"): _({"past_due"}),
    ("active", "cancel_now"): _({"canceled"}),
    ("active", "cancel_at_period_end"): _({"active"}),
    ("active", "pause"): _({"paused"}),
    ("active", "plan_change"): _({"active"}),
    ("past_due", "period_end"): _({"past_due", "canceled"}),
    ("past_due", "invoice_paid"): _({"active", "past_due"}),
    ("past_due", "invoice_payment_failed"): _({"past_due"}),
    ("past_due", "dunning_exhausted"): _({"canceled", "past_due"}),
    ("past_due", "cancel_now"): _({"canceled"}),
    ("past_due", "cancel_at_period_end"): _({"past_due"}),
    ("paused", "resume"): _({"active"}),
    ("paused", "cancel_now"): _({"canceled"}),
    ("paused", "invoice_paid"): _({"paused"}),  # an invoice from before the pause, paid late
    ("canceled", "invoice_paid"): _({"canceled"}),  # an open invoice is still money
}


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    customer: str
    price: Price
    quantity: int = 1
    status: Status
    created_at: dt.datetime
    trial_end: dt.datetime | None = None
    anchor: dt.datetime  # the billing cycle anchor of the current cycle
    base: int = 0  # the global index of the current cycle's first period
    period: int = 0  # the global index of the current period
    billed: pr.Paid | None = None  # what was billed for the rest of the current period
    cancel_at_period_end: bool = False
    canceled_at: dt.datetime | None = None
    paused_at: dt.datetime | None = None
    changes: int = 0  # plan changes so far (their invoice ids)
    dunning: dn.Dunning | None = None
    test_clock: str | None = None  # the test clock whose "now" it runs on, if any


class InvoiceOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An invoice to create (by its derived id: creating it twice is a replay)."""

    id: str
    period_index: int | None  # the period a renewal bills; None for prorations
    lines: list[inv.Line]
    collect: bool  # attempt payment now (attempt 0): it asks for money

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


class Step(msgspec.Struct, frozen=True, kw_only=True):
    subscription: Subscription
    invoice: InvoiceOrder | None = None
    close_invoice: str | None = None  # mark it uncollectible (dunning exhausted)
    events: list[str] = msgspec.field(default_factory=list)  # webhook event types
    replay: bool = False  # the event was applied before: nothing to do


def kind(event: Event) -> str:
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def current_period(sub: Subscription) -> Period:
    """The subscription's current period (for a trial: period 0, which starts at its end)."""
    p = sub.price
    n = sub.period - sub.base
    return Period(
        sub.period,
        period_start(sub.anchor, p.interval, p.interval_count, n),
        period_start(sub.anchor, p.interval, p.interval_count, n + 1),
    )


def _renewal(sub: Subscription, period: Period) -> tuple[InvoiceOrder, pr.Paid]:
    line = inv.Line(
        description=f"{sub.quantity} x {sub.price.id}",
        unit_amount=sub.price.amount,
        quantity=sub.quantity,
        period_start=period.start,
        period_end=period.end,
    )
    order = InvoiceOrder(
        id=inv.renewal_invoice_id(sub.id, period.index),
        period_index=period.index,
        lines=[line],
        collect=line.amount > 0,
    )
    return order, pr.Paid(amount=line.amount, start=period.start, end=period.end)


def create(
    *, id: str, customer: str, price: Price, quantity: int, at: dt.datetime,
    trial_days: int = 0, test_clock: str | None = None,
) -> Step:  # fmt: skip
    """A new subscription at ``at``: ``trialing`` with a trial (nothing billed until it
    ends), otherwise ``incomplete`` with period 0 billed now (``active`` once paid)."""
    check_id(id, "subscription id")
    check_id(customer, "customer")
    check_utc(at, "at")
    pr.check_quantity(quantity)
    if type(trial_days) is not int or not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise BillingError("invalid_field", f"trial_days is 0..{MAX_TRIAL_DAYS}")
    if trial_days:
        trial_end = at + dt.timedelta(days=trial_days)
        sub = Subscription(
            id=id, customer=customer, price=price, quantity=quantity, status="trialing",
            created_at=at, trial_end=trial_end, anchor=trial_end, test_clock=test_clock,
        )  # fmt: skip
        return Step(subscription=sub, events=["customer.subscription.created"])
    sub = Subscription(
        id=id, customer=customer, price=price, quantity=quantity, status="incomplete",
        created_at=at, anchor=at, test_clock=test_clock,
    )  # fmt: skip
    order, billed = _renewal(sub, current_period(sub))
    if not order.collect:  # a free plan has nothing to wait for
        sub = msgspec.structs.replace(sub, status="active")
    return Step(
        subscription=msgspec.structs.replace(sub, billed=billed),
        invoice=order,
        events=["customer.subscription.created", "invoice.created"],
    )


def _refuse(sub: Subscription, event: Event) -> BillingError:
    return BillingError(
        "transition_refused", f"a {sub.status} subscription does not take {kind(event)}"
    )


def _credit(sub: Subscription, at: dt.datetime) -> list[inv.Line]:
    """The unused time of what was billed for the current period, as credit lines."""
    if sub.billed is None:
        return []
    return [inv.line_from_proration(p) for p in pr.cancel_lines(sub.billed, at)]


def _change_order(sub: Subscription, lines: list[inv.Line], collect: bool) -> InvoiceOrder:
    if sub.changes >= MAX_CHANGES:
        raise BillingError("too_many_changes", f"a subscription changes at most {MAX_CHANGES}x")
    return InvoiceOrder(
        id=inv.change_invoice_id(sub.id, sub.changes + 1),
        period_index=None,
        lines=lines,
        collect=collect and sum(line.amount for line in lines) > 0,
    )


def apply(sub: Subscription, event: Event, policy: dn.Policy = dn.DEFAULT) -> Step:
    """The subscription after ``event``, and what the event produces."""
    check_utc(event.at, "at")
    replay = _replay(sub, event)
    if replay is not None:
        return replay
    allowed = TRANSITIONS.get((sub.status, kind(event)))
    if allowed is None:
        raise _refuse(sub, event)
    step = _apply(sub, event, policy)
    assert step.subscription.status in allowed, (sub.status, kind(event), step)
    return step


def _replay(sub: Subscription, event: Event) -> Step | None:
    """Scheduler events already applied (a run repeated after a crash): a no-op."""
    if isinstance(event, PeriodEnd) and event.index < sub.period:
        return Step(subscription=sub, replay=True)
    ended = sub.trial_end is not None and sub.status != "trialing"
    if isinstance(event, TrialEnd) and ended:
        return Step(subscription=sub, replay=True)
    return None


def _apply(sub: Subscription, event: Event, policy: dn.Policy) -> Step:
    replace = msgspec.structs.replace
    updated = "customer.subscription.updated"
    if isinstance(event, TrialEnd):
        assert sub.trial_end is not None
        if event.at < sub.trial_end:
            raise BillingError("not_due", "the trial has not ended yet")
        if sub.cancel_at_period_end:
            done = replace(sub, status="canceled", canceled_at=sub.trial_end)
            return Step(subscription=done, events=["customer.subscription.deleted"])
        order, billed = _renewal(sub, current_period(sub))
        nxt = replace(sub, status="active", billed=billed)
        return Step(subscription=nxt, invoice=order, events=[updated, "invoice.created"])

    if isinstance(event, PeriodEnd):
        period = current_period(sub)
        if event.index > sub.period:
            raise BillingError("out_of_order", f"period {sub.period} has not been renewed yet")
        if event.at < period.end:
            raise BillingError("not_due", f"period {sub.period} ends at {period.end.isoformat()}")
        if sub.cancel_at_period_end:
            done = replace(sub, status="canceled", canceled_at=period.end)
            return Step(subscription=done, events=["customer.subscription.deleted"])
        nxt = replace(sub, period=sub.period + 1)
        order, billed = _renewal(nxt, current_period(nxt))
        nxt = replace(nxt, billed=billed)
        return Step(subscription=nxt, invoice=order, events=[updated, "invoice.created"])

    if isinstance(event, InvoicePaid):
        if sub.status == "incomplete":
            return Step(subscription=replace(sub, status="active"), events=[updated])
        # The invoice in dunning paid (or, dunning given up, a late payment): active again.
        settled = sub.dunning is None or sub.dunning.invoice_id == event.invoice_id
        if sub.status == "past_due" and settled:
            nxt = replace(sub, dunning=None, status="active")
            return Step(subscription=nxt, events=[updated])
        return Step(subscription=sub)

    if isinstance(event, InvoicePaymentFailed):
        if sub.status == "incomplete":  # no dunning before the first payment (Stripe's)
            return Step(subscription=sub)
        if sub.dunning is None:  # the first failure: past_due, retries start
            started = dn.start(event.invoice_id, event.at)
            return Step(subscription=replace(sub, status="past_due", dunning=started),
                        events=[updated])  # fmt: skip
        if sub.dunning.invoice_id != event.invoice_id:
            return Step(subscription=sub)  # another invoice: dunning follows the first one
        failed = dn.record_failure(policy, sub.dunning, event.at)
        return Step(subscription=replace(sub, dunning=failed))

    if isinstance(event, DunningExhausted):
        d = sub.dunning
        if d is None or d.invoice_id != event.invoice_id or not dn.exhausted(policy, d):
            raise BillingError("not_due", "the retries of that invoice are not exhausted")
        if policy.on_exhausted == "cancel":
            done = replace(sub, status="canceled", canceled_at=event.at, dunning=None)
            return Step(subscription=done, close_invoice=d.invoice_id,
                        events=["customer.subscription.deleted"])  # fmt: skip
        return Step(subscription=replace(sub, dunning=None), close_invoice=d.invoice_id)

    if isinstance(event, CancelNow):
        done = replace(sub, status="canceled", canceled_at=event.at)
        deleted = ["customer.subscription.deleted"]
        lines = _credit(sub, event.at) if event.prorate and sub.status == "active" else []
        if not lines:
            return Step(subscription=done, events=deleted)
        order = _change_order(sub, lines, collect=False)
        done = replace(done, changes=sub.changes + 1)
        return Step(subscription=done, invoice=order, events=[*deleted, "invoice.created"])

    if isinstance(event, CancelAtPeriodEnd):
        nxt = replace(sub, cancel_at_period_end=event.value)
        return Step(subscription=nxt, events=[updated])

    if isinstance(event, Pause):
        lines = _credit(sub, event.at)
        paused = replace(sub, status="paused", paused_at=event.at, billed=None)
        if not lines:
            return Step(subscription=paused, events=[updated])
        order = _change_order(sub, lines, collect=False)
        paused = replace(paused, changes=sub.changes + 1)
        return Step(subscription=paused, invoice=order, events=[updated, "invoice.created"])

    if isinstance(event, Resume):
        assert sub.paused_at is not None
        if event.at < sub.paused_at:
            raise BillingError("out_of_range", "a resume comes after the pause")
        first = sub.period + 1  # a new cycle, anchored now, numbered on
        nxt = replace(sub, status="active", paused_at=None, anchor=event.at, base=first,
                      period=first)  # fmt: skip
        order, billed = _renewal(nxt, current_period(nxt))
        nxt = replace(nxt, billed=billed)
        return Step(subscription=nxt, invoice=order, events=[updated, "invoice.created"])

    assert isinstance(event, PlanChange), event
    return _plan_change(sub, event)


def _plan_change(sub: Subscription, event: PlanChange) -> Step:
    replace = msgspec.structs.replace
    new, quantity = event.price, event.quantity
    pr.check_quantity(quantity)
    if new.currency != sub.price.currency:
        raise BillingError("currency_mismatch", "a plan change keeps the currency")
    updated = "customer.subscription.updated"
    if sub.status == "trialing":  # nothing was billed: the trial goes on with the new plan
        return Step(subscription=replace(sub, price=new, quantity=quantity), events=[updated])
    period = current_period(sub)
    if not period.start <= event.at < period.end:
        raise BillingError("out_of_range", "a plan change happens within the current period")
    same_cycle = (new.interval, new.interval_count) == (
        sub.price.interval,
        sub.price.interval_count,
    )
    if same_cycle:
        nxt = replace(sub, price=new, quantity=quantity)
        if not event.prorate:
            return Step(subscription=nxt, events=[updated])
        # Nothing billed (cannot happen while active, but a credit of nothing is right).
        billed = sub.billed or pr.Paid(amount=0, start=period.start, end=period.end)
        proration = pr.change_lines(billed, new, quantity, period, event.at)
        lines = [inv.line_from_proration(p) for p in proration]
        charge = sum(p.amount for p in proration if p.amount > 0)
        nxt = replace(nxt, billed=pr.Paid(amount=charge, start=event.at, end=period.end))
        if not lines:
            return Step(subscription=nxt, events=[updated])
        order = _change_order(sub, lines, collect=True)
        nxt = replace(nxt, changes=sub.changes + 1)
        return Step(subscription=nxt, invoice=order, events=[updated, "invoice.created"])
    # Another interval: a new cycle anchored at the change, its first period billed whole.
    first = sub.period + 1
    nxt = replace(sub, price=new, quantity=quantity, anchor=event.at, base=first, period=first)
    renewal, billed = _renewal(nxt, current_period(nxt))
    lines = [*(_credit(sub, event.at) if event.prorate else []), *renewal.lines]
    order = _change_order(sub, lines, collect=True)
    nxt = replace(nxt, billed=billed, changes=sub.changes + 1)
    return Step(subscription=nxt, invoice=order, events=[updated, "invoice.created"])
