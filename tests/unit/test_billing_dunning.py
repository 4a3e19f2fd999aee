"""Dunning: the retry schedule after a failed payment (domain/billing/dunning.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from paynode.domain.billing import dunning as dn
from paynode.domain.billing.errors import BillingError

UTC = dt.UTC
FAILED = dt.datetime(2027, 5, 1, 10, tzinfo=UTC)


def day(n: float) -> dt.datetime:
    return FAILED + dt.timedelta(days=n)


def test_default_timeline_is_from_the_first_failure() -> None:
    assert dn.DEFAULT.retry_days == [1, 3, 5, 7]
    assert dn.timeline(dn.DEFAULT, FAILED) == [day(1), day(3), day(5), day(7)]


def test_a_whole_dunning_run() -> None:
    d = dn.start("in_s_0", FAILED)
    seen = []
    while (due := dn.next_attempt(dn.DEFAULT, d)) is not None:
        seen.append((dn.attempt_number(d), due))
        d = dn.record_failure(dn.DEFAULT, d, due + dt.timedelta(hours=2))  # a late run
    assert seen == [(1, day(1)), (2, day(3)), (3, day(5)), (4, day(7))]  # late runs: no drift
    assert dn.exhausted(dn.DEFAULT, d) and d.failures == 5
    with pytest.raises(BillingError) as e:
        dn.record_failure(dn.DEFAULT, d, day(30))
    assert e.value.code == "dunning_exhausted"


def test_a_failure_before_the_retry_is_due_uses_no_retry() -> None:
    d = dn.start("in_s_0", FAILED)
    assert dn.record_failure(dn.DEFAULT, d, day(0.5)) == d
    assert dn.record_failure(dn.DEFAULT, d, day(1)).failures == 2


def test_policies() -> None:
    none = dn.Policy(retry_days=[])
    assert dn.exhausted(none, dn.start("i", FAILED))  # no retries: the first failure ends it
    assert dn.next_attempt(none, dn.start("i", FAILED)) is None
    custom = dn.Policy(retry_days=[2, 9], on_exhausted="leave_past_due")
    assert dn.timeline(custom, FAILED) == [day(2), day(9)]
    for bad in ([0], [61], [3, 3], [5, 2], list(range(1, 10))):
        with pytest.raises(BillingError):
            dn.Policy(retry_days=bad)
    with pytest.raises(BillingError):
        dn.Policy(on_exhausted="unpaid")  # type: ignore[arg-type]
    with pytest.raises(BillingError):
        dn.retry_at(dn.DEFAULT, FAILED, 5)
    with pytest.raises(BillingError):
        dn.start("i", FAILED.replace(tzinfo=None))
