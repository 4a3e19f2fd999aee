"""Dunning: when a failed invoice payment is tried again, and when to give up.

Pure. A policy is a list of days after the **first** failure (default 1, 3, 5, 7):
retry ``k`` (from 1) is due at ``first_failed_at + retry_days[k-1]`` days, so a
late retry run does not push the later ones back (no drift, as in
``periods``). Attempt 0 is the collection when the invoice is created; retry
``k`` is attempt ``k``, which names its ledger transfer
(``invoices.payment_transfer_id``), so a retry repeated after a crash is a replay.

Policy (Stripe's default): the subscription becomes ``past_due`` at the **first**
failure, stays ``past_due`` while retries remain, and when the last retry fails
the retries are exhausted: the subscription is ``canceled`` (``on_exhausted =
"cancel"``, the default) or stays ``past_due`` (``"leave_past_due"``) and the
invoice becomes ``uncollectible`` either way. A payment that succeeds at any
point ends dunning and the subscription is ``active`` again.

A failure before the next retry is due (a customer paying by hand from the
hosted page, say) does not use up a retry: only the scheduled attempts count.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Literal

import msgspec

from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import check_utc

OnExhausted = Literal["cancel", "leave_past_due"]
MAX_RETRIES = 8
MAX_RETRY_DAY = 60  # the last retry is at most two months after the first failure
DEFAULT_RETRY_DAYS = (1, 3, 5, 7)


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    retry_days: list[int] = msgspec.field(default_factory=lambda: list(DEFAULT_RETRY_DAYS))
    on_exhausted: OnExhausted = "cancel"

    def __post_init__(self) -> None:
        days = self.retry_days
        if not 0 <= len(days) <= MAX_RETRIES:
            raise BillingError("invalid_field", f"retry_days has at most {MAX_RETRIES} entries")
        if any(type(d) is not int or not 1 <= d <= MAX_RETRY_DAY for d in days):
            raise BillingError("invalid_field", f"a retry day is 1..{MAX_RETRY_DAY}")
        if any(a >= b for a, b in itertools.pairwise(days)):
            raise BillingError("invalid_field", "retry_days increase strictly")
        if self.on_exhausted not in ("cancel", "leave_past_due"):
            raise BillingError("invalid_field", "on_exhausted is cancel or leave_past_due")


DEFAULT = Policy()


class Dunning(msgspec.Struct, frozen=True, kw_only=True):
    """One invoice's collection after its first failure: ``failures`` attempts failed
    (the first one included), so the next attempt is retry ``failures``."""

    invoice_id: str
    first_failed_at: dt.datetime
    failures: int = 1


def start(invoice_id: str, at: dt.datetime) -> Dunning:
    check_utc(at, "at")
    return Dunning(invoice_id=invoice_id, first_failed_at=at)


def retry_at(policy: Policy, first_failed_at: dt.datetime, k: int) -> dt.datetime:
    """When retry ``k`` (1..len(retry_days)) is due."""
    if not 1 <= k <= len(policy.retry_days):
        raise BillingError("out_of_range", f"retry {k} is not in the policy")
    return first_failed_at + dt.timedelta(days=policy.retry_days[k - 1])


def timeline(policy: Policy, first_failed_at: dt.datetime) -> list[dt.datetime]:
    """Every retry's due time, in order."""
    return [retry_at(policy, first_failed_at, k) for k in range(1, len(policy.retry_days) + 1)]


def exhausted(policy: Policy, d: Dunning) -> bool:
    """Whether every retry has failed (nothing is left to try)."""
    return d.failures > len(policy.retry_days)


def next_attempt(policy: Policy, d: Dunning) -> dt.datetime | None:
    """When the next retry is due; None once the retries are exhausted."""
    return None if exhausted(policy, d) else retry_at(policy, d.first_failed_at, d.failures)


def attempt_number(d: Dunning) -> int:
    """The next attempt's number (``invoices.payment_transfer_id``): attempt 0 failed
    at the start, so after ``failures`` failures the next one is attempt ``failures``."""
    return d.failures


def record_failure(policy: Policy, d: Dunning, at: dt.datetime) -> Dunning:
    """The retry due by ``at`` failed. A failure before the next retry is due counts for
    nothing (it was not a scheduled attempt), so the same state comes back."""
    check_utc(at, "at")
    due = next_attempt(policy, d)
    if due is None:
        raise BillingError("dunning_exhausted", "every retry has been made already")
    if at < due:
        return d
    return msgspec.structs.replace(d, failures=d.failures + 1)
