"""Bank linking (Plaid's model) end to end: link token, the user's login at a test
institution, exchange, verified bank accounts, an ACH payment from one; the simulated
aggregator's signed webhooks acted on (a new login required, balances, revoked consent);
ownership; bad input.

The node talks to the aggregator simulator (actors/aggregator_sim.py) and the bank
simulator (actors/bank_sim.py) over Ray and signed HTTP webhooks, on real PostgreSQL.
"""

from __future__ import annotations

import json
import time

import httpx
import psycopg

from paynode.domain.notify.signature import HEADER, header
from paynode.domain.rails.nacha import parse_file
from paynode.storage.database import libpq_url
from tests.support.asserts import kyc_verified, problem, signup
from tests.support.node import RunningNode, wait_until

# One node for the module (tests/conftest.py shared_node): each test has users of its own.
SHARED_NODE_SETTINGS: dict = {
    "auth_rate_burst": 1_000, "bank_sim_delay_s": 0.1, "ach_cutoff_interval_ms": 0,
}  # fmt: skip

CHECKING = "1111222233330000"  # ins_1's accounts (First Platypus Bank)
ROUTING = "121000248"  # in the FedACH directory the node ships: WELLS FARGO BANK


def _user(node: RunningNode, name: str) -> tuple[str, dict[str, str]]:
    with node.anonymous() as anon:
        user_id, headers = signup(anon, name)
    kyc_verified(node.http, user_id, headers)
    return user_id, headers


def _link(node: RunningNode, user: dict, institution: str = "ins_1") -> tuple[dict, str]:
    """Link a bank the way a client does: (the item, the public token it came from)."""
    r = node.http.post("/v1/link/tokens", json={}, headers=user)
    assert r.status_code == 201, r.text
    assert r.json()["mode"] == "create" and r.json()["link_token"].startswith("link-")
    login = {"link_token": r.json()["link_token"], "institution_id": institution}
    r = node.http.post("/v1/link/sandbox/public-token", headers=user, json=login)
    assert r.status_code == 201, r.text
    public_token = r.json()["public_token"]
    r = node.http.post("/v1/link/exchange", json={"public_token": public_token}, headers=user)
    assert r.status_code == 201, r.text
    return r.json(), public_token


def _item(node: RunningNode, user: dict, item_id: str) -> dict:
    r = node.http.get(f"/v1/link/items/{item_id}", headers=user)
    assert r.status_code == 200, r.text
    return r.json()


def _fire(node: RunningNode, item_id: str, code: str, amount: int = 0) -> None:
    r = node.http.post(f"/v1/link/sandbox/items/{item_id}/webhook",
                       json={"webhook_code": code, "amount": amount})  # fmt: skip
    assert r.status_code == 202, r.text


