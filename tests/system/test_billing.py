"""Subscriptions and invoices end to end: prices, trials on test clocks, renewals paid from
a wallet, dunning, cancellation, plan changes with proration, replays after a crash."""

from __future__ import annotations

import itertools

import psycopg

from paynode.storage.database import libpq_url
from tests.support.accounts import verified_user, wallet
from tests.support.asserts import problem
from tests.support.node import RunningNode, wait_until

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000, "billing_interval_ms": 100}
_n = itertools.count()


def _user(node: RunningNode, name: str) -> dict[str, str]:
    return verified_user(node, name)


def _wallet(node: RunningNode, user: dict, account_id: str, funded: int = 0) -> None:
    wallet(node, user, account_id, funded, "treasury-billing")


def _balance(node: RunningNode, account_id: str) -> int:
    return node.http.get(f"/v1/accounts/{account_id}").json()["balance"]


def _merchant(node: RunningNode, tag: str, amounts: dict[str, int]) -> tuple[dict, str]:
    """A merchant with a product, its wallet and a monthly price per entry of ``amounts``."""
    m = _user(node, f"merchant-{tag}")
    _wallet(node, m, f"{tag}-mw")
    r = node.http.post("/v1/products", json={"id": f"{tag}-prod", "name": "Pro"}, headers=m)
    assert r.status_code == 201, r.text
    for price_id, amount in amounts.items():
        body = {"id": price_id, "product": f"{tag}-prod", "amount": amount, "currency": "USD",
                "interval": "month", "payout_account_id": f"{tag}-mw"}  # fmt: skip
        r = node.http.post("/v1/prices", json=body, headers=m)
        assert r.status_code == 201, r.text
    return m, f"{tag}-mw"


def _clock(node: RunningNode, user: dict, clock_id: str, at: str) -> None:
    r = node.http.post("/v1/test-clocks", json={"id": clock_id, "frozen_time": at}, headers=user)
    assert r.status_code == 201, r.text


def _advance(node: RunningNode, user: dict, clock_id: str, to: str) -> None:
    r = node.http.post(f"/v1/test-clocks/{clock_id}/advance", json={"to": to}, headers=user)
    assert r.status_code == 200, r.text
    wait_until(lambda: node.http.get(f"/v1/test-clocks/{clock_id}", headers=user).json()[
        "status"] == "ready", what=f"clock {clock_id} ready")  # fmt: skip


def _subscribe(node: RunningNode, user: dict, **body) -> dict:
    r = node.http.post("/v1/subscriptions", json=body, headers=user)
    assert r.status_code == 201, r.text
    return r.json()


def _sub(node: RunningNode, user: dict, sub_id: str) -> dict:
    return node.http.get(f"/v1/subscriptions/{sub_id}", headers=user).json()


def _invoices(node: RunningNode, user: dict, sub_id: str) -> list[dict]:
    r = node.http.get("/v1/invoices", params={"subscription": sub_id}, headers=user)
    return r.json()["invoices"]


