"""Proration: floor the credit, ceil the charge (domain/billing/proration.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynode.domain.billing import proration as pr
from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import MAX_PRICE, Period, Price

UTC = dt.UTC
START = dt.datetime(2027, 3, 1, tzinfo=UTC)
END = dt.datetime(2027, 3, 31, tzinfo=UTC)  # 30 days
PERIOD = Period(0, START, END)


def price(amount: int, id: str = "p") -> Price:
    return Price(id=id, amount=amount, currency="USD", interval="month")


def test_half_a_period_and_the_rounding_rule() -> None:
    mid = START + dt.timedelta(days=15)
    paid = pr.Paid(amount=1001, start=START, end=END)
    assert pr.unused_credit(paid, mid) == 500  # 500.5 floored
    assert pr.remaining_charge(price(1001), 1, PERIOD, mid) == 501  # 500.5 ceiled
    assert pr.remaining_charge(price(1000), 3, PERIOD, mid) == 1500
    # clamped: before the start everything is unused, at or after the end nothing is
    assert pr.unused_credit(paid, START - dt.timedelta(days=1)) == 1001
    assert pr.unused_credit(paid, END) == 0
    # seconds, not microseconds: the instant's fraction of a second is dropped
    one_s = START + dt.timedelta(seconds=1, microseconds=999_999)
    assert pr.unused_credit(pr.Paid(amount=30 * 86_400, start=START, end=END), one_s) == (
        30 * 86_400 - 1
    )


def test_change_and_cancel_lines() -> None:
    mid = START + dt.timedelta(days=10)
    paid = pr.Paid(amount=3000, start=START, end=END)
    lines = pr.change_lines(paid, price(6000, "pro"), 2, PERIOD, mid)
    assert [(x.amount, x.start, x.end) for x in lines] == [(-2000, mid, END), (8000, mid, END)]
    assert lines[1].description == "Remaining time on 2 x pro"
    assert [x.amount for x in pr.cancel_lines(paid, mid)] == [-2000]
    assert pr.cancel_lines(paid, END) == []  # nothing left: no zero line
    assert pr.cancel_lines(pr.Paid(amount=0, start=START, end=END), mid) == []
    with pytest.raises(BillingError):
        pr.change_lines(paid, price(1), 1, PERIOD, END)  # not within the period
    with pytest.raises(BillingError):
        pr.remaining_charge(price(1), 0, PERIOD, mid)
    with pytest.raises(BillingError):
        pr.remaining_charge(price(1), pr.MAX_QUANTITY + 1, PERIOD, mid)
    with pytest.raises(BillingError):
        pr.unused_credit(pr.Paid(amount=-1, start=START, end=END), mid)
    with pytest.raises(BillingError):
        pr.unused_credit(pr.Paid(amount=1, start=END, end=START), mid)


seconds = st.integers(0, 30 * 86_400)


@given(paid=st.integers(0, MAX_PRICE * pr.MAX_QUANTITY), used=seconds)
def test_kept_plus_credited_is_exactly_what_was_paid(paid: int, used: int) -> None:
    """Floor the credit: never above what was paid, and nothing created or lost."""
    at = START + dt.timedelta(seconds=used)
    credit = pr.unused_credit(pr.Paid(amount=paid, start=START, end=END), at)
    assert 0 <= credit <= paid
    kept = -(-paid * used // (30 * 86_400))  # what the used time costs, ceiled
    assert kept + credit == paid


@given(
    first=st.integers(1, MAX_PRICE),
    changes=st.lists(st.tuples(st.integers(0, MAX_PRICE), st.integers(1, 100)), max_size=8),
    offsets=st.lists(seconds, min_size=8, max_size=8),
)
def test_credits_never_exceed_what_was_paid_over_many_changes(
    first: int, changes: list[tuple[int, int]], offsets: list[int]
) -> None:
    """A period with several plan changes: each change credits what the previous one
    charged; the sum of the credits never exceeds the sum of what was charged, and each
    credit never exceeds the charge it refunds."""
    paid = pr.Paid(amount=first, start=START, end=END)
    charged, credited = first, 0
    for (amount, quantity), offset in zip(changes, sorted(offsets), strict=False):
        at = START + dt.timedelta(seconds=offset)
        if at >= END:
            break
        lines = pr.change_lines(paid, price(amount), quantity, PERIOD, at)
        credit = -sum(x.amount for x in lines if x.amount < 0)
        charge = sum(x.amount for x in lines if x.amount > 0)
        assert 0 <= credit <= paid.amount
        assert charge <= amount * quantity
        credited += credit
        charged += charge
        assert credited <= charged
        paid = pr.Paid(amount=charge, start=at, end=END)
