"""ACH end to end: link and verify a bank account, pull, push, NACHA files, returns.

The node talks to the bank simulator (actors/bank_sim.py) with real NACHA
files; the simulator answers with signed webhooks (settlements, return
files). Our files are checked by tests/support/nacha_layout.py, a parser written
from the NACHA record layouts, independent of the generator.
"""

from __future__ import annotations

import datetime as dt

from paynode.domain.rails.nacha import FileHeader, build_return_file, parse_file
from tests.support import nacha_layout
from tests.support.asserts import kyc_verified, problem, signup
from tests.support.bank import ROUTING, cutoff, link_and_verify
from tests.support.node import RunningNode, wait_until

GOOD = "000123456789"
R01_ACCOUNT = "000222222227"  # the simulator returns debits to it with R01
R03_ACCOUNT = "000333333335"  # and everything to it with R03


def _user(node: RunningNode, name: str) -> dict[str, str]:
    """A KYC-verified user: these tests are about the rails, not the risk gate."""
    with node.anonymous() as anon:
        user_id, headers = signup(anon, name)
    kyc_verified(node.http, user_id, headers)
    return headers


def _link_and_verify(node: RunningNode, user: dict, account: str) -> str:
    bank_id = link_and_verify(node, user, account)
    r = node.http.get(f"/v1/bank-accounts/{bank_id}", headers=user)
    assert r.json()["bank_name"] == "JPMORGAN CHASE BANK, NA", r.text  # the FedACH directory
    return bank_id