def test_trial_on_a_test_clock_then_paid_renewals_from_the_wallet(node: RunningNode) -> None:
    m, mw = _merchant(node, "bt1", {"bt1-basic": 1_000})
    c = _user(node, "cust-bt1")
    _wallet(node, c, "bt1-cw", funded=5_000)
    _clock(node, c, "bt1-clock", "2026-01-01T00:00:00Z")
    sub = _subscribe(node, c, price="bt1-basic", customer_account="bt1-cw", trial_days=7,
                     test_clock="bt1-clock")  # fmt: skip
    assert sub["status"] == "trialing" and sub["trial_end"].startswith("2026-01-08")
    assert _invoices(node, c, sub["id"]) == [] and _balance(node, "bt1-cw") == 5_000
    _advance(node, c, "bt1-clock", "2026-01-09T00:00:00Z")  # past the trial
    (first,) = _invoices(node, c, sub["id"])
    assert first["status"] == "paid" and first["amount_due"] == 1_000, first
    assert first["paid_by"] == f"bill:in_{sub['id']}_0:0"
    assert _sub(node, c, sub["id"])["status"] == "active"
    assert (_balance(node, "bt1-cw"), _balance(node, mw)) == (4_000, 1_000)
    _advance(node, c, "bt1-clock", "2026-02-09T00:00:00Z")  # the next period renews
    found = _invoices(node, c, sub["id"])
    assert [(i["id"], i["status"]) for i in found] == [
        (f"in_{sub['id']}_0", "paid"), (f"in_{sub['id']}_1", "paid")]  # fmt: skip
    assert (_balance(node, "bt1-cw"), _balance(node, mw)) == (3_000, 2_000)
    # The merchant sees it too; another user sees nothing of it.
    assert _sub(node, m, sub["id"])["status"] == "active"
    stranger = _user(node, "stranger-bt1")
    problem(node.http.get(f"/v1/subscriptions/{sub['id']}", headers=stranger), 404,
            "subscription_not_found")  # fmt: skip
    problem(node.http.get(f"/v1/invoices/{first['id']}", headers=stranger), 404,
            "invoice_not_found")  # fmt: skip
    problem(node.http.post(f"/v1/subscriptions/{sub['id']}/cancel", headers=stranger), 404,
            "subscription_not_found")  # fmt: skip
    assert node.http.get("/v1/subscriptions", headers=stranger).json()["subscriptions"] == []
    # The hosted page: no login, the token is the credential.
    link = node.http.post(f"/v1/invoices/{first['id']}/hosted-link", headers=c).json()["url"]
    with node.anonymous() as anon:
        page = anon.get(link[link.index("/i/") :])
        assert page.status_code == 200 and first["number"] in page.text
        assert anon.get("/i/" + "x" * 43).status_code == 404
        pdf = anon.get(link[link.index("/i/") :] + "/pdf")  # the page's PDF, no login
        assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
        assert anon.get("/i/" + "x" * 43 + "/pdf").status_code == 404
    # The PDF for the customer; not for a stranger.
    pdf = node.http.get(f"/v1/invoices/{first['id']}/pdf", headers=c)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-") and len(pdf.content) > 500
    assert first["number"] in pdf.headers["content-disposition"]
    problem(node.http.get(f"/v1/invoices/{first['id']}/pdf", headers=stranger), 404,
            "invoice_not_found")  # fmt: skip


def test_an_empty_wallet_goes_through_dunning_to_canceled(node: RunningNode) -> None:
    _, mw = _merchant(node, "bt2", {"bt2-basic": 2_500})
    c = _user(node, "cust-bt2")
    _wallet(node, c, "bt2-cw")
    _clock(node, c, "bt2-clock", "2026-03-01T00:00:00Z")
    sub = _subscribe(node, c, price="bt2-basic", customer_account="bt2-cw", trial_days=1,
                     test_clock="bt2-clock")  # fmt: skip
    _advance(node, c, "bt2-clock", "2026-03-02T12:00:00Z")  # trial over, payment refused
    got = _sub(node, c, sub["id"])
    assert (got["status"], got["dunning_failures"]) == ("past_due", 1), got
    (bill,) = _invoices(node, c, sub["id"])
    assert (bill["status"], bill["last_code"], bill["attempts"]) == (
        "open", "insufficient_funds", 1)  # fmt: skip
    _advance(node, c, "bt2-clock", "2026-03-03T12:00:00Z")  # retry 1 (day 1) fails too
    assert _sub(node, c, sub["id"])["dunning_failures"] == 2
    _advance(node, c, "bt2-clock", "2026-03-10T00:00:00Z")  # days 3, 5, 7: exhausted
    got = _sub(node, c, sub["id"])
    assert got["status"] == "canceled", got
    (bill,) = _invoices(node, c, sub["id"])
    assert (bill["status"], bill["attempts"]) == ("uncollectible", 5)
    assert _balance(node, mw) == 0 and _balance(node, "bt2-cw") == 0


