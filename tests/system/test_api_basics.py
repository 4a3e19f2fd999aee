"""The HTTP contract end to end: real HTTP, real Ray shards, real PostgreSQL."""

from __future__ import annotations

from paynode.storage.audit import journal_balances

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
# The smallest recent-id window: every replay, post and void here names ids the shards
# soon forget, so the journal lookups answer most of this module.
SHARED_NODE_SETTINGS: dict = {"id_window": 2}

USD = "USD"


def account(node, id_, currency=USD, flags=(), **kw):
    r = node.http.post(
        "/v1/accounts", json={"id": id_, "currency": currency, "flags": list(flags), **kw}
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


def transfer(node, **body):
    body.setdefault("currency", USD)
    return node.http.post("/v1/transfers", json=body)


def test_account_create_replay_and_conflict(node) -> None:
    r = node.http.post("/v1/accounts", json={"id": "a1", "currency": "USD", "metadata": {"k": "v"}})
    assert r.status_code == 201
    body = r.json()
    assert body["balance"] == 0 and body["available"] == 0 and body["metadata"] == {"k": "v"}
    again = node.http.post(
        "/v1/accounts", json={"id": "a1", "currency": "USD", "metadata": {"k": "v"}}
    )
    assert again.status_code == 200
    assert again.json()["timestamp"] == body["timestamp"]
    other = node.http.post("/v1/accounts", json={"id": "a1", "currency": "EUR"})
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "exists_with_different_fields"
    missing = node.http.get("/v1/accounts/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "account_not_found"


def test_posted_transfer_moves_money_and_replays(node) -> None:
    account(node, "src")
    account(node, "dst", flags=["debits_must_not_exceed_credits"])
    r = transfer(node, id="t1", debit_account_id="src", credit_account_id="dst", amount=1234)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["status"] == "posted" and t["amount"] == 1234 and isinstance(t["timestamp"], int)
    replay = transfer(node, id="t1", debit_account_id="src", credit_account_id="dst", amount=1234)
    assert replay.status_code == 200 and replay.json() == t
    changed = transfer(node, id="t1", debit_account_id="src", credit_account_id="dst", amount=99)
    assert changed.status_code == 409 and changed.json()["code"] == "exists_with_different_fields"
    assert node.http.get("/v1/accounts/dst").json()["balance"] == 1234
    assert node.http.get("/v1/accounts/src").json()["balance"] == -1234
    assert node.http.get("/v1/transfers/t1").json() == t
    overdraft = transfer(
        node, id="t2", debit_account_id="dst", credit_account_id="src", amount=1235
    )
    assert overdraft.status_code == 422 and overdraft.json()["code"] == "insufficient_funds"
    assert node.http.get("/v1/transfers/t2").status_code == 404


def test_replays_beyond_the_window_answer_as_before(node) -> None:
    """An id the shard forgot is looked up in the journal: the same answers as a replay
    of an id it remembers, and no second debit."""
    import ray

    from paynode.domain.ledger.wire import decode_stats

    assert node.settings.ledger.id_window == 2
    account(node, "old-src")
    account(node, "old-dst")
    first = transfer(node, id="old-t", debit_account_id="old-src", credit_account_id="old-dst",
                     amount=700)  # fmt: skip
    assert first.status_code == 201, first.text
    recent = transfer(node, id="old-t", debit_account_id="old-src", credit_account_id="old-dst",
                      amount=700)  # fmt: skip
    pend = transfer(node, id="old-p", debit_account_id="old-src", credit_account_id="old-dst",
                    amount=50, flags=["pending"], timeout_s=3600)  # fmt: skip
    posted = transfer(node, id="old-x", pending_id="old-p", flags=["post_pending"])
    assert pend.status_code == 201 and posted.status_code == 201, posted.text
    open_one = transfer(node, id="old-q", debit_account_id="old-src", credit_account_id="old-dst",
                        amount=9, flags=["pending"], timeout_s=3600)  # fmt: skip
    assert open_one.status_code == 201
    for k in range(24):  # push them out of every shard's window
        r = transfer(node, id=f"old-fill{k}", debit_account_id="old-src",
                     credit_account_id="old-dst", amount=1)  # fmt: skip
        assert r.status_code == 201, r.text

    def stats() -> list:
        return [decode_stats(raw) for raw in ray.get([s.stats.remote() for s in node.shards])]

    before = stats()
    assert max(s.window_transfers for s in before) < 24, before
    assert min(s.window_agings for s in before) > 0, before
    late = transfer(node, id="old-t", debit_account_id="old-src", credit_account_id="old-dst",
                    amount=700)  # fmt: skip
    assert (late.status_code, late.json()) == (200, first.json()) == (
        recent.status_code, recent.json())  # fmt: skip
    changed = transfer(node, id="old-t", debit_account_id="old-src",
                       credit_account_id="old-dst", amount=701)  # fmt: skip
    assert changed.status_code == 409 and changed.json()["code"] == "exists_with_different_fields"
    elsewhere = transfer(node, id="old-t", debit_account_id="old-dst",
                         credit_account_id="old-src", amount=700)  # fmt: skip
    assert elsewhere.json()["code"] == "exists_with_different_fields"
    # Those answers came from the journal: one lookup per call, each naming "old-t".
    after = stats()
    assert sum(s.lookups for s in after) >= sum(s.lookups for s in before) + 3, after
    assert sum(s.ids_looked_up for s in after) >= sum(s.ids_looked_up for s in before) + 3
    assert transfer(node, id="old-x", pending_id="old-p", flags=["post_pending"]).json() == (
        posted.json()
    )
    again = transfer(node, id="old-y", pending_id="old-p", flags=["void_pending"])
    assert again.json()["code"] == "pending_already_posted"
    not_pending = transfer(node, id="old-z", pending_id="old-fill0", flags=["void_pending"])
    assert not_pending.json()["code"] == "pending_transfer_not_pending"
    # An open pending is never forgotten: it is posted from memory.
    assert transfer(node, id="old-w", pending_id="old-q", flags=["post_pending"]).status_code == 201
    src = node.http.get("/v1/accounts/old-src").json()
    assert (src["debits_posted"], src["debits_pending"]) == (700 + 50 + 9 + 24, 0)


def test_pending_post_void_and_codes(node) -> None:
    account(node, "payer")
    account(node, "payee")
    ok = transfer(
        node, id="p1", debit_account_id="payer", credit_account_id="payee", amount=500,
        flags=["pending"], timeout_s=3600,
    )  # fmt: skip
    assert ok.status_code == 201 and ok.json()["status"] == "pending"
    payer = node.http.get("/v1/accounts/payer").json()
    assert payer["debits_pending"] == 500 and payer["available"] == -500 and payer["balance"] == 0
    too_much = transfer(node, id="x1", pending_id="p1", flags=["post_pending"], amount=501)
    assert too_much.json()["code"] == "exceeds_pending_amount"
    post = transfer(node, id="x2", pending_id="p1", flags=["post_pending"], amount=300)
    assert post.status_code == 201, post.text
    assert post.json()["amount"] == 300 and post.json()["debit_account_id"] == "payer"
    again = transfer(node, id="x3", pending_id="p1", flags=["void_pending"])
    assert again.json()["code"] == "pending_already_posted"
    payee = node.http.get("/v1/accounts/payee").json()
    assert (payee["credits_posted"], payee["credits_pending"]) == (300, 0)
    # void a second pending
    transfer(node, id="p2", debit_account_id="payer", credit_account_id="payee", amount=70,
             flags=["pending"])  # fmt: skip
    void = transfer(node, id="v2", pending_id="p2", flags=["void_pending"])
    assert void.status_code == 201 and void.json()["status"] == "voided"
    assert transfer(node, id="v3", pending_id="p2", flags=["post_pending"]).json()["code"] == (
        "pending_already_voided"
    )
    assert transfer(node, id="v4", pending_id="nope", flags=["void_pending"]).json()["code"] == (
        "pending_not_found"
    )
    # x2 exists but is a post, not a pending (found in the journal, whichever shard holds it)
    assert transfer(node, id="v5", pending_id="x2", flags=["void_pending"]).json()["code"] == (
        "pending_transfer_not_pending"
    )
    payer = node.http.get("/v1/accounts/payer").json()
    assert (payer["debits_posted"], payer["debits_pending"]) == (300, 0)

    # Read back, a pending shows where it is now and what resolved it.
    def now(tid: str) -> tuple:
        got = node.http.get(f"/v1/transfers/{tid}").json()
        return got["status"], got["resolved_by"], got["amount"], got["flags"]

    assert now("p1") == ("posted", "x2", 500, ["pending"])
    assert now("p2") == ("voided", "v2", 70, ["pending"])
    assert now("x2") == ("posted", None, 300, ["post_pending"])
    transfer(node, id="p3", debit_account_id="payer", credit_account_id="payee", amount=5,
             flags=["pending"])  # fmt: skip
    assert now("p3") == ("pending", None, 5, ["pending"])


def test_pending_expires_and_releases(node) -> None:
    from tests.support.node import wait_until

    account(node, "e1")
    account(node, "e2")
    r = transfer(node, id="pe", debit_account_id="e1", credit_account_id="e2", amount=10,
                 flags=["pending"], timeout_s=1)  # fmt: skip
    assert r.status_code == 201
    wait_until(
        lambda: node.http.get("/v1/accounts/e1").json()["debits_pending"] == 0,
        timeout=10,
        what="the pending to expire",
    )
    late = transfer(node, id="pe-post", pending_id="pe", flags=["post_pending"])
    assert late.json()["code"] == "pending_expired"
    assert node.http.get("/v1/accounts/e2").json()["credits_pending"] == 0
    # The expired pending reads expired, by the row that released it, in a listing too.
    listing = node.http.get("/v1/accounts/e1/transfers").json()["data"]
    expiry = listing[0]["id"]
    assert [(t["id"], t["status"], t["resolved_by"]) for t in listing] == [
        (expiry, "expired", None), ("pe", "expired", expiry)]  # fmt: skip
    one = node.http.get("/v1/transfers/pe").json()
    assert (one["status"], one["resolved_by"], one["amount"]) == ("expired", expiry, 10)


def test_batch_linked_chain_all_or_nothing(node) -> None:
    for a in ("b1", "b2", "b3"):
        account(node, a, flags=["debits_must_not_exceed_credits"])
    account(node, "bank")
    seed = node.http.post("/v1/transfers/batch", json={"transfers": [
        {"id": "s1", "debit_account_id": "bank", "credit_account_id": "b1", "amount": 100,
         "currency": "USD"},
    ]})  # fmt: skip
    assert seed.json()["results"] == [{"id": "s1", "status": "posted"}]
    chain = [
        {"id": "c1", "debit_account_id": "b1", "credit_account_id": "b2", "amount": 100,
         "currency": "USD", "flags": ["linked"]},
        {"id": "c2", "debit_account_id": "b2", "credit_account_id": "b3", "amount": 100,
         "currency": "USD", "flags": ["linked"]},
        {"id": "c3", "debit_account_id": "b3", "credit_account_id": "b1", "amount": 101,
         "currency": "USD"},
        {"id": "solo", "debit_account_id": "bank", "credit_account_id": "b3", "amount": 5,
         "currency": "USD"},
    ]  # fmt: skip
    r = node.http.post("/v1/transfers/batch", json={"transfers": chain})
    assert r.status_code == 200
    assert r.json()["results"] == [
        {"id": "c1", "code": "linked_event_failed"},
        {"id": "c2", "code": "linked_event_failed"},
        {"id": "c3", "code": "insufficient_funds"},
        {"id": "solo", "status": "posted"},
    ]
    chain[2]["amount"] = 100
    chain[3]["id"] = "solo2"
    r = node.http.post("/v1/transfers/batch", json={"transfers": chain})
    assert [x.get("status") for x in r.json()["results"]] == ["posted"] * 4
    balances = {a: node.http.get(f"/v1/accounts/{a}").json()["balance"] for a in ("b1", "b2", "b3")}
    assert balances == {"b1": 100, "b2": 0, "b3": 10}
    open_chain = node.http.post("/v1/transfers/batch", json={"transfers": [
        {"id": "o1", "debit_account_id": "bank", "credit_account_id": "b1", "amount": 1,
         "currency": "USD", "flags": ["linked"]},
    ]})  # fmt: skip
    assert open_chain.json()["results"] == [{"id": "o1", "code": "linked_event_chain_open"}]


def test_credit_limit_across_shards_two_phase(make_node) -> None:
    node = make_node(shards=3)
    account(node, "liab", flags=["credits_must_not_exceed_debits"])
    for i in range(6):
        account(node, f"w{i}")
    # liab has no debits yet: no credit may land on it, from any shard
    for i in range(6):
        r = transfer(
            node, id=f"in{i}", debit_account_id=f"w{i}", credit_account_id="liab", amount=1
        )
        assert r.json()["code"] == "credits_exceed_debits", r.text
    assert transfer(node, id="out", debit_account_id="liab", credit_account_id="w0",
                    amount=3).status_code == 201  # fmt: skip
    results = [
        transfer(node, id=f"in2-{i}", debit_account_id=f"w{i}", credit_account_id="liab", amount=1)
        for i in range(6)
    ]
    assert sorted(r.status_code for r in results) == [201, 201, 201, 422, 422, 422]
    liab = node.http.get("/v1/accounts/liab").json()
    assert (liab["debits_posted"], liab["credits_posted"]) == (3, 3)
    mem = node.balances()
    assert mem == journal_balances(node.database_url)


def test_account_transfers_pagination(node) -> None:
    account(node, "pa")
    account(node, "pb")
    for i in range(7):
        assert transfer(node, id=f"pg{i}", debit_account_id="pa", credit_account_id="pb",
                        amount=i + 1).status_code == 201  # fmt: skip
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = node.http.get("/v1/accounts/pb/transfers", params=params).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"pg{i}" for i in reversed(range(7))]
    bad = node.http.get("/v1/accounts/pb/transfers", params={"cursor": "!!"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


def test_operations_endpoints(node) -> None:
    assert node.http.get("/health").json() == {"status": "ok"}
    ready = node.http.get("/ready")
    assert ready.status_code == 200 and ready.json()["shards"] == [True, True]
    from prometheus_client.parser import text_string_to_metric_families

    def ok_outcomes() -> float:
        page = text_string_to_metric_families(node.http.get("/metrics").text)
        samples = [s for f in page for s in f.samples]
        return sum(
            s.value for s in samples
            if s.name == "paynode_transfer_outcomes_total" and s.labels == {"code": "ok"}
        )  # fmt: skip

    before = ok_outcomes()
    account(node, "m1")
    account(node, "m2")
    transfer(node, id="mt", debit_account_id="m1", credit_account_id="m2", amount=1)
    assert ok_outcomes() == before + 1
    text = node.http.get("/metrics").text
    # The page parses as Prometheus text, each family once, shard figures per shard.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["paynode_shard_commits"].type == "counter"
    assert {s.labels["shard"] for s in families["paynode_shard_commits"].samples} == {"0", "1"}
    assert families["paynode_shard_commit_seconds"].type == "histogram"
    assert "paynode_shard_commit_seconds_bucket" in text
    assert "paynode_shard_call_batch_size_count" in text
    for name, kind in (("paynode_shard_window_transfers", "gauge"),
                       ("paynode_shard_lookups", "counter"),
                       ("paynode_checkpoint_below_txid", "gauge"),
                       ("paynode_checkpoints", "counter")):  # fmt: skip
        assert families[name].type == kind, name
    spec = node.http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("TransferIn", "TransferOut", "AccountIn", "AccountOut", "Problem"):
        assert name in schemas
    post = spec["paths"]["/v1/transfers"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "TransferIn"
    )
    assert "application/problem+json" in post["responses"]["422"]["content"]
    amount = schemas["TransferIn"]["properties"]["amount"]
    assert "integer" in str(amount) and "9223372036854775807" in str(amount)


def test_overload_is_refused_whole_and_changes_nothing(make_node) -> None:
    node = make_node(shards=2, batch_max_items=10, queue_limit=20)
    account(node, "ov1")
    account(node, "ov2")
    batch = [
        {"id": f"ov-{i}", "debit_account_id": "ov1" if i % 2 else "ov2",
         "credit_account_id": "ov2" if i % 2 else "ov1", "amount": 1, "currency": "USD"}
        for i in range(60)
    ]  # fmt: skip
    r = node.http.post("/v1/transfers/batch", json={"transfers": batch})
    assert r.status_code == 200
    assert {x.get("code") for x in r.json()["results"]} == {"overloaded"}
    assert node.http.get("/v1/accounts/ov1").json()["debits_posted"] == 0
    assert node.http.get("/v1/transfers/ov-0").status_code == 404
    ok = transfer(node, id="ov-single", debit_account_id="ov1", credit_account_id="ov2", amount=1)
    assert ok.status_code == 201


def test_accounts_beyond_the_memory_budget_are_refused_whole(make_node) -> None:
    """A shard holds at most max_accounts accounts: the next is refused with 507
    account_limit_reached and exists nowhere; the others go on moving money."""
    import psycopg

    from paynode.storage.database import libpq_url

    node = make_node(shards=2, max_accounts=4)  # the operator accounts count too
    made: list[str] = []
    refused = None
    for k in range(12):
        r = node.http.post("/v1/accounts", json={"id": f"budget-{k}", "currency": USD})
        if r.status_code == 507:
            refused = r
            break
        assert r.status_code == 201, r.text
        made.append(f"budget-{k}")
    assert refused is not None, "no account was refused"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "account_limit_reached"
    assert node.http.get(f"/v1/accounts/budget-{len(made)}").status_code == 404
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        found = conn.execute("SELECT count(*) FROM accounts WHERE id = %s",
                             (f"budget-{len(made)}",)).fetchone()  # fmt: skip
    assert found == (0,)
    assert len(made) >= 2
    again = node.http.post("/v1/accounts", json={"id": made[0], "currency": USD})
    assert again.status_code == 200  # a replay of an existing one is no new account
    moved = transfer(node, id="budget-t", debit_account_id=made[0], credit_account_id=made[1],
                     amount=5)  # fmt: skip
    assert moved.status_code == 201, moved.text
