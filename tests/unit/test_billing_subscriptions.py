"""Subscriptions: the state machine and what each event produces
(domain/billing/subscriptions.py)."""

from __future__ import annotations

import datetime as dt
import itertools

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paynode.domain.billing import dunning as dn
from paynode.domain.billing import subscriptions as sb
from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import Price

UTC = dt.UTC
T0 = dt.datetime(2027, 1, 31, 12, tzinfo=UTC)
BASIC = Price(id="basic", amount=3000, currency="USD", interval="month")
PRO = Price(id="pro", amount=9000, currency="USD", interval="month")
YEARLY = Price(id="yearly", amount=30000, currency="USD", interval="year")
replace = msgspec.structs.replace


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


def new(trial_days: int = 0, price: Price = BASIC, quantity: int = 1) -> sb.Step:
    return sb.create(id="s1", customer="c1", price=price, quantity=quantity, at=T0,
                     trial_days=trial_days)  # fmt: skip


def active() -> sb.Subscription:
    step = new()
    assert step.invoice is not None
    return sb.apply(step.subscription, sb.InvoicePaid(T0, step.invoice.id)).subscription


def in_status(status: str) -> sb.Subscription:
    if status == "trialing":
        return new(trial_days=7).subscription
    if status == "incomplete":
        return new().subscription
    sub = active()
    mid = T0 + days(5)
    if status == "past_due":
        return sb.apply(sub, sb.InvoicePaymentFailed(mid, "in_s1_0")).subscription
    if status == "paused":
        return sb.apply(sub, sb.Pause(mid)).subscription
    if status == "canceled":
        return sb.apply(sub, sb.CancelNow(mid)).subscription
    assert status == "active"
    return sub


def event_for(kind: str, sub: sb.Subscription) -> tuple[sb.Subscription, sb.Event]:
    """A well-formed event of ``kind`` for ``sub`` (due, for the right invoice)."""
    mid = T0 + days(6)
    end = sb.current_period(sub).end
    invoice = sub.dunning.invoice_id if sub.dunning else "in_s1_0"
    if kind == "trial_end":
        return sub, sb.TrialEnd(sub.trial_end or end)
    if kind == "period_end":
        return sub, sb.PeriodEnd(end, sub.period)
    if kind == "invoice_paid":
        return sub, sb.InvoicePaid(mid, invoice)
    if kind == "invoice_payment_failed":
        return sub, sb.InvoicePaymentFailed(mid, invoice)
    if kind == "dunning_exhausted":
        if sub.dunning is not None:
            sub = replace(sub, dunning=replace(sub.dunning, failures=5))
        return sub, sb.DunningExhausted(mid, invoice)
    if kind == "cancel_now":
        return sub, sb.CancelNow(mid)
    if kind == "cancel_at_period_end":
        return sub, sb.CancelAtPeriodEnd(mid)
    if kind == "pause":
        return sub, sb.Pause(mid)
    if kind == "resume":
        return sub, sb.Resume(mid)
    assert kind == "plan_change"
    return sub, sb.PlanChange(mid, PRO)


@pytest.mark.parametrize(("status", "kind"), list(itertools.product(sb.STATUSES, sb.EVENT_KINDS)))
def test_every_transition_allowed_or_refused_by_the_table(status: str, kind: str) -> None:
    sub = in_status(status)
    assert sub.status == status
    sub, event = event_for(kind, sub)
    assert sb.kind(event) == kind
    allowed = sb.TRANSITIONS.get((status, kind))
    if allowed is None:
        with pytest.raises(BillingError) as e:
            sb.apply(sub, event)
        assert e.value.code == "transition_refused"
    else:
        step = sb.apply(sub, event)
        assert step.subscription.status in allowed
        assert not step.replay


def test_the_table_names_only_known_statuses_and_events() -> None:
    for (status, kind), targets in sb.TRANSITIONS.items():
        assert status in sb.STATUSES and kind in sb.EVENT_KINDS
        assert targets <= set(sb.STATUSES)
    assert not [k for k in sb.TRANSITIONS if k[0] == "canceled" and k[1] != "invoice_paid"]