def test_cancel_at_period_end_and_plan_change_proration(node: RunningNode) -> None:
    m, mw = _merchant(node, "bt3", {"bt3-small": 3_000, "bt3-big": 6_000})
    c = _user(node, "cust-bt3")
    _wallet(node, c, "bt3-cw", funded=20_000)
    _clock(node, c, "bt3-clock", "2026-04-01T00:00:00Z")
    # No trial: period 0 is billed and paid before the answer.
    sub = _subscribe(node, c, price="bt3-small", customer_account="bt3-cw",
                     test_clock="bt3-clock")  # fmt: skip
    assert sub["status"] == "active", sub
    assert _balance(node, "bt3-cw") == 17_000
    _advance(node, c, "bt3-clock", "2026-04-16T00:00:00Z")  # half of April's 30 days
    r = node.http.patch(f"/v1/subscriptions/{sub['id']}", json={"price": "bt3-big"}, headers=c)
    assert r.status_code == 200 and r.json()["price"] == "bt3-big", r.text
    change = node.http.get(f"/v1/invoices/in_{sub['id']}_c1", headers=c).json()
    assert [line["amount"] for line in change["lines"]] == [-1_500, 3_000]
    assert (change["total"], change["status"]) == (1_500, "paid")
    assert _balance(node, "bt3-cw") == 15_500 and _balance(node, mw) == 4_500
    r = node.http.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at_period_end": True},
                       headers=m)  # fmt: skip
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is True, r.text
    _advance(node, c, "bt3-clock", "2026-05-02T00:00:00Z")
    assert _sub(node, c, sub["id"])["status"] == "canceled"
    assert len(_invoices(node, c, sub["id"])) == 2  # nothing billed for May
    assert _balance(node, "bt3-cw") == 15_500


def test_a_crash_between_move_and_record_charges_once(node: RunningNode) -> None:
    """What a pass killed after moving the money leaves (the attempt in flight, not
    recorded): the next pass moves the same transfer id, the ledger replays it."""
    _, mw = _merchant(node, "bt4", {"bt4-basic": 700})
    c = _user(node, "cust-bt4")
    _wallet(node, c, "bt4-cw", funded=10_000)
    _clock(node, c, "bt4-clock", "2026-06-01T00:00:00Z")
    ids = [_subscribe(node, c, price="bt4-basic", customer_account="bt4-cw", trial_days=2,
                      test_clock="bt4-clock")["id"] for _ in range(3)]  # fmt: skip
    _advance(node, c, "bt4-clock", "2026-06-04T00:00:00Z")  # three renewals, one batch
    assert _balance(node, "bt4-cw") == 10_000 - 3 * 700
    victim = f"in_{ids[0]}_0"
    with psycopg.connect(libpq_url(node.database_url), autocommit=True) as conn:
        conn.execute("UPDATE billing_invoices SET status = 'open', in_flight = 0, attempts = 0,"
                     " paid_by = NULL WHERE id = %s", (victim,))  # fmt: skip
        conn.execute("UPDATE billing_subscriptions SET collecting = %s WHERE id = %s",
                     (victim, ids[0]))  # fmt: skip
    wait_until(lambda: node.http.get(f"/v1/invoices/{victim}", headers=c).json()["status"]
               == "paid", what="the replayed attempt recorded")  # fmt: skip
    assert _balance(node, "bt4-cw") == 10_000 - 3 * 700 and _balance(node, mw) == 3 * 700
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        rows = conn.execute("SELECT id FROM transfers WHERE id LIKE %s ORDER BY id",
                            (f"bill:in_{ids[0]}_%",)).fetchall()  # fmt: skip
    assert [r[0] for r in rows] == [f"bill:{victim}:0"]


