"""Invariants under concurrent HTTP load, and idempotency under concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter

import httpx
import psycopg

from paynode.storage.audit import currency_totals, journal_balances
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_HEADERS

CLIENTS = 200
PER_CLIENT = 8
POOLS = 10


async def _post(http: httpx.AsyncClient, path: str, body: dict) -> httpx.Response:
    """POST, sent again on a dropped connection, as a client must: a keep-alive connection
    the server closes as idle while a request is on its way is lost to both sides (a busy
    machine makes 200 clients wait past uvicorn's 5 s keep-alive). Transfers are idempotent
    by id, so the resent request answers as the first would have (200 for a replay)."""
    for attempt in range(3):
        try:
            return await http.post(path, json=body)
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _setup_accounts(node, n: int) -> list[str]:
    ids = []
    for i in range(n):
        flags = ["debits_must_not_exceed_credits"] if i % 3 else []
        if i == n - 1:
            flags = ["credits_must_not_exceed_debits"]
        r = node.http.post(
            "/v1/accounts", json={"id": f"acc{i}", "currency": "USD", "flags": flags}
        )
        assert r.status_code == 201
        ids.append(f"acc{i}")
    # fund the no-overdraft accounts from the unrestricted ones
    funding = [
        {"id": f"fund{i}", "debit_account_id": "acc0", "credit_account_id": a, "amount": 500,
         "currency": "USD"}
        for i, a in enumerate(ids) if a != "acc0" and a != ids[-1]
    ]  # fmt: skip
    r = node.http.post("/v1/transfers/batch", json={"transfers": funding})
    assert all("status" in x for x in r.json()["results"])
    return ids


def check_invariants(node, accounts_flags: dict[str, list[str]]) -> None:
    memory = node.balances()
    journal = journal_balances(node.database_url)
    assert memory == journal, "in-memory balances differ from the journal aggregate"
    assert set(currency_totals(node.database_url).values()) <= {0}
    for account_id, (dp, cp, dpend, cpend) in memory.items():
        flags = accounts_flags.get(account_id, [])
        if "debits_must_not_exceed_credits" in flags:
            assert dp + dpend <= cp, f"{account_id} overdrawn"
        if "credits_must_not_exceed_debits" in flags:
            assert cp + cpend <= dp, f"{account_id} over its credit limit"
    pend_d = sum(b[2] for b in memory.values())
    pend_c = sum(b[3] for b in memory.values())
    assert pend_d == pend_c


def test_invariants_after_concurrent_load(make_node) -> None:
    node = make_node(shards=3)
    ids = _setup_accounts(node, 24)
    flags = {a: node.http.get(f"/v1/accounts/{a}").json()["flags"] for a in ids}
    rng = random.Random(7)
    plans = []
    for c in range(CLIENTS):
        plan = []
        for k in range(PER_CLIENT):
            dr, cr = rng.sample(ids, 2)
            kind = rng.random()
            body = {"id": f"c{c}-{k}", "debit_account_id": dr, "credit_account_id": cr,
                    "amount": rng.randint(1, 120), "currency": "USD"}  # fmt: skip
            if kind < 0.15:
                body["flags"] = ["pending"]
            plan.append(body)
        plans.append(plan)

    acked: list[str] = []
    codes: Counter[str] = Counter()

    async def client(plan: list[dict], http: httpx.AsyncClient) -> None:
        for body in plan:
            r = await _post(http, "/v1/transfers", body)
            assert r.status_code < 500, r.text
            if r.status_code in (200, 201):
                acked.append(body["id"])
                if body.get("flags") == ["pending"] and body["amount"] % 2:
                    # resolve half the pendings: post odd amounts, leave the rest open
                    p = await _post(http, "/v1/transfers", {
                        "id": body["id"] + "-post", "pending_id": body["id"],
                        "flags": ["post_pending"]})  # fmt: skip
                    assert p.status_code in (200, 201), p.text  # 200: a resent replay
                    acked.append(body["id"] + "-post")
            else:
                codes[r.json()["code"]] += 1

    async def chains(http: httpx.AsyncClient) -> None:
        # cross-shard linked chains in batches, racing with the single transfers
        for n in range(20):
            a, b, c = rng.sample(ids, 3)
            batch = [
                {"id": f"ch{n}-1", "debit_account_id": a, "credit_account_id": b, "amount": 7,
                 "currency": "USD", "flags": ["linked"]},
                {"id": f"ch{n}-2", "debit_account_id": b, "credit_account_id": c, "amount": 7,
                 "currency": "USD"},
            ]  # fmt: skip
            r = await _post(http, "/v1/transfers/batch", {"transfers": batch})
            assert r.status_code == 200
            results = r.json()["results"]
            ok = ["status" in x for x in results]
            assert ok in ([True, True], [False, False]), results
            if all(ok):
                acked.extend(x["id"] for x in results)

    async def main() -> None:
        # Several small pools: httpcore looks at every connection of a pool on each
        # request, so one pool of 200 spent more CPU in the client than the node did.
        per_pool = CLIENTS // POOLS
        async with contextlib.AsyncExitStack() as stack:
            pools = [
                await stack.enter_async_context(httpx.AsyncClient(
                    base_url=node.url, timeout=60, headers=ADMIN_HEADERS,
                    limits=httpx.Limits(max_connections=per_pool + 1),
                ))
                for _ in range(POOLS)
            ]  # fmt: skip
            await asyncio.gather(*(client(p, pools[c % POOLS]) for c, p in enumerate(plans)),
                                 chains(pools[0]))  # fmt: skip

    asyncio.run(main())
    assert len(acked) > CLIENTS * PER_CLIENT // 2
    assert set(codes) <= {"insufficient_funds", "credits_exceed_debits"}, codes
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
    assert set(acked) <= journaled
    check_invariants(node, flags)


def test_same_id_fifty_times_at_once_has_one_effect(make_node) -> None:
    node = make_node(shards=2)
    for a in ("x", "y"):
        assert node.http.post("/v1/accounts", json={"id": a, "currency": "EUR"}).status_code == 201
    body = {"id": "once", "debit_account_id": "x", "credit_account_id": "y", "amount": 42,
            "currency": "EUR"}  # fmt: skip
    chain = [
        {"id": "once-a", "debit_account_id": "y", "credit_account_id": "x", "amount": 5,
         "currency": "EUR", "flags": ["linked"]},
        {"id": "once-b", "debit_account_id": "x", "credit_account_id": "y", "amount": 3,
         "currency": "EUR"},
    ]  # fmt: skip

    async def main() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=node.url, timeout=60, headers=ADMIN_HEADERS) as http:
            singles = [http.post("/v1/transfers", json=body) for _ in range(50)]
            batches = [
                http.post("/v1/transfers/batch", json={"transfers": chain}) for _ in range(50)
            ]
            return list(await asyncio.gather(*singles)), list(await asyncio.gather(*batches))

    singles, batches = asyncio.run(main())
    statuses = Counter(r.status_code for r in singles)
    assert statuses[201] == 1 and statuses[201] + statuses[200] + statuses[409] == 50, statuses
    for r in singles:
        if r.status_code == 409:  # a replay racing the two-phase decision: retryable
            assert r.json()["code"] == "transfer_in_flight"
        else:
            assert r.json()["amount"] == 42
    for r in batches:
        results = r.json()["results"]
        assert all("status" in x or x["code"] in ("transfer_in_flight", "linked_event_failed")
                   for x in results), results  # fmt: skip
    # Identical two-phase chains racing may all be refused as in flight (retryable);
    # a retry settles it, and it must then be a single effect.
    final = node.http.post("/v1/transfers/batch", json={"transfers": chain}).json()["results"]
    assert all("status" in x for x in final), final
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        n = conn.execute(
            "SELECT count(*) FROM transfers WHERE id IN ('once', 'once-a', 'once-b')"
        ).fetchone()[0]
    assert n == 3
    x = node.http.get("/v1/accounts/x").json()
    assert (x["debits_posted"], x["credits_posted"]) == (42 + 3, 5)
    assert node.balances() == journal_balances(node.database_url)