def test_trial_then_renewals_on_a_month_end_anchor() -> None:
    step = new(trial_days=7)
    sub = step.subscription
    assert (sub.status, step.invoice, sub.trial_end) == ("trialing", None, T0 + days(7))
    with pytest.raises(BillingError) as e:
        sb.apply(sub, sb.TrialEnd(T0 + days(6)))
    assert e.value.code == "not_due"
    step = sb.apply(sub, sb.TrialEnd(T0 + days(7)))
    sub = step.subscription
    assert sub.status == "active" and step.invoice is not None
    assert (step.invoice.id, step.invoice.period_index, step.invoice.total) == ("in_s1_0", 0, 3000)
    assert step.invoice.collect
    assert sb.apply(sub, sb.TrialEnd(T0 + days(7))).replay  # the trial end again: a replay
    # anchored at the trial's end, Feb 7: renewals on the 7th, no drift
    ids = []
    for _ in range(13):
        end = sb.current_period(sub).end
        step = sb.apply(sub, sb.PeriodEnd(end, sub.period))
        assert step.invoice is not None and step.subscription.status == "active"
        ids.append(step.invoice.id)
        assert step.invoice.lines[0].period_start == end
        sub = step.subscription
    assert ids == [f"in_s1_{n}" for n in range(1, 14)]
    assert sb.current_period(sub).start == dt.datetime(2028, 3, 7, 12, tzinfo=UTC)


def test_month_end_renewals_and_replays_after_a_crash() -> None:
    sub = active()  # anchored Jan 31 12:00
    starts = []
    for _ in range(14):
        period = sb.current_period(sub)
        sub = sb.apply(sub, sb.PeriodEnd(period.end, sub.period)).subscription
        starts.append(sb.current_period(sub).start.date())
    assert starts[:4] == [dt.date(2027, 2, 28), dt.date(2027, 3, 31), dt.date(2027, 4, 30),
                          dt.date(2027, 5, 31)]  # fmt: skip
    assert starts[12] == dt.date(2028, 2, 29)  # leap year
    # a renewal run repeated after a crash: every earlier period end is a replay
    for n in range(sub.period):
        step = sb.apply(sub, sb.PeriodEnd(T0 + days(500), n))
        assert step.replay and step.invoice is None and step.subscription == sub
    with pytest.raises(BillingError) as e:
        sb.apply(sub, sb.PeriodEnd(T0 + days(900), sub.period + 1))
    assert e.value.code == "out_of_order"
    with pytest.raises(BillingError) as e:
        sb.apply(sub, sb.PeriodEnd(sb.current_period(sub).end - days(1), sub.period))
    assert e.value.code == "not_due"


def test_incomplete_until_the_first_payment_and_free_plans() -> None:
    step = new()
    assert step.subscription.status == "incomplete"
    assert step.invoice is not None and step.invoice.id == "in_s1_0" and step.invoice.collect
    failed = sb.apply(step.subscription, sb.InvoicePaymentFailed(T0, "in_s1_0"))
    assert failed.subscription.status == "incomplete" and failed.subscription.dunning is None
    free = new(price=Price(id="free", amount=0, currency="USD", interval="month"))
    assert free.subscription.status == "active"
    assert free.invoice is not None and not free.invoice.collect


def test_cancel_at_period_end_and_taking_it_back() -> None:
    sub = sb.apply(active(), sb.CancelAtPeriodEnd(T0 + days(3))).subscription
    end = sb.current_period(sub).end
    step = sb.apply(sub, sb.PeriodEnd(end, 0))
    assert step.subscription.status == "canceled" and step.invoice is None
    assert step.subscription.canceled_at == end
    assert step.events == ["customer.subscription.deleted"]
    back = sb.apply(sub, sb.CancelAtPeriodEnd(T0 + days(4), value=False)).subscription
    assert sb.apply(back, sb.PeriodEnd(end, 0)).subscription.status == "active"
    trial = sb.apply(new(trial_days=7).subscription, sb.CancelAtPeriodEnd(T0)).subscription
    done = sb.apply(trial, sb.TrialEnd(T0 + days(7)))
    assert done.subscription.status == "canceled" and done.invoice is None


def test_cancel_now_credits_unused_time_only_when_paid() -> None:
    sub = active()  # Jan 31 12:00 .. Feb 28 12:00: 28 days, 3000 billed
    step = sb.apply(sub, sb.CancelNow(T0 + days(7)))
    assert step.subscription.status == "canceled" and step.invoice is not None
    assert step.invoice.id == "in_s1_c1" and not step.invoice.collect
    assert step.invoice.total == -2250  # 21 of 28 days
    assert sb.apply(sub, sb.CancelNow(T0 + days(7), prorate=False)).invoice is None
    past_due = in_status("past_due")
    assert sb.apply(past_due, sb.CancelNow(T0 + days(7))).invoice is None  # it was not paid
    trial = new(trial_days=7).subscription
    assert sb.apply(trial, sb.CancelNow(T0 + days(1))).invoice is None  # a trial cost nothing