def _card(node: RunningNode, user: dict, token: str) -> str:
    r = node.http.post("/v1/payment-methods", json={"type": "card", "token": token}, headers=user)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_cards_pay_invoices_and_a_declining_card_goes_through_dunning(node: RunningNode) -> None:
    """Subscriptions charged to a card through the processor: the default card pays each
    invoice (a card payment with its receipt, the processor's fee paid by the merchant);
    a declining card and one asking for 3-D Secure (nobody there to authenticate) fail
    their attempts into dunning; a card in use cannot be detached."""
    m, mw = _merchant(node, "bt6", {"bt6-basic": 1_000})
    c = _user(node, "cust-bt6")
    visa = _card(node, c, "tok_visa")
    assert node.http.post(f"/v1/payment-methods/{visa}/default", headers=c).status_code == 200
    declining = _card(node, c, "tok_chargeDeclinedInsufficientFunds")
    three_ds = _card(node, c, "tok_threeDSecureRequired")
    _clock(node, c, "bt6-clock", "2026-07-01T00:00:00Z")
    paid = _subscribe(node, c, price="bt6-basic", trial_days=7, test_clock="bt6-clock")
    source = (paid["source_kind"], paid["payment_method"], paid["customer_account"])
    assert source == ("card", visa, None)  # with neither source given, the default card
    refused = _subscribe(node, c, price="bt6-basic", payment_method=declining, trial_days=1,
                         test_clock="bt6-clock")["id"]  # fmt: skip
    asks = _subscribe(node, c, price="bt6-basic", payment_method=three_ds, trial_days=1,
                      test_clock="bt6-clock")["id"]  # fmt: skip
    problem(node.http.delete(f"/v1/payment-methods/{visa}", headers=c), 409,
            "payment_method_in_use")  # fmt: skip
    _advance(node, c, "bt6-clock", "2026-07-02T12:00:00Z")  # two trials over: both refused
    for sub_id, code in ((refused, "insufficient_funds"), (asks, "authentication_required")):
        got = _sub(node, c, sub_id)
        assert (got["status"], got["dunning_failures"]) == ("past_due", 1), got
        (bill,) = _invoices(node, c, sub_id)
        assert (bill["status"], bill["last_code"], bill["attempts"]) == ("open", code, 1), bill
        failed = node.http.get(f"/v1/payments/bill:{bill['id']}:0", headers=c).json()
        assert (failed["status"], failed["failure_code"]) == ("failed", code), failed
    # The customer moves the 3-D Secure one to the visa and pays its open invoice now.
    switch = f"/v1/subscriptions/{asks}/payment-source"
    problem(node.http.post(switch, json={"payment_method": visa}, headers=m), 403, "forbidden")
    problem(node.http.post(switch, json={"payment_method": "pm_" + "0" * 32}, headers=c), 404,
            "payment_method_not_found")  # fmt: skip
    r = node.http.post(switch, json={"payment_method": visa}, headers=c)
    assert r.status_code == 200 and r.json()["payment_method"] == visa, r.text
    (bill,) = _invoices(node, c, asks)
    r = node.http.post(f"/v1/invoices/{bill['id']}/pay", headers=c)
    assert r.status_code == 200 and r.json()["status"] == "paid", r.text
    assert r.json()["paid_by"] == f"card-post:bill:{bill['id']}:1"
    assert _sub(node, c, asks)["status"] == "active"
    _advance(node, c, "bt6-clock", "2026-07-10T00:00:00Z")  # the trial ends: the visa pays
    (first,) = _invoices(node, c, paid["id"])
    charge = f"bill:{first['id']}:0"
    assert (first["status"], first["paid_by"]) == ("paid", f"card-post:{charge}"), first
    assert _sub(node, c, paid["id"])["status"] == "active"
    pay = node.http.get(f"/v1/payments/{charge}", headers=c).json()
    assert (pay["status"], pay["rail"], pay["amount"]) == ("completed", "card", 1_000), pay
    receipt = node.http.get(f"/v1/payments/{charge}/receipt", headers=c).json()
    assert receipt["amount"] == 1_000 and receipt["card_last4"] == "4242", receipt
    assert _balance(node, mw) == 2 * (1_000 - (30 + 29))  # card fee: 30 + 2.9%, rounded up
    # Retries on days 1, 3, 5 and 7 of dunning all fail: canceled, the invoice uncollectible.
    assert _sub(node, c, refused)["status"] == "canceled"
    assert [i["status"] for i in _invoices(node, c, refused)] == ["uncollectible"]
    assert node.http.delete(f"/v1/payment-methods/{declining}", headers=c).status_code == 200
    assert _balance(node, mw) == 2 * (1_000 - 59)  # the declines moved nothing


