"""The risk gate over HTTP against a real node: limits, step-up with a one-time code,
sanctions holds and reviews, and the audit trail they leave."""

from __future__ import annotations

import concurrent.futures
import json
import re
import secrets
from pathlib import Path

import psycopg

from paynode.storage.audit_log import verify_database
from paynode.storage.database import libpq_url
from tests.support.asserts import kyc_verified, problem
from tests.support.node import RunningNode, wait_until

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
# Many sign-ups from one address: the auth rate limit is tested elsewhere, on nodes of
# their own.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000}


def _register(node: RunningNode, name: str, display: str | None = None) -> tuple[str, dict]:
    creds = {"email": f"{name}@example.com", "password": "a long enough passphrase"}
    with node.anonymous() as anon:
        r = anon.post("/v1/auth/register", json=creds | ({"name": display} if display else {}))
        assert r.status_code == 201, r.text
        token = anon.post("/v1/auth/login", json=creds).json()["access_token"]
    return r.json()["user_id"], {"Authorization": f"Bearer {token}"}


def _wallet(node: RunningNode, headers: dict, account_id: str, funds: int = 0) -> None:
    body = {"id": account_id, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
    assert node.http.post("/v1/accounts", json=body, headers=headers).status_code == 201
    if funds:
        node.http.post("/v1/accounts", json={"id": "treasury-risk", "currency": "USD"})
        fund = {"id": f"fund-{account_id}", "debit_account_id": "treasury-risk",
                "credit_account_id": account_id, "amount": funds, "currency": "USD"}  # fmt: skip
        assert node.http.post("/v1/transfers", json=fund).status_code == 201


def _balance(node: RunningNode, account_id: str) -> int:
    return node.http.get(f"/v1/accounts/{account_id}").json()["balance"]


def _pay(node: RunningNode, headers: dict, pid: str, src: str, dst: str, amount: int):
    body = {"id": pid, "from": src, "to": dst, "amount": amount, "currency": "USD"}
    return node.http.post("/v1/payments", json=body, headers=headers)


def _code_pushed(node: RunningNode, payment_id: str) -> str:
    """The code from the push the notifier sent (the sink stands for the user's phone)."""
    sink = Path(node.settings.data_dir) / "push-sink.jsonl"
    found: list[str] = []

    def pushed() -> bool:
        if not sink.exists():
            return False
        for line in sink.read_text().splitlines():
            body = json.loads(line)["request"]["body"]["aps"]["alert"]["body"]
            if f"payment {payment_id} " in body:
                found.append(re.search(r"Code (\d{6}) ", body).group(1))  # type: ignore[union-attr]
                return True
        return False

    wait_until(pushed, what=f"the code for {payment_id}")
    return found[0]


def _db(node: RunningNode) -> psycopg.Connection:
    return psycopg.connect(libpq_url(node.database_url), autocommit=True)


def test_limits_by_kyc_level(node: RunningNode) -> None:
    uid, user = _register(node, "lim-ann")
    _, payee = _register(node, "lim-bob")
    _wallet(node, user, "lim-ann-w", 10_000_000)
    _wallet(node, payee, "lim-bob-w")
    # Unverified: 2,500.00 a payment, 5,000.00 a day.
    problem(_pay(node, user, "lim-1", "lim-ann-w", "lim-bob-w", 250_001), 422,
            "limit_per_transaction")  # fmt: skip
    problem(node.http.get("/v1/payments/lim-1", headers=user), 404, "payment_not_found")
    # The first payment to bob steps up (unverified + new payee); the next one does not.
    dev = {"platform": "apns", "token": secrets.token_hex(32), "events": ["transfer.posted"]}
    assert node.http.post("/v1/devices", json=dev, headers=user).status_code == 201
    assert _pay(node, user, "lim-ok-0", "lim-ann-w", "lim-bob-w", 240_000).status_code == 202
    r = node.http.post("/v1/payments/lim-ok-0/confirm", json={"otp": _code_pushed(
        node, "lim-ok-0")}, headers=user)  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    r = _pay(node, user, "lim-ok-1", "lim-ann-w", "lim-bob-w", 240_000)
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    assert r.json()["risk"] == {
        "score": 40,
        "level": "LOW",
        "reasons": [{"rule": "kyc_not_verified", "points": 40, "detail": "identity not verified"}],
    }
    over = _pay(node, user, "lim-2", "lim-ann-w", "lim-bob-w", 20_001)
    problem(over, 422, "limit_daily")
    assert "remaining 20000" in over.json()["detail"]
    assert _balance(node, "lim-ann-w") == 10_000_000 - 480_000
    # Verified: 50,000.00 a payment, 100,000.00 a day, 500,000.00 a month.
    kyc_verified(node.http, uid, user)
    r = _pay(node, user, "lim-3", "lim-ann-w", "lim-bob-w", 400_000)
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    assert r.json()["risk"]["score"] == 0
    problem(_pay(node, user, "lim-4", "lim-ann-w", "lim-bob-w", 5_000_001), 422,
            "limit_per_transaction")  # fmt: skip
    # A month's total: 490,000.00 sent earlier this month (written into the usage the
    # gate keeps; days before today count toward the month only).
    with _db(node) as conn:
        conn.execute("UPDATE risk_usage SET month_amount = month_amount + 49000000"
                     " WHERE user_id = %s", (uid,))  # fmt: skip
    problem(_pay(node, user, "lim-5", "lim-ann-w", "lim-bob-w", 1_000_000), 422,
            "limit_monthly")  # fmt: skip
    r = _pay(node, user, "lim-6", "lim-ann-w", "lim-bob-w", 100_000)  # what is left fits
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text


def test_step_up_with_a_one_time_code(node: RunningNode) -> None:
    _, user = _register(node, "otp-ann")
    _, payee = _register(node, "otp-bob")
    _wallet(node, user, "otp-ann-w", 100_000)
    _wallet(node, payee, "otp-bob-w")
    # Unverified (+40) paying someone new (+10): HIGH. With no device, the code goes by
    # email (here the sink file, which stands for the mailbox; SMTP and SMS:
    # tests/system/test_channels.py). A payee of its own: bob stays new for otp-1.
    _, zoe = _register(node, "otp-zoe")
    _wallet(node, zoe, "otp-zoe-w")
    r = _pay(node, user, "otp-0", "otp-ann-w", "otp-zoe-w", 1_000)
    assert r.status_code == 202 and r.json()["status"] == "requires_action", r.text
    mailbox = Path(node.settings.data_dir) / "email-sink.jsonl"
    mail = wait_until(lambda: mailbox.exists() and [
        m for m in map(json.loads, mailbox.read_text().splitlines()) if "otp-0" in m["text"]
    ], what="the code by email")[0]  # fmt: skip
    assert mail["to"] == "otp-ann@example.com" and re.search(r"code is \d{6}\.", mail["text"])
    token = secrets.token_hex(32)
    dev = {"platform": "apns", "token": token, "events": ["transfer.posted"]}
    assert node.http.post("/v1/devices", json=dev, headers=user).status_code == 201

    r = _pay(node, user, "otp-1", "otp-ann-w", "otp-bob-w", 1_000)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "requires_action"
    assert body["risk"]["score"] == 50 and body["risk"]["level"] == "HIGH"
    assert {x["rule"] for x in body["risk"]["reasons"]} == {"kyc_not_verified", "new_payee"}
    assert body["next_action"]["type"] == "confirm_otp"
    assert body["next_action"]["attempts_left"] == 5
    assert _balance(node, "otp-ann-w") == 100_000  # nothing moved yet
    code = _code_pushed(node, "otp-1")
    wrong = "000000" if code != "000000" else "111111"
    confirm = "/v1/payments/otp-1/confirm"
    bad = node.http.post(confirm, json={"otp": wrong}, headers=user)
    problem(bad, 422, "otp_invalid")
    assert "4 attempts left" in bad.json()["detail"]
    problem(node.http.post(confirm, json={"otp": code}, headers=payee), 403, "forbidden")
    ok = node.http.post(confirm, json={"otp": code}, headers=user)
    assert ok.status_code == 200 and ok.json()["status"] == "completed", ok.text
    assert _balance(node, "otp-ann-w") == 99_000 and _balance(node, "otp-bob-w") == 1_000
    assert [h["status"] for h in ok.json()["history"]] == [
        "requires_action", "processing", "completed"]  # fmt: skip
    problem(node.http.post(confirm, json={"otp": code}, headers=user), 409, "otp_reused")
    # The same idempotency key again: the completed payment, nothing moves twice.
    again = _pay(node, user, "otp-1", "otp-ann-w", "otp-bob-w", 1_000)
    assert again.status_code == 200 and again.json()["status"] == "completed"
    assert _balance(node, "otp-ann-w") == 99_000

    # Expired: the code dies 300 s after it was issued (moved back in time here).
    _, carol = _register(node, "otp-carol")
    _wallet(node, carol, "otp-carol-w")
    assert _pay(node, user, "otp-2", "otp-ann-w", "otp-carol-w", 500).status_code == 202
    code2 = _code_pushed(node, "otp-2")
    with _db(node) as conn:
        conn.execute("UPDATE otp_challenges SET issued_at = issued_at - 301"
                     " WHERE payment_id = 'otp-2'")  # fmt: skip
    problem(node.http.post("/v1/payments/otp-2/confirm", json={"otp": code2}, headers=user),
            422, "otp_expired")  # fmt: skip
    assert node.http.get("/v1/payments/otp-2", headers=user).json()["failure_code"] == "otp_expired"

    # Locked: the fifth wrong code fails the payment; the right one is refused after.
    _, dave = _register(node, "otp-dave")
    _wallet(node, dave, "otp-dave-w")
    assert _pay(node, user, "otp-3", "otp-ann-w", "otp-dave-w", 500).status_code == 202
    code3 = _code_pushed(node, "otp-3")
    wrong3 = "000000" if code3 != "000000" else "111111"
    for left in (4, 3, 2, 1):
        r = node.http.post("/v1/payments/otp-3/confirm", json={"otp": wrong3}, headers=user)
        problem(r, 422, "otp_invalid")
        assert f"{left} attempts left" in r.json()["detail"]
    r = node.http.post("/v1/payments/otp-3/confirm", json={"otp": "12a456"}, headers=user)
    problem(r, 422, "otp_locked")  # malformed codes count too
    problem(node.http.post("/v1/payments/otp-3/confirm", json={"otp": code3}, headers=user),
            422, "otp_locked")  # fmt: skip
    assert node.http.get("/v1/payments/otp-3", headers=user).json()["status"] == "failed"
    assert _balance(node, "otp-ann-w") == 99_000

    with _db(node) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM audit_log WHERE subject IN ('otp-1', 'otp-3') ORDER BY seq"
            )
        ]
        # The secret is sealed; the code itself is stored nowhere.
        (sealed,) = conn.execute(
            "SELECT secret_ct FROM otp_challenges WHERE payment_id = 'otp-1'"
        ).fetchone()
        assert code.encode() not in bytes(sealed)
    assert actions[:4] == ["payment.create", "payment.confirm", "payment.confirm",
                           "payment.confirm"]  # fmt: skip
    assert verify_database(node.database_url).first_broken_seq is None


