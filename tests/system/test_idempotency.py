"""The Idempotency-Key header on POST, over HTTP against a real node and PostgreSQL."""

from __future__ import annotations

import concurrent.futures

import httpx
import psycopg

from paynode.storage.database import libpq_url
from tests.support.asserts import problem, signup
from tests.support.node import RunningNode

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
SHARED_NODE_SETTINGS: dict = {}


def _account(node: RunningNode, account_id: str, **extra) -> None:
    r = node.http.post("/v1/accounts", json={"id": account_id, "currency": "USD", **extra})
    assert r.status_code == 201, r.text


def _transfer(node: RunningNode, key: str | None, tid: str, dr: str, cr: str, amount: int,
              client: httpx.Client | None = None) -> httpx.Response:  # fmt: skip
    body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr, "amount": amount,
            "currency": "USD"}  # fmt: skip
    headers = {"Idempotency-Key": key} if key is not None else {}
    return (client or node.http).post("/v1/transfers", json=body, headers=headers)


def _debited(node: RunningNode, account_id: str) -> int:
    return node.http.get(f"/v1/accounts/{account_id}").json()["debits_posted"]


def test_a_retry_gets_the_first_answer_and_another_request_is_refused(node) -> None:
    _account(node, "ik-a")
    _account(node, "ik-b")
    first = _transfer(node, "key-1", "ik-t1", "ik-a", "ik-b", 100)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = _transfer(node, "key-1", "ik-t1", "ik-a", "ik-b", 100)
    # The stored answer itself: 201 and the same body, where a replay by id alone is 200.
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert _transfer(node, None, "ik-t1", "ik-a", "ik-b", 100).status_code == 200
    # The key with another request: refused, and that request did nothing.
    problem(_transfer(node, "key-1", "ik-t2", "ik-a", "ik-b", 100), 409, "idempotency_key_reused")
    assert node.http.get("/v1/transfers/ik-t2").status_code == 404
    assert _debited(node, "ik-a") == 100
    # A refusal is an answer too: kept, even once the account could pay.
    _account(node, "ik-guard", flags=["debits_must_not_exceed_credits"])
    refused = _transfer(node, "key-2", "ik-t3", "ik-guard", "ik-b", 50)
    problem(refused, 422, "insufficient_funds")
    assert _transfer(node, None, "ik-fund", "ik-a", "ik-guard", 50).status_code == 201
    replayed = _transfer(node, "key-2", "ik-t3", "ik-guard", "ik-b", 50)
    assert (replayed.status_code, replayed.content) == (422, refused.content)
    assert _debited(node, "ik-guard") == 0


def test_keys_belong_to_a_credential(node) -> None:
    _account(node, "ik-c")
    _account(node, "ik-d")
    assert _transfer(node, "shared-key", "ik-c1", "ik-c", "ik-d", 1).status_code == 201
    with node.anonymous() as anon:
        # Without a credential the header is refused, not ignored: nothing registered.
        creds = {"email": "ik-nobody@example.com", "password": "long enough pass"}
        r = anon.post("/v1/auth/register", headers={"Idempotency-Key": "reg-1"}, json=creds)
        problem(r, 400, "idempotency_key_needs_credential")
        assert anon.post("/v1/auth/login", json=creds).status_code == 401
        bad = {"Idempotency-Key": "k", "Authorization": "Bearer nope"}
        assert anon.post("/v1/transfers", headers=bad, json={}).status_code == 401
        _, headers = signup(anon, "ik-user")
    with httpx.Client(base_url=node.url, headers=headers, timeout=30) as user:
        # The same key under another credential is another key: this one runs (and is
        # refused on its own merits: the user owns neither account).
        r = _transfer(node, "shared-key", "ik-c2", "ik-c", "ik-d", 1, client=user)
        assert r.status_code == 403 and "idempotent-replayed" not in r.headers, r.text