def test_card_subscription_bad_input(node: RunningNode) -> None:
    m, _ = _merchant(node, "bt7", {"bt7-basic": 1_000})
    c = _user(node, "cust-bt7")
    other = _user(node, "other-bt7")
    _wallet(node, c, "bt7-cw", funded=1_000)
    theirs = _card(node, other, "tok_visa")
    subscribe = lambda **b: node.http.post("/v1/subscriptions", json=b, headers=c)  # noqa: E731
    problem(subscribe(price="bt7-basic"), 422, "missing_field")  # no default card
    problem(subscribe(price="bt7-basic", payment_method=theirs), 404, "payment_method_not_found")
    mine = _card(node, c, "tok_visa")
    problem(subscribe(price="bt7-basic", payment_method=mine, customer_account="bt7-cw"), 422,
            "invalid_field")  # fmt: skip
    body = {"id": "bt7-gbp", "product": "bt7-prod", "amount": 1_000, "currency": "GBP",
            "interval": "month", "payout_account_id": "bt7-gw"}  # fmt: skip
    _gbp_wallet(node, m, "bt7-gw")
    assert node.http.post("/v1/prices", json=body, headers=m).status_code == 201
    problem(subscribe(price="bt7-gbp", payment_method=mine), 422, "currency_mismatch")
    assert node.http.get("/v1/subscriptions", headers=c).json()["subscriptions"] == []
    assert node.http.get("/v1/payments", headers=c).json()["payments"] == []


def test_bad_input_changes_nothing(node: RunningNode) -> None:
    m, _ = _merchant(node, "bt5", {"bt5-basic": 1_000})
    c = _user(node, "cust-bt5")
    other = _user(node, "other-bt5")
    _wallet(node, c, "bt5-cw", funded=1_000)
    _wallet(node, other, "bt5-ow", funded=1_000)
    subscribe = lambda **b: node.http.post("/v1/subscriptions", json=b, headers=c)  # noqa: E731
    problem(subscribe(price="nope", customer_account="bt5-cw"), 404, "price_not_found")
    problem(subscribe(price="bt5-basic", customer_account="bt5-ow"), 403, "forbidden")
    problem(subscribe(price="bt5-basic", customer_account="bt5-cw", trial_days=-1), 422,
            "invalid_field")  # fmt: skip
    problem(subscribe(price="bt5-basic", customer_account="bt5-cw", test_clock="nope"), 404,
            "test_clock_not_found")  # fmt: skip
    base = {"product": "bt5-prod", "currency": "USD", "interval": "month",
            "payout_account_id": "bt5-mw"}  # fmt: skip
    for i, amount in enumerate((-5, 12.5, 100_000_000)):
        r = node.http.post("/v1/prices", json={"id": f"bt5-bad{i}", "amount": amount, **base},
                           headers=m)  # fmt: skip
        problem(r, 422, "invalid_field")
    problem(node.http.post("/v1/prices", json={"id": "bt5-x", "amount": 1, **base,
                                               "interval_count": 13}, headers=m),
            422, "invalid_field")  # fmt: skip
    assert node.http.get("/v1/subscriptions", headers=c).json()["subscriptions"] == []
    assert [x["id"] for x in node.http.get("/v1/prices", headers=m).json()] == ["bt5-basic"]
    assert _balance(node, "bt5-cw") == 1_000 and _balance(node, "bt5-ow") == 1_000


def _gbp_wallet(node: RunningNode, user: dict, account_id: str, funded: int = 0) -> None:
    body = {"id": account_id, "currency": "GBP", "flags": ["debits_must_not_exceed_credits"]}
    assert node.http.post("/v1/accounts", json=body, headers=user).status_code == 201
    if funded:
        _fund_gbp(node, account_id, funded)


def _fund_gbp(node: RunningNode, account_id: str, amount: int) -> None:
    node.http.post("/v1/accounts", json={"id": "treasury-billing-gbp", "currency": "GBP"})
    fund = {"id": f"fund-{account_id}-{next(_n)}", "debit_account_id": "treasury-billing-gbp",
            "credit_account_id": account_id, "amount": amount, "currency": "GBP"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=fund).status_code == 201


