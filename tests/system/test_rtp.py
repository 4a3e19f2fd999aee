"""RTP end to end: instant payments and requests for payment over the simulated network.

The node sends ISO 20022 pacs.008 messages to the RTP simulator (actors/rtp_sim.py),
which answers each with a pacs.002 the way a receiving bank does, and delivers
creditors' requests for payment (pain.013) as signed webhooks.
"""

from __future__ import annotations

import datetime as dt

from tests.support.accounts import verified_user, wallet
from tests.support.asserts import problem
from tests.support.bank import ROUTING, link_and_verify
from tests.support.node import RunningNode, wait_until

# The simulated network answers the slow account after 3 s: past this timeout, so the
# front's recovery loop must finish the payment.
SHARED_NODE_SETTINGS: dict = {
    "auth_rate_burst": 1_000,
    "bank_sim_delay_s": 0.1,
    "ach_cutoff_interval_ms": 0,
    "rtp_timeout_ms": 500,
    "rtp_recover_interval_ms": 200,
}
FEE = 25  # rtp.fee_fixed's default
AG01_ACCOUNT = "000666666664"  # the simulated receiving bank rejects instant credits (AG01)
SLOW_ACCOUNT = "000555555550"  # answered after 3 s
OFF_NETWORK = "011000138"  # in the FedACH sample, not among the RTP participants


def _user(node: RunningNode, name: str) -> dict[str, str]:
    return verified_user(node, name)


def _funded_wallet(node: RunningNode, user: dict, account_id: str, amount: int) -> None:
    wallet(node, user, account_id, amount, "treasury-rtp")


def _account(node: RunningNode, account_id: str) -> dict:
    return node.http.get(f"/v1/accounts/{account_id}").json()


def _credits(node: RunningNode, account: str, routing: str = ROUTING) -> list[dict]:
    r = node.http.post("/v1/rtp-sim/statement",
                       json={"routing_number": routing, "account_number": account})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["credits"]


def test_instant_payment_to_a_bank_account(node: RunningNode) -> None:
    alice = _user(node, "alice-rtp")
    _funded_wallet(node, alice, "alice-rtp-w", 100_000)
    account = "000123450001"
    bank = link_and_verify(node, alice, account)
    pay = {"id": "rtp-1", "from": "alice-rtp-w", "to": bank, "amount": 5_000,
           "currency": "USD", "instant": True, "memo": "rent"}  # fmt: skip
    r = node.http.post("/v1/payments", json=pay, headers=alice)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rail"] == "rtp" and body["status"] == "completed", body
    assert body["fee"] == FEE and body["return_code"] is None
    assert [h["status"] for h in body["history"]] == ["processing", "pending", "completed"]
    assert body["rtp"]["status"] == "accepted" and body["rtp"]["reason_code"] is None
    # Settled as it completed (RTP runs 24x7: no banking day to wait for).
    assert body["estimated_settlement_date"] == dt.datetime.now(dt.UTC).date().isoformat()
    wallet = _account(node, "alice-rtp-w")
    assert wallet["balance"] == wallet["available"] == 100_000 - 5_000 - FEE
    assert _account(node, "rtp-fees-usd")["balance"] >= FEE
    # The receiving bank got exactly one credit, under the payment's end-to-end id.
    (credit,) = _credits(node, account)
    assert credit["amount"] == 5_000 and credit["end_to_end_id"] == body["rtp"]["end_to_end_id"]
    # The same payment again is a replay: nothing moves, nothing is sent twice.
    again = node.http.post("/v1/payments", json=pay, headers=alice)
    assert again.status_code == 200 and again.json()["status"] == "completed"
    assert _account(node, "alice-rtp-w")["balance"] == 100_000 - 5_000 - FEE
    assert len(_credits(node, account)) == 1
    # RTP is final: no refunds or returns from our side.
    problem(node.http.post("/v1/payments/rtp-1/refunds", json={"id": "rf-rtp-1"}), 409,
            "payment_not_refundable")  # fmt: skip
    # Without `instant`, the same bank account is paid by ACH.
    ach = dict(pay, id="rtp-1-ach", instant=False)
    r = node.http.post("/v1/payments", json=ach, headers=alice)
    assert r.status_code == 201 and r.json()["rail"] == "ach", r.text
    assert r.json()["fee"] == 0 and r.json()["status"] == "pending"


