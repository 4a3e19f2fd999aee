"""Prices and billing periods: the n-th period from a billing cycle anchor, without drift.

Pure. A price is an amount in minor units per ``interval_count`` days, weeks,
months or years (at most one year, as Stripe allows). A subscription's periods
start at its billing cycle anchor: period ``n`` (from 0) starts at
``period_start(anchor, interval, count, n)``, computed from the anchor every time,
never from the previous period, so nothing drifts.

Month-end rule (Stripe's): a monthly or yearly period starts on the anchor's day
of the month, or on the last day of a month that has no such day, at the
anchor's time of day. An anchor on Jan 31 gives Feb 28 (Feb 29 in a leap year),
then Mar 31 again; an anchor on Feb 29 gives Feb 28 in common years and Feb 29
in leap years. Days and weeks are exact multiples of 24 hours: all instants are
UTC, so there is no daylight saving to follow.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Literal

import msgspec

from paynode.domain.billing.errors import BillingError

Interval = Literal["day", "week", "month", "year"]
INTERVALS: tuple[Interval, ...] = ("day", "week", "month", "year")
# The longest interval_count per interval: one year at most, as Stripe allows
# (365 days, 52 weeks, 12 months, 1 year).
MAX_COUNT: dict[str, int] = {"day": 365, "week": 52, "month": 12, "year": 1}
MAX_PRICE = 99_999_999  # minor units per period ($999,999.99): Stripe's 8 digits
MAX_PERIODS = 10_000  # periods of one anchor (27 years of daily periods)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)  # no period starts after this
_CURRENCY = re.compile(r"[A-Z]{3}\Z")
_ID = re.compile(r"[A-Za-z0-9_\-]+\Z")
MAX_ID = 64  # a subscription, price or customer id; derived ids (invoices) get 96


def check_utc(at: dt.datetime, name: str) -> None:
    """Billing instants are UTC-aware: a naive one would mean the host's zone."""
    if at.tzinfo is None or at.utcoffset() != dt.timedelta(0):
        raise BillingError("invalid_field", f"{name} must be a UTC datetime")


def check_id(value: str, name: str, longest: int = MAX_ID) -> None:
    """Ids become parts of derived ids (``in_<subscription>_<n>``): a bounded alphabet
    without the separators the ledger's ids use (``:``)."""
    if not (len(value) <= longest and _ID.match(value)):
        raise BillingError("invalid_field", f"{name} is 1-{longest} of A-Z a-z 0-9 _ -")


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one period of a subscription costs per unit of quantity."""

    id: str
    amount: int  # minor units per period; 0 is a free plan
    currency: str  # ISO 4217, upper case
    interval: Interval
    interval_count: int = 1

    def __post_init__(self) -> None:
        # Runs on construction and on decoding: a Price that exists is a valid one.
        check_id(self.id, "price id")
        if type(self.amount) is not int or not 0 <= self.amount <= MAX_PRICE:
            raise BillingError("invalid_field", f"amount is an integer in 0..{MAX_PRICE}")
        if not _CURRENCY.match(self.currency):
            raise BillingError("invalid_field", "currency is three upper-case letters")
        if self.interval not in MAX_COUNT:
            raise BillingError("invalid_field", f"interval is one of {', '.join(INTERVALS)}")
        top = MAX_COUNT[self.interval]
        if type(self.interval_count) is not int or not 1 <= self.interval_count <= top:
            raise BillingError(
                "invalid_field", f"interval_count for {self.interval} is 1..{top} (a year at most)"
            )


class Period(msgspec.Struct, frozen=True):
    """Period ``index`` of an anchor: ``start <= t < end``."""

    index: int
    start: dt.datetime
    end: dt.datetime

    def seconds(self) -> int:
        return whole_seconds(self.end - self.start)


def whole_seconds(delta: dt.timedelta) -> int:
    """A duration in whole seconds, floored, without going through a float."""
    return delta // dt.timedelta(seconds=1)


def _months(interval: str, count: int) -> int | None:
    if interval == "month":
        return count
    if interval == "year":
        return 12 * count
    return None


def _days(interval: str, count: int) -> int:
    return count * (7 if interval == "week" else 1)


def add_months(anchor: dt.datetime, months: int) -> dt.datetime:
    """``anchor`` moved by whole months, on the anchor's day or the month's last day."""
    years, month0 = divmod(anchor.month - 1 + months, 12)
    year = anchor.year + years
    if year >= LATEST.year:
        raise BillingError("out_of_range", "a period would start after 2200")
    day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
    return anchor.replace(year=year, month=month0 + 1, day=day)


def period_start(anchor: dt.datetime, interval: str, count: int, n: int) -> dt.datetime:
    """When period ``n`` (from 0) of ``anchor`` starts: from the anchor, never the previous
    period, so a month-end anchor comes back to the 31st after a short month."""
    check_utc(anchor, "anchor")
    if not 0 <= n <= MAX_PERIODS:
        raise BillingError("out_of_range", f"a period index is 0..{MAX_PERIODS}")
    months = _months(interval, count)
    if months is not None:
        return add_months(anchor, months * n)
    start = anchor + dt.timedelta(days=_days(interval, count) * n)
    if start >= LATEST:
        raise BillingError("out_of_range", "a period would start after 2200")
    return start


def period(anchor: dt.datetime, interval: str, count: int, n: int) -> Period:
    return Period(
        n, period_start(anchor, interval, count, n), period_start(anchor, interval, count, n + 1)
    )


def index_at(anchor: dt.datetime, interval: str, count: int, at: dt.datetime) -> int:
    """The index of the period that contains ``at`` (``start <= at < end``)."""
    check_utc(anchor, "anchor")
    check_utc(at, "at")
    if at < anchor:
        raise BillingError("out_of_range", "the instant is before the billing cycle anchor")
    months = _months(interval, count)
    if months is None:
        n = (at - anchor) // dt.timedelta(days=_days(interval, count))
    else:
        # An estimate from the calendar months between them, then exact by comparing
        # starts (the clamped month-end days move a boundary by up to three days).
        n = ((at.year - anchor.year) * 12 + at.month - anchor.month) // months
        while n > 0 and period_start(anchor, interval, count, n) > at:
            n -= 1
        while period_start(anchor, interval, count, n + 1) <= at:
            n += 1
    if n > MAX_PERIODS:
        raise BillingError("out_of_range", f"more than {MAX_PERIODS} periods after the anchor")
    return n


def period_at(anchor: dt.datetime, price: Price, at: dt.datetime) -> Period:
    """The period of ``price`` from ``anchor`` that contains ``at``."""
    n = index_at(anchor, price.interval, price.interval_count, at)
    return period(anchor, price.interval, price.interval_count, n)
