"""Upgrading a database whose ledger events were rows of ``events`` (before migration 9).

Those events keep their rows and ids, are listed once (never also derived
from their journal rows), and the notifier's saved position carries over.
Real PostgreSQL, then a real node on the upgraded database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from msgspec.structs import astuple
from sqlalchemy.engine import make_url

from paynode.domain.ledger.model import NO_METADATA, AccountSpec, JournalRow
from paynode.domain.notify.outbox import Position, Source
from paynode.storage import journal, notify
from paynode.storage.database import async_engine, libpq_url
from paynode.storage.events import event_id
from paynode.storage.migrations import load as load_migrations
from paynode.storage.migrations import migrate
from paynode.storage.schema import ACCOUNT_COLUMNS, TRANSFER_COLUMNS
from tests.support.asserts import problem
from tests.support.node import wait_until
from tests.support.notify import FAST

NS = 1_000_000_000
T0 = 1_690_000_000 * NS


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database at schema version 6: the make_node fixture uses this one here."""
    name = f"paynode_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    assert migrate(url, upto=6) == [1, 2, 3, 4, 5, 6]
    try:
        yield url
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


OLD_ACCOUNTS = [
    AccountSpec("old-a", "USD", 0, NO_METADATA, T0, ""),
    AccountSpec("old-b", "USD", 0, NO_METADATA, T0 + 1, ""),
]
OLD_ROWS = [
    JournalRow("old-1", "old-a", "old-b", 100, "USD", 0, None, 0, NO_METADATA, "posted", 100, 0,
               T0 + 2),
    JournalRow("old-2", "old-a", "old-b", 7, "USD", 0, None, 0, NO_METADATA, "pending", 0, 7,
               T0 + 3),
]  # fmt: skip


def _old_commit(conn: psycopg.Connection) -> dict[str, str]:
    """What a shard of the previous version committed: the rows and an events row each.

    The events rows are those its ``event_lines`` wrote: id from the decision
    time and the subject, no body (rendered from the row), who it concerns.
    Returns the event id by subject.
    """
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY accounts ({', '.join(ACCOUNT_COLUMNS)}) FROM STDIN") as copy:
            copy.write(journal.account_lines(OLD_ACCOUNTS))
        with cur.copy(f"COPY transfers ({', '.join(TRANSFER_COLUMNS)}) FROM STDIN") as copy:
            for row in OLD_ROWS:
                copy.write_row(astuple(row))
        ids = {}
        for a in OLD_ACCOUNTS:
            ids[a.id] = event_id(a.ts, a.id)
            cur.execute(
                "INSERT INTO events (id, type, subject_id, owner_user_id, created)"
                " VALUES (%s, 'account.created', %s, NULL, %s)",
                (ids[a.id], a.id, a.ts),
            )
        for r in OLD_ROWS:
            ids[r.id] = event_id(r.ts, r.id)
            cur.execute(
                "INSERT INTO events (id, type, subject_id, debit_account_id, credit_account_id,"
                " created) VALUES (%s, %s, %s, %s, %s, %s)",
                (ids[r.id], f"transfer.{r.status}", r.id, r.debit_account_id,
                 r.credit_account_id, r.ts),
            )  # fmt: skip
    return ids


def _load_cursor(url: str) -> Position:
    async def main() -> Position:
        engine = async_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await notify.load_cursor(conn)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_events_written_before_the_upgrade_keep_their_ids_and_show_once(
    database_url: str, make_node
) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        old = _old_commit(conn)
        order = [old[s] for s in ("old-a", "old-b", "old-1", "old-2")]
        old_txid = conn.execute("SELECT max(txid) FROM events").fetchone()[0]
        # The previous notifier had fanned out up to old-1's event.
        conn.execute(
            "INSERT INTO notifier_cursor (name, txid, event_id) VALUES ('fanout', %s, %s)",
            (old_txid, old["old-1"]),
        )
        conn.commit()
    assert migrate(database_url) == [m.version for m in load_migrations() if m.version > 6]
    assert migrate(database_url) == []
    with psycopg.connect(libpq_url(database_url)) as conn:
        boundary = conn.execute("SELECT txid FROM outbox_boundary").fetchone()[0]
    assert boundary >= old_txid
    assert _load_cursor(database_url) == Position(old_txid, Source.EVENTS, old["old-1"])

    node = make_node(**FAST)
    for aid in ("new-a", "new-b"):
        assert node.http.post("/v1/accounts", json={"id": aid, "currency": "USD"}).is_success
    for tid, dr, cr in (("new-1", "old-a", "new-a"), ("new-2", "new-b", "old-b")):
        body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr, "amount": 5,
                "currency": "USD"}  # fmt: skip
        assert node.http.post("/v1/transfers", json=body).status_code == 201
    # The old pending, posted after the upgrade: its event is derived.
    r = node.http.post("/v1/transfers", json={"id": "new-3", "pending_id": "old-2",
                                              "flags": ["post_pending"]})  # fmt: skip
    assert r.status_code == 201, r.text

    new = ["evt_a_new-a", "evt_a_new-b", "evt_t_new-1", "evt_t_new-2", "evt_t_new-3"]

    def listed(limit: int, **params) -> list[dict]:
        seen, after = [], None
        while True:
            q = {"limit": limit, **params} | ({"after": after} if after else {})
            page = node.http.get("/v1/events", params=q).json()
            seen += page["events"]
            after = page["next_after"]
            if not page["has_more"]:
                return seen

    everything = wait_until(
        lambda: (got := listed(1000)) and set(new) <= {e["id"] for e in got} and got,
        what="the new events",
    )
    ids = [e["id"] for e in everything]
    assert ids[:4] == order, "the old events first, with their old ids"
    assert [i for i in ids if i in new] == new
    assert len(ids) == len(set(ids))
    subjects = [(e["type"], (e["data"].get("transfer") or e["data"]["account"])["id"])
                for e in everything]  # fmt: skip
    assert len(subjects) == len(set(subjects)), "no change listed twice"
    assert everything[2]["data"]["transfer"]["amount"] == 100  # rendered from the journal row
    for limit in (1, 3):  # pages across the boundary and across sources
        assert listed(limit) == everything
    posted = [e["id"] for e in listed(2, type="transfer.posted")]
    assert posted == [old["old-1"], "evt_t_new-1", "evt_t_new-2", "evt_t_new-3"]

    # By id: old ids still work, and the derived id of an old row names no event.
    assert node.http.get(f"/v1/events/{old['old-1']}").json() == everything[2]
    problem(node.http.get("/v1/events/evt_t_old-1"), 404, "event_not_found")
    problem(node.http.get("/v1/events/evt_a_old-a"), 404, "event_not_found")
    r = node.http.get("/v1/events", params={"after": old["old-2"], "limit": 1000})
    assert [e["id"] for e in r.json()["events"]] == ids[4:]
    problem(node.http.get("/v1/events", params={"after": "evt_t_old-1"}), 400, "invalid_cursor")

    # A node of the previous version writing a ledger events row now fails its commit
    # (its event would be listed twice) instead of succeeding.
    with (
        psycopg.connect(libpq_url(database_url)) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO events (id, type, subject_id, created) VALUES (%s, 'account.created',"
            " 'late', 0)",
            (event_id(T0, "late"),),
        )
