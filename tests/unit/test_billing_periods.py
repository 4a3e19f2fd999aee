"""Prices and billing periods (domain/billing/periods.py)."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynode.domain.billing import periods as p
from paynode.domain.billing.errors import BillingError

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def starts(anchor: dt.datetime, interval: str, count: int, n: int) -> list[dt.datetime]:
    return [p.period_start(anchor, interval, count, i) for i in range(n)]


def test_month_end_anchor_clamps_and_comes_back_without_drift() -> None:
    got = [d.date() for d in starts(at(2027, 1, 31, 12), "month", 1, 6)]
    assert got == [dt.date(2027, 1, 31), dt.date(2027, 2, 28), dt.date(2027, 3, 31),
                   dt.date(2027, 4, 30), dt.date(2027, 5, 31), dt.date(2027, 6, 30)]  # fmt: skip
    # in a leap year February has its 29th
    assert p.period_start(at(2028, 1, 31), "month", 1, 1) == at(2028, 2, 29)
    # the time of day is the anchor's
    assert all(s.hour == 12 for s in starts(at(2027, 1, 31, 12), "month", 1, 24))


def test_month_end_anchor_over_several_years_and_leap_years() -> None:
    anchor = at(2027, 1, 31, 9, 30)
    for n, start in enumerate(starts(anchor, "month", 1, 12 * 9)):  # 2027..2035
        month_days = (dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)
                      - dt.timedelta(days=1)).day  # fmt: skip
        assert start.day == min(31, month_days), (n, start)
        assert (start.hour, start.minute) == (9, 30)
    febs = [s for s in starts(anchor, "month", 1, 12 * 9) if s.month == 2]
    assert [s.day for s in febs] == [28, 29, 28, 28, 28, 29, 28, 28, 28]  # 2028, 2032 leap


def test_leap_day_yearly_anchor() -> None:
    got = starts(at(2028, 2, 29, 8), "year", 1, 9)
    assert [(s.year, s.month, s.day) for s in got] == [
        (2028, 2, 29), (2029, 2, 28), (2030, 2, 28), (2031, 2, 28), (2032, 2, 29),
        (2033, 2, 28), (2034, 2, 28), (2035, 2, 28), (2036, 2, 29),
    ]  # fmt: skip


def test_quarterly_and_day_and_week_periods() -> None:
    assert starts(at(2026, 11, 30), "month", 3, 3) == [at(2026, 11, 30), at(2027, 2, 28),
                                                       at(2027, 5, 30)]  # fmt: skip
    assert p.period_start(at(2026, 1, 1), "day", 10, 3) == at(2026, 1, 31)
    assert p.period_start(at(2026, 1, 1), "week", 2, 2) == at(2026, 1, 29)
    period = p.period(at(2026, 1, 31), "month", 1, 1)
    assert (period.index, period.start, period.end) == (1, at(2026, 2, 28), at(2026, 3, 31))
    assert period.seconds() == 31 * 86_400


def test_period_containing_an_instant() -> None:
    price = p.Price(id="basic", amount=1000, currency="USD", interval="month")
    anchor = at(2027, 1, 31, 12)
    assert p.period_at(anchor, price, anchor).index == 0
    assert p.period_at(anchor, price, at(2027, 2, 28, 11, 59)).index == 0
    assert p.period_at(anchor, price, at(2027, 2, 28, 12)).index == 1  # start is inclusive
    assert p.period_at(anchor, price, at(2027, 3, 31, 11)).index == 1
    assert p.period_at(anchor, price, at(2027, 3, 31, 12)).index == 2
    with pytest.raises(BillingError) as e:
        p.period_at(anchor, price, at(2027, 1, 1))
    assert e.value.code == "out_of_range"


@given(
    anchor=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1),
                        timezones=st.just(UTC)),
    interval=st.sampled_from(p.INTERVALS),
    count=st.integers(1, 365),
    n=st.integers(0, 100),
)  # fmt: skip
def test_periods_tile_time_and_contain_their_instants(
    anchor: dt.datetime, interval: str, count: int, n: int
) -> None:
    count = min(count, p.MAX_COUNT[interval])
    if interval in ("day", "week"):  # stay before 2200: at most a year a period, 100 periods
        count = min(count, 100)
    period = p.period(anchor, interval, count, n)
    assert period.start < period.end
    assert period.end == p.period(anchor, interval, count, n + 1).start  # no gap, no overlap
    assert p.index_at(anchor, interval, count, period.start) == n
    assert p.index_at(anchor, interval, count, period.end - dt.timedelta(microseconds=1)) == n


def test_price_bounds() -> None:
    ok = p.Price(id="pro", amount=0, currency="EUR", interval="year")
    assert ok.interval_count == 1
    bad = [
        {"amount": -1}, {"amount": p.MAX_PRICE + 1}, {"amount": 1.5}, {"currency": "usd"},
        {"interval": "hour"}, {"interval_count": 0}, {"interval": "year", "interval_count": 2},
        {"interval": "month", "interval_count": 13}, {"interval": "day", "interval_count": 366},
        {"interval": "week", "interval_count": 53}, {"id": "a:b"}, {"id": "x" * 65},
    ]  # fmt: skip
    for change in bad:
        fields = {"id": "pro", "amount": 100, "currency": "USD", "interval": "month", **change}
        with pytest.raises(BillingError):
            p.Price(**fields)  # type: ignore[arg-type]
    # decoding runs the same checks
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"id":"x","amount":100,"currency":"USD","interval":"month","interval_count":0}',
            type=p.Price,
        )
    assert p.MAX_COUNT == {"day": 365, "week": 52, "month": 12, "year": 1}


def test_instants_are_utc_and_bounded() -> None:
    with pytest.raises(BillingError):
        p.period_start(dt.datetime(2026, 1, 1), "day", 1, 0)  # naive
    paris = dt.timezone(dt.timedelta(hours=1))
    with pytest.raises(BillingError):
        p.period_start(dt.datetime(2026, 1, 1, tzinfo=paris), "day", 1, 0)
    with pytest.raises(BillingError):
        p.period_start(at(2026, 1, 1), "day", 1, p.MAX_PERIODS + 1)
    with pytest.raises(BillingError):
        p.period_start(at(2026, 1, 1), "day", 1, -1)
    with pytest.raises(BillingError):
        p.period_start(at(2190, 1, 1), "year", 1, 20)
    with pytest.raises(BillingError):
        p.period_start(at(2190, 1, 1), "day", 365, 20)
