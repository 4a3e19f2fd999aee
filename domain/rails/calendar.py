"""US Federal Reserve holiday calendar and ACH settlement dates.

Pure date arithmetic, no I/O. The holiday rules are the *current* Federal Reserve rules
(Juneteenth from 2022, the other ten holidays as fixed since 1971/1986); they are not a
historical record for earlier years.

Federal Reserve observance rule (federalreserve.gov K.8, frbservices.org holiday schedule):
a holiday falling on Sunday is observed the following Monday, while a holiday falling on
Saturday is *not* moved: the Reserve Banks are open the preceding Friday, so ACH settles
on that Friday. This differs from the OPM rule for federal employees (Saturday -> Friday),
which is why a generic "US federal holidays" table must not be used here.

Time zone: cutoffs are Eastern wall-clock times. ``zoneinfo`` is used when the tz database
is available; otherwise :class:`USEasternFallback` implements the post-2007 US rule by hand
(DST from the second Sunday of March 02:00 to the first Sunday of November 02:00 local),
which is wrong for instants before 2007 but matches the tz database from then on.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "EASTERN",
    "USEasternFallback",
    "add_business_days",
    "business_day_on_or_after",
    "fed_holidays",
    "is_business_day",
    "next_business_day",
    "settlement_date",
]

_MON, _THU, _SAT, _SUN = 0, 3, 5, 6
_JUNETEENTH_FIRST_YEAR = 2022
_ONE_DAY = timedelta(days=1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based) given weekday of a month."""
    first = date(year, month, 1)
    offset = (weekday - first.weekday()) % 7
    return first + timedelta(days=offset + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    """The last given weekday of a month."""
    next_month = date(year + (month == 12), month % 12 + 1, 1)
    last = next_month - _ONE_DAY
    return last - timedelta(days=(last.weekday() - weekday) % 7)


@functools.lru_cache(maxsize=64)
def _holidays(year: int) -> dict[date, str]:
    fixed: list[tuple[date, str]] = [
        (date(year, 1, 1), "New Year's Day"),
        (date(year, 7, 4), "Independence Day"),
        (date(year, 11, 11), "Veterans Day"),
        (date(year, 12, 25), "Christmas Day"),
    ]
    if year >= _JUNETEENTH_FIRST_YEAR:
        fixed.append((date(year, 6, 19), "Juneteenth National Independence Day"))
    floating: list[tuple[date, str]] = [
        (_nth_weekday(year, 1, _MON, 3), "Martin Luther King Jr. Day"),
        (_nth_weekday(year, 2, _MON, 3), "Washington's Birthday"),
        (_last_weekday(year, 5, _MON), "Memorial Day"),
        (_nth_weekday(year, 9, _MON, 1), "Labor Day"),
        (_nth_weekday(year, 10, _MON, 2), "Columbus Day"),
        (_nth_weekday(year, 11, _THU, 4), "Thanksgiving Day"),
    ]
    result: dict[date, str] = dict(floating)
    for day, name in fixed:
        result[day] = name
        # Only Sunday moves; a Saturday holiday leaves the Friday a business day. The
        # observed Monday never crosses a year boundary (Dec 25 Sun -> Dec 26), so the
        # table for one year never needs the next year's dates.
        if day.weekday() == _SUN:
            result[day + _ONE_DAY] = f"{name} (observed)"
    return dict(sorted(result.items()))


def fed_holidays(year: int) -> dict[date, str]:
    """Federal Reserve holidays of ``year``, sorted by date.

    Keys are the holidays' own dates as the Fed publishes them, including ones falling on a
    weekend; a Sunday holiday additionally has its observed Monday, named ``"... (observed)"``.
    A Saturday holiday gets no observed day: the Fed is open the Friday before.
    """
    # Copy so callers cannot corrupt the cached table.
    return dict(_holidays(year))


def is_business_day(d: date) -> bool:
    """Whether the Federal Reserve (and so ACH) operates on ``d``: Mon-Fri, not a holiday."""
    return d.weekday() < _SAT and d not in _holidays(d.year)


def next_business_day(d: date) -> date:
    """The first business day strictly after ``d``."""
    d += _ONE_DAY
    while not is_business_day(d):
        d += _ONE_DAY
    return d


def _previous_business_day(d: date) -> date:
    d -= _ONE_DAY
    while not is_business_day(d):
        d -= _ONE_DAY
    return d


def business_day_on_or_after(d: date) -> date:
    """``d`` itself if it is a business day, else the next business day."""
    return d if is_business_day(d) else next_business_day(d)


def add_business_days(d: date, n: int) -> date:
    """Step ``n`` business days forward from ``d`` (backward when ``n`` is negative).

    ``n == 0`` returns ``d`` unchanged even if it is not a business day, so that
    ``add_business_days(d, n)`` composes: ``add(add(d, a), b) == add(d, a + b)`` for a, b >= 0.
    """
    step = next_business_day if n >= 0 else _previous_business_day
    for _ in range(abs(n)):
        d = step(d)
    return d


def _second_sunday_march(year: int) -> datetime:
    return datetime.combine(_nth_weekday(year, 3, _SUN, 2), time(2))


def _first_sunday_november(year: int) -> datetime:
    return datetime.combine(_nth_weekday(year, 11, _SUN, 1), time(2))


class USEasternFallback(tzinfo):
    """US Eastern time under the 2007+ DST rule, for hosts without a tz database.

    Follows PEP 495: in the spring-forward gap ``fold=0`` uses the pre-transition offset
    (EST), and in the repeated autumn hour ``fold=0`` is the first (EDT) occurrence.
    """

    _EST = timedelta(hours=-5)
    _EDT = timedelta(hours=-4)

    def _is_dst_wall(self, wall: datetime, fold: int) -> bool:
        start = _second_sunday_march(wall.year)  # 02:00 EST jumps to 03:00 EDT
        end = _first_sunday_november(wall.year)  # 02:00 EDT falls back to 01:00 EST
        hour = timedelta(hours=1)
        if start <= wall < start + hour:
            return fold == 1
        if end - hour <= wall < end:
            return fold == 0
        return start + hour <= wall < end - hour

    def utcoffset(self, dt: datetime | None) -> timedelta:
        if dt is None:
            return self._EST
        return self._EDT if self._is_dst_wall(dt.replace(tzinfo=None), dt.fold) else self._EST

    def dst(self, dt: datetime | None) -> timedelta:
        if dt is None:
            return timedelta(0)
        return self.utcoffset(dt) - self._EST

    def tzname(self, dt: datetime | None) -> str:
        return "EDT" if self.dst(dt) else "EST"

    def fromutc(self, dt: datetime) -> datetime:
        # The default fromutc cannot mark the second pass through the repeated hour with
        # fold=1, so the conversion is done from the UTC transition instants directly.
        utc = dt.replace(tzinfo=None)
        start_utc = _second_sunday_march(utc.year) - self._EST
        end_utc = _first_sunday_november(utc.year) - self._EDT
        if start_utc <= utc < end_utc:
            return (utc + self._EDT).replace(tzinfo=self, fold=0)
        fold = int(end_utc <= utc < end_utc + timedelta(hours=1))
        return (utc + self._EST).replace(tzinfo=self, fold=fold)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _eastern() -> tzinfo:
    try:
        return ZoneInfo("America/New_York")
    except ZoneInfoNotFoundError:
        return USEasternFallback()


EASTERN: tzinfo = _eastern()
"""America/New_York from the tz database, or :class:`USEasternFallback` if it is missing."""


def settlement_date(
    submitted_at: datetime,
    same_day: bool,
    cutoff: time = time(14, 45),
    same_day_cutoff: time = time(14, 45),
    tz: tzinfo = EASTERN,
) -> date:
    """The ACH settlement date of an entry submitted at ``submitted_at``.

    The submission is converted to ``tz`` and its wall-clock time compared with ``cutoff``
    (standard entries) or ``same_day_cutoff`` (same-day entries); a submission exactly at
    the cutoff has missed it. Submissions after the cutoff or on a non-business day are
    processed on the next business day. Same-day entries settle on the processing day,
    standard entries on the business day after it.

    Raises ``ValueError`` for a naive ``submitted_at``: guessing its zone could move a
    submission across the cutoff and change the settlement date.
    """
    if submitted_at.tzinfo is None or submitted_at.utcoffset() is None:
        raise ValueError("submitted_at must be timezone-aware")
    local = submitted_at.astimezone(tz)
    day = local.date()
    limit = same_day_cutoff if same_day else cutoff
    on_time = is_business_day(day) and local.time() < limit.replace(tzinfo=None)
    processing_day = day if on_time else next_business_day(day)
    return processing_day if same_day else next_business_day(processing_day)
