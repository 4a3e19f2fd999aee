"""Balance monitors over HTTP: evaluated by the account's shard, one event per change."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.support.asserts import problem, signup
from tests.support.node import RunningNode, wait_until

SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000}


def _user(node: RunningNode, name: str) -> httpx.Client:
    with node.anonymous() as anon:
        _, headers = signup(anon, name)
    return httpx.Client(base_url=node.url, headers=headers, timeout=30)


def _move(http: httpx.Client, tid: str, dr: str, cr: str, amount: int) -> None:
    body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr, "amount": amount,
            "currency": "USD"}  # fmt: skip
    r = http.post("/v1/transfers", json=body)
    assert r.status_code == 201, r.text


def _events(client: httpx.Client, monitor_id: str) -> list[tuple[str, int]]:
    """(type, balance) of the monitor's events, oldest first."""
    got = []
    for kind in ("balance.threshold_crossed", "balance.threshold_cleared"):
        r = client.get("/v1/events", params={"type": kind, "limit": 1000})
        assert r.status_code == 200, r.text
        got += [(e["id"], e["type"], e["data"]["balance"]) for e in r.json()["events"]
                if e["data"]["monitor"]["id"] == monitor_id]  # fmt: skip
    return [(t, b) for _, t, b in sorted(got)]


def _state(client: httpx.Client, monitor_id: str) -> str:
    return client.get(f"/v1/balance-monitors/{monitor_id}").json()["state"]


def test_one_event_per_crossing_under_concurrent_transfers(node) -> None:
    alice = _user(node, "mon-alice")
    bob = _user(node, "mon-bob")
    for client, account in ((alice, "mon-a"), (bob, "mon-b")):
        r = client.post("/v1/accounts", json={"id": account, "currency": "USD"})
        assert r.status_code == 201, r.text
    node.http.post("/v1/accounts", json={"id": "mon-bank", "currency": "USD"})
    _move(node.http, "mon-fund", "mon-bank", "mon-a", 10_000)

    body = {"account_id": "mon-a", "condition": "balance_below", "threshold": 5_000}
    problem(bob.post("/v1/balance-monitors", json=body), 403, "forbidden")
    r = alice.post("/v1/balance-monitors", json=body)
    assert r.status_code == 201, r.text
    low = r.json()
    assert low["state"] in ("unknown", "clear")
    wait_until(lambda: _state(alice, low["id"]) == "clear", what="the first evaluation")
    assert _events(alice, low["id"]) == []  # the first state is no change

    # Twenty transfers of 5.00 at once take it from 100.00 to 0: one crossing, not twenty.
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: _move(node.http, f"mon-t{i}", "mon-a", "mon-b", 500), range(20)))
    wait_until(lambda: _state(alice, low["id"]) == "crossed", what="the crossing")
    _move(node.http, "mon-more", "mon-a", "mon-b", 1)  # still below: nothing new
    _move(node.http, "mon-back", "mon-bank", "mon-a", 8_000)  # 79.99: clear again
    wait_until(lambda: _state(alice, low["id"]) == "clear", what="the clearing")
    events = _events(alice, low["id"])
    assert [t for t, _ in events] == ["balance.threshold_crossed", "balance.threshold_cleared"]
    assert events[0][1] < 5_000 and events[1][1] == 7_999
    # The payer's events only: bob sees none of alice's monitor.
    assert _events(bob, low["id"]) == []
    problem(bob.get(f"/v1/balance-monitors/{low['id']}"), 404, "monitor_not_found")
    assert [m["id"] for m in alice.get("/v1/balance-monitors").json()["monitors"]] == [low["id"]]

    # Deleted: no more events for it.
    assert alice.delete(f"/v1/balance-monitors/{low['id']}").status_code == 204
    problem(alice.get(f"/v1/balance-monitors/{low['id']}"), 404, "monitor_not_found")
    _move(node.http, "mon-drain", "mon-a", "mon-b", 7_999)
    watch = {"account_id": "mon-a", "condition": "available_at_least", "threshold": 1}
    marker = alice.post("/v1/balance-monitors", json=watch).json()
    wait_until(lambda: _state(alice, marker["id"]) == "clear", what="a later evaluation")
    assert len(_events(alice, low["id"])) == 2
    alice.close()
    bob.close()


def test_a_rebuilt_shard_neither_repeats_nor_loses_a_change(node) -> None:
    import ray

    carol = _user(node, "mon-carol")
    r = carol.post("/v1/accounts", json={"id": "mon-c", "currency": "USD"})
    assert r.status_code == 201, r.text
    node.http.post("/v1/accounts", json={"id": "mon-bank2", "currency": "USD"})
    body = {"account_id": "mon-c", "condition": "balance_at_least", "threshold": 100}
    m = carol.post("/v1/balance-monitors", json=body).json()
    wait_until(lambda: _state(carol, m["id"]) == "clear", what="the first evaluation")
    _move(node.http, "mon-c1", "mon-bank2", "mon-c", 150)
    wait_until(lambda: _state(carol, m["id"]) == "crossed", what="the crossing")
    # Every shard re-reads the journal and its monitors: the recorded state matches the
    # rebuilt balance, so nothing is emitted again.
    ray.get([s.resync.remote() for s in node.shards], timeout=60)
    _move(node.http, "mon-c2", "mon-bank2", "mon-c", 1)
    _move(node.http, "mon-c3", "mon-c", "mon-bank2", 200)  # 51: clear
    wait_until(lambda: _state(carol, m["id"]) == "clear", what="the clearing after a rebuild")
    assert [t for t, _ in _events(carol, m["id"])] == [
        "balance.threshold_crossed", "balance.threshold_cleared"]  # fmt: skip
    carol.close()