def test_plan_change_same_interval_prorates_and_keeps_the_anchor() -> None:
    sub = active()
    step = sb.apply(sub, sb.PlanChange(T0 + days(7), PRO, quantity=2))
    nxt = step.subscription
    assert step.invoice is not None and step.invoice.id == "in_s1_c1" and step.invoice.collect
    assert [line.amount for line in step.invoice.lines] == [-2250, 13500]  # 21/28 of 3000, 18000
    assert (nxt.price, nxt.quantity, nxt.anchor, nxt.period, nxt.changes) == (PRO, 2, T0, 0, 1)
    # a second change credits what the first one charged
    again = sb.apply(nxt, sb.PlanChange(T0 + days(14), BASIC))
    assert again.invoice is not None and again.invoice.id == "in_s1_c2"
    assert [line.amount for line in again.invoice.lines] == [-9000, 1500]
    # the next renewal is the new plan's whole price
    renewal = sb.apply(again.subscription, sb.PeriodEnd(sb.current_period(sub).end, 0))
    assert renewal.invoice is not None and renewal.invoice.total == 3000
    no_proration = sb.apply(sub, sb.PlanChange(T0 + days(7), PRO, prorate=False))
    assert no_proration.invoice is None and no_proration.subscription.price == PRO
    trial = sb.apply(new(trial_days=7).subscription, sb.PlanChange(T0, PRO))
    assert trial.invoice is None and trial.subscription.price == PRO


def test_plan_change_to_another_interval_starts_a_new_cycle() -> None:
    sub = active()
    at = T0 + days(7)
    step = sb.apply(sub, sb.PlanChange(at, YEARLY))
    nxt = step.subscription
    assert (nxt.anchor, nxt.base, nxt.period) == (at, 1, 1)
    assert step.invoice is not None
    assert [line.amount for line in step.invoice.lines] == [-2250, 30000]
    assert sb.current_period(nxt).end == at.replace(year=2028)
    renewal = sb.apply(nxt, sb.PeriodEnd(at.replace(year=2028), 1))
    assert renewal.invoice is not None and renewal.invoice.id == "in_s1_2"  # numbering goes on


def test_plan_change_refusals() -> None:
    with pytest.raises(BillingError) as e:
        sb.apply(active(), sb.PlanChange(T0 + days(1), Price(id="eu", amount=1, currency="EUR",
                                                               interval="month")))  # fmt: skip
    assert e.value.code == "currency_mismatch"
    with pytest.raises(BillingError) as e:
        sb.apply(active(), sb.PlanChange(T0 + days(40), PRO))
    assert e.value.code == "out_of_range"
    with pytest.raises(BillingError) as e:
        sb.apply(in_status("past_due"), sb.PlanChange(T0 + days(7), PRO))
    assert e.value.code == "transition_refused"


def test_pause_credits_and_resume_starts_a_new_cycle() -> None:
    step = sb.apply(active(), sb.Pause(T0 + days(7)))
    paused = step.subscription
    assert paused.status == "paused" and paused.billed is None
    assert step.invoice is not None and step.invoice.total == -2250
    resumed_at = T0 + days(40)
    step = sb.apply(paused, sb.Resume(resumed_at))
    sub = step.subscription
    assert (sub.status, sub.anchor, sub.base, sub.period) == ("active", resumed_at, 1, 1)
    assert step.invoice is not None and step.invoice.id == "in_s1_1" and step.invoice.total == 3000
    with pytest.raises(BillingError):
        sb.apply(paused, sb.Resume(T0))  # before the pause


