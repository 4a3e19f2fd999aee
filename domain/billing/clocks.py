"""Test clocks, and which subscription events are due when time moves.

Pure. A test clock is a frozen "now" that moves only forward, by ``advance``
(at most ``MAX_ADVANCE`` at a time), as Stripe's test clocks do: a
subscription attached to one sees the clock's time instead of the wall
clock's, so a 7-day trial ends when someone advances the clock, not in a week.

What is due. Each subscription has at most one next timed event: its trial's
end, its period's end (a renewal or a scheduled cancellation), the next
dunning retry, or the end of dunning once the retries are exhausted; the
earliest of them (``next_due``). Later ones depend on how that one turns out
(a renewal's payment may fail and start dunning), so ``drain`` runs them one
at a time in global order ``(at, kind, subscription id)``: take the earliest
due event of all subscriptions, apply it through the caller's ``step``, ask
that subscription for its next one, repeat until nothing is due by ``until``.
Each event has a key derived from the subscription's state
(``<id>:period_end:<n>``, ...), and applying it moves the state past it, so
it comes out exactly once; the real scheduler does the same with wall time.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Callable, Mapping
from typing import Literal

import msgspec

from paynode.domain.billing import dunning as dn
from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import LATEST, check_id, check_utc
from paynode.domain.billing.subscriptions import Subscription, current_period

DueKind = Literal["trial_end", "dunning_retry", "dunning_exhausted", "period_end"]
# At the same instant: the trial ends first, an old invoice's retry runs before the next
# period is billed (settle, then bill), and dunning gives up before a renewal.
KIND_ORDER: dict[str, int] = {
    "trial_end": 0, "dunning_retry": 1, "dunning_exhausted": 2, "period_end": 3,
}  # fmt: skip
MAX_ADVANCE = dt.timedelta(days=2 * 366)  # one call moves a clock at most two years
MAX_EVENTS = 100_000  # events one drain runs; the caller drains again for the rest


class TestClock(msgspec.Struct, frozen=True, kw_only=True):
    __test__ = False  # not a pytest test class, whatever its name says

    id: str
    now: dt.datetime  # the frozen time


class Due(msgspec.Struct, frozen=True, kw_only=True, order=True):
    # Field order is the sort order: by time, then kind, then subscription.
    at: dt.datetime
    rank: int  # KIND_ORDER[kind]
    subscription: str
    kind: DueKind
    key: str  # unique for the life of the subscription: exactly once
    index: int | None = None  # period_end: the period that ends
    invoice_id: str | None = None  # dunning: the invoice being collected
    attempt: int | None = None  # dunning_retry: the attempt number (ledger transfer id)


def create(id: str, now: dt.datetime) -> TestClock:
    check_id(id, "test clock id")
    check_utc(now, "now")
    if now >= LATEST:
        raise BillingError("out_of_range", "a test clock starts before 2200")
    return TestClock(id=id, now=now)


def advance(clock: TestClock, to: dt.datetime) -> TestClock:
    """The clock at ``to``: forward only (time does not go back for anything billed),
    by at most ``MAX_ADVANCE`` (a bound on the work one advance can ask for)."""
    check_utc(to, "to")
    if to <= clock.now:
        raise BillingError("clock_backwards", "a test clock only moves forward")
    if to - clock.now > MAX_ADVANCE or to >= LATEST:
        raise BillingError("out_of_range", "a test clock advances at most two years at once")
    return msgspec.structs.replace(clock, now=to)


def now_for(sub: Subscription, clocks: Mapping[str, TestClock], wall: dt.datetime) -> dt.datetime:
    """The "now" a subscription sees: its test clock's frozen time, or the wall clock."""
    if sub.test_clock is None:
        return wall
    clock = clocks.get(sub.test_clock)
    if clock is None:
        raise BillingError("not_found", f"test clock {sub.test_clock} does not exist")
    return clock.now


def _due(
    sub: Subscription, kind: DueKind, at: dt.datetime, key: str, *, index: int | None = None,
    invoice_id: str | None = None, attempt: int | None = None,
) -> Due:  # fmt: skip
    return Due(
        at=at, rank=KIND_ORDER[kind], subscription=sub.id, kind=kind, key=f"{sub.id}:{key}",
        index=index, invoice_id=invoice_id, attempt=attempt,
    )  # fmt: skip


def next_due(sub: Subscription, policy: dn.Policy = dn.DEFAULT) -> Due | None:
    """The subscription's earliest timed event, whether or not it is due yet."""
    if sub.status == "trialing":
        assert sub.trial_end is not None
        return _due(sub, "trial_end", sub.trial_end, "trial_end")
    if sub.status not in ("active", "past_due"):
        return None  # incomplete, paused and canceled subscriptions wait for a person
    found = []
    d = sub.dunning
    if d is not None:
        retry = dn.next_attempt(policy, d)
        if retry is None:  # given up at the last retry's time
            last = dn.retry_at(policy, d.first_failed_at, len(policy.retry_days)) if (
                policy.retry_days) else d.first_failed_at  # fmt: skip
            found.append(_due(sub, "dunning_exhausted", last, f"dunning_exhausted:{d.invoice_id}",
                              invoice_id=d.invoice_id))  # fmt: skip
        else:
            n = dn.attempt_number(d)
            found.append(_due(sub, "dunning_retry", retry, f"retry:{d.invoice_id}:{n}",
                              invoice_id=d.invoice_id, attempt=n))  # fmt: skip
    end = current_period(sub).end
    found.append(_due(sub, "period_end", end, f"period_end:{sub.period}", index=sub.period))
    return min(found)


def due_by(
    subs: Mapping[str, Subscription], until: dt.datetime, policy: dn.Policy = dn.DEFAULT
) -> list[Due]:
    """Each subscription's next event if it is due by ``until``, in order."""
    found = (next_due(s, policy) for s in subs.values())
    return sorted(d for d in found if d is not None and d.at <= until)


Step = Callable[[Subscription, Due], Subscription]


def drain(
    subs: Mapping[str, Subscription], until: dt.datetime, step: Step,
    policy: dn.Policy = dn.DEFAULT, limit: int = MAX_EVENTS,
) -> tuple[dict[str, Subscription], list[Due]]:  # fmt: skip
    """Every event due by ``until``, applied through ``step`` in global order, each once.
    Returns the subscriptions after them and the events in the order they ran (at most
    ``limit``: when that many ran, call again for the rest)."""
    check_utc(until, "until")
    state = dict(subs)
    heap = due_by(state, until, policy)
    heapq.heapify(heap)
    ran: list[Due] = []
    seen: set[str] = set()
    while heap and len(ran) < limit:
        due = heapq.heappop(heap)
        if due.key in seen:  # a step that did not move its subscription past the event
            raise BillingError("stuck", f"event {due.key} came back after it ran")
        seen.add(due.key)
        state[due.subscription] = after = step(state[due.subscription], due)
        ran.append(due)
        following = next_due(after, policy)
        if following is not None and following.at <= until:
            heapq.heappush(heap, following)
    return state, ran
