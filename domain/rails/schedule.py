"""Scheduled and recurring transfers: when each occurrence is due, and which run now.

Pure. A schedule starts at ``start_at`` and repeats ``every`` day, week or month
(or runs ``once``) until ``end_at`` or ``max_runs``. Occurrence ``n`` is due at
``due_at(start, every, n)``, computed from the start every time (a monthly
schedule on the 31st runs on the last day of shorter months and on the 31st
again after them: no drift). Occurrence ``n`` moves money as transfer
``sched:<schedule id>:<n>``, so running it twice is a replay: exactly once.

Misses after downtime (or a node that was busy): with ``catch_up="all"``
every missed occurrence runs, oldest first, at most ``MAX_CATCH_UP`` per pass;
with ``"latest"`` only the most recent one runs and the older ones are
recorded as skipped. Occurrences that fell due while a schedule was paused
never run: resuming starts at the next one due after the resume.
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Literal

Every = Literal["once", "day", "week", "month"]
CatchUp = Literal["all", "latest"]
MAX_RUNS = 10_000  # occurrences of one schedule, at most
MAX_CATCH_UP = 100  # occurrences of one schedule one pass runs
TRANSFER_PREFIX = "sched:"


def due_at(start: dt.datetime, every: str, n: int) -> dt.datetime:
    """When occurrence ``n`` (from 0) is due."""
    assert n >= 0 and start.tzinfo is not None
    if every == "once":
        assert n == 0, "a one-off schedule has one occurrence"
        return start
    if every == "day":
        return start + dt.timedelta(days=n)
    if every == "week":
        return start + dt.timedelta(weeks=n)
    assert every == "month", every
    years, month0 = divmod(start.month - 1 + n, 12)
    year = start.year + years
    day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
    return start.replace(year=year, month=month0 + 1, day=day)


def exists(
    start: dt.datetime, every: str, n: int, end_at: dt.datetime | None, max_runs: int | None
) -> bool:
    """Whether the schedule has an occurrence ``n`` at all."""
    if n < 0 or n >= MAX_RUNS or (every == "once" and n > 0):
        return False
    if max_runs is not None and n >= max_runs:
        return False
    return end_at is None or due_at(start, every, n) <= end_at


def due(
    start: dt.datetime, every: str, first: int, now: dt.datetime,
    end_at: dt.datetime | None, max_runs: int | None,
) -> list[int]:  # fmt: skip
    """The occurrences from ``first`` on that are due at ``now`` (oldest first, at most
    ``MAX_CATCH_UP``)."""
    out: list[int] = []
    n = first
    while len(out) < MAX_CATCH_UP and exists(start, every, n, end_at, max_runs):
        if due_at(start, every, n) > now:
            break
        out.append(n)
        n += 1
    return out


def split(occurrences: list[int], catch_up: str) -> tuple[list[int], list[int]]:
    """(to run, to record as skipped) by the catch-up policy."""
    if catch_up == "latest" and len(occurrences) > 1:
        return occurrences[-1:], occurrences[:-1]
    return occurrences, []


def first_after(
    start: dt.datetime, every: str, first: int, now: dt.datetime,
    end_at: dt.datetime | None, max_runs: int | None,
) -> int:  # fmt: skip
    """The first occurrence from ``first`` on that is due after ``now`` (a resume)."""
    n = first
    while exists(start, every, n, end_at, max_runs) and due_at(start, every, n) <= now:
        n += 1
    return n


def transfer_id(schedule_id: str, n: int) -> str:
    return f"{TRANSFER_PREFIX}{schedule_id}:{n}"