def test_invalid_keys_are_refused_and_change_nothing(node) -> None:
    _account(node, "ik-e")
    _account(node, "ik-f")
    for key in ("", "has space", "x" * 256, "tab\there", "caf\u00e9"):
        body = {"id": "ik-e1", "debit_account_id": "ik-e", "credit_account_id": "ik-f",
                "amount": 1, "currency": "USD"}  # fmt: skip
        headers = {"Idempotency-Key": key.encode("utf-8")}
        problem(node.http.post("/v1/transfers", headers=headers, json=body), 400,
                "invalid_idempotency_key")  # fmt: skip
    assert node.http.get("/v1/transfers/ik-e1").status_code == 404
    assert _transfer(node, "x" * 255, "ik-e1", "ik-e", "ik-f", 1).status_code == 201


def test_concurrent_retries_have_one_effect(node) -> None:
    _account(node, "ik-g")
    _account(node, "ik-h")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda _: _transfer(node, "race", "ik-g1", "ik-g", "ik-h", 7), range(16)))  # fmt: skip
    codes = {(r.status_code, r.json().get("code")) for r in answers}
    assert codes <= {(201, None), (409, "idempotency_key_in_use")}, codes
    assert sum(r.status_code == 201 and "idempotent-replayed" not in r.headers
               for r in answers) == 1  # fmt: skip
    assert _debited(node, "ik-g") == 7
    in_use = [r for r in answers if r.status_code == 409]
    assert all(r.headers["retry-after"] == "1" and r.json()["retryable"] for r in in_use)


def test_answers_are_sealed_and_expire_after_a_day(node) -> None:
    """A stored answer may hold a secret shown once (a new API key): sealed at rest."""
    with node.anonymous() as anon:
        _, headers = signup(anon, "ik-minter")
    user = httpx.Client(base_url=node.url, headers=headers, timeout=30)
    body = {"name": "ik-robot", "scopes": ["transfers:read"]}

    def mint() -> httpx.Response:
        return user.post("/v1/api-keys", json=body, headers={"Idempotency-Key": "mint-1"})

    r = mint()
    assert r.status_code == 201, r.text
    secret = r.json()["key"]
    again = mint()
    assert again.json()["key"] == secret and again.json()["id"] == r.json()["id"]
    with psycopg.connect(libpq_url(node.database_url), autocommit=True) as conn:
        (stored,) = conn.execute(
            "SELECT body_ct FROM idempotency_keys WHERE key = 'mint-1'").fetchone()  # fmt: skip
        assert secret.encode() not in bytes(stored) and r.json()["id"].encode() not in bytes(stored)
        # A day later the key is free again: the same key makes a new key.
        conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
                     " WHERE key = 'mint-1'")  # fmt: skip
    later = mint()
    assert later.status_code == 201 and later.json()["id"] != r.json()["id"]
    assert "idempotent-replayed" not in later.headers
    user.close()


def test_the_contract_documents_the_header(node) -> None:
    paths = node.http.get("/openapi.json").json()["paths"]
    for path in ("/v1/transfers", "/v1/transfers/batch", "/v1/payments", "/v1/api-keys"):
        op = paths[path]["post"]
        assert any(x["name"] == "Idempotency-Key" and x["in"] == "header"
                   for x in op["parameters"]), path  # fmt: skip
        assert {"400", "409"} <= set(op["responses"]), path
    public = paths["/v1/auth/register"]["post"]
    assert not any(x["name"] == "Idempotency-Key" for x in public.get("parameters", []))


def test_a_request_refused_before_it_ran_leaves_the_key_free(node) -> None:
    """As Stripe: a malformed body or a missing scope is not an answer to keep."""
    _account(node, "ik-m")
    _account(node, "ik-n")
    headers = {"Idempotency-Key": "fix-me"}
    bad = node.http.post("/v1/transfers", headers=headers, json={"id": "ik-m1"})
    assert bad.status_code == 422, bad.text
    fixed = _transfer(node, "fix-me", "ik-m1", "ik-m", "ik-n", 3)
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers
    assert _transfer(node, "fix-me", "ik-m1", "ik-m", "ik-n", 3).headers["idempotent-replayed"]
