"""Handles, wallet payments and refunds, over HTTP against a real node."""

from __future__ import annotations

import concurrent.futures
import secrets

import psycopg

from paynode.benchmarks.receiver import Receiver, serve
from paynode.storage.database import libpq_url
from tests.support.asserts import kyc_verified, problem, signup
from tests.support.node import RunningNode, wait_until
from tests.support.notify import FAST, fingerprint, pushes

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
# Many sign-ups from one address: the auth rate limit is tested elsewhere, on nodes of
# their own.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000, **FAST}


def _user(node: RunningNode, name: str) -> tuple[str, dict[str, str]]:
    """A KYC-verified user: these tests are about the rails, not the risk gate."""
    with node.anonymous() as anon:
        user_id, headers = signup(anon, name)
    kyc_verified(node.http, user_id, headers)
    return user_id, headers


def _account(node: RunningNode, headers: dict, account_id: str) -> None:
    """A wallet: it may not go below zero."""
    body = {"id": account_id, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
    r = node.http.post("/v1/accounts", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _fund(node: RunningNode, source: str, to: str, amount: int) -> None:
    body = {"id": f"fund-{to}", "debit_account_id": source, "credit_account_id": to,
            "amount": amount, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=body).status_code == 201


def _balance(node: RunningNode, account_id: str) -> int:
    return node.http.get(f"/v1/accounts/{account_id}").json()["balance"]


def test_handles_and_payment_by_handle(node: RunningNode) -> None:
    _, alice = _user(node, "alice-p")
    _, bob = _user(node, "bob-p")
    _account(node, alice, "alice-w")
    _account(node, bob, "bob-w")
    node.http.post("/v1/accounts", json={"id": "treasury-p", "currency": "USD"})
    _fund(node, "treasury-p", "alice-w", 10_000)

    r = node.http.post("/v1/handles", json={"handle": "@Bob", "account_id": "bob-w"}, headers=bob)
    assert r.status_code == 201, r.text
    assert r.json()["handle"] == "bob"
    taken = node.http.post("/v1/handles", json={"handle": "BOB", "account_id": "alice-w"},
                           headers=alice)  # fmt: skip
    problem(taken, 409, "handle_taken")
    problem(node.http.post("/v1/handles", json={"handle": "admin", "account_id": "alice-w"},
                           headers=alice), 422, "handle_reserved")  # fmt: skip
    # A handle on someone else's account is refused.
    problem(node.http.post("/v1/handles", json={"handle": "notmine", "account_id": "bob-w"},
                           headers=alice), 403, "forbidden")  # fmt: skip
    assert node.http.get("/v1/handles/@bob", headers=alice).json()["account_id"] == "bob-w"
    problem(node.http.get("/v1/handles/ghost42", headers=alice), 404, "handle_not_found")

    pay = {"id": "pay-h1", "from": "alice-w", "to": "@bob", "amount": 1234, "currency": "USD",
           "memo": "lunch"}  # fmt: skip
    r = node.http.post("/v1/payments", json=pay, headers=alice)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "completed" and body["rail"] == "wallet"
    assert body["credit_account_id"] == "bob-w" and body["transfer_id"] == "pay:pay-h1"
    assert [h["status"] for h in body["history"]] == ["processing", "completed"]
    assert _balance(node, "alice-w") == 10_000 - 1234
    assert _balance(node, "bob-w") == 1234
    # Idempotent on id: the same body again moves nothing; another body is refused.
    again = node.http.post("/v1/payments", json=pay, headers=alice)
    assert again.status_code == 200 and again.json()["id"] == "pay-h1"
    assert _balance(node, "alice-w") == 10_000 - 1234
    problem(node.http.post("/v1/payments", json={**pay, "amount": 1}, headers=alice), 409,
            "exists_with_different_fields")  # fmt: skip
    # Bob cannot pay from alice's wallet; nobody pays more than they have.
    steal = {**pay, "id": "pay-h2", "from": "alice-w", "to": "bob-w"}
    problem(node.http.post("/v1/payments", json=steal, headers=bob), 403, "forbidden")
    big = {**pay, "id": "pay-h3", "amount": 20_000}  # within her limits, above her balance
    failed = node.http.post("/v1/payments", json=big, headers=alice)
    assert failed.status_code == 201 and failed.json()["status"] == "failed"
    assert failed.json()["failure_code"] == "insufficient_funds"
    problem(node.http.post("/v1/payments", json={**pay, "id": "pay-h4", "rail": "ach"},
                           headers=alice), 422, "rail_not_available")  # fmt: skip
    # Both sides see it; a stranger does not.
    assert node.http.get("/v1/payments/pay-h1", headers=bob).status_code == 200
    _, eve = _user(node, "eve-p")
    problem(node.http.get("/v1/payments/pay-h1", headers=eve), 404, "payment_not_found")
    listed = node.http.get("/v1/payments", headers=alice).json()["payments"]
    assert {x["id"] for x in listed} == {"pay-h1", "pay-h3"}
    # Releasing a handle frees the name.
    assert node.http.delete("/v1/handles/bob", headers=bob).status_code == 204
    problem(node.http.get("/v1/handles/bob", headers=alice), 404, "handle_not_found")

    with psycopg.connect(libpq_url(node.database_url)) as conn:
        kinds = [r[0] for r in conn.execute(
            "SELECT type FROM events WHERE subject_id = 'pay-h1' ORDER BY id")]  # fmt: skip
    assert kinds == ["payment.created", "payment.completed"]


def test_refunds_never_exceed_the_payment(node: RunningNode) -> None:
    _, alice = _user(node, "alice-r")
    _, shop = _user(node, "shop-r")
    _account(node, alice, "alice-r1")
    _account(node, shop, "shop-r1")
    node.http.post("/v1/accounts", json={"id": "treasury-r", "currency": "USD"})
    _fund(node, "treasury-r", "alice-r1", 5_000)
    pay = {"id": "buy-1", "from": "alice-r1", "to": "shop-r1", "amount": 1000, "currency": "USD"}
    assert node.http.post("/v1/payments", json=pay, headers=alice).json()["status"] == "completed"

    # Only the payee refunds.
    problem(node.http.post("/v1/payments/buy-1/refunds", json={"id": "rf-0", "amount": 1},
                           headers=alice), 403, "forbidden")  # fmt: skip
    r = node.http.post("/v1/payments/buy-1/refunds", json={"id": "rf-1", "amount": 300},
                       headers=shop)  # fmt: skip
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    again = node.http.post("/v1/payments/buy-1/refunds", json={"id": "rf-1", "amount": 300},
                           headers=shop)  # fmt: skip
    assert again.status_code == 200
    problem(node.http.post("/v1/payments/buy-1/refunds", json={"id": "rf-2", "amount": 701},
                           headers=shop), 422, "refund_exceeds_payment")  # fmt: skip

    # 20 concurrent refunds of 100 against the 700 left: exactly 7 succeed.
    def refund(i: int) -> int:
        return node.http.post("/v1/payments/buy-1/refunds", json={"id": f"rc-{i}", "amount": 100},
                              headers=shop).status_code  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(refund, range(20)))
    assert codes.count(201) == 7 and codes.count(422) == 13, codes
    final = node.http.get("/v1/payments/buy-1", headers=alice).json()
    assert final["refunded_amount"] == 1000
    assert sum(x["amount"] for x in final["refunds"] if x["status"] == "completed") == 1000
    assert _balance(node, "alice-r1") == 5_000
    assert _balance(node, "shop-r1") == 0
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        reversing = conn.execute(
            "SELECT count(*), sum(amount) FROM transfers WHERE id LIKE 'refund:%'"
            " AND debit_account_id = 'shop-r1' AND credit_account_id = 'alice-r1'"
        ).fetchone()
    assert reversing == (8, 1000)  # each refund one reversing transfer


def _endpoint(node: RunningNode, headers: dict, url: str, events: list[str]) -> dict:
    r = node.http.post("/v1/webhook-endpoints", json={"url": url, "events": events},
                       headers=headers)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def test_payment_events_reach_payer_and_payee_by_webhook_and_push(node: RunningNode) -> None:
    """A payment's events go to everyone entitled to see it: the payer, the payee and
    admins' endpoints, by webhook and push alike; a stranger gets none."""
    _, alice = _user(node, "alice-ev")
    _, bob = _user(node, "bob-ev")
    _, eve = _user(node, "eve-ev")
    _account(node, alice, "alice-ev-w")
    _account(node, bob, "bob-ev-w")
    node.http.post("/v1/accounts", json={"id": "treasury-ev", "currency": "USD"})
    _fund(node, "treasury-ev", "alice-ev-w", 5_000)
    token = secrets.token_hex(32)
    device = {"platform": "apns", "token": token, "events": ["payment.completed"]}
    r = node.http.post("/v1/devices", headers=bob, json=device)
    assert r.status_code == 201, r.text
    receivers = {who: Receiver() for who in ("alice", "bob", "eve", "admin")}
    with serve(receivers["alice"]) as a_url, serve(receivers["bob"]) as b_url, \
            serve(receivers["eve"]) as e_url, serve(receivers["admin"]) as adm_url:  # fmt: skip
        endpoints = {
            "alice": _endpoint(node, alice, a_url, ["payment.completed"]),
            "bob": _endpoint(node, bob, b_url, ["payment.completed"]),
            "eve": _endpoint(node, eve, e_url, ["*"]),
            "admin": _endpoint(node, {}, adm_url, ["payment.completed"]),
        }
        for who, ep in endpoints.items():
            receivers[who].secret = ep["secret"]
        pay = {"id": "pay-ev1", "from": "alice-ev-w", "to": "bob-ev-w", "amount": 500,
               "currency": "USD"}  # fmt: skip
        r = node.http.post("/v1/payments", json=pay, headers=alice)
        assert r.status_code == 201 and r.json()["status"] == "completed", r.text

        def completed(who: str) -> list[dict]:
            return [x.body for x in receivers[who].delivered()
                    if x.body["type"] == "payment.completed"
                    and x.body["data"]["payment"]["id"] == "pay-ev1"]  # fmt: skip

        for who in ("alice", "bob", "admin"):
            got = wait_until(lambda who=who: completed(who), what=f"{who}'s payment.completed")
            assert len(got) == 1 and got[0]["data"]["payment"]["amount"] == 500
        event_id = completed("bob")[0]["id"]
        wait_until(lambda: (fingerprint(token), "payment.completed", event_id) in pushes(node),
                   what="bob's push")  # fmt: skip
        # One fan-out pass queues an event for every endpoint at once: eve's queue is final.
        with psycopg.connect(libpq_url(node.database_url)) as conn:
            eves = conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s AND event_id = %s",
                (endpoints["eve"]["id"], event_id),
            )
            assert eves.fetchone() == (0,)
        assert not any(x.body["id"] == event_id for x in receivers["eve"].received)