def _wallet(node: RunningNode, user: dict, account_id: str) -> None:
    body = {"id": account_id, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
    assert node.http.post("/v1/accounts", json=body, headers=user).status_code == 201


def _events(node: RunningNode, user: dict, kind: str) -> list[dict]:
    r = node.http.get("/v1/events", params={"type": kind}, headers=user)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def _checking(item: dict) -> dict:
    return next(b for b in item["bank_accounts"] if b["account_type"] == "checking")


def test_link_exchange_and_pay_from_the_linked_account(node: RunningNode) -> None:
    user_id, alice = _user(node, "alice-link")
    _wallet(node, alice, "alice-link-w")
    before = len(node.http.get("/v1/bank-accounts", headers=alice).json()["bank_accounts"])
    item, public_token = _link(node, alice)

    assert item["status"] == "active" and item["institution_name"] == "First Platypus Bank"
    assert len(item["bank_accounts"]) == 2
    for bank in item["bank_accounts"]:
        assert bank["status"] == "verified" and bank["verification_method"] == "instant"
        assert bank["link_item_id"] == item["id"] and bank["verified_at"]
        assert bank["routing_number"] == ROUTING
        assert bank["bank_name"] == "WELLS FARGO BANK"  # the FedACH directory
    checking = _checking(item)
    assert checking["account_last4"] == "0000" and checking["account_name"] == "Plaid Checking"
    assert checking["balances"]["available"] == 1_000_000
    assert checking["balances"]["current"] == 1_100_000
    text = json.dumps(item)
    assert CHECKING not in text and "access-" not in text  # never the numbers or the token

    # Stored sealed: the account number and the access token are not in the database.
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        sealed = conn.execute("SELECT access_ct FROM link_items WHERE id = %s",
                              (item["id"],)).fetchone()[0]  # fmt: skip
        numbers = conn.execute("SELECT account_ct FROM bank_accounts WHERE link_item_id = %s",
                               (item["id"],)).fetchall()  # fmt: skip
    assert b"access-sandbox" not in bytes(sealed)
    assert all(CHECKING.encode() not in bytes(n[0]) for n in numbers)

    # The same public token again: the same item and bank accounts, nothing new.
    again = node.http.post("/v1/link/exchange", json={"public_token": public_token},
                           headers=alice)  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["id"] == item["id"]
    assert {b["id"] for b in again.json()["bank_accounts"]} == {
        b["id"] for b in item["bank_accounts"]
    }
    mine = node.http.get("/v1/bank-accounts", headers=alice).json()["bank_accounts"]
    assert len(mine) == before + 2
    listed = node.http.get("/v1/link/items", headers=alice).json()["items"]
    assert [i["id"] for i in listed] == [item["id"]]
    assert [e["data"]["bank_link"]["id"] for e in _events(node, alice, "bank_link.created")] == [
        item["id"]
    ]

    # An ACH pull from the linked checking account: a NACHA debit with the bank's numbers.
    pull = {"id": "link-pull-1", "from": checking["id"], "to": "alice-link-w",
            "amount": 12_345, "currency": "USD"}  # fmt: skip
    r = node.http.post("/v1/payments", json=pull, headers=alice)
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    cut = node.http.post("/v1/ach/cutoff")
    assert cut.status_code == 200 and cut.json()["file_id"], cut.text
    parsed = parse_file(node.http.get(f"/v1/ach/files/{cut.json()['file_id']}").text)
    entries = [e for b in parsed.batches for e in b.entries if e.amount == 12_345]
    assert [(e.routing, e.account_number, e.is_credit) for e in entries] == [
        (ROUTING, CHECKING, False)
    ]
    wait_until(
        lambda: node.http.get("/v1/payments/link-pull-1").json()["status"] == "settled",
        what="the pull to settle",
    )
    assert user_id


def test_someone_elses_item_does_not_exist_for_you(node: RunningNode) -> None:
    _, alice = _user(node, "alice-link-own")
    _, bob = _user(node, "bob-link-own")
    item, public_token = _link(node, alice)

    for r in (
        node.http.get(f"/v1/link/items/{item['id']}", headers=bob),
        node.http.delete(f"/v1/link/items/{item['id']}", headers=bob),
        node.http.post(f"/v1/link/items/{item['id']}/balances", headers=bob),
        node.http.post("/v1/link/tokens", json={"item_id": item["id"]}, headers=bob),
    ):
        problem(r, 404, "link_item_not_found")
    assert node.http.get("/v1/link/items", headers=bob).json()["items"] == []
    # Alice's tokens are hers: Bob can neither log in with her link token nor exchange
    # her public token.
    token = node.http.post("/v1/link/tokens", json={}, headers=alice).json()["link_token"]
    problem(node.http.post("/v1/link/sandbox/public-token", headers=bob,
                           json={"link_token": token}), 422, "invalid_link_token")  # fmt: skip
    problem(node.http.post("/v1/link/exchange", json={"public_token": public_token},
                           headers=bob), 422, "invalid_public_token")  # fmt: skip
    # Nor pay with her linked account.
    _wallet(node, bob, "bob-link-own-w")
    pull = {"id": "bob-steal-1", "from": _checking(item)["id"], "to": "bob-link-own-w",
            "amount": 100, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/payments", json=pull, headers=bob).status_code in (403, 404)
    assert _item(node, alice, item["id"])["status"] == "active"


def test_login_required_blocks_payments_until_relinked(node: RunningNode) -> None:
    _, carol = _user(node, "carol-link")
    _wallet(node, carol, "carol-link-w")
    item, _ = _link(node, carol)
    checking = _checking(item)["id"]

    _fire(node, item["id"], "ITEM_LOGIN_REQUIRED")
    wait_until(lambda: _item(node, carol, item["id"])["status"] == "login_required",
               what="the webhook to be acted on")  # fmt: skip
    assert _item(node, carol, item["id"])["error_code"] == "ITEM_LOGIN_REQUIRED"
    (told,) = _events(node, carol, "bank_link.login_required")
    assert told["data"]["bank_link"]["id"] == item["id"]

    pull = {"id": "carol-pull-1", "from": checking, "to": "carol-link-w", "amount": 1_000,
            "currency": "USD"}  # fmt: skip
    problem(node.http.post("/v1/payments", json=pull, headers=carol), 409,
            "bank_link_login_required")  # fmt: skip
    push = {"id": "carol-push-1", "from": "carol-link-w", "to": checking, "amount": 1,
            "currency": "USD"}  # fmt: skip
    problem(node.http.post("/v1/payments", json=push, headers=carol), 409,
            "bank_link_login_required")  # fmt: skip
    problem(node.http.post(f"/v1/link/items/{item['id']}/balances", headers=carol), 409,
            "bank_link_login_required")  # fmt: skip
    assert node.http.get("/v1/payments/carol-pull-1").status_code == 404  # nothing made

    # Re-link (update mode): same item, same bank accounts, usable again.
    r = node.http.post("/v1/link/tokens", json={"item_id": item["id"]}, headers=carol)
    assert r.status_code == 201 and r.json()["mode"] == "update", r.text
    r = node.http.post("/v1/link/sandbox/public-token", headers=carol,
                       json={"link_token": r.json()["link_token"]})  # fmt: skip
    assert r.status_code == 201, r.text
    r = node.http.post("/v1/link/exchange", json={"public_token": r.json()["public_token"]},
                       headers=carol)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["id"] == item["id"] and r.json()["status"] == "active"
    assert {b["id"] for b in r.json()["bank_accounts"]} == {b["id"] for b in item["bank_accounts"]}
    assert r.json()["error_code"] is None
    assert len(_events(node, carol, "bank_link.repaired")) >= 1
    r = node.http.post("/v1/payments", json=pull, headers=carol)
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text


def test_balance_update_webhook_refreshes_balances(node: RunningNode) -> None:
    _, dave = _user(node, "dave-link")
    item, _ = _link(node, dave, "ins_3")
    checking = _checking(item)
    assert checking["balances"] == {"available": 50_000, "current": 75_000, "currency": "USD",
                                    "as_of": checking["balances"]["as_of"]}  # fmt: skip

    _fire(node, item["id"], "DEFAULT_UPDATE", amount=-2_500)
    fresh = wait_until(
        lambda: (
            (b := _checking(_item(node, dave, item["id"]))["balances"])["current"] == 72_500 and b
        ),
        what="the balances to be read again",
    )
    assert fresh["available"] == 47_500
    (told,) = _events(node, dave, "bank_link.balances_updated")
    assert {"mask": "0000", "available": 47_500, "current": 72_500}.items() <= told["data"][
        "bank_link"
    ]["balances"][0].items()
    # On demand too: the same balances, read now.
    r = node.http.post(f"/v1/link/items/{item['id']}/balances", headers=dave)
    assert r.status_code == 200 and _checking(r.json())["balances"]["current"] == 72_500


def test_revoked_consent_and_unlink_close_the_accounts(node: RunningNode) -> None:
    _, erin = _user(node, "erin-link")
    _wallet(node, erin, "erin-link-w")
    revoked, _ = _link(node, erin)
    _fire(node, revoked["id"], "USER_PERMISSION_REVOKED")
    wait_until(lambda: _item(node, erin, revoked["id"])["status"] == "revoked",
               what="the revocation to be acted on")  # fmt: skip
    assert {b["status"] for b in _item(node, erin, revoked["id"])["bank_accounts"]} == {"closed"}
    pull = {"id": "erin-pull-1", "from": _checking(revoked)["id"], "to": "erin-link-w",
            "amount": 100, "currency": "USD"}  # fmt: skip
    problem(node.http.post("/v1/payments", json=pull, headers=erin), 409, "bank_account_closed")
    problem(node.http.post("/v1/link/tokens", json={"item_id": revoked["id"]}, headers=erin), 409,
            "link_item_closed")  # fmt: skip

    unlinked, _ = _link(node, erin, "ins_2")
    r = node.http.delete(f"/v1/link/items/{unlinked['id']}", headers=erin)
    assert r.status_code == 200 and r.json()["status"] == "removed", r.text
    assert {b["status"] for b in r.json()["bank_accounts"]} == {"closed"}
    again = node.http.delete(f"/v1/link/items/{unlinked['id']}", headers=erin)
    assert again.status_code == 200 and again.json() == r.json()
    kinds = {e["type"] for e in _events(node, erin, "bank_link.revoked,bank_link.removed")}
    assert kinds == {"bank_link.revoked", "bank_link.removed"}


def test_bad_input_is_refused_and_changes_nothing(node: RunningNode) -> None:
    _, frank = _user(node, "frank-link")
    item, _ = _link(node, frank)
    items_before = node.http.get("/v1/link/items", headers=frank).json()
    banks_before = node.http.get("/v1/bank-accounts", headers=frank).json()

    post = node.http.post
    problem(post("/v1/link/exchange", json={"public_token": "public-sandbox-nope"},
                 headers=frank), 422, "invalid_public_token")  # fmt: skip
    problem(post("/v1/link/exchange", json={}, headers=frank), 422, "missing_field")
    problem(post("/v1/link/exchange", json={"public_token": "x", "extra": 1}, headers=frank),
            422, "unknown_field")  # fmt: skip
    problem(post("/v1/link/exchange", json={"public_token": "bad token\n"}, headers=frank),
            422, "invalid_field")  # fmt: skip
    problem(post("/v1/link/exchange", content=b"{", headers=frank), 400, "malformed_json")
    token = post("/v1/link/tokens", json={}, headers=frank).json()["link_token"]
    problem(post("/v1/link/sandbox/public-token", headers=frank,
                 json={"link_token": token, "institution_id": "ins_999"}), 422,
            "institution_not_found")  # fmt: skip
    problem(post("/v1/link/sandbox/public-token", headers=frank,
                 json={"link_token": "link-sandbox-unknown"}),
            422, "invalid_link_token")  # fmt: skip
    problem(post("/v1/link/tokens", json={"item_id": "li_nope"}, headers=frank), 404,
            "link_item_not_found")  # fmt: skip
    # The sandbox trigger is the operators'.
    login_required = {"webhook_code": "ITEM_LOGIN_REQUIRED"}
    problem(post(f"/v1/link/sandbox/items/{item['id']}/webhook", headers=frank,
                 json=login_required), 403, "insufficient_scope")  # fmt: skip
    problem(post("/v1/link/sandbox/items/li_nope/webhook", json=login_required), 404,
            "link_item_not_found")  # fmt: skip
    problem(post(f"/v1/link/sandbox/items/{item['id']}/webhook",
                 json={"webhook_code": "NOT_A_CODE"}), 422, "invalid_field")  # fmt: skip
    with node.anonymous() as anon:
        assert anon.post("/v1/link/tokens", json={}).status_code == 401

    # A signed webhook about an item we do not have is accepted and changes nothing; an
    # unsigned one is refused.
    secret = node.settings.providers()["aggsim"]
    body = json.dumps({"id": f"stray-{time.time_ns()}", "type": "ITEM.ERROR",
                       "created": int(time.time()), "data": {
                           "webhook_type": "ITEM", "webhook_code": "ERROR",
                           "item_id": "item-not-ours",
                           "error": {"error_code": "ITEM_LOGIN_REQUIRED"}}}).encode()  # fmt: skip
    with httpx.Client(base_url=node.url, timeout=30) as anon:
        r = anon.post("/v1/webhooks/aggsim", content=body,
                      headers={HEADER: header([secret], body)})  # fmt: skip
        assert r.status_code == 200 and r.json()["handled_by"] == "link.unknown_item", r.text
        bad = anon.post("/v1/webhooks/aggsim", content=body, headers={HEADER: "t=1,v1=00"})
        assert bad.status_code in (400, 401), bad.text

    assert node.http.get("/v1/link/items", headers=frank).json() == items_before
    assert node.http.get("/v1/bank-accounts", headers=frank).json() == banks_before