def test_sanctions_hold_payments_for_review(node: RunningNode) -> None:
    listed_id, listed = _register(node, "sdn-volkov", "Dmitriy Volkov")  # variant of VOLKOV
    near_id, near = _register(node, "sdn-petrov", "Dmitri Petrov")  # a near miss
    payer_id, payer = _register(node, "sdn-payer", "Jane Payer")
    kyc_verified(node.http, payer_id, payer)
    _wallet(node, payer, "sdn-payer-w", 100_000)
    _wallet(node, listed, "sdn-volkov-w")
    _wallet(node, near, "sdn-petrov-w")

    # Screened at KYC: the listed name opens a review and KYC cannot be verified past it.
    for uid, hdr in ((listed_id, listed), (near_id, near)):
        r = node.http.post(f"/v1/users/{uid}/kyc", json={"id_type": "ssn",
                           "id_number": "123456789"}, headers=hdr)  # fmt: skip
        assert r.status_code == 200, r.text
    reviews = node.http.get("/v1/reviews").json()["reviews"]
    mine = [x for x in reviews if x["subject_id"] in (listed_id, near_id)]
    assert [(x["kind"], x["subject_id"]) for x in mine] == [("user", listed_id)]
    assert mine[0]["matches"][0]["listed_name"] == "VOLKOV, Dmitri Ivanovich"
    assert "Dmitriy" not in json.dumps(mine)  # the screened name itself is not shown
    problem(node.http.post(f"/v1/users/{listed_id}/kyc/review", json={"decision": "verified"}),
            409, "sanctions_review_open")  # fmt: skip
    problem(node.http.get("/v1/reviews", headers=payer), 403, "insufficient_scope")

    # Paying the near miss goes through; paying the listed person is held.
    r = _pay(node, payer, "sdn-1", "sdn-payer-w", "sdn-petrov-w", 1_000)
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    held = _pay(node, payer, "sdn-2", "sdn-payer-w", "sdn-volkov-w", 2_000)
    assert held.status_code == 202 and held.json()["status"] == "in_review", held.text
    assert {x["rule"] for x in held.json()["risk"]["reasons"]} >= {"sanctions_hit"}
    review_id = held.json()["review_id"]
    assert _balance(node, "sdn-payer-w") == 99_000
    review = node.http.get(f"/v1/reviews/{review_id}").json()
    assert review["kind"] == "payment" and review["matches"][0]["party"] == "payee"
    problem(node.http.post(f"/v1/reviews/{review_id}", json={"decision": "maybe"}), 422,
            "invalid_field")  # fmt: skip
    r = node.http.post(f"/v1/reviews/{review_id}", json={"decision": "reject", "note": "true hit"})
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    got = node.http.get("/v1/payments/sdn-2", headers=payer).json()
    assert (got["status"], got["failure_code"]) == ("failed", "rejected_in_review")
    problem(node.http.post(f"/v1/reviews/{review_id}", json={"decision": "approve"}), 409,
            "review_already_decided")  # fmt: skip
    # Another one, approved: the money moves.
    held = _pay(node, payer, "sdn-3", "sdn-payer-w", "sdn-volkov-w", 3_000).json()
    r = node.http.post(f"/v1/reviews/{held['review_id']}", json={"decision": "approve"})
    assert r.status_code == 200
    assert node.http.get("/v1/payments/sdn-3", headers=payer).json()["status"] == "completed"
    assert _balance(node, "sdn-volkov-w") == 3_000
    # Clearing the user's own review (a false positive) lets KYC be verified.
    (user_review,) = [x for x in mine if x["kind"] == "user"]
    assert node.http.post(f"/v1/reviews/{user_review['id']}",
                          json={"decision": "approve"}).status_code == 200  # fmt: skip
    r = node.http.post(f"/v1/users/{listed_id}/kyc/review", json={"decision": "verified"})
    assert r.status_code == 200, r.text
    with _db(node) as conn:
        actions = {r[0] for r in conn.execute("SELECT action FROM audit_log")}
    assert {"payment.create", "review.approve", "review.reject"} <= actions


