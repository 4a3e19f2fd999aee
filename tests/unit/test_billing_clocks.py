"""Test clocks and due events (domain/billing/clocks.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paynode.domain.billing import clocks as ck
from paynode.domain.billing import dunning as dn
from paynode.domain.billing import subscriptions as sb
from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import Price

UTC = dt.UTC
T0 = dt.datetime(2027, 1, 31, 12, tzinfo=UTC)
BASIC = Price(id="basic", amount=3000, currency="USD", interval="month")
WEEKLY = Price(id="weekly", amount=700, currency="USD", interval="week")


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


def test_a_clock_only_moves_forward_and_boundedly() -> None:
    clock = ck.create("clk_1", T0)
    later = ck.advance(clock, T0 + days(7))
    assert later.now == T0 + days(7) and clock.now == T0  # frozen values
    for to in (T0, T0 - days(1)):
        with pytest.raises(BillingError) as e:
            ck.advance(clock, to)
        assert e.value.code == "clock_backwards"
    with pytest.raises(BillingError) as e:
        ck.advance(clock, T0 + ck.MAX_ADVANCE + dt.timedelta(seconds=1))
    assert e.value.code == "out_of_range"
    assert ck.advance(clock, T0 + ck.MAX_ADVANCE).now == T0 + ck.MAX_ADVANCE
    with pytest.raises(BillingError):
        ck.create("clk:1", T0)
    with pytest.raises(BillingError):
        ck.advance(clock, (T0 + days(1)).replace(tzinfo=None))


def test_the_now_a_subscription_sees() -> None:
    wall = T0 + days(100)
    on_clock = sb.create(id="s1", customer="c", price=BASIC, quantity=1, at=T0, trial_days=7,
                         test_clock="clk_1").subscription  # fmt: skip
    plain = sb.create(id="s2", customer="c", price=BASIC, quantity=1, at=T0).subscription
    clocks = {"clk_1": ck.create("clk_1", T0 + days(3))}
    assert ck.now_for(on_clock, clocks, wall) == T0 + days(3)
    assert ck.now_for(plain, clocks, wall) == wall
    with pytest.raises(BillingError) as e:
        ck.now_for(on_clock, {}, wall)
    assert e.value.code == "not_found"


def subscribe(id: str, price: Price = BASIC, trial_days: int = 0, at: dt.datetime = T0,
              ) -> sb.Subscription:  # fmt: skip
    step = sb.create(id=id, customer="c", price=price, quantity=1, at=at, trial_days=trial_days)
    if step.invoice is None:
        return step.subscription
    return sb.apply(step.subscription, sb.InvoicePaid(at, step.invoice.id)).subscription


def stepper(declining: set[str], policy: dn.Policy = dn.DEFAULT) -> ck.Step:
    """What the scheduler does with each due event: apply it, collect any invoice it makes
    (a declining card fails, others pay), feed the outcome back."""

    def collect(sub: sb.Subscription, invoice: str, at: dt.datetime) -> sb.Subscription:
        if sub.id in declining:
            return sb.apply(sub, sb.InvoicePaymentFailed(at, invoice), policy).subscription
        return sb.apply(sub, sb.InvoicePaid(at, invoice), policy).subscription

    def step(sub: sb.Subscription, due: ck.Due) -> sb.Subscription:
        if due.kind == "dunning_retry":
            assert due.invoice_id is not None
            return collect(sub, due.invoice_id, due.at)
        if due.kind == "dunning_exhausted":
            assert due.invoice_id is not None
            return sb.apply(sub, sb.DunningExhausted(due.at, due.invoice_id), policy).subscription
        event: sb.Event = (sb.TrialEnd(due.at) if due.kind == "trial_end"
                           else sb.PeriodEnd(due.at, due.index or 0))  # fmt: skip
        done = sb.apply(sub, event, policy)
        if done.invoice is not None and done.invoice.collect:
            return collect(done.subscription, done.invoice.id, due.at)
        return done.subscription

    return step


def test_next_due_per_status() -> None:
    trial = sb.create(id="t", customer="c", price=BASIC, quantity=1, at=T0,
                      trial_days=7).subscription  # fmt: skip
    due = ck.next_due(trial)
    assert due is not None and (due.kind, due.at, due.key) == ("trial_end", T0 + days(7),
                                                               "t:trial_end")  # fmt: skip
    sub = subscribe("a")
    due = ck.next_due(sub)
    assert due is not None and (due.kind, due.index, due.key) == ("period_end", 0,
                                                                  "a:period_end:0")  # fmt: skip
    assert due.at == dt.datetime(2027, 2, 28, 12, tzinfo=UTC)
    past_due = sb.apply(sub, sb.InvoicePaymentFailed(T0, "in_a_0")).subscription
    due = ck.next_due(past_due)
    assert due is not None and (due.kind, due.at, due.attempt) == ("dunning_retry", T0 + days(1), 1)
    paused = sb.apply(sub, sb.Pause(T0 + days(1))).subscription
    assert ck.next_due(paused) is None
    assert ck.next_due(sb.create(id="i", customer="c", price=BASIC, quantity=1,
                                 at=T0).subscription) is None  # fmt: skip


def test_a_trial_a_renewal_and_dunning_to_cancellation() -> None:
    subs = {"good": subscribe("good", trial_days=7), "bad": subscribe("bad", trial_days=7)}
    state, ran = ck.drain(subs, T0 + days(7 + 31 + 30), stepper({"bad"}))
    good = [(d.kind, d.at) for d in ran if d.subscription == "good"]
    bad = [(d.kind, d.at) for d in ran if d.subscription == "bad"]
    trial_end = T0 + days(7)  # Feb 7 12:00
    assert good == [("trial_end", trial_end),
                    ("period_end", dt.datetime(2027, 3, 7, 12, tzinfo=UTC)),
                    ("period_end", dt.datetime(2027, 4, 7, 12, tzinfo=UTC))]  # fmt: skip
    assert bad == [("trial_end", trial_end),
                   *[("dunning_retry", trial_end + days(n)) for n in (1, 3, 5, 7)],
                   ("dunning_exhausted", trial_end + days(7))]  # fmt: skip
    assert state["good"].status == "active" and state["good"].period == 2
    assert state["bad"].status == "canceled"
    assert ran == sorted(ran)  # global order: (at, kind, subscription)


def test_a_renewal_and_a_retry_at_the_same_instant_settle_first() -> None:
    sub = subscribe("w", price=WEEKLY)
    sub = sb.apply(sub, sb.InvoicePaymentFailed(T0, "in_w_0"), dn.Policy(retry_days=[7]))
    policy = dn.Policy(retry_days=[7])
    _, ran = ck.drain({"w": sub.subscription}, T0 + days(7), stepper(set(), policy), policy)
    assert [(d.kind, d.at) for d in ran] == [("dunning_retry", T0 + days(7)),
                                             ("period_end", T0 + days(7))]  # fmt: skip


def test_drain_limit_and_a_stuck_step() -> None:
    subs = {"d": subscribe("d", price=Price(id="daily", amount=1, currency="USD", interval="day"))}
    state, ran = ck.drain(subs, T0 + days(30), stepper(set()), limit=10)
    assert len(ran) == 10 and state["d"].period == 10
    state, rest = ck.drain(state, T0 + days(30), stepper(set()))
    assert len(rest) == 20 and {d.key for d in ran}.isdisjoint(d.key for d in rest)
    with pytest.raises(BillingError) as e:
        ck.drain(subs, T0 + days(30), lambda sub, due: sub)
    assert e.value.code == "stuck"


prices = st.sampled_from([BASIC, WEEKLY, Price(id="q", amount=900, currency="USD",
                                               interval="month", interval_count=3)])  # fmt: skip
fleet = st.lists(st.tuples(prices, st.integers(0, 14), st.booleans(), st.integers(0, 40)),
                 min_size=1, max_size=6)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(fleet=fleet, hops=st.lists(st.integers(1, 60 * 86_400), min_size=1, max_size=8))
def test_advancing_in_steps_runs_each_event_once_and_in_order(
    fleet: list[tuple[Price, int, bool, int]], hops: list[int]
) -> None:
    """However a clock is advanced (one big step or many small ones), the same events
    run, each exactly once, in time order."""
    subs = {}
    for i, (price, trial, _, start_day) in enumerate(fleet):
        subs[f"s{i}"] = subscribe(f"s{i}", price, trial, T0 + days(start_day))
    declining = {f"s{i}" for i, (_, _, bad, _) in enumerate(fleet) if bad}
    clock = ck.create("clk", T0)
    state, stepped = dict(subs), []
    for hop in hops:
        clock = ck.advance(clock, clock.now + dt.timedelta(seconds=hop))
        state, ran = ck.drain(state, clock.now, stepper(declining))
        assert all(d.at <= clock.now for d in ran)
        stepped += ran
    _, at_once = ck.drain(subs, clock.now, stepper(declining))
    assert stepped == at_once
    assert len({d.key for d in stepped}) == len(stepped)  # exactly once
    assert [d.at for d in stepped] == sorted(d.at for d in stepped)  # in time order