def test_dunning_past_due_at_first_failure_then_canceled() -> None:
    sub = active()
    failed_at = T0 + days(2)
    sub = sb.apply(sub, sb.InvoicePaymentFailed(failed_at, "in_s1_0")).subscription
    assert sub.status == "past_due" and sub.dunning == dn.start("in_s1_0", failed_at)
    with pytest.raises(BillingError) as e:  # retries remain
        sb.apply(sub, sb.DunningExhausted(failed_at, "in_s1_0"))
    assert e.value.code == "not_due"
    for retry in dn.timeline(dn.DEFAULT, failed_at):
        sub = sb.apply(sub, sb.InvoicePaymentFailed(retry, "in_s1_0")).subscription
        assert sub.status == "past_due"
    assert sub.dunning is not None and dn.exhausted(dn.DEFAULT, sub.dunning)
    step = sb.apply(sub, sb.DunningExhausted(failed_at + days(7), "in_s1_0"))
    assert step.subscription.status == "canceled" and step.close_invoice == "in_s1_0"
    leave = dn.Policy(on_exhausted="leave_past_due")
    kept = sb.apply(sub, sb.DunningExhausted(failed_at + days(7), "in_s1_0"), leave)
    assert kept.subscription.status == "past_due" and kept.subscription.dunning is None
    assert kept.close_invoice == "in_s1_0"
    # a late payment of the uncollectible invoice makes it active again
    late = sb.apply(kept.subscription, sb.InvoicePaid(T0 + days(20), "in_s1_0"))
    assert late.subscription.status == "active"


def test_payment_during_dunning_and_other_invoices() -> None:
    sub = in_status("past_due")
    other = sb.apply(sub, sb.InvoicePaymentFailed(T0 + days(8), "in_s1_c1")).subscription
    assert other == sub  # dunning follows the first failed invoice
    assert sb.apply(sub, sb.InvoicePaid(T0 + days(8), "in_s1_c1")).subscription.status == "past_due"
    paid = sb.apply(sub, sb.InvoicePaid(T0 + days(8), "in_s1_0")).subscription
    assert paid.status == "active" and paid.dunning is None
    # renewals go on while past_due
    step = sb.apply(sub, sb.PeriodEnd(sb.current_period(sub).end, 0))
    assert step.subscription.status == "past_due" and step.invoice is not None


def test_create_bounds_and_event_decoding() -> None:
    for bad in ({"trial_days": -1}, {"trial_days": sb.MAX_TRIAL_DAYS + 1}, {"quantity": 0},
                {"id": "s:1"}, {"at": T0.replace(tzinfo=None)}):  # fmt: skip
        fields: dict[str, object] = {"id": "s1", "customer": "c1", "price": BASIC,
                                     "quantity": 1, "at": T0, **bad}  # fmt: skip
        with pytest.raises(BillingError):
            sb.create(**fields)  # type: ignore[arg-type]
    raw = msgspec.json.encode(sb.PeriodEnd(T0, 3))
    assert msgspec.json.decode(raw, type=sb.Event) == sb.PeriodEnd(T0, 3)  # type: ignore[arg-type]
    assert b'"type":"period_end"' in raw
    with pytest.raises(BillingError):
        sb.apply(active(), sb.CancelNow(T0.replace(tzinfo=None)))


changes = st.lists(
    st.tuples(st.integers(1, 27 * 86_400), st.sampled_from([BASIC, PRO]), st.integers(1, 50)),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(changes=changes, cancel_after=st.integers(1, 28 * 86_400 - 1))
def test_credits_never_exceed_what_was_billed(
    changes: list[tuple[int, Price, int]], cancel_after: int
) -> None:
    """Any plan changes within a period, then an immediate cancellation: what the
    subscription credited never exceeds what it billed, and every invoice id is new."""
    step = new()
    sub = sb.apply(step.subscription, sb.InvoicePaid(T0, "in_s1_0")).subscription
    billed, credited, ids = 3000, 0, {"in_s1_0"}
    times = sorted({s for s, _, _ in changes} | {cancel_after})
    for at_s, (_, price, quantity) in zip(times, [*changes, (0, BASIC, 1)], strict=False):
        at = T0 + dt.timedelta(seconds=at_s)
        if at_s == cancel_after or at_s == times[-1]:
            step = sb.apply(sub, sb.CancelNow(at))
        else:
            step = sb.apply(sub, sb.PlanChange(at, price, quantity))
        if step.invoice is not None:
            assert step.invoice.id not in ids
            ids.add(step.invoice.id)
            billed += sum(x.amount for x in step.invoice.lines if x.amount > 0)
            credited -= sum(x.amount for x in step.invoice.lines if x.amount < 0)
        assert credited <= billed
        sub = step.subscription
        if sub.status == "canceled":
            break
    assert sub.status == "canceled"
