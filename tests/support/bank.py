"""Bank accounts for the rails' tests: linked and verified the way a user does it."""

from __future__ import annotations

from tests.support.asserts import problem
from tests.support.node import RunningNode, wait_until

ROUTING = "021000021"  # JPMorgan Chase: in the FedACH sample and on RTP


def cutoff(node: RunningNode) -> dict:
    r = node.http.post("/v1/ach/cutoff")
    assert r.status_code == 200, r.text
    return r.json()


def statement(node: RunningNode, account: str, routing: str = ROUTING) -> list[dict]:
    r = node.http.post("/v1/bank-sim/statement",
                       json={"routing_number": routing, "account_number": account})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["lines"]


def link_and_verify(node: RunningNode, user: dict, account: str, routing: str = ROUTING) -> str:
    """Add a bank account and verify it with its two micro-deposits (a wrong guess first)."""
    r = node.http.post("/v1/bank-accounts", headers=user, json={
        "routing_number": routing, "account_number": account, "account_type": "checking",
        "holder_name": "Alice Example"})  # fmt: skip
    assert r.status_code == 201, r.text
    bank = r.json()
    assert bank["account_last4"] == account[-4:] and "account_number" not in bank
    assert bank["status"] == "pending_verification"
    assert cutoff(node)["entries"] >= 2
    lines = wait_until(lambda: statement(node, account, routing), what="the micro-deposits")
    amounts = [x["amount"] for x in lines if x["direction"] == "credit"][-2:]
    wrong = node.http.post(f"/v1/bank-accounts/{bank['id']}/verify", headers=user,
                           json={"amounts": [a % 99 + 1 for a in amounts]})  # fmt: skip
    problem(wrong, 422, "verification_failed")
    ok = node.http.post(f"/v1/bank-accounts/{bank['id']}/verify", headers=user,
                        json={"amounts": list(reversed(amounts))})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["status"] == "verified", ok.text
    return bank["id"]
