"""The outbox's k-way merge and positions (domain/notify/outbox.py): pure, no database.

The last test pages through random outboxes exactly as storage/outbox.py
reads PostgreSQL (a page per source after the same position, merged) and
checks that the pages, end to end, are every row once in commit order.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from paynode.domain.notify.outbox import (
    READ_SOURCES,
    START,
    Bound,
    Position,
    Scanned,
    Source,
    bound,
    merge,
    through,
)

A, T, E = Source.ACCOUNTS, Source.TRANSFERS, Source.EVENTS


def _rows(source: Source, *at: tuple[int, str]) -> list[Scanned]:
    return [Scanned(txid, source, key, True) for txid, key in at]


def _where(rows: list[Scanned]) -> list[tuple[int, str, str]]:
    return [(r.position.txid, r.position.source.name, r.position.key) for r in rows]


def test_pages_interleave_by_commit_then_source() -> None:
    accounts = _rows(A, (5, "a1"), (7, "a2"))
    transfers = _rows(T, (5, "t1"), (5, "t2"), (6, "t3"))
    events = _rows(E, (4, "e1"), (5, "e2"))
    out = merge([accounts, transfers, events], page_size=10, limit=10)
    assert _where(out) == [
        (4, "EVENTS", "e1"), (5, "ACCOUNTS", "a1"), (5, "TRANSFERS", "t1"),
        (5, "TRANSFERS", "t2"), (5, "EVENTS", "e2"), (6, "TRANSFERS", "t3"),
        (7, "ACCOUNTS", "a2"),
    ]  # fmt: skip


def test_a_full_page_stops_the_merge_at_its_last_row() -> None:
    # The transfers page is full: rows of it after (6, t3) may exist unread, so
    # nothing after (6, TRANSFERS) may be returned yet, from any source.
    accounts = _rows(A, (6, "a0"), (9, "a1"))
    transfers = _rows(T, (5, "t1"), (6, "t3"))
    events = _rows(E, (6, "e1"), (7, "e2"))
    out = merge([accounts, transfers, events], page_size=2, limit=10)
    assert _where(out) == [(5, "TRANSFERS", "t1"), (6, "ACCOUNTS", "a0"), (6, "TRANSFERS", "t3")]
    # Two full pages: the earlier end wins.
    out = merge([_rows(A, (3, "a"), (8, "b")), _rows(T, (4, "t"), (5, "u"))], 2, 10)
    assert _where(out) == [(3, "ACCOUNTS", "a"), (4, "TRANSFERS", "t"), (5, "TRANSFERS", "u")]


def test_limit_bounds_the_result_and_empty_pages_give_nothing() -> None:
    out = merge([_rows(A, (1, "a"), (2, "b")), _rows(T, (1, "t"))], page_size=5, limit=2)
    assert _where(out) == [(1, "ACCOUNTS", "a"), (1, "TRANSFERS", "t")]
    assert merge([[], [], []], page_size=5, limit=5) == []
    with pytest.raises(AssertionError):
        merge([_rows(A, (1, "a"), (2, "b"))], page_size=1, limit=1)  # a page over its size


def test_where_each_source_resumes() -> None:
    at = Position(10, T, "k")
    assert bound(A, at) == Bound.AFTER_TXID  # accounts of txid 10 came before (10, T, k)
    assert bound(T, at) == Bound.AFTER_KEY
    assert bound(E, at) == Bound.FROM_TXID  # events of txid 10 come after it
    assert all(bound(s, through(10)) == Bound.AFTER_TXID for s in READ_SOURCES)
    assert all(bound(s, START) == Bound.AFTER_TXID for s in READ_SOURCES)


def test_positions_are_checked_when_decoded() -> None:
    ok = Position(7, E, "evt_x")
    assert msgspec.json.decode(msgspec.json.encode(ok), type=Position) == ok
    for bad in (b'[-1,2,"k"]', b'[1,3,"k"]', b'[1,1,""]', b'[1,9,"k"]', b'{"txid":1}'):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=Position)


def _page(rows: list[Position], after: Position, size: int) -> list[Scanned]:
    """What one source's query returns: rows after ``after`` in (txid, key) order."""
    b = bound(rows[0].source, after) if rows else Bound.AFTER_TXID
    keep = {
        Bound.AFTER_TXID: lambda p: p.txid > after.txid,
        Bound.AFTER_KEY: lambda p: (p.txid, p.key) > (after.txid, after.key),
        Bound.FROM_TXID: lambda p: p.txid >= after.txid,
    }[b]
    return [Scanned(p.txid, p.source, p.key, True) for p in rows if keep(p)][:size]


@pytest.mark.parametrize("seed", range(200))
def test_paging_returns_every_row_once_in_commit_order(seed: int) -> None:
    rnd = random.Random(seed)
    txids = sorted(rnd.sample(range(3, 60), rnd.randint(1, 12)))
    sources: dict[Source, list[Position]] = {s: [] for s in READ_SOURCES}
    for txid in txids:  # one commit: a few rows of some sources
        for s in rnd.sample(READ_SOURCES, rnd.randint(1, 3)):
            keys = sorted({f"{s.name[0].lower()}{rnd.randint(0, 99):02d}" for _ in range(4)})
            sources[s] += [Position(txid, s, k) for k in keys[: rnd.randint(1, 4)]]
    everything = sorted(
        (p for rows in sources.values() for p in rows), key=lambda p: (p.txid, p.source, p.key)
    )
    size = rnd.randint(1, 6)
    limit = rnd.choice([size, rnd.randint(1, 8)])
    got: list[Position] = []
    at = START
    for _ in range(len(everything) + 1):  # each round returns at least one row
        window = merge([_page(rows, at, size) for rows in sources.values()], size, limit)
        if not window:
            break
        assert len(window) <= limit
        got += [r.position for r in window]
        at = window[-1].position
    assert got == everything
