"""Balance monitors: request and answer bodies."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.schemas import Id
from paynode.domain.ledger.model import MAX_AMOUNT

Condition = Literal["balance_below", "balance_at_least", "available_below", "available_at_least"]


class MonitorIn(msgspec.Struct, forbid_unknown_fields=True):
    """Watch an account: one ``balance.threshold_crossed`` event when ``condition`` becomes
    true, one ``balance.threshold_cleared`` when it stops being true. ``balance`` is
    credits posted less debits posted; ``available`` also less debits pending."""

    account_id: Id
    condition: Condition
    threshold: Annotated[int, Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="Minor units")]


class MonitorOut(msgspec.Struct):
    id: str
    account_id: str
    condition: Condition
    threshold: int
    state: Literal["unknown", "crossed", "clear"]  # unknown until its shard first evaluates it
    created_at: dt.datetime


class MonitorList(msgspec.Struct):
    monitors: list[MonitorOut]


MONITOR_TYPES = (MonitorIn, MonitorOut, MonitorList)
