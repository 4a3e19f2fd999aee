"""Positions in the outbox and the merge of its three sources (pure).

The outbox is not one table: ledger events are derived from the journal
itself (``accounts`` and ``transfers``, each with its own ``(txid, id)``
index) and every other event is a row of ``events``. A reader follows all
three in one order, commit first:

    (txid, source, key)   source: accounts < transfers < events; key: the row's id

Each source is read separately, in its own index order, a page at a time;
:func:`merge` interleaves the pages. Keys are compared only by PostgreSQL
(within one source, in its index order): two positions of different sources
or txids never need their keys compared, so Python's string order (which
may differ from the database collation) never decides anything.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Sequence

import msgspec


class Source(enum.IntEnum):
    """Where an event lives, in the order events of one commit are read."""

    ACCOUNTS = 0  # account.created, derived from the accounts row
    TRANSFERS = 1  # transfer.*, derived from the journal row
    EVENTS = 2  # payment.* and older ledger events: rows of the events table
    END = 3  # not a source: a position past every event of its txid


READ_SOURCES = (Source.ACCOUNTS, Source.TRANSFERS, Source.EVENTS)


class Position(msgspec.Struct, frozen=True, array_like=True):
    """Everything at or before this point has been read.

    ``Position(t, Source.END, "")`` means "all of txid t and before".
    """

    txid: int
    source: Source
    key: str

    def __post_init__(self) -> None:
        # ValueError, not assert: a position may come from a decoded cursor.
        if self.txid < 0:
            raise ValueError("txids are never negative")
        if (self.source == Source.END) != (self.key == ""):
            raise ValueError("END, and only END, has no key")


START = Position(0, Source.END, "")  # before every event (real txids start at 3)


def through(txid: int) -> Position:
    """The position after every event of ``txid`` and before it."""
    return Position(txid, Source.END, "")


class Bound(enum.Enum):
    """How a source's scan starts relative to a position (see :func:`bound`)."""

    AFTER_TXID = "txid > t"  # a source ordered before the position's: its txid is done
    AFTER_KEY = "(txid, id) > (t, key)"  # the position's own source
    FROM_TXID = "txid >= t"  # a source ordered after the position's: its txid is still open


def bound(source: Source, after: Position) -> Bound:
    """The condition under which ``source``'s rows come after ``after``."""
    assert source in READ_SOURCES
    if source < after.source:
        return Bound.AFTER_TXID
    if source == after.source:
        return Bound.AFTER_KEY
    return Bound.FROM_TXID


class Scanned(msgspec.Struct, frozen=True, gc=False):
    """One row of a source's page: where it is, and whether the reader keeps it.

    Flat, not a Position: a page may hold a hundred thousand rows, and only
    the kept ones and the last one become positions.
    """

    txid: int
    source: Source
    key: str
    kept: bool

    @property
    def position(self) -> Position:
        return Position(self.txid, self.source, self.key)


def merge(pages: Sequence[Sequence[Scanned]], page_size: int, limit: int) -> list[Scanned]:
    """The next ``limit`` rows in outbox order, from one page of each source.

    Every page holds its source's next rows after the same position, in
    ``(txid, key)`` order, at most ``page_size`` of them. A full page may
    have more rows behind it, so the result must stop at its last row:
    anything later could come after rows of that source not yet read. A
    page that is not full is its source's whole remainder (up to the
    visibility horizon). The first row overall is never past such a stop,
    so the result is empty only when every page is.
    """
    assert page_size >= 1 and limit >= 1
    stop: tuple[int, int] | None = None  # (txid, source) of the earliest full page's end
    for page in pages:
        assert len(page) <= page_size, "a page is at most page_size rows"
        assert not page or page[0].source == page[-1].source, "a page comes from one source"
        if len(page) == page_size:
            end = (page[-1].txid, int(page[-1].source))
            stop = end if stop is None else min(stop, end)
    out: list[Scanned] = []
    # Rows of different sources never share (txid, source); within one source the
    # page's own order (PostgreSQL's) is kept: heapq.merge is stable per input.
    for row in heapq.merge(*pages, key=lambda r: (r.txid, r.source)):
        # At the stop's (txid, source) only the full page's own rows remain, all
        # at or before its end: comparing (txid, source) is enough.
        if stop is not None and (row.txid, row.source) > stop:
            break
        out.append(row)
        if len(out) == limit:
            break
    return out