def test_concurrent_payments_cannot_overrun_a_daily_limit(node: RunningNode) -> None:
    uid, user = _register(node, "race-ann")
    _, payee = _register(node, "race-bob")
    kyc_verified(node.http, uid, user)
    dev = {"platform": "apns", "token": secrets.token_hex(32), "events": ["transfer.posted"]}
    assert node.http.post("/v1/devices", json=dev, headers=user).status_code == 201
    _wallet(node, user, "race-ann-w", 50_000_000)
    _wallet(node, payee, "race-bob-w")
    # Verified: 100,000.00 a day. Eight 20,000.00 payments at once: whatever each one's
    # score (some step up), only five fit, and the rest are refused whole.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda i: _pay(node, user, f"race-{i}", "race-ann-w", "race-bob-w", 2_000_000),
            range(8)))  # fmt: skip
    codes = sorted(r.status_code for r in replies)
    assert len([c for c in codes if c in (201, 202)]) == 5, [r.text for r in replies]
    for r in replies:
        if r.status_code == 422:
            problem(r, 422, "limit_daily")
    with _db(node) as conn:
        (n, total) = conn.execute(
            "SELECT count(*), sum(amount) FROM payments WHERE owner_user_id = %s", (uid,)
        ).fetchone()
        (day_amount,) = conn.execute(
            "SELECT day_amount FROM risk_usage WHERE user_id = %s", (uid,)
        ).fetchone()
    assert (n, total, day_amount) == (5, 10_000_000, 10_000_000)
    # A payment that fails gives its share back: one waiting for a code, refused.
    waiting = next(r.json()["id"] for r in replies if r.status_code == 202)
    with _db(node) as conn:
        conn.execute("UPDATE otp_challenges SET issued_at = issued_at - 301"
                     " WHERE payment_id = %s", (waiting,))  # fmt: skip
    problem(node.http.post(f"/v1/payments/{waiting}/confirm", json={"otp": "000000"},
                           headers=user), 422, "otp_expired")  # fmt: skip
    with _db(node) as conn:
        (day_amount,) = conn.execute(
            "SELECT day_amount FROM risk_usage WHERE user_id = %s", (uid,)
        ).fetchone()
    assert day_amount == 8_000_000