def _wallet(node: RunningNode, user: dict, account_id: str) -> None:
    body = {"id": account_id, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
    assert node.http.post("/v1/accounts", json=body, headers=user).status_code == 201


def _balances(node: RunningNode, account_id: str) -> tuple[int, int, int]:
    a = node.http.get(f"/v1/accounts/{account_id}").json()
    return a["balance"], a["available"], a["credits_pending"]


def _status(node: RunningNode, payment_id: str) -> str:
    return node.http.get(f"/v1/payments/{payment_id}").json()["status"]


def test_pull_push_files_and_returns(make_node) -> None:
    node = make_node(bank_sim_delay_s=0.1, ach_cutoff_interval_ms=0)
    alice = _user(node, "alice-ach")
    _wallet(node, alice, "alice-ach-w")
    bank = _link_and_verify(node, alice, GOOD)

    # Unverified accounts move nothing.
    r = node.http.post("/v1/bank-accounts", headers=alice, json={
        "routing_number": ROUTING, "account_number": "000999999999", "account_type": "savings",
        "holder_name": "Alice Example"})  # fmt: skip
    unverified = r.json()["id"]
    pull = {"id": "pull-x", "from": unverified, "to": "alice-ach-w", "amount": 100,
            "currency": "USD"}  # fmt: skip
    problem(node.http.post("/v1/payments", json=pull, headers=alice), 422,
            "bank_account_not_verified")  # fmt: skip
    problem(node.http.post("/v1/bank-accounts", headers=alice, json={
        "routing_number": "021000022", "account_number": GOOD, "account_type": "checking",
        "holder_name": "A"}), 422, "invalid_routing_number")  # fmt: skip

    # Pull $500 in: held (pending credit, not available), then settled.
    pull = {"id": "pull-1", "from": bank, "to": "alice-ach-w", "amount": 50_000,
            "currency": "USD"}  # fmt: skip
    r = node.http.post("/v1/payments", json=pull, headers=alice)
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    assert r.json()["rail"] == "ach" and r.json()["ach_direction"] == "debit"
    assert _balances(node, "alice-ach-w") == (0, 0, 50_000)
    cut = cutoff(node)  # the pull, and the unverified account's two micro-deposits
    assert cut["entries"] == 3 and cut["total_debit"] == 50_000
    assert _status(node, "pull-1") in ("submitted", "settled")

    # The file, read back field by field by the independent parser.
    text = node.http.get(f"/v1/ach/files/{cut['file_id']}").text
    parsed = nacha_layout.parse(text)
    nacha_layout.check_controls(parsed)
    by_sec = {b["header"]["standard_entry_class_code"]: b for b in parsed["batches"]}
    assert set(by_sec) == {"WEB", "PPD"}  # consumer debit authorized online; credits
    assert {e["transaction_code"] for e in by_sec["PPD"]["entries"]} == {32}  # savings credit
    (entry,) = by_sec["WEB"]["entries"]
    assert entry["transaction_code"] == 27
    assert entry["dfi_account_number"] == GOOD
    assert entry["amount"] == 50_000
    assert entry["receiving_dfi_identification"] == ROUTING[:8]
    assert parsed["control"]["total_debit_entry_dollar_amount"] == 50_000

    wait_until(lambda: _status(node, "pull-1") == "settled", what="the pull to settle")
    assert _balances(node, "alice-ach-w") == (50_000, 50_000, 0)

    # Push $200 out: held at once, settled after the file.
    push = {"id": "push-1", "from": "alice-ach-w", "to": bank, "amount": 20_000,
            "currency": "USD"}  # fmt: skip
    r = node.http.post("/v1/payments", json=push, headers=alice)
    assert r.json()["status"] == "pending" and r.json()["ach_direction"] == "credit"
    assert _balances(node, "alice-ach-w")[1] == 30_000  # available drops at once
    push_file = cutoff(node)
    wait_until(lambda: _status(node, "push-1") == "settled", what="the push to settle")
    assert _balances(node, "alice-ach-w") == (30_000, 30_000, 0)

    # The bank returns that settled push (R03): the wallet is refunded.
    original = next(
        e
        for b in parse_file(node.http.get(f"/v1/ach/files/{push_file['file_id']}").text).batches
        for e in b.entries
    )
    now = dt.datetime.now().replace(microsecond=0)
    head = FileHeader(immediate_destination="011000015", immediate_origin="011000015",
                      destination_name="PAYNODE", origin_name="RDFI", created=now)  # fmt: skip
    returns = build_return_file(head, "011000015", [(original.to_entry(), "R03")], now)
    r = node.http.post("/v1/ach/returns", content=returns,
                       headers={"Content-Type": "text/plain"})  # fmt: skip
    assert r.status_code == 200
    assert r.json() == {"returned": 1, "already": 0, "unknown": 0, "dead_lettered": 0}
    again = node.http.post("/v1/ach/returns", content=returns)
    assert again.json() == {"returned": 0, "already": 1, "unknown": 0, "dead_lettered": 0}
    returned = node.http.get("/v1/payments/push-1", headers=alice).json()
    assert returned["status"] == "returned" and returned["return_code"] == "R03"
    assert returned["return_reason"].lower().startswith("no account")
    assert _balances(node, "alice-ach-w") == (50_000, 50_000, 0)

    # A wallet payment and its partial refund; then the analytics name each row's rail.
    _wallet(node, alice, "alice-ach-w2")
    pay = {"id": "wal-1", "from": "alice-ach-w", "to": "alice-ach-w2", "amount": 1_000,
           "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/payments", json=pay, headers=alice).json()["status"] == "completed"
    r = node.http.post("/v1/payments/wal-1/refunds", json={"id": "wal-1-r", "amount": 300},
                       headers=alice)  # fmt: skip
    assert r.status_code == 201, r.text
    _check_rails_in_analytics(node)


def _check_rails_in_analytics(node: RunningNode) -> None:
    """daily_volume by rail adds up to the payments: ACH holds and their posts to the ACH
    payments, the wallet's transfers to the wallet payment and its refund."""
    import psycopg
    import ray

    from paynode.storage.analytics import connect_views
    from paynode.storage.database import libpq_url

    with psycopg.connect(libpq_url(node.database_url)) as conn:
        row = conn.execute("SELECT count(*), sum(amount) FROM transfers"
                           " WHERE id LIKE 'micro:%'").fetchone()  # fmt: skip
        assert row is not None and row[0] == 4
        micro = int(row[1])
    ray.get(node.analytics.sync.remote(), timeout=60)
    con = connect_views(node.settings.analytics_path())
    try:
        volume = con.execute(
            "SELECT rail, kind, sum(transfers)::INT, sum(amount)::BIGINT,"
            " sum(posted_amount)::BIGINT FROM daily_volume GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert volume == [
            ("ach", "pending", 2, 70_000, 0),  # pull-1 and push-1 held
            ("ach", "post", 2, 70_000, 70_000),  # both settled
            ("ach", "transfer", 5, micro + 20_000, micro + 20_000),  # micro-deposits, return
            ("wallet", "transfer", 2, 1_300, 1_300),  # wal-1 and its refund
        ], volume
        by_payment = con.execute(
            "SELECT payment_id, rail, count(*)::INT FROM transfers WHERE payment_id IS NOT NULL"
            " GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert by_payment == [("pull-1", "ach", 2), ("push-1", "ach", 3), ("wal-1", "wallet", 2)]
    finally:
        con.close()


def test_debit_returned_r01_leaves_the_wallet_as_before(make_node) -> None:
    node = make_node(bank_sim_delay_s=0.1, ach_cutoff_interval_ms=0)
    bob = _user(node, "bob-ach")
    _wallet(node, bob, "bob-ach-w")
    bank = _link_and_verify(node, bob, R01_ACCOUNT)  # credits (micro-deposits) go through
    before = _balances(node, "bob-ach-w")
    pull = {"id": "pull-r01", "from": bank, "to": "bob-ach-w", "amount": 10_000,
            "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/payments", json=pull, headers=bob).json()["status"] == "pending"
    cutoff(node)
    wait_until(lambda: _status(node, "pull-r01") == "returned", what="the R01 return")
    pay = node.http.get("/v1/payments/pull-r01", headers=bob).json()
    assert pay["return_code"] == "R01" and "insufficient" in pay["return_reason"].lower()
    assert [h["status"] for h in pay["history"]] == ["processing", "pending", "submitted",
                                                     "returned"]  # fmt: skip
    assert _balances(node, "bob-ach-w") == before
    files = node.http.get("/v1/ach/files").json()["files"]
    (kept,) = [f for f in files if f["direction"] == "return"]
    assert kept["entries"] == 1 and kept["total_debit"] == 10_000
    returned = node.http.get(f"/v1/ach/files/{kept['id']}").text
    nacha_layout.check_controls(nacha_layout.parse(returned))

    # Micro-deposits to an account the bank does not know come back: never verified.
    r = node.http.post("/v1/bank-accounts", headers=bob, json={
        "routing_number": ROUTING, "account_number": R03_ACCOUNT, "account_type": "checking",
        "holder_name": "Bob"})  # fmt: skip
    gone = r.json()["id"]
    cutoff(node)
    wait_until(
        lambda: (
            node.http.get(f"/v1/bank-accounts/{gone}", headers=bob).json()["status"]
            == "verification_failed"
        ),
        what="the returned micro-deposits",
    )


def test_reconciliation_finds_ach_entries_the_bank_never_answered(make_node) -> None:
    import psycopg

    from paynode.storage.database import libpq_url

    node = make_node(bank_sim_enabled=False, ach_cutoff_interval_ms=0, recon_interval_ms=0)
    carol = _user(node, "carol-ach")
    _wallet(node, carol, "carol-ach-w")
    r = node.http.post("/v1/bank-accounts", headers=carol, json={
        "routing_number": ROUTING, "account_number": GOOD, "account_type": "checking",
        "holder_name": "Carol"})  # fmt: skip
    assert r.status_code == 201
    cut = cutoff(node)
    assert cut["entries"] == 2 and not cut["transmitted"]  # no bank to take it
    clean = node.http.post("/v1/reconciliation/runs", json={"kind": "full"}).json()
    assert clean["status"] == "ok", clean
    # Time passes: the effective date is now well behind us, and the bank said nothing.
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        conn.execute("UPDATE ach_entries SET effective_date = effective_date - 30")
    # Seen once: candidates, not discrepancies yet; seen again by the next run: open.
    seen = node.http.post("/v1/reconciliation/runs", json={"kind": "full"}).json()
    assert seen["status"] == "ok" and seen["candidates"] == 2 and seen["found"] == 0, seen
    assert node.http.get("/v1/reconciliation/discrepancies").json()["data"] == []
    found = node.http.post("/v1/reconciliation/runs", json={"kind": "full"}).json()
    assert found["status"] == "discrepancies" and found["found"] == 2, found
    open_ = node.http.get("/v1/reconciliation/discrepancies").json()["data"]
    assert {(d["kind"], d["object_type"], d["sources"]) for d in open_} == {
        ("missing_in_bank", "bank_entry", "ach/bank")
    }
    # The bank's late return file answers them: the next full run resolves both.
    text = node.http.get(f"/v1/ach/files/{cut['file_id']}").text
    now = dt.datetime.now().replace(microsecond=0)
    head = FileHeader(immediate_destination="011000015", immediate_origin="011000015",
                      destination_name="PAYNODE", origin_name="RDFI", created=now)  # fmt: skip
    entries = [e.to_entry() for b in parse_file(text).batches for e in b.entries]
    returns = build_return_file(head, "011000015", [(e, "R03") for e in entries], now)
    assert node.http.post("/v1/ach/returns", content=returns).json()["returned"] == 2
    done = node.http.post("/v1/reconciliation/runs", json={"kind": "full"}).json()
    assert done["status"] == "ok" and done["resolved"] == 2, done
    bank = node.http.get("/v1/bank-accounts", headers=carol).json()["bank_accounts"][0]
    assert bank["status"] == "verification_failed"  # its micro-deposits came back


def test_cancel_before_the_file_releases_the_hold(make_node) -> None:
    node = make_node(bank_sim_delay_s=0.1, ach_cutoff_interval_ms=0)
    alice = _user(node, "alice-cancel")
    eve = _user(node, "eve-cancel")
    _wallet(node, alice, "alice-c-w")
    bank = _link_and_verify(node, alice, GOOD)
    node.http.post("/v1/accounts", json={"id": "treasury-c", "currency": "USD"})
    fund = {"id": "fund-c", "debit_account_id": "treasury-c", "credit_account_id": "alice-c-w",
            "amount": 100_000, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=fund).status_code == 201

    push = {"id": "push-c1", "from": "alice-c-w", "to": bank, "amount": 20_000, "currency": "USD"}
    made = node.http.post("/v1/payments", json=push, headers=alice).json()
    assert made["status"] == "pending" and made["estimated_settlement_date"] is not None
    assert _balances(node, "alice-c-w")[1] == 80_000  # held
    problem(node.http.post("/v1/payments/push-c1/cancel", headers=eve), 404, "payment_not_found")

    r = node.http.post("/v1/payments/push-c1/cancel", headers=alice)
    assert r.status_code == 200, r.text
    canceled = r.json()
    assert canceled["status"] == "canceled" and canceled["estimated_settlement_date"] is None
    assert [h["status"] for h in canceled["history"]][-2:] == ["pending", "canceled"]
    assert _balances(node, "alice-c-w") == (100_000, 100_000, 0)  # the hold released
    hold = node.http.get("/v1/transfers/ach:push-c1").json()
    assert (hold["status"], hold["resolved_by"]) == ("voided", "ach-cancel:push-c1")
    again = node.http.post("/v1/payments/push-c1/cancel", headers=alice)
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    assert cutoff(node)["entries"] == 0  # the file never takes it
    assert _balances(node, "alice-c-w") == (100_000, 100_000, 0)

    # In a file already: too late. A wallet payment never waits: nothing to cancel.
    push2 = {**push, "id": "push-c2"}
    assert node.http.post("/v1/payments", json=push2, headers=alice).json()["status"] == "pending"
    assert cutoff(node)["entries"] == 1
    problem(node.http.post("/v1/payments/push-c2/cancel", headers=alice), 409,
            "payment_not_cancelable")  # fmt: skip
    sent = node.http.get("/v1/payments/push-c2", headers=alice).json()
    assert sent["status"] in ("submitted", "settled") and sent["estimated_settlement_date"]
    _wallet(node, alice, "alice-c-w2")
    wallet_pay = {"id": "wal-c1", "from": "alice-c-w", "to": "alice-c-w2", "amount": 5,
                  "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/payments", json=wallet_pay, headers=alice).status_code == 201
    problem(node.http.post("/v1/payments/wal-c1/cancel", headers=alice), 409,
            "payment_not_cancelable")  # fmt: skip
    kinds = [e["type"] for e in node.http.get("/v1/events", headers=alice,
             params={"type": "payment.canceled"}).json()["events"]]  # fmt: skip
    assert kinds == ["payment.canceled"]


def _return_file(node: RunningNode, file_id: str, code: str) -> str:
    """A return file answering the one entry of our outbound file ``file_id`` with ``code``."""
    (original,) = [
        e for b in parse_file(node.http.get(f"/v1/ach/files/{file_id}").text).batches
        for e in b.entries
    ]  # fmt: skip
    now = dt.datetime.now().replace(microsecond=0)
    head = FileHeader(immediate_destination="011000015", immediate_origin="011000015",
                      destination_name="PAYNODE", origin_name="RDFI", created=now)  # fmt: skip
    return build_return_file(head, "011000015", [(original.to_entry(), code)], now)


def test_a_refused_return_waits_in_the_dead_letters_until_replayed(make_node) -> None:
    """A pull settled and already spent, then returned (R10, after settlement): the wallet
    cannot give the money back. The return waits; once the wallet is funded, a replay
    applies it."""
    node = make_node(bank_sim_delay_s=0.1, ach_cutoff_interval_ms=0)
    carol = _user(node, "carol-dl")
    _wallet(node, carol, "carol-dl-w")
    bank = _link_and_verify(node, carol, GOOD)
    pull = {"id": "pull-dl", "from": bank, "to": "carol-dl-w", "amount": 10_000,
            "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/payments", json=pull, headers=carol).json()["status"] == "pending"
    cut = cutoff(node)
    wait_until(lambda: _status(node, "pull-dl") == "settled", what="the pull to settle")
    node.http.post("/v1/accounts", json={"id": "shop-dl", "currency": "USD"})
    spend = {"id": "spend-dl", "debit_account_id": "carol-dl-w", "credit_account_id": "shop-dl",
             "amount": 8_000, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=spend).status_code == 201

    returns = _return_file(node, cut["file_id"], "R10")
    r = node.http.post("/v1/ach/returns", content=returns)
    assert r.json() == {"returned": 0, "already": 0, "unknown": 0, "dead_lettered": 1}, r.text
    assert _status(node, "pull-dl") == "settled" and _balances(node, "carol-dl-w")[0] == 2_000
    (letter,) = node.http.get("/v1/ach/dead-letters").json()["dead_letters"]
    fields = ("kind", "payment_id", "return_code", "last_error", "attempts")
    assert tuple(letter[f] for f in fields) == ("return", "pull-dl", "R10", "insufficient_funds", 1)
    problem(node.http.get("/v1/ach/dead-letters", headers=carol), 403, "insufficient_scope")
    # The bank sends it again: still refused, the same letter counts the attempt.
    assert node.http.post("/v1/ach/returns", content=returns).json()["dead_lettered"] == 1
    replay = f"/v1/ach/dead-letters/{letter['id']}/replay"
    failed = node.http.post(replay).json()
    assert (failed["attempts"], failed["replayed_at"]) == (3, None)

    fund = {**spend, "id": "refund-dl", "debit_account_id": "shop-dl",
            "credit_account_id": "carol-dl-w"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=fund).status_code == 201
    done = node.http.post(replay)
    assert done.status_code == 200 and done.json()["replayed_at"] is not None, done.text
    returned = node.http.get("/v1/payments/pull-dl", headers=carol).json()
    assert (returned["status"], returned["return_code"]) == ("returned", "R10")
    assert _balances(node, "carol-dl-w") == (0, 0, 0)
    assert node.http.get("/v1/ach/dead-letters").json()["dead_letters"] == []
    replayed = node.http.get("/v1/ach/dead-letters", params={"state": "replayed"}).json()
    assert [x["id"] for x in replayed["dead_letters"]] == [letter["id"]]
    assert node.http.post(replay).json() == done.json()  # closed: nothing to do
    problem(node.http.post("/v1/ach/dead-letters/999999/replay"), 404, "dead_letter_not_found")


def test_bank_accounts_default_and_closed(make_node) -> None:
    node = make_node(bank_sim_delay_s=0.1, ach_cutoff_interval_ms=0)
    dana = _user(node, "dana-bank")
    erin = _user(node, "erin-bank")
    _wallet(node, dana, "dana-w")
    first = _link_and_verify(node, dana, GOOD)
    r = node.http.post("/v1/bank-accounts", headers=dana, json={
        "routing_number": "121000248", "account_number": "000555555555",
        "account_type": "savings", "holder_name": "Dana Example"})  # fmt: skip
    second = r.json()
    assert (second["bank_name"], second["default"]) == ("WELLS FARGO BANK", False)

    assert node.http.post(f"/v1/bank-accounts/{first}/default", headers=dana).json()["default"]
    made = node.http.post(f"/v1/bank-accounts/{second['id']}/default", headers=dana)
    assert made.status_code == 200 and made.json()["default"] is True
    listed = node.http.get("/v1/bank-accounts", headers=dana).json()["bank_accounts"]
    assert {b["id"]: b["default"] for b in listed} == {first: False, second["id"]: True}
    problem(node.http.post(f"/v1/bank-accounts/{first}/default", headers=erin), 403,
            "forbidden")  # fmt: skip
    problem(node.http.delete(f"/v1/bank-accounts/{first}", headers=erin), 403, "forbidden")

    closed = node.http.delete(f"/v1/bank-accounts/{second['id']}", headers=dana)
    assert closed.status_code == 200
    assert (closed.json()["status"], closed.json()["default"]) == ("closed", False)
    again = node.http.delete(f"/v1/bank-accounts/{second['id']}", headers=dana)
    assert again.status_code == 200 and again.json()["status"] == "closed"
    problem(node.http.post(f"/v1/bank-accounts/{second['id']}/default", headers=dana), 409,
            "bank_account_closed")  # fmt: skip
    # A closed account moves no money; the open one still does.
    node.http.delete(f"/v1/bank-accounts/{first}", headers=dana)
    pull = {"id": "pull-closed", "from": first, "to": "dana-w", "amount": 100, "currency": "USD"}
    problem(node.http.post("/v1/payments", json=pull, headers=dana), 409, "bank_account_closed")
