"""The journal is the outbox: ledger events derived from accounts and transfers.

Storage level first (real PostgreSQL, the real group-commit function and
readers), then a real node: payments' events and their transfer in one
commit-ordered stream, pages across sources, webhooks, and users' cursors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
import pytest
import sqlalchemy as sa
from msgspec.structs import astuple

from paynode.benchmarks.receiver import Receiver, serve
from paynode.domain.ledger.model import NO_METADATA, AccountSpec, JournalRow
from paynode.domain.notify.outbox import START, Source
from paynode.storage import journal, outbox
from paynode.storage.database import async_engine, connect, libpq_url, sync_engine
from paynode.storage.events import EventRef, StoredEvent, event_id, insert_statement
from paynode.storage.schema import TRANSFER_COLUMNS
from tests.support.asserts import kyc_verified, problem, signup
from tests.support.node import RunningNode, wait_until
from tests.support.notify import FAST, OUTBOX_SQL

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _account(aid: str, owner: str = "", ts: int = T0) -> AccountSpec:
    return AccountSpec(aid, "USD", 0, NO_METADATA, ts, owner)


def _row(tid: str, dr: str, cr: str, status: str = "posted", pending_id: str | None = None,
         amount: int = 10, ts: int = T0) -> JournalRow:  # fmt: skip
    posted = amount if status == "posted" else 0
    delta = {"pending": amount, "posted": 0}.get(status, -amount)
    return JournalRow(tid, dr, cr, amount, "USD", 0, pending_id, 0, '{"k":"v"}', status,
                      posted, delta, ts)  # fmt: skip


def _commit(url: str, accounts: Sequence[AccountSpec] = (), rows: Sequence[JournalRow] = ()):
    """One shard group commit, through the function the shards use."""

    async def main() -> None:
        conn = await connect(url)
        try:
            await journal.commit(conn, accounts, [astuple(r) for r in rows])
        finally:
            await conn.close()

    asyncio.run(main())


def _payment_event(url: str, eid: str, owner: str, dr: str, cr: str) -> None:
    """An events row as storage/payments.emit writes one, in its own transaction."""
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(insert_statement()), {
                "id": eid, "type": "payment.completed", "subject": "pay-1", "owner": owner,
                "debit": dr, "credit": cr, "data": '{"payment": {"id": "pay-1"}}',
                "created": T0 + 5 * NS,
            })  # fmt: skip
    finally:
        engine.dispose()


def _read_all(
    url: str, page: int, types: Sequence[str] = (), users: Sequence[str] | None = None
) -> tuple[list[StoredEvent], int]:
    """Every event a reader gets following the outbox page by page; and rows scanned."""

    async def main() -> tuple[list[StoredEvent], int]:
        engine = async_engine(url, pool_size=1)
        got: list[StoredEvent] = []
        scanned = 0
        at = START
        try:
            async with engine.connect() as conn:
                for _ in range(1000):
                    events, last, n = await outbox.read_events(conn, at, page, types, users)
                    assert n <= page and len(events) <= n
                    if last is None:
                        return got, scanned
                    got, scanned, at = got + events, scanned + n, last
        finally:
            await engine.dispose()
        raise AssertionError("the outbox never ended")

    return asyncio.run(main())


def _get(url: str, ref: EventRef) -> StoredEvent | None:
    async def main() -> StoredEvent | None:
        engine = async_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await outbox.get_event(conn, ref)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _ids(events: Sequence[StoredEvent]) -> list[str]:
    return [e.event.id for e in events]


# -- storage ------------------------------------------------------------------------------


def test_commits_write_no_event_rows_and_readers_derive_them_in_order(database_url) -> None:
    pay = event_id(T0 + 5 * NS, "pay-1:payment.completed")
    _commit(database_url, [_account("a1", "u1"), _account("a2", "u2", ts=T0 + NS)],
            [_row("t1", "a1", "a2", ts=T0 + 2 * NS)])  # fmt: skip
    _commit(database_url, rows=[_row("t2", "a2", "a1", "pending", ts=T0 + 3 * NS)])
    _payment_event(database_url, pay, "u1", "a1", "a2")
    _commit(database_url, rows=[_row("~expired:t2", "a2", "a1", "expired", "t2", ts=T0 + 6 * NS)])
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute("SELECT id FROM events").fetchall() == [(pay,)], "only the payment's"
        # The table refuses a ledger event row: those are derived now (migration 9).
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO events (id, type, subject_id, created)"
                " VALUES ('evt_x', 'transfer.posted', 't1', 0)"
            )

    want = ["evt_a_a1", "evt_a_a2", "evt_t_t1", "evt_t_t2", pay, "evt_t_~expired:t2"]
    for page in (1, 2, 3, 4, 100):  # page ends fall inside and between sources
        events, scanned = _read_all(database_url, page)
        assert _ids(events) == want, page
        assert scanned == len(want)
    events, _ = _read_all(database_url, 100)
    by_id = {e.event.id: e for e in events}
    t1 = by_id["evt_t_t1"]
    assert (t1.event.type, t1.event.created, t1.created_ns) == ("transfer.posted", 1_700_000_002,
                                                                T0 + 2 * NS)  # fmt: skip
    assert t1.event.data["transfer"]["metadata"] == {"k": "v"}
    assert t1.users == {"u1", "u2"} and t1.order_keys == ("a1", "a2")
    a1 = by_id["evt_a_a1"]
    assert a1.event.type == "account.created" and a1.event.data["account"]["owner_user_id"] == "u1"
    assert a1.users == {"u1"} and by_id["evt_t_~expired:t2"].event.type == "transfer.expired"
    # A payment's event concerns its owner and both accounts' owners: payer and payee (the
    # same audience as the users filter below, where u2 keeps it).
    assert by_id[pay].event.data == {"payment": {"id": "pay-1"}}
    assert by_id[pay].users == {"u1", "u2"}
    # A commit's rows share its txid: the accounts come before the transfer.
    assert a1.position.txid == t1.position.txid
    assert [e.position.source for e in events[:3]] == [Source.ACCOUNTS] * 2 + [Source.TRANSFERS]

    # Filters: a user's events (the scan still counts everyone's), types across sources.
    events, scanned = _read_all(database_url, 2, users=["u2"])
    assert _ids(events) == [i for i in want if i != "evt_a_a1"] and scanned == len(want)
    assert _read_all(database_url, 2, users=["nobody"]) == ([], len(want))
    events, _ = _read_all(database_url, 1, types=["transfer.pending", "payment.completed"])
    assert _ids(events) == ["evt_t_t2", pay]
    events, _ = _read_all(database_url, 1, types=["account.created"])
    assert _ids(events) == ["evt_a_a1", "evt_a_a2"]

    # By id, by primary key; an id naming no row is no event.
    assert _get(database_url, EventRef(Source.TRANSFERS, "t1")) == t1
    assert _get(database_url, EventRef(Source.ACCOUNTS, "a1")) == a1
    assert _get(database_url, EventRef(Source.EVENTS, pay)) == by_id[pay]
    assert _get(database_url, EventRef(Source.TRANSFERS, "nope")) is None
    assert _get(database_url, EventRef(Source.ACCOUNTS, "t1")) is None


def test_readers_wait_for_an_earlier_txid_that_commits_late(database_url) -> None:
    _commit(database_url, [_account("w1"), _account("w2")])
    slow = psycopg.connect(libpq_url(database_url))  # a shard whose commit is slow
    try:
        cols = ", ".join(TRANSFER_COLUMNS)
        with slow.cursor().copy(f"COPY transfers ({cols}) FROM STDIN") as copy:
            copy.write_row(astuple(_row("early", "w1", "w2")))
        early_txid = slow.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        _commit(database_url, rows=[_row("late", "w2", "w1")])  # a later txid, committed first
        with psycopg.connect(libpq_url(database_url)) as conn:
            late_txid = conn.execute("SELECT txid FROM transfers WHERE id = 'late'").fetchone()[0]
        assert late_txid > early_txid
        # "late" is committed and visible, but a reader that took it now would move past
        # "early" for good: nothing from early_txid on is read until it commits.
        events, _ = _read_all(database_url, 10)
        assert _ids(events) == ["evt_a_w1", "evt_a_w2"]
        slow.commit()
    finally:
        slow.close()
    events, _ = _read_all(database_url, 10)
    assert _ids(events) == ["evt_a_w1", "evt_a_w2", "evt_t_early", "evt_t_late"]


# -- a node -------------------------------------------------------------------------------


def _user(node: RunningNode, name: str) -> tuple[str, dict[str, str]]:
    with node.anonymous() as anon:
        user_id, headers = signup(anon, name)
    kyc_verified(node.http, user_id, headers)
    return user_id, headers


def _pages(node: RunningNode, limit: int, headers: dict | None = None, **params) -> list[dict]:
    """Every event the credential may see, ``limit`` per page; checks each next_after."""
    seen: list[dict] = []
    after = None
    for _ in range(10_000):
        q = {"limit": limit, **params} | ({"after": after} if after else {})
        r = node.http.get("/v1/events", params=q, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["events"]
        after = page["next_after"]
        if not page["has_more"]:
            return seen
    raise AssertionError("no last page")


def test_a_payments_events_and_its_transfer_in_commit_order(make_node) -> None:
    node = make_node(**FAST)
    _, alice = _user(node, "ob-alice")
    _, bob = _user(node, "ob-bob")
    admin_rx, alice_rx = Receiver(), Receiver()
    with serve(admin_rx) as admin_url, serve(alice_rx) as alice_url:
        ep = node.http.post("/v1/webhook-endpoints", json={"url": admin_url, "events": ["*"]})
        admin_rx.secret = ep.json()["secret"]
        ep = node.http.post("/v1/webhook-endpoints", json={"url": alice_url, "events": ["*"]},
                            headers=alice)  # fmt: skip
        alice_rx.secret = ep.json()["secret"]
        for headers, aid in ((alice, "obp-alice"), (bob, "obp-bob"), (None, "obp-bank")):
            r = node.http.post("/v1/accounts", json={"id": aid, "currency": "USD"},
                               headers=headers)  # fmt: skip
            assert r.status_code == 201, r.text
        fund = {"id": "obp-fund", "debit_account_id": "obp-bank", "amount": 5_000,
                "credit_account_id": "obp-alice", "currency": "USD"}  # fmt: skip
        assert node.http.post("/v1/transfers", json=fund).status_code == 201
        pay = {"id": "obp-1", "from": "obp-alice", "to": "obp-bob", "amount": 1234,
               "currency": "USD"}  # fmt: skip
        r = node.http.post("/v1/payments", json=pay, headers=alice)
        assert r.status_code == 201 and r.json()["status"] == "completed", r.text

        # The oracle: the three sources in (txid, source, key) order, straight from SQL.
        with psycopg.connect(libpq_url(node.database_url)) as conn:
            order = [r[0] for r in conn.execute(OUTBOX_SQL, ("%",))]
            stored = {r[0] for r in conn.execute("SELECT id FROM events")}
        payment_ids = [i for i in order if i in stored]
        ours = [i for i in order if i.startswith(("evt_a_obp-", "evt_t_obp-", "evt_t_pay:obp-"))
                or i in stored]  # fmt: skip
        assert ours == ["evt_a_obp-alice", "evt_a_obp-bob", "evt_a_obp-bank", "evt_t_obp-fund",
                        payment_ids[0], "evt_t_pay:obp-1", payment_ids[1]]  # fmt: skip

        # Readers stop below the oldest transaction still open (pg_snapshot_xmin), so a
        # background actor's transaction can hold the last events back for a moment.
        everything = wait_until(
            lambda: (pages := _pages(node, 1000)) and [e["id"] for e in pages] == order and pages,
            timeout=30,
            what="every committed event to be readable",
        )
        got = [(e["type"], e["id"]) for e in everything if e["id"] in ours]
        assert [t for t, _ in got] == ["account.created"] * 3 + [
            "transfer.posted",
            "payment.created",
            "transfer.posted",
            "payment.completed",
        ]
        # Page ends at every point, across the boundaries between sources.
        for limit in (1, 2, 3):
            assert _pages(node, limit) == everything, limit
        # Alice's view: her account, the funding, the payment and its transfer.
        alice_view = [e["id"] for e in _pages(node, 2, alice)]
        assert alice_view == [i for i in ours if i not in ("evt_a_obp-bob", "evt_a_obp-bank")]
        one = node.http.get("/v1/events/evt_t_pay:obp-1", headers=alice)
        assert one.status_code == 200 and one.json()["data"]["transfer"]["amount"] == 1234
        problem(node.http.get("/v1/events/evt_a_obp-bob", headers=alice), 404, "event_not_found")

        # Webhooks in the same order, with the same ids.
        wait_until(lambda: set(ours) <= {r.event_id for r in admin_rx.delivered()},
                   what="every event at the admin's endpoint")  # fmt: skip
        assert [r.event_id for r in admin_rx.delivered() if r.event_id in ours] == ours
        wait_until(lambda: set(alice_view) <= {r.event_id for r in alice_rx.delivered()},
                   what="alice's events at her endpoint")  # fmt: skip
        assert [r.event_id for r in alice_rx.delivered()] == alice_view
        assert all(r.verified for r in admin_rx.received + alice_rx.received)


def test_a_users_cursor_never_names_someone_elses_event(make_node) -> None:
    node = make_node(**FAST)
    _, a = _user(node, "cur-alice")
    _, b = _user(node, "cur-bob")
    assert node.http.post("/v1/accounts", json={"id": "cur-a", "currency": "USD"},
                          headers=a).status_code == 201  # fmt: skip
    assert node.http.post("/v1/accounts", json={"id": "cur-b", "currency": "USD"},
                          headers=b).status_code == 201  # fmt: skip
    assert node.http.post("/v1/accounts", json={"id": "cur-bank", "currency": "USD"},
                          ).status_code == 201  # fmt: skip

    def move(tid: str, dr: str, cr: str) -> None:
        body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr, "amount": 1,
                "currency": "USD"}  # fmt: skip
        assert node.http.post("/v1/transfers", json=body).status_code == 201

    move("cur-1", "cur-bank", "cur-a")
    move("cur-hidden-2", "cur-bank", "cur-b")  # bob's business, not alice's
    move("cur-3", "cur-bank", "cur-a")
    move("cur-hidden-4", "cur-bank", "cur-b")
    mine = ["evt_a_cur-a", "evt_t_cur-1", "evt_t_cur-3"]
    wait_until(lambda: set(mine) <= {e["id"] for e in _pages(node, 100, a)}, what="her events")

    seen, cursors, after = [], [], None
    for _ in range(20):
        r = node.http.get("/v1/events", params={"limit": 1} | ({"after": after} if after else {}),
                          headers=a)  # fmt: skip
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [e["id"] for e in page["events"]]
        after = page["next_after"]
        cursors.append(after)
        assert "hidden" not in r.text, "another customer's ids leaked"
        if not page["has_more"]:
            break
    assert seen == mine
    sealed = cursors[-1]
    assert sealed.startswith("evc_"), "the scan ended on bob's transfer: an opaque cursor"
    # It resumes where it was for her, and is no cursor at all for anyone else.
    r = node.http.get("/v1/events", params={"after": sealed}, headers=a)
    assert r.status_code == 200 and r.json()["events"] == []
    problem(node.http.get("/v1/events", params={"after": sealed}, headers=b), 400,
            "invalid_cursor")  # fmt: skip
    problem(node.http.get("/v1/events", params={"after": sealed[:-4] + "AAAA"}, headers=a), 400,
            "invalid_cursor")  # fmt: skip
    # An id of hers resumes; one of someone else's is refused like one that does not
    # exist (or it would tell her which ids exist).
    r = node.http.get("/v1/events", params={"after": "evt_t_cur-1"}, headers=a)
    assert [e["id"] for e in r.json()["events"]] == ["evt_t_cur-3"]
    for other in ("evt_t_cur-hidden-2", "evt_t_cur-nope", "evt_a_cur-b", "evt_nope"):
        problem(node.http.get("/v1/events", params={"after": other}, headers=a), 400,
                "invalid_cursor")  # fmt: skip
    # The admin sees every event, so the admin's cursors are ids.
    admin = node.http.get("/v1/events", params={"after": "evt_t_cur-hidden-2", "limit": 1})
    assert admin.json()["next_after"] == "evt_t_cur-3"
    problem(node.http.get("/v1/events", params={"after": sealed}), 400, "invalid_cursor")
