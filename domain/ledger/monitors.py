"""Balance monitors: a condition on one account's balance, and when it changes state.

Pure. A monitor is ``crossed`` while its condition holds, ``clear`` while it
does not, and unknown (None) until first evaluated; the first evaluation sets
the state silently, and after that each change of state is one transition (one
event), never one per transfer. The shard evaluates on *durable* balances: what
memory holds less the rows it applied but has not journaled yet
(``durable_balances``), so an event never reports money a failed commit takes
back.

``balance`` is credits posted less debits posted; ``available`` is that less
the debits pending (as the API shows them).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from paynode.domain.ledger.model import (
    ROW_CREDIT,
    ROW_DEBIT,
    ROW_PENDING_DELTA,
    ROW_POSTED,
    Row,
)

CONDITIONS = ("balance_below", "balance_at_least", "available_below", "available_at_least")
CROSSED_EVENT = "balance.threshold_crossed"
CLEARED_EVENT = "balance.threshold_cleared"


class Monitor(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    owner_user_id: str | None
    condition: str
    threshold: int
    crossed: bool | None  # None: not evaluated yet
    seq: int  # state changes so far (the version a writer must find to change it)


class Transition(msgspec.Struct, kw_only=True):
    monitor: Monitor  # as it was
    crossed: bool  # the state now
    balance: int
    available: int

    @property
    def silent(self) -> bool:
        """The first evaluation: a state, not a change (no event)."""
        return self.monitor.crossed is None


def holds(condition: str, threshold: int, balance: int, available: int) -> bool:
    if condition == "balance_below":
        return balance < threshold
    if condition == "balance_at_least":
        return balance >= threshold
    if condition == "available_below":
        return available < threshold
    assert condition == "available_at_least", condition
    return available >= threshold


def evaluate(m: Monitor, balance: int, available: int) -> Transition | None:
    now = holds(m.condition, m.threshold, balance, available)
    if m.crossed is not None and now == m.crossed:
        return None
    return Transition(monitor=m, crossed=now, balance=balance, available=available)


def durable_balances(
    dp: int, cp: int, dpend: int, account_id: str, uncommitted: Iterable[Row]
) -> tuple[int, int]:
    """(balance, available) of an account whose memory holds ``dp``/``cp``/``dpend``,
    less the effects of ``uncommitted`` rows (applied, not yet journaled)."""
    for row in uncommitted:
        if row[ROW_DEBIT] == account_id:
            dp -= row[ROW_POSTED]
            dpend -= row[ROW_PENDING_DELTA]
        if row[ROW_CREDIT] == account_id:
            cp -= row[ROW_POSTED]
    balance = cp - dp
    return balance, balance - dpend