def test_transfers_by_users_count_toward_their_limits(node: RunningNode) -> None:
    uid, user = _register(node, "tx-ann")
    _, other = _register(node, "tx-bob")
    _wallet(node, user, "tx-ann-w", 2_000_000)
    _wallet(node, other, "tx-bob-w", 1_000)

    def xfer(tid: str, amount: int, src: str = "tx-ann-w", dst: str = "tx-bob-w") -> dict:
        return {"id": tid, "debit_account_id": src, "credit_account_id": dst,
                "amount": amount, "currency": "USD"}  # fmt: skip

    def used() -> tuple[int, int]:
        with _db(node) as conn:
            row = conn.execute("SELECT day_count, day_amount FROM risk_usage WHERE user_id = %s",
                               (uid,)).fetchone()  # fmt: skip
        return (row[0], row[1]) if row else (0, 0)

    problem(node.http.post("/v1/transfers", json=xfer("tx-1", 250_001), headers=user), 422,
            "limit_per_transaction")  # fmt: skip
    assert node.http.get("/v1/transfers/tx-1").status_code == 404
    batch = {"transfers": [xfer(f"tx-b{i}", 200_000) for i in range(3)]}  # 6,000.00 > 5,000.00
    problem(node.http.post("/v1/transfers/batch", json=batch, headers=user), 422, "limit_daily")
    assert used() == (0, 0)
    assert (
        node.http.post("/v1/transfers", json=xfer("tx-2", 200_000), headers=user).status_code == 201
    )
    assert used() == (1, 200_000)
    # A replay, a refusal by the ledger and a 403 move nothing and count nothing.
    assert (
        node.http.post("/v1/transfers", json=xfer("tx-2", 200_000), headers=user).status_code == 200
    )
    problem(node.http.post("/v1/transfers", json=xfer("tx-3", 240_000, "tx-bob-w", "tx-ann-w"),
                           headers=user), 403, "forbidden")  # fmt: skip
    assert used() == (1, 200_000)
    with _db(node) as conn:
        conn.execute("UPDATE risk_usage SET day_amount = 0 WHERE user_id = %s", (uid,))
    poor = {"transfers": [xfer("tx-4", 240_000), xfer("tx-5", 240_000)]}  # the second: no funds
    # The operator's transfer (not limited) leaves her 3,000.00: enough for one of the two.
    drain = xfer("tx-drain", 1_500_000)
    assert node.http.post("/v1/transfers", json=drain).status_code == 201
    results = node.http.post("/v1/transfers/batch", json=poor, headers=user).json()["results"]
    assert [r.get("code") for r in results] == [None, "insufficient_funds"], results
    assert used() == (2, 240_000)


