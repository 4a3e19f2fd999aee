"""Scheduled and recurring transfers: request and answer bodies."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.schemas import Amount, Currency, Id
from paynode.domain.rails.schedule import MAX_RUNS

# Each run's transfer adds schedule_id and occurrence to these (32 pairs at most).
ScheduleMetadata = Annotated[
    dict[
        Annotated[str, Meta(min_length=1, max_length=64)],
        Annotated[str, Meta(max_length=512)],
    ],
    Meta(max_length=30, description="Up to 30 string pairs, copied onto each run's transfer"),
]
ScheduleState = Literal["active", "paused", "canceled", "finished"]
RunStatus = Literal["processing", "posted", "refused", "skipped"]


class ScheduleIn(msgspec.Struct, forbid_unknown_fields=True):
    """A transfer to make at ``start_at``, then again every day, week or month until
    ``end_at`` or ``max_runs`` (``every: "once"``: one transfer). Occurrence ``n`` is the
    transfer ``sched:<id>:<n>``. Missed occurrences (the node was down) run on its
    return: all of them, oldest first (``catch_up: "all"``), or only the latest."""

    id: Id
    debit_account_id: Id
    credit_account_id: Id
    amount: Amount
    currency: Currency
    start_at: dt.datetime  # with a time zone offset
    every: Literal["once", "day", "week", "month"] = "once"
    end_at: dt.datetime | None = None
    max_runs: Annotated[int, Meta(ge=1, le=MAX_RUNS)] | None = None
    catch_up: Literal["all", "latest"] = "all"
    metadata: ScheduleMetadata = {}


class ScheduleRunOut(msgspec.Struct):
    occurrence: int
    due_at: dt.datetime
    transfer_id: str
    status: RunStatus
    code: str | None  # a refusal's code (insufficient_funds, ...)
    ran_at: dt.datetime


class ScheduleOut(msgspec.Struct, kw_only=True):
    id: str
    state: ScheduleState
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    every: Literal["once", "day", "week", "month"]
    start_at: dt.datetime
    end_at: dt.datetime | None
    max_runs: int | None
    catch_up: Literal["all", "latest"]
    metadata: dict[str, str]
    owner_user_id: str | None
    next_occurrence: int
    next_run_at: dt.datetime | None  # None once finished or canceled
    created_at: dt.datetime
    runs: list[ScheduleRunOut]  # the latest 20, newest first


class SchedulePage(msgspec.Struct):
    schedules: list[ScheduleOut]
    next_after: str | None


SCHEDULE_TYPES = (ScheduleIn, ScheduleRunOut, ScheduleOut, SchedulePage)
