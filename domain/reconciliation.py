"""Reconciliation's rules, pure: how two copies of the ledger are compared, and when a
difference becomes a discrepancy.

The copies are the shards' memory, the PostgreSQL journal (the truth) and the
DuckDB analytics store. A run compares them at one point and yields
:class:`Finding` s; :func:`decide` applies the persistence rule:

* a finding seen for the first time is a *candidate*, not a discrepancy;
* a candidate that the next run checking its object sees again becomes an open
  *discrepancy*; if that run checks the object and does not see it, it is
  dropped (it was a passing state, e.g. money in flight);
* an open discrepancy that a run checks and no longer sees is *resolved*;
* an object a run did not check at a stable point (an account whose balances
  moved during the check, a whole-ledger total an incremental run does not
  compute) keeps its state until a run does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# debits_posted, credits_posted, debits_pending, credits_pending
Balances = tuple[int, int, int, int]
ZERO: Balances = (0, 0, 0, 0)

MEMORY_JOURNAL = "memory/journal"
JOURNAL_ANALYTICS = "journal/analytics"
ACH_BANK = "ach/bank"
ACH_JOURNAL = "ach/journal"

Key = tuple[str, str, str, str]  # kind, object_type, object_id, sources: one open row each
Scope = tuple[str, str]  # object_type, sources: what one comparison checks


@dataclass(frozen=True)
class Finding:
    kind: str  # balance_drift, missing_in_analytics, missing_in_journal, amount_mismatch, ...
    object_type: str  # account, transfer, currency, bank_entry
    object_id: str
    sources: str  # which two copies disagree, e.g. "memory/journal"
    expected: str | None  # what the journal (the truth) says
    actual: str | None  # what the other copy says

    @property
    def key(self) -> Key:
        return (self.kind, self.object_type, self.object_id, self.sources)


def fmt(b: Balances | None) -> str | None:
    return None if b is None else "dp={} cp={} dpend={} cpend={}".format(*b)


def add(a: Balances, b: Balances) -> Balances:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


# -- comparisons -------------------------------------------------------------------------


def compare_memory(
    first: dict[str, Balances | None],
    journal: dict[str, Balances],
    second: dict[str, Balances | None],
) -> tuple[list[Finding], list[str]]:
    """Memory read before and after the journal aggregate, against it.

    An account whose memory changed between the two reads had money moving
    during the check: it is skipped (returned second), not judged. For the
    rest, memory must equal the journal exactly.
    """
    findings, in_flight = [], []
    for account_id, expected in journal.items():
        before, after = first.get(account_id), second.get(account_id)
        if before != after:
            in_flight.append(account_id)
        elif before != expected:
            findings.append(
                Finding("balance_drift", "account", account_id, MEMORY_JOURNAL,
                        fmt(expected), fmt(before) or "missing in memory")
            )  # fmt: skip
    return findings, in_flight


def compare_totals(journal: dict[str, Balances], analytics: dict[str, Balances]) -> list[Finding]:
    """Per-account totals, both over the same committed transactions: they must be equal.

    An account the analytics copy does not have is judged only if money moved on it.
    """
    out = []
    for account_id, expected in journal.items():
        actual = analytics.get(account_id)
        if actual is None and expected == ZERO:
            continue
        if actual != expected:
            out.append(
                Finding("balance_drift", "account", account_id, JOURNAL_ANALYTICS,
                        fmt(expected), fmt(actual) or "missing in analytics")
            )  # fmt: skip
    return out


def compare_changes(
    journal: dict[str, Balances], analytics: dict[str, Balances], span: str
) -> list[Finding]:
    """Per-account changes over the same range of transactions (``span`` names it).

    Either side lists only the accounts that moved; a missing one moved by zero.
    """
    out = []
    for account_id in sorted(journal.keys() | analytics.keys()):
        expected, actual = journal.get(account_id, ZERO), analytics.get(account_id, ZERO)
        if expected != actual:
            out.append(
                Finding("balance_drift", "account", account_id, JOURNAL_ANALYTICS,
                        f"{span} {fmt(expected)}", f"{span} {fmt(actual)}")
            )  # fmt: skip
    return out


def currency_totals_of(balances: dict[str, Balances], currencies: dict[str, str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for account_id, (dp, cp, _, _) in balances.items():
        cur = currencies[account_id]
        totals[cur] = totals.get(cur, 0) + cp - dp
    return totals


def nonzero_totals(totals: dict[str, int], sources: str) -> list[Finding]:
    return [
        Finding("nonzero_total", "currency", currency, sources, "0", str(total))
        for currency, total in totals.items()
        if total != 0
    ]


# -- the persistence rule ----------------------------------------------------------------


@dataclass(frozen=True)
class Tracked:
    """A candidate or an open discrepancy, as stored before a run."""

    key: Key
    first_run_id: int
    discrepancy_id: int = 0  # 0 for a candidate


@dataclass
class Coverage:
    """What a run checked at a stable point: whole scopes, or some objects of a scope."""

    whole: set[Scope] = field(default_factory=set)
    some: dict[Scope, set[str]] = field(default_factory=dict)

    def all_of(self, scope: Scope) -> None:
        self.whole.add(scope)

    def objects(self, scope: Scope, ids: Iterable[str]) -> None:
        self.some.setdefault(scope, set()).update(ids)

    def covers(self, key: Key) -> bool:
        _, object_type, object_id, sources = key
        scope = (object_type, sources)
        return scope in self.whole or object_id in self.some.get(scope, ())


@dataclass
class Verdict:
    """What a run's findings do to the stored state; every list is written at once."""

    new_candidates: list[Finding] = field(default_factory=list)
    confirmed: list[tuple[Finding, int]] = field(default_factory=list)  # (finding, first run)
    dropped: list[Key] = field(default_factory=list)  # candidates checked and not seen
    still_open: list[tuple[int, Finding]] = field(default_factory=list)  # (discrepancy id, ...)
    resolved: list[int] = field(default_factory=list)  # discrepancy ids


def decide(
    findings: Iterable[Finding],
    candidates: Sequence[Tracked],
    open_: Sequence[Tracked],
    coverage: Coverage,
) -> Verdict:
    """Apply the persistence rule (module docstring) to one run's findings.

    A key found twice in one run counts once (the last finding's values are kept).
    """
    seen = {f.key: f for f in findings}
    candidate_keys = {c.key for c in candidates}
    open_keys = {o.key for o in open_}
    assert not candidate_keys & open_keys, "a key is a candidate or open, never both"
    v = Verdict()
    for o in open_:
        if o.key in seen:
            v.still_open.append((o.discrepancy_id, seen[o.key]))
        elif coverage.covers(o.key):
            v.resolved.append(o.discrepancy_id)
    for c in candidates:
        if c.key in seen:
            v.confirmed.append((seen[c.key], c.first_run_id))
        elif coverage.covers(c.key):
            v.dropped.append(c.key)
    v.new_candidates = [
        f for k, f in seen.items() if k not in candidate_keys and k not in open_keys
    ]
    return v