def test_a_listed_bank_account_holder_holds_an_ach_payment(node: RunningNode) -> None:
    uid, user = _register(node, "sdn-ach")
    kyc_verified(node.http, uid, user)
    _wallet(node, user, "sdn-ach-w", 10_000)
    r = node.http.post(
        "/v1/bank-accounts",
        headers=user,
        json={
            "routing_number": "021000021",
            "account_number": "000987654321",
            "account_type": "checking",
            "holder_type": "company",
            "holder_name": "Northwind Shipping",
        },
    )  # fmt: skip  (a former name of a listed entity)
    assert r.status_code == 201, r.text
    bank_id = r.json()["id"]
    with _db(node) as conn:
        (hit,) = conn.execute("SELECT sanctions_hit FROM bank_accounts WHERE id = %s",
                              (bank_id,)).fetchone()  # fmt: skip
        # Verification by micro-deposits is test_ach's subject; here it is taken as done.
        conn.execute("UPDATE bank_accounts SET status = 'verified' WHERE id = %s", (bank_id,))
    assert hit is True
    push = {"id": "sdn-ach-1", "from": "sdn-ach-w", "to": bank_id, "amount": 1_000,
            "currency": "USD"}  # fmt: skip
    held = node.http.post("/v1/payments", json=push, headers=user)
    assert held.status_code == 202 and held.json()["status"] == "in_review", held.text
    review = node.http.get(f"/v1/reviews/{held.json()['review_id']}").json()
    assert review["matches"][0]["party"] == "bank_account"
    assert review["matches"][0]["matched_name"] == "NORTHWIND SHIPPING"
    assert _balance(node, "sdn-ach-w") == 10_000  # no hold placed while held