def test_analytics_views_of_subscriptions_and_invoices(node: RunningNode) -> None:
    """Issue #20 item 7: the analysts' views over the billing history, on a test clock in
    January-February 2024, in GBP (the module's other tests bill USD in 2026). One
    customer, one wallet per subscription; s4 recovers from dunning, s5 exhausts it, s6
    is still in it, s3 is canceled by hand."""
    import datetime as dt

    import ray

    from paynode.storage.analytics import connect_views

    m = _user(node, "merchant-ba")
    _gbp_wallet(node, m, "ba-mw")
    r = node.http.post("/v1/products", json={"id": "ba-prod", "name": "Pro"}, headers=m)
    assert r.status_code == 201, r.text
    for price_id, amount, interval in (("ba-month", 1_200, "month"), ("ba-year", 12_000, "year"),
                                       ("ba-week", 700, "week")):  # fmt: skip
        body = {"id": price_id, "product": "ba-prod", "amount": amount, "currency": "GBP",
                "interval": interval, "payout_account_id": "ba-mw"}  # fmt: skip
        assert node.http.post("/v1/prices", json=body, headers=m).status_code == 201
    c = _user(node, "cust-ba")
    _gbp_wallet(node, c, "ba-w1", funded=100_000)
    for w in ("ba-w4", "ba-w5", "ba-w6"):
        _gbp_wallet(node, c, w)
    _clock(node, c, "ba-clock", "2024-01-01T00:00:00Z")

    def sub(price: str, wallet: str, **more) -> str:
        return _subscribe(node, c, price=price, customer_account=wallet, test_clock="ba-clock",
                          **more)["id"]  # fmt: skip

    s1 = sub("ba-month", "ba-w1")  # active: 1,200 a month
    s2 = sub("ba-year", "ba-w1")  # active: 12,000 a year, 12,000 // 12 = 1,000 a month
    s3 = sub("ba-week", "ba-w1")  # active: 700 a week, 700 * 52 // 12 = 3,033 a month
    s4 = sub("ba-month", "ba-w4", trial_days=1)  # refused 01-02 and 01-03, paid 01-05
    s5 = sub("ba-month", "ba-w5", trial_days=1)  # refused 01-02, 03, 05, 07, 09: canceled
    _advance(node, c, "ba-clock", "2024-01-04T00:00:00Z")
    _fund_gbp(node, "ba-w4", 2_400)  # the retry of 01-05 and the renewal of 02-02
    _advance(node, c, "ba-clock", "2024-02-03T00:00:00Z")
    r = node.http.post(f"/v1/subscriptions/{s3}/cancel", headers=c)  # now: 02-03
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    s6 = sub("ba-month", "ba-w6", trial_days=1)  # refused 02-04 and 02-05: still open
    _advance(node, c, "ba-clock", "2024-02-05T12:00:00Z")
    assert [_sub(node, c, s)["status"] for s in (s1, s2, s3, s4, s5, s6)] == [
        "active", "active", "canceled", "active", "canceled", "past_due"]  # fmt: skip

    ray.get(node.analytics.sync.remote(), timeout=60)
    con = connect_views(node.settings.analytics_path())
    names = {s1: "s1", s2: "s2", s3: "s3", s4: "s4", s5: "s5", s6: "s6"}

    def q(sql: str) -> list[tuple]:
        """Rows of ``sql`` with the subscriptions' ids (also in invoice ids) as s1..s6."""
        rows = con.execute(sql).fetchall()
        for sid, short in names.items():
            rows = [tuple(x.replace(sid, short) if isinstance(x, str) else x for x in r)
                    for r in rows]  # fmt: skip
        return rows

    def day(d: str) -> dt.datetime:
        return dt.datetime.fromisoformat(d)

    try:
        assert sorted(q("SELECT id, amount, interval, status, started, canceled_at"
                        " FROM subscriptions WHERE currency = 'GBP'")) == sorted([
            ("s1", 1_200, "month", "active", day("2024-01-01"), None),
            ("s2", 12_000, "year", "active", day("2024-01-01"), None),
            ("s3", 700, "week", "canceled", day("2024-01-01"), day("2024-02-03")),
            ("s4", 1_200, "month", "active", day("2024-01-01"), None),
            ("s5", 1_200, "month", "canceled", day("2024-01-01"), day("2024-01-09")),
            ("s6", 1_200, "month", "past_due", day("2024-02-03"), None),
        ])  # fmt: skip
        paid = lambda i, amount, d: (i, amount, amount, "paid", day(d), day(d), 1)  # noqa: E731
        invoices = q(
            "SELECT id, total, amount_due, status, created, paid_at, attempts"
            " FROM invoices WHERE currency = 'GBP'"
        )
        assert sorted(invoices, key=lambda r: (r[4], r[0])) == [
            paid("in_s1_0", 1_200, "2024-01-01"), paid("in_s2_0", 12_000, "2024-01-01"),
            paid("in_s3_0", 700, "2024-01-01"),
            ("in_s4_0", 1_200, 1_200, "paid", day("2024-01-02"), day("2024-01-05"), 3),
            ("in_s5_0", 1_200, 1_200, "uncollectible", day("2024-01-02"), None, 5),
            paid("in_s3_1", 700, "2024-01-08"), paid("in_s3_2", 700, "2024-01-15"),
            paid("in_s3_3", 700, "2024-01-22"), paid("in_s3_4", 700, "2024-01-29"),
            paid("in_s1_1", 1_200, "2024-02-01"), paid("in_s4_1", 1_200, "2024-02-02"),
            # Canceled with 2 of the week's 7 days unused: 700 * 2 / 7 credited.
            ("in_s3_c1", -200, 0, "paid", day("2024-02-03"), day("2024-02-03"), 0),
            ("in_s6_0", 1_200, 1_200, "open", day("2024-02-04"), None, 2),
        ]  # fmt: skip
        # Active at each day's end: s1 + s2 + s3 = 1,200 + 1,000 + 3,033; s4 from its
        # payment on 01-05; s3 gone from 02-03. s1, s2 and s4 stay active afterwards.
        mrr = q(
            "SELECT day, mrr, active_subscriptions FROM mrr_daily WHERE currency = 'GBP'"
            " AND day BETWEEN DATE '2023-12-01' AND DATE '2024-02-07' ORDER BY day"
        )
        jan1 = dt.date(2024, 1, 1)
        expected = [(jan1 + dt.timedelta(days=k), 5_233, 3) for k in range(4)]
        expected += [(jan1 + dt.timedelta(days=k), 6_433, 4) for k in range(4, 33)]
        expected += [(jan1 + dt.timedelta(days=k), 3_400, 3) for k in range(33, 38)]
        assert mrr == expected
        # January: none paying at its start, s5 canceled by dunning. February: s1-s4 at
        # its start, s3 canceled. March: s1, s2, s4 active and s6 past_due.
        assert q("SELECT * FROM churn_monthly WHERE month BETWEEN DATE '2024-01-01'"
                 " AND DATE '2024-03-01' ORDER BY month") == [
            (dt.date(2024, 1, 1), 0, 1, None), (dt.date(2024, 2, 1), 4, 1, 0.25),
            (dt.date(2024, 3, 1), 4, 0, 0.0),
        ]  # fmt: skip
        aging = lambda at: q(f"SELECT * FROM invoice_aging_at(TIMESTAMP '{at}')"  # noqa: E731
                             " WHERE currency = 'GBP' ORDER BY ALL")  # fmt: skip
        assert aging("2024-01-04") == [("0-30", "GBP", 2, 2_400)]  # s4's and s5's
        assert aging("2024-02-05 12:00") == [("0-30", "GBP", 1, 1_200)]  # s6's since 02-04
        assert aging("2024-03-20") == [("31-60", "GBP", 1, 1_200)]
        assert aging("2024-04-20") == [("61-90", "GBP", 1, 1_200)]
        assert aging("2024-05-10") == [("90+", "GBP", 1, 1_200)]
        outcomes = q(
            "SELECT invoice, attempts, failures, outcome, first_failed_at, paid_at,"
            " days_to_recover FROM dunning_outcomes WHERE currency = 'GBP'"
        )
        assert sorted(outcomes) == [
            ("in_s4_0", 3, 2, "paid", day("2024-01-02"), day("2024-01-05"), 3.0),
            ("in_s5_0", 5, 5, "uncollectible", day("2024-01-02"), None, None),
            ("in_s6_0", 2, 2, "open", day("2024-02-04"), None, None),
        ]  # fmt: skip
    finally:
        con.close()
