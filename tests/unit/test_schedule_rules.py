"""Recurring transfers: due times, catch-up and resume (domain/rails/schedule.py)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from paynode.domain.rails import schedule as s

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_monthly_on_the_31st_clamps_without_drift() -> None:
    start = at(2026, 1, 31, 9)
    got = [s.due_at(start, "month", n).date() for n in range(5)]
    assert got == [dt.date(2026, 1, 31), dt.date(2026, 2, 28), dt.date(2026, 3, 31),
                   dt.date(2026, 4, 30), dt.date(2026, 5, 31)]  # fmt: skip
    assert s.due_at(at(2027, 11, 30), "month", 3) == at(2028, 2, 29)  # a leap year


def test_due_occurrences_catch_up_bounded_and_by_policy() -> None:
    start = at(2026, 12, 1, 8)
    now = at(2026, 12, 4, 9)
    assert s.due(start, "day", 0, now, None, None) == [0, 1, 2, 3]
    assert s.due(start, "day", 2, now, None, None) == [2, 3]
    assert s.due(start, "week", 0, now, None, None) == [0]
    assert s.due(start, "day", 0, now, at(2026, 12, 2, 8), None) == [0, 1]  # end_at inclusive
    assert s.due(start, "day", 0, now, None, 3) == [0, 1, 2]
    assert s.due(start, "once", 0, now, None, None) == [0]
    assert s.due(start, "once", 1, now, None, None) == []
    long_ago = at(2020, 1, 1)
    assert len(s.due(long_ago, "day", 0, now, None, None)) == s.MAX_CATCH_UP
    assert s.split([4, 5, 6], "latest") == ([6], [4, 5])
    assert s.split([4, 5, 6], "all") == ([4, 5, 6], [])
    assert s.first_after(start, "day", 1, now, None, None) == 4


@given(
    start=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1),
                       timezones=st.just(UTC)),
    every=st.sampled_from(["day", "week", "month"]),
    n=st.integers(0, 500),
)  # fmt: skip
def test_occurrences_are_strictly_increasing(start: dt.datetime, every: str, n: int) -> None:
    assert s.due_at(start, every, n) < s.due_at(start, every, n + 1)
    assert s.due_at(start, every, 0) == start
