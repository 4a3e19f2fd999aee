"""A decider of a cross-shard group dies between its prepare and the group's commit.

Its reservation was in memory. The test kills it exactly in that window (a hook
between prepare and commit), then, while the group waits, spends the reserved money
on the restarted shard. Exactly one of the two may happen: the group commits and the
spend is refused, or the spend applies and the group is refused; never both (an
overdraft of a ``debits_must_not_exceed_credits`` account) and never neither.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import httpx
import pytest

from paynode.api import two_phase
from paynode.domain.ledger.model import shard_key
from paynode.storage.audit import journal_balances
from tests.support.fault_load import memory_vs_journal

ROUNDS = 6
FUNDS = 100


def _account_on(node, shard: int, name: str, flags: tuple[str, ...] = ()) -> str:
    account_id = next(
        a for a in (f"{name}{i}" for i in itertools.count()) if shard_key(a) % 2 == shard
    )
    r = node.http.post("/v1/accounts", json={"id": account_id, "currency": "USD",
                                             "flags": list(flags)})  # fmt: skip
    assert r.status_code == 201, r.text
    return account_id


def _move(tid: str, debit: str, credit: str, amount: int, linked: bool = False) -> dict:
    return {"id": tid, "debit_account_id": debit, "credit_account_id": credit, "amount": amount,
            "currency": "USD", "flags": ["linked"] if linked else []}  # fmt: skip


@pytest.mark.timeout(300)
def test_a_decider_killed_between_prepare_and_commit_never_overdraws(make_node) -> None:
    node = make_node(shards=2)
    pids = {}
    for handle in node.shards:
        import ray

        index, _, pid = ray.get(handle.identity.remote())
        pids[index] = pid
    source = _account_on(node, 0, "src")  # no limit: funds everything
    sink = _account_on(node, 0, "sink")
    accounts = [source, sink]
    overdrafts = both = neither = 0
    outcomes = []
    for round_ in range(ROUNDS):
        # The constrained account lives on shard 1: a decider, not the primary (shard 0).
        spender = _account_on(node, 1, f"r{round_}a", ("debits_must_not_exceed_credits",))
        payee = _account_on(node, 1, f"r{round_}b")
        accounts += [spender, payee]
        fund = node.http.post("/v1/transfers", json=_move(f"fund{round_}", source, spender, FUNDS))
        assert fund.status_code == 201, fund.text
        spend = _move(f"spend{round_}", spender, payee, FUNDS)
        spent: dict[str, int] = {}

        async def in_the_window(group, round_=round_, spend=spend, spent=spent) -> None:
            two_phase.between_prepare_and_commit = None  # this round's group only
            victim = pids[1]
            os.kill(victim, signal.SIGKILL)
            # The restarted shard 1 is asked to spend what its last incarnation reserved.
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=node.url, headers=node.http.headers,
                                         timeout=30) as http:  # fmt: skip
                while time.monotonic() < deadline:
                    r = await http.post("/v1/transfers", json=spend)
                    if r.status_code != 503:
                        spent["status"] = r.status_code
                        return
                    await asyncio.sleep(0.1)
            raise AssertionError("the restarted shard never answered")

        two_phase.between_prepare_and_commit = in_the_window
        chain = [
            _move(f"c{round_}a", source, sink, 1, linked=True),  # debit on shard 0: primary
            _move(f"c{round_}b", spender, payee, FUNDS),  # debit on shard 1: the victim
        ]
        try:
            r = node.http.post("/v1/transfers/batch", json={"transfers": chain}, timeout=120)
        finally:
            two_phase.between_prepare_and_commit = None
        assert r.status_code == 200, r.text
        chain_ok = all(x.get("status") == "posted" for x in r.json()["results"])
        spend_ok = spent.get("status") == 201
        both += chain_ok and spend_ok
        neither += not chain_ok and not spend_ok
        outcomes.append((chain_ok, spend_ok, r.json()["results"][1]))
        if not chain_ok:
            # Its client retries the refused chain (503, retryable) with the same ids: the
            # money is spent now, so it is refused for funds; nothing applies twice.
            # (Until the shards answer: the restart makes its peers re-read the journal.)
            deadline = time.monotonic() + 60
            while True:
                again = node.http.post("/v1/transfers/batch", json={"transfers": chain})
                codes = {x.get("code") for x in again.json()["results"]}
                if "storage_unavailable" not in codes or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert again.json()["results"][1] == {
                "id": f"c{round_}b",
                "code": "insufficient_funds",
            }, again.text
        # Whatever the answers, the journal must hold no overdraft.
        balances = journal_balances(node.database_url)
        debits, credits = balances[spender][0], balances[spender][1]
        overdrafts += debits > credits
        for p_index, handle in enumerate(node.shards):
            pids[p_index] = ray.get(handle.identity.remote())[2]
    print(f"\ntwo-phase window: {ROUNDS} rounds, overdrafts {overdrafts}, both {both}, "
          f"neither {neither}; outcomes {outcomes}")  # fmt: skip
    assert overdrafts == 0 and both == 0
    assert not memory_vs_journal(node.http, journal_balances(node.database_url), accounts)