def test_a_rejected_payment_gives_amount_and_fee_back(node: RunningNode) -> None:
    bob = _user(node, "bob-rtp")
    _funded_wallet(node, bob, "bob-rtp-w", 20_000)
    bank = link_and_verify(node, bob, AG01_ACCOUNT)
    pay = {"id": "rtp-2", "from": "bob-rtp-w", "to": bank, "amount": 7_000,
           "currency": "USD", "rail": "rtp"}  # fmt: skip
    r = node.http.post("/v1/payments", json=pay, headers=bob)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "failed" and body["failure_code"] == "rtp_rejected", body
    assert body["rtp"]["status"] == "rejected" and body["rtp"]["reason_code"] == "AG01"
    assert body["rtp"]["reason"] == "Transaction forbidden on this account"
    wallet = _account(node, "bob-rtp-w")
    assert wallet["balance"] == wallet["available"] == 20_000
    assert wallet["debits_pending"] == 0
    assert _credits(node, AG01_ACCOUNT) == []
    # A payment the wallet cannot cover with its fee holds nothing and fails at once.
    short = dict(pay, id="rtp-2b", amount=20_000 - FEE + 1)
    r = node.http.post("/v1/payments", json=short, headers=bob)
    assert r.status_code == 201 and r.json()["status"] == "failed", r.text
    assert r.json()["failure_code"] == "insufficient_funds"
    assert r.json()["rtp"] is None  # never sent
    assert _account(node, "bob-rtp-w")["available"] == 20_000


def test_the_router_refuses_what_rtp_cannot_carry(node: RunningNode) -> None:
    carol = _user(node, "carol-rtp")
    mallory = _user(node, "mallory-rtp")
    _funded_wallet(node, carol, "carol-rtp-w", 10_000)
    bank = link_and_verify(node, carol, "000123450002")
    off = link_and_verify(node, carol, "000123450003", routing=OFF_NETWORK)
    base = {"from": "carol-rtp-w", "to": bank, "amount": 1_000, "currency": "USD",
            "rail": "rtp"}  # fmt: skip
    cases = [
        (dict(base, id="r-limit", amount=1_000_000_01), 422, "amount_over_rail_limit"),
        (dict(base, id="r-off", to=off), 422, "rail_not_available"),
        (dict(base, id="r-off-auto", to=off, rail="auto", instant=True), 422,
         "rail_not_available"),
        (dict(base, id="r-pull", **{"from": bank, "to": "carol-rtp-w"}), 422,
         "rail_not_available"),
        (dict(base, id="r-wallets", to="carol-rtp-w"), 422, "rail_not_available"),
        (dict(base, id="r-ach-instant", rail="ach", instant=True), 422, "rail_not_available"),
        (dict(base, id="r-eur", currency="EUR"), 422, "currency_mismatch"),
        (dict(base, id="r-sameday", same_day=True), 422, "invalid_field"),
        (dict(base, id="r-float", amount=10.5), 422, "invalid_field"),
    ]  # fmt: skip
    for body, status, code in cases:
        problem(node.http.post("/v1/payments", json=body, headers=carol), status, code)
        problem(node.http.get(f"/v1/payments/{body['id']}"), 404, "payment_not_found")
    # Someone else's bank account, or someone else's wallet, is not a way out.
    problem(node.http.post("/v1/payments", json=dict(base, id="r-theft"), headers=mallory),
            403, "forbidden")  # fmt: skip
    assert _account(node, "carol-rtp-w")["balance"] == 10_000


def test_a_late_answer_is_collected_by_the_fronts(node: RunningNode) -> None:
    dana = _user(node, "dana-rtp")
    _funded_wallet(node, dana, "dana-rtp-w", 10_000)
    bank = link_and_verify(node, dana, SLOW_ACCOUNT)
    pay = {"id": "rtp-slow", "from": "dana-rtp-w", "to": bank, "amount": 2_500,
           "currency": "USD", "rail": "rtp"}  # fmt: skip
    r = node.http.post("/v1/payments", json=pay, headers=dana)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending" and r.json()["rtp"]["status"] == "sending"
    assert _account(node, "dana-rtp-w")["available"] == 10_000 - 2_500 - FEE  # held
    done = wait_until(
        lambda: (x := node.http.get("/v1/payments/rtp-slow").json())["status"] == "completed"
        and x, timeout=30, what="the network's late pacs.002")  # fmt: skip
    assert done["rtp"]["status"] == "accepted"
    assert _account(node, "dana-rtp-w")["balance"] == 10_000 - 2_500 - FEE
    assert len(_credits(node, SLOW_ACCOUNT)) == 1  # asked again, never sent twice


def _request(node: RunningNode, account_id: str, amount: int, expires_in_s: int = 3600) -> dict:
    r = node.http.post("/v1/rtp-sim/requests", json={
        "account_id": account_id, "amount": amount, "creditor_name": "Acme Utilities",
        "creditor_routing_number": "121000248", "creditor_account_number": "000777000111",
        "remittance": "invoice 42", "expires_in_s": expires_in_s})  # fmt: skip
    assert r.status_code == 200, r.text
    e2e = r.json()["end_to_end_id"]
    found = wait_until(lambda: [x for x in node.http.get("/v1/rtp/requests").json()["requests"]
                                if x["end_to_end_id"] == e2e], what="the pain.013")  # fmt: skip
    return found[0]


