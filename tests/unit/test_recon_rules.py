"""The persistence rule and the comparisons of reconciliation, pure (domain.reconciliation)."""

from __future__ import annotations

from paynode.domain.reconciliation import (
    JOURNAL_ANALYTICS,
    MEMORY_JOURNAL,
    Coverage,
    Finding,
    Tracked,
    compare_changes,
    compare_memory,
    compare_totals,
    decide,
)


def _drift(account: str, sources: str = MEMORY_JOURNAL, actual: str = "x") -> Finding:
    return Finding("balance_drift", "account", account, sources, "e", actual)


def _covering(*accounts: str) -> Coverage:
    c = Coverage()
    c.objects(("account", MEMORY_JOURNAL), accounts)
    return c


def test_a_first_sighting_is_a_candidate_and_the_next_one_confirms_it() -> None:
    first = decide([_drift("a")], [], [], _covering("a"))
    assert first.new_candidates == [_drift("a")] and not first.confirmed
    tracked = [Tracked(_drift("a").key, first_run_id=7)]
    second = decide([_drift("a", actual="y")], tracked, [], _covering("a"))
    # Confirmed with the latest values, dated from the run that first saw it.
    assert second.confirmed == [(_drift("a", actual="y"), 7)] and not second.new_candidates


def test_a_candidate_checked_and_not_seen_is_dropped_one_not_checked_is_kept() -> None:
    tracked = [Tracked(_drift("a").key, 1), Tracked(_drift("b").key, 1)]
    v = decide([], tracked, [], _covering("a"))  # b was in flight: not checked
    assert v.dropped == [_drift("a").key] and not v.confirmed and not v.new_candidates


def test_an_open_discrepancy_stays_while_seen_and_resolves_once_checked_and_gone() -> None:
    open_ = [Tracked(_drift("a").key, 1, discrepancy_id=10),
             Tracked(_drift("b").key, 1, discrepancy_id=11),
             Tracked(_drift("c").key, 1, discrepancy_id=12)]  # fmt: skip
    v = decide([_drift("a")], [], open_, _covering("a", "b"))
    assert v.still_open == [(10, _drift("a"))]
    assert v.resolved == [11]  # c was not checked: still open
    assert not v.new_candidates and not v.confirmed


def test_whole_scopes_and_sources_are_told_apart() -> None:
    whole = Coverage()
    whole.all_of(("account", JOURNAL_ANALYTICS))
    assert whole.covers(_drift("z", JOURNAL_ANALYTICS).key)
    assert not whole.covers(_drift("z", MEMORY_JOURNAL).key)
    # The same account drifting between two other copies is another finding.
    v = decide([_drift("a", JOURNAL_ANALYTICS)], [Tracked(_drift("a").key, 1)], [], whole)
    assert v.new_candidates == [_drift("a", JOURNAL_ANALYTICS)] and not v.dropped


def test_comparisons() -> None:
    zero = (0, 0, 0, 0)
    # moved during the check: skipped, not judged; still and different: drift
    drift, in_flight = compare_memory(
        {"a": (1, 0, 0, 0), "b": (0, 0, 0, 0)},
        {"a": (2, 0, 0, 0), "b": (1, 0, 0, 0)},
        {"a": (2, 0, 0, 0), "b": (0, 0, 0, 0)},
    )
    assert in_flight == ["a"] and [f.object_id for f in drift] == ["b"]
    # totals: an account analytics lacks is judged only if money moved on it
    assert compare_totals({"new": zero, "x": (1, 0, 0, 0)}, {"x": (1, 0, 0, 0)}) == []
    assert [f.actual for f in compare_totals({"y": (0, 5, 0, 0)}, {})] == ["missing in analytics"]
    # changes: an account either side lacks moved by zero
    assert compare_changes({"a": (3, 0, 0, 0)}, {"a": (3, 0, 0, 0), "b": zero}, "r") == []
    (f,) = compare_changes({"a": (3, 0, 0, 0)}, {}, "txid [5, 9)")
    assert f.expected == "txid [5, 9) dp=3 cp=0 dpend=0 cpend=0" and f.sources == JOURNAL_ANALYTICS
