"""Proration: credit for unused time and charge for remaining time, by the second.

Pure, integer only. When a subscription changes plan or is canceled now in the
middle of a period, the customer gets back the part of what they paid that
covers the time left, and (on a plan change) pays the new price for that time.

Rounding rule: the **credit is floored and the charge is ceiled**, each line on
its own, to a whole minor unit. Why: a credit computed as
``floor(paid * unused_s / covered_s)`` is never more than what was paid for that
time, so credits can never pay out more than came in, however many changes a
period sees (each change credits what the previous one charged, and
``floor(a * x / y) <= a`` for ``x <= y``); and the part kept plus the part credited
is exactly what was paid (``ceil(paid * used / T) + floor(paid * unused / T) ==
paid``), so no minor unit is created or lost. Rounding goes the node's way, as FX
conversions do (``domain/rails/fx.py``), by less than one minor unit per line.

Time is counted in whole seconds (microseconds are dropped), from the change
instant to the end of the period: the instant itself belongs to the new plan.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import MAX_PRICE, Period, Price, check_utc, whole_seconds

MAX_QUANTITY = 10_000  # units of one price on one subscription


class Paid(msgspec.Struct, frozen=True, kw_only=True):
    """What the customer paid for the time ``start``..``end`` (one invoice line)."""

    amount: int  # minor units, >= 0
    start: dt.datetime
    end: dt.datetime


class ProrationLine(msgspec.Struct, frozen=True, kw_only=True):
    """A credit (``amount < 0``) or a charge (``amount > 0``) for ``start``..``end``."""

    description: str
    amount: int
    start: dt.datetime
    end: dt.datetime


def check_quantity(quantity: int) -> None:
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise BillingError("invalid_field", f"quantity is 1..{MAX_QUANTITY}")


def _remaining(start: dt.datetime, end: dt.datetime, at: dt.datetime) -> tuple[int, int]:
    """(seconds left from ``at`` to ``end``, seconds of ``start``..``end``), ``at`` clamped."""
    for name, value in (("start", start), ("end", end), ("at", at)):
        check_utc(value, name)
    # Every instant counts from the whole second it falls in, so the change instant
    # belongs to the new plan from the start of its second.
    start, end, at = (t.replace(microsecond=0) for t in (start, end, at))
    total = whole_seconds(end - start)
    if total <= 0:
        raise BillingError("invalid_field", "a period ends after it starts")
    left = whole_seconds(end - min(max(at, start), end))
    return left, total


def unused_credit(paid: Paid, at: dt.datetime) -> int:
    """What to give back of ``paid`` for the time from ``at`` to its end: floored."""
    if type(paid.amount) is not int or paid.amount < 0:
        raise BillingError("invalid_field", "a paid amount is a non-negative integer")
    left, total = _remaining(paid.start, paid.end, at)
    return paid.amount * left // total


def remaining_charge(price: Price, quantity: int, period: Period, at: dt.datetime) -> int:
    """What ``quantity`` of ``price`` costs from ``at`` to the end of ``period``: ceiled.
    The price is for the whole period, so the fraction is of the whole period."""
    check_quantity(quantity)
    left, total = _remaining(period.start, period.end, at)
    return -(-price.amount * quantity * left // total)


def cancel_lines(paid: Paid, at: dt.datetime) -> list[ProrationLine]:
    """Immediate cancellation at ``at``: one credit line for the unused time (none if 0)."""
    credit = unused_credit(paid, at)
    if credit == 0:
        return []
    start = min(max(at, paid.start), paid.end)
    return [ProrationLine(description="Unused time", amount=-credit, start=start, end=paid.end)]


def change_lines(
    paid: Paid, price: Price, quantity: int, period: Period, at: dt.datetime
) -> list[ProrationLine]:
    """A plan change at ``at`` within ``period``: the credit for the unused time of what
    was paid, then the charge for the remaining time on the new price and quantity."""
    if not period.start <= at < period.end:
        raise BillingError("out_of_range", "a plan change happens within the current period")
    lines = cancel_lines(paid, at)
    charge = remaining_charge(price, quantity, period, at)
    assert charge <= MAX_PRICE * MAX_QUANTITY
    if charge:
        lines.append(
            ProrationLine(
                description=f"Remaining time on {quantity} x {price.id}",
                amount=charge,
                start=at,
                end=period.end,
            )
        )
    return lines