def test_requests_for_payment(node: RunningNode) -> None:
    erin = _user(node, "erin-rtp")
    other = _user(node, "frank-rtp")
    _funded_wallet(node, erin, "erin-rtp-w", 50_000)
    req = _request(node, "erin-rtp-w", 12_345)
    assert req["status"] == "pending" and req["creditor_name"] == "Acme Utilities"
    assert req["creditor_account_last4"] == "0111" and req["remittance"] == "invoice 42"
    mine = node.http.get("/v1/rtp/requests", headers=erin).json()["requests"]
    assert [x["id"] for x in mine] == [req["id"]]
    events = node.http.get("/v1/events", params={"type": "rtp.request_received"},
                           headers=erin).json()["events"]  # fmt: skip
    assert [e["data"]["request"]["id"] for e in events] == [req["id"]]
    assert "Acme" not in str(events)  # the creditor's name is PII: not in events
    # Someone else's request does not exist for you, and you cannot answer it.
    problem(node.http.get(f"/v1/rtp/requests/{req['id']}", headers=other), 404,
            "rtp_request_not_found")  # fmt: skip
    stranger = node.http.post(f"/v1/rtp/requests/{req['id']}/accept", headers=other,
                              json={"payment_id": "rfp-pay-x"})  # fmt: skip
    problem(stranger, 404, "rtp_request_not_found")
    assert node.http.get("/v1/rtp/requests", headers=other).json()["requests"] == []
    # Accepting pays the creditor now, on RTP, with the fee.
    accept = {"payment_id": "rfp-pay-1"}
    r = node.http.post(f"/v1/rtp/requests/{req['id']}/accept", json=accept, headers=erin)
    assert r.status_code == 201, r.text
    pay = r.json()
    assert pay["status"] == "completed" and pay["rail"] == "rtp" and pay["amount"] == 12_345
    assert pay["rtp"]["request_id"] == req["id"] and pay["to"] == f"rfp:{req['id']}"
    (credit,) = _credits(node, "000777000111", "121000248")
    assert credit["amount"] == 12_345
    assert _account(node, "erin-rtp-w")["balance"] == 50_000 - 12_345 - FEE
    got = node.http.get(f"/v1/rtp/requests/{req['id']}", headers=erin).json()
    assert got["status"] == "accepted" and got["payment_id"] == "rfp-pay-1"
    # The same accept again is a replay; another payment for it is refused.
    again = node.http.post(f"/v1/rtp/requests/{req['id']}/accept", json=accept, headers=erin)
    assert again.status_code == 200 and again.json()["id"] == "rfp-pay-1"
    problem(node.http.post(f"/v1/rtp/requests/{req['id']}/accept", headers=erin,
                           json={"payment_id": "rfp-pay-2"}), 409,
            "rtp_request_already_answered")  # fmt: skip
    assert len(_credits(node, "000777000111", "121000248")) == 1
    # Declined: answered, and no longer payable.
    second = _request(node, "erin-rtp-w", 500)
    r = node.http.post(f"/v1/rtp/requests/{second['id']}/decline", headers=erin)
    assert r.status_code == 200 and r.json()["status"] == "declined", r.text
    problem(node.http.post(f"/v1/rtp/requests/{second['id']}/accept", headers=erin,
                           json={"payment_id": "rfp-pay-3"}), 409,
            "rtp_request_already_answered")  # fmt: skip
    # Expired: shown as such, and no longer payable.
    third = _request(node, "erin-rtp-w", 700, expires_in_s=1)
    wait_until(lambda: node.http.get(f"/v1/rtp/requests/{third['id']}", headers=erin)
               .json()["status"] == "expired", what="the request to expire")  # fmt: skip
    late = node.http.post(f"/v1/rtp/requests/{third['id']}/accept", headers=erin,
                          json={"payment_id": "rfp-pay-4"})  # fmt: skip
    problem(late, 409, "rtp_request_expired")
    problem(node.http.get("/v1/payments/rfp-pay-4"), 404, "payment_not_found")
    assert _account(node, "erin-rtp-w")["balance"] == 50_000 - 12_345 - FEE
    # Bad input changes nothing.
    problem(node.http.post(f"/v1/rtp/requests/{third['id']}/accept", headers=erin,
                           json={"payment_id": ""}), 422, "invalid_field")  # fmt: skip
    problem(node.http.post("/v1/rtp-sim/requests", headers=erin, json={}), 403,
            "insufficient_scope")  # fmt: skip
