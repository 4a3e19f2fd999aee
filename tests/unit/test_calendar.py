"""Federal Reserve holidays and ACH settlement dates.

Expected holidays are transcribed from the Federal Reserve's published schedules
(federalreserve.gov "K.8 Holidays Observed by the Federal Reserve System 2026-2030" and the
Reserve Banks' 2025-2027 holiday schedule), not derived from the code's rules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from paynode.domain.rails.calendar import (
    EASTERN,
    USEasternFallback,
    add_business_days,
    business_day_on_or_after,
    fed_holidays,
    is_business_day,
    next_business_day,
    settlement_date,
)

NY = ZoneInfo("America/New_York")

# (month, day) of every date the Fed lists, plus observed Mondays; "*" marks a Saturday
# holiday (Fed open the Friday before), "**" a Sunday one (closed the Monday after).
PUBLISHED: dict[int, list[tuple[int, int]]] = {
    2025: [(1, 1), (1, 20), (2, 17), (5, 26), (6, 19), (7, 4), (9, 1), (10, 13), (11, 11),
           (11, 27), (12, 25)],
    2026: [(1, 1), (1, 19), (2, 16), (5, 25), (6, 19), (7, 4), (9, 7), (10, 12), (11, 11),
           (11, 26), (12, 25)],  # Jul 4 *
    2027: [(1, 1), (1, 18), (2, 15), (5, 31), (6, 19), (7, 4), (7, 5), (9, 6), (10, 11),
           (11, 11), (11, 25), (12, 25)],  # Jun 19 *, Jul 4 ** -> Jul 5, Dec 25 *
    2028: [(1, 1), (1, 17), (2, 21), (5, 29), (6, 19), (7, 4), (9, 4), (10, 9), (11, 11),
           (11, 23), (12, 25)],  # Jan 1 *, Nov 11 *
    2029: [(1, 1), (1, 15), (2, 19), (5, 28), (6, 19), (7, 4), (9, 3), (10, 8), (11, 11),
           (11, 12), (11, 22), (12, 25)],  # Nov 11 ** -> Nov 12
}  # fmt: skip


@pytest.mark.parametrize("year", sorted(PUBLISHED))
def test_holidays_match_published_schedule(year: int) -> None:
    assert sorted(fed_holidays(year)) == [date(year, m, d) for m, d in PUBLISHED[year]]


def test_holiday_names() -> None:
    h = fed_holidays(2027)
    assert h[date(2027, 1, 18)] == "Martin Luther King Jr. Day"
    assert h[date(2027, 7, 4)] == "Independence Day"
    assert h[date(2027, 7, 5)] == "Independence Day (observed)"
    assert h[date(2027, 12, 25)] == "Christmas Day"


def test_juneteenth_only_from_2022() -> None:
    assert date(2021, 6, 19) not in fed_holidays(2021)
    assert fed_holidays(2022)[date(2022, 6, 20)] == (
        "Juneteenth National Independence Day (observed)"
    )


def test_result_is_a_copy() -> None:
    fed_holidays(2026).clear()
    assert len(fed_holidays(2026)) == 11


@pytest.mark.parametrize(
    ("day", "expected", "why"),
    [
        (date(2026, 7, 3), True, "Fri before Sat Jul 4: Fed open"),
        (date(2026, 7, 4), False, "Saturday holiday"),
        (date(2026, 7, 6), True, "Saturday holiday is not moved to Monday either"),
        (date(2027, 6, 18), True, "Fri before Sat Juneteenth: Fed open"),
        (date(2027, 7, 5), False, "Mon after Sun Jul 4: observed"),
        (date(2027, 12, 24), True, "Fri before Sat Christmas: Fed open"),
        (date(2027, 12, 31), True, "Fri before Sat New Year 2028: Fed open"),
        (date(2029, 11, 12), False, "Mon after Sun Veterans Day: observed"),
        (date(2025, 11, 27), False, "Thanksgiving"),
        (date(2025, 11, 28), True, "Black Friday is a Fed business day"),
        (date(2025, 10, 13), False, "Columbus Day"),
        (date(2025, 6, 14), False, "plain Saturday"),
        (date(2025, 6, 15), False, "plain Sunday"),
        (date(2025, 6, 16), True, "plain Monday"),
    ],
)
def test_is_business_day(day: date, expected: bool, why: str) -> None:
    assert is_business_day(day) is expected, why


def test_business_day_navigation() -> None:
    assert next_business_day(date(2025, 8, 29)) == date(2025, 9, 2)  # Fri -> Labor Day -> Tue
    assert next_business_day(date(2025, 6, 16)) == date(2025, 6, 17)  # strictly after
    assert business_day_on_or_after(date(2025, 6, 16)) == date(2025, 6, 16)
    assert business_day_on_or_after(date(2025, 12, 25)) == date(2025, 12, 26)
    assert business_day_on_or_after(date(2026, 7, 4)) == date(2026, 7, 6)
    assert add_business_days(date(2025, 12, 24), 1) == date(2025, 12, 26)
    assert add_business_days(date(2025, 12, 24), 3) == date(2025, 12, 30)
    assert add_business_days(date(2025, 12, 31), 1) == date(2026, 1, 2)  # across the year
    assert add_business_days(date(2025, 12, 26), -1) == date(2025, 12, 24)
    assert add_business_days(date(2025, 12, 27), 0) == date(2025, 12, 27)


def _et(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=NY)


@pytest.mark.parametrize(
    ("submitted", "same_day", "expected", "why"),
    [
        (_et(2025, 6, 17, 10), False, date(2025, 6, 18), "standard, before cutoff: next day"),
        (_et(2025, 6, 17, 10), True, date(2025, 6, 17), "same-day, before cutoff: today"),
        (_et(2025, 6, 17, 14, 44), True, date(2025, 6, 17), "one minute before cutoff"),
        (_et(2025, 6, 17, 14, 45), True, date(2025, 6, 18), "exactly at cutoff misses it"),
        (_et(2025, 6, 10, 16), False, date(2025, 6, 12), "standard after cutoff: +2"),
        (_et(2025, 6, 18, 10), False, date(2025, 6, 20), "Wed before Juneteenth skips Thu"),
        (_et(2025, 8, 29, 10), False, date(2025, 9, 2), "Fri before Labor Day: Tue"),
        (_et(2025, 8, 29, 10), True, date(2025, 8, 29), "same-day Fri before Labor Day"),
        (_et(2025, 8, 29, 16), True, date(2025, 9, 2), "same-day Fri after cutoff: Tue"),
        (_et(2025, 8, 29, 16), False, date(2025, 9, 3), "standard Fri after cutoff: Wed"),
        (_et(2025, 11, 26, 10), False, date(2025, 11, 28), "Wed before Thanksgiving: Fri"),
        (_et(2025, 11, 26, 16), False, date(2025, 12, 1), "Wed after cutoff: Fri, then Mon"),
        (_et(2025, 11, 27, 9), True, date(2025, 11, 28), "same-day on Thanksgiving: Fri"),
        (_et(2025, 12, 24, 10), False, date(2025, 12, 26), "Christmas Eve: skips Christmas"),
        (_et(2025, 12, 25, 10), False, date(2025, 12, 29), "on Christmas: Fri process, Mon"),
        (_et(2027, 12, 23, 10), False, date(2027, 12, 24), "Sat Christmas: Fri Dec 24 open"),
        (_et(2026, 7, 4, 10), True, date(2026, 7, 6), "Sat holiday: Monday, not moved"),
        (_et(2025, 6, 14, 10), False, date(2025, 6, 17), "Saturday: process Mon, settle Tue"),
        (_et(2025, 6, 15, 23, 59), True, date(2025, 6, 16), "Sunday night same-day: Monday"),
    ],
)
def test_settlement_date(submitted: datetime, same_day: bool, expected: date, why: str) -> None:
    assert settlement_date(submitted, same_day) == expected, why


def test_cutoff_is_eastern_wall_clock() -> None:
    # 18:30 UTC is 14:30 EDT in June (before cutoff) but 13:30 EST in January.
    assert settlement_date(datetime(2025, 6, 17, 18, 30, tzinfo=UTC), True) == date(2025, 6, 17)
    # 19:00 UTC is 15:00 EDT: after cutoff, although UTC-5 would have said 14:00.
    assert settlement_date(datetime(2025, 6, 17, 19, 0, tzinfo=UTC), True) == date(2025, 6, 18)
    assert settlement_date(datetime(2025, 1, 14, 19, 0, tzinfo=UTC), True) == date(2025, 1, 14)
    # 02:30 UTC Wednesday is 22:30 Tuesday in New York: before a 23:00 cutoff, so Tuesday.
    late = time(23, 0)
    at = datetime(2025, 6, 18, 2, 30, tzinfo=UTC)
    assert settlement_date(at, True, same_day_cutoff=late) == date(2025, 6, 17)


def test_cutoffs_are_parameters() -> None:
    at = _et(2025, 6, 10, 11)  # a Tuesday
    early = time(10, 30)
    assert settlement_date(at, True, same_day_cutoff=early) == date(2025, 6, 11)
    assert settlement_date(at, True, cutoff=early) == date(2025, 6, 10)
    assert settlement_date(at, False, cutoff=early) == date(2025, 6, 12)
    assert settlement_date(at, False, same_day_cutoff=early) == date(2025, 6, 11)
    chicago = ZoneInfo("America/Chicago")  # 11:00 ET is 10:00 CT
    assert settlement_date(at, True, same_day_cutoff=early, tz=chicago) == date(2025, 6, 10)


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        settlement_date(datetime(2025, 6, 17, 10), False)


def test_default_zone_is_eastern() -> None:
    probe = datetime(2025, 6, 17, 12, tzinfo=UTC)
    assert probe.astimezone(EASTERN).utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize("year", [2007, 2025, 2026, 2027, 2030])
def test_fallback_matches_tz_database(year: int) -> None:
    fallback: tzinfo = USEasternFallback()
    t = datetime(year, 1, 1, tzinfo=UTC)
    while t.year == year:
        ours, ref = t.astimezone(fallback), t.astimezone(NY)
        assert (ours.replace(tzinfo=None), ours.fold, ours.utcoffset()) == (
            ref.replace(tzinfo=None),
            ref.fold,
            ref.utcoffset(),
        ), t
        # Wall time -> offset, including the gap and the repeated hour.
        for fold in (0, 1):
            wall = ref.replace(tzinfo=None, fold=fold)
            assert (
                wall.replace(tzinfo=fallback).utcoffset() == wall.replace(tzinfo=NY).utcoffset()
            ), (wall, fold)
        t += timedelta(minutes=30)


def test_fallback_gap_and_fold() -> None:
    tz = USEasternFallback()
    gap = datetime(2025, 3, 9, 2, 30)
    assert gap.replace(tzinfo=tz).utcoffset() == timedelta(hours=-5)
    assert gap.replace(tzinfo=tz, fold=1).utcoffset() == timedelta(hours=-4)
    first = datetime(2025, 11, 2, 5, 30, tzinfo=UTC).astimezone(tz)
    second = datetime(2025, 11, 2, 6, 30, tzinfo=UTC).astimezone(tz)
    assert (first.hour, first.fold, first.tzname()) == (1, 0, "EDT")
    assert (second.hour, second.fold, second.tzname()) == (1, 1, "EST")
    assert settlement_date(datetime(2025, 6, 17, 19, tzinfo=UTC), True, tz=tz) == date(2025, 6, 18)
