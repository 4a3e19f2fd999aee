"""Reading the outbox: its three sources in commit order, and events by id.

Sources and positions are described in domain/notify/outbox.py; ids and
bodies in storage/events.py. A read is two steps:

1. **The window.** One statement reads the next page of each source on its
   own ``(txid, id)`` index, only below ``pg_snapshot_xmin`` (computed once,
   so the three pages share one horizon: an id handed out earlier may commit
   later, and a reader past it would skip it for good), with whether the
   reader keeps each row (its types, its users); ``merge`` (domain/notify/
   outbox.py) interleaves the pages.
2. **The bodies**, only of the rows kept, by primary key.

A subscriber's cost is therefore its index range scans plus the events it
keeps, not everyone else's events rendered.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.notify.outbox import (
    READ_SOURCES,
    Bound,
    Position,
    Scanned,
    Source,
    bound,
    merge,
)
from paynode.storage.events import (
    ABOVE_BOUNDARY,
    ACCOUNT_CREATED,
    RENDER_BY_SOURCE,
    SELECT_BY_SOURCE,
    TRANSFER_EVENT,
    EventRef,
    StoredEvent,
)

MAX_PAGE = 100_000  # rows per source per window (the largest notify_batch)

_TABLE = {Source.ACCOUNTS: "accounts", Source.TRANSFERS: "transfers", Source.EVENTS: "events"}
_AFTER = {
    Bound.AFTER_TXID: "x.txid > :t",
    Bound.AFTER_KEY: "(x.txid, x.id) > (:t, :k)",
    Bound.FROM_TXID: "x.txid >= :t",
}
# Whom a row concerns, for a reader limited to some users' accounts.
_MINE = "mine AS (SELECT id FROM accounts WHERE owner_user_id = ANY(:users))"
_CONCERNS = {
    Source.ACCOUNTS: "x.owner_user_id = ANY(:users)",
    Source.TRANSFERS: (
        "(x.debit_account_id IN (SELECT id FROM mine)"
        " OR x.credit_account_id IN (SELECT id FROM mine))"
    ),
    Source.EVENTS: (
        "(x.owner_user_id = ANY(:users) OR x.debit_account_id IN (SELECT id FROM mine)"
        " OR x.credit_account_id IN (SELECT id FROM mine))"
    ),
}
_STATUS_OF = {etype: status for status, etype in TRANSFER_EVENT.items()}
_SOURCE = {int(s): s for s in READ_SOURCES}


def _type_filter(source: Source, types: Sequence[str]) -> str | None:
    """The condition on ``source``'s rows for ``types`` ("" none; None: no row qualifies)."""
    if not types:
        return ""
    if source == Source.ACCOUNTS:
        return "" if ACCOUNT_CREATED in types else None
    if source == Source.TRANSFERS:
        return " AND x.status = ANY(:statuses)" if any(t in _STATUS_OF for t in types) else None
    return " AND x.type = ANY(:types)"


def _page_sql(source: Source, after: Position, types: Sequence[str], users: bool) -> str | None:
    """One source's next page after ``after``; None if ``types`` rule the source out."""
    typed = _type_filter(source, types)
    if typed is None:
        return None
    kept = _CONCERNS[source] if users else "true"
    derived = "" if source == Source.EVENTS else f" AND x.{ABOVE_BOUNDARY}"
    return (
        f"(SELECT {int(source)} AS source, x.txid, x.id, {kept} AS kept FROM {_TABLE[source]} x"
        f" WHERE {_AFTER[bound(source, after)]} AND x.txid < (SELECT xmin FROM horizon)"
        f"{derived}{typed} ORDER BY x.txid, x.id LIMIT :n)"
    )


async def read_events(
    conn: AsyncConnection,
    after: Position,
    limit: int,
    types: Sequence[str] = (),
    users: Sequence[str] | None = None,
) -> tuple[list[StoredEvent], Position | None, int]:
    """Committed events after ``after`` in outbox order; ``users`` keeps only theirs.

    ``limit`` bounds the events scanned, not the ones kept. Returns the kept
    events, the last position scanned (None when nothing was) and how many
    were scanned.
    """
    assert 1 <= limit <= MAX_PAGE
    pages = [p for s in READ_SOURCES if (p := _page_sql(s, after, types, users is not None))]
    if not pages:
        return [], None, 0
    # The horizon once for all three pages: each must stop at the same txid, or a
    # later page could pass rows an earlier one could not see yet.
    sql = (
        "WITH horizon AS MATERIALIZED"
        " (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin)"
        + (f", {_MINE}" if users is not None else "")
        + " "
        + " UNION ALL ".join(pages)
    )
    params = {
        "t": after.txid,
        "k": after.key,
        "n": limit,
        "types": list(types),
        "statuses": [_STATUS_OF[t] for t in types if t in _STATUS_OF],
        "users": list(users or ()),
    }
    by_source: dict[int, list[Scanned]] = {int(s): [] for s in READ_SOURCES}
    scanned: Sequence[tuple[Any, ...]] = (await conn.execute(sa.text(sql), params)).all()
    for source, txid, key, kept in scanned:
        by_source[source].append(Scanned(txid, _SOURCE[source], key, kept))
    window = merge(list(by_source.values()), limit, limit)
    if not window:
        return [], None, 0
    wanted = [EventRef(r.source, r.key) for r in window if r.kept]
    found = await render(conn, wanted)
    # Journal and events rows are never deleted, so every kept row renders; one
    # removed by hand in between is skipped rather than stopping every reader.
    events = [found[ref] for ref in wanted if ref in found]
    return events, window[-1].position, len(window)


async def render(conn: AsyncConnection, refs: Iterable[EventRef]) -> dict[EventRef, StoredEvent]:
    """The events named by ``refs`` that exist (a few queries by primary key)."""
    keys: dict[Source, list[str]] = {}
    for ref in refs:
        keys.setdefault(ref.source, []).append(ref.key)
    out: dict[EventRef, StoredEvent] = {}
    for source, wanted in keys.items():
        to_event = RENDER_BY_SOURCE[source]
        for row in await conn.execute(sa.text(SELECT_BY_SOURCE[source]), {"keys": wanted}):
            ev = to_event(row)
            out[EventRef(source, ev.position.key)] = ev
    return out


async def get_event(conn: AsyncConnection, ref: EventRef) -> StoredEvent | None:
    return (await render(conn, [ref])).get(ref)


async def event_position(conn: AsyncConnection, ref: EventRef) -> Position | None:
    """Where the event ``ref`` names stands in the outbox; None if there is no such event."""
    if ref.source == Source.EVENTS:
        sql = "SELECT txid FROM events WHERE id = :k"
    else:
        sql = f"SELECT txid FROM {_TABLE[ref.source]} WHERE id = :k AND {ABOVE_BOUNDARY}"
    txid: int | None = (await conn.execute(sa.text(sql), {"k": ref.key})).scalar_one_or_none()
    return None if txid is None else Position(txid, ref.source, ref.key)