def test_limits_size_other_currencies_at_the_fx_rate(node: RunningNode) -> None:
    """Limits are in USD; a EUR payment counts at the EUR/USD mid rate (rounded up)."""
    rate = {"rates": [{"base": "EUR", "quote": "USD", "rate": "1.0845"}]}
    assert node.http.put("/v1/fx/rates", json=rate).status_code == 200
    uid, user = _register(node, "fx-lim-ann")
    _, payee = _register(node, "fx-lim-bob")
    kyc_verified(node.http, uid, user)  # 50,000.00 USD a payment
    for who, account in ((user, "eurlim-ann-w"), (payee, "eurlim-bob-w")):
        body = {"id": account, "currency": "EUR"}
        assert node.http.post("/v1/accounts", json=body, headers=who).status_code == 201
    node.http.post("/v1/accounts", json={"id": "treasury-risk-eur", "currency": "EUR"})
    fund = {
        "id": "fund-eurlim",
        "debit_account_id": "treasury-risk-eur",
        "credit_account_id": "eurlim-ann-w",
        "amount": 10_000_000,
        "currency": "EUR",
    }
    assert node.http.post("/v1/transfers", json=fund).status_code == 201

    def pay(pid: str, amount: int):
        body = {"id": pid, "from": "eurlim-ann-w", "to": "eurlim-bob-w", "amount": amount,
                "currency": "EUR"}  # fmt: skip
        return node.http.post("/v1/payments", json=body, headers=user)

    # 47,000.00 EUR is 50,971.50 USD: over the per-payment limit.
    problem(pay("fx-lim-1", 4_700_000), 422, "limit_per_transaction")
    # 4,000.00 EUR is 4,338.00 USD: within every limit, sized (the amount rules see USD;
    # no currency_unrated points).
    r = pay("fx-lim-2", 400_000)
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    assert {x["rule"] for x in r.json()["risk"]["reasons"]} == {"new_payee"}
    with _db(node) as conn:
        row = conn.execute("SELECT day_amount FROM risk_usage WHERE user_id = %s", (uid,))
        assert row.fetchone() == (433_800,)
        # The day nearly spent: 95,000.00 USD in all.
        conn.execute("UPDATE risk_usage SET day_amount = 9500000 WHERE user_id = %s", (uid,))
    # 4,700.00 EUR (5,097.15 USD) would pass the day's 100,000.00 USD.
    over = pay("fx-lim-3", 470_000)
    problem(over, 422, "limit_daily")
    assert "remaining 500000 USD" in over.json()["detail"]
