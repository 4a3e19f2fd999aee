"""``paynode bench --mode risk``: what the risk gate adds to a payment, A/B in one run.

The same wallet payments (1 minor unit each, to a payee already paid, so every
decision is LOW and nothing steps up) are made twice over HTTP for the same
duration and concurrency:

* **gated**: each client is a KYC-verified user with its own access token, so
  every payment is screened (results cached), locked per user, read, limited
  and scored before it moves money;
* **baseline**: the same payments made with the operator key, which the gate
  does not apply to (``api.risk_gate.gated``).

It reports both throughputs and latency quantiles, and the gate's own time per
payment as the node measures it: the whole gate (``paynode_risk_decision_seconds``:
the usage statement, the limits and the score) and the score alone
(``paynode_risk_score_seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Sequence

import aiohttp

from paynode.benchmarks import drivers
from paynode.benchmarks.workload import Workload

PASSWORD = "a long enough passphrase"


def _q(values: list[float], f: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(f * len(s)))] * 1000, 3) if s else 0.0


async def _check(r: aiohttp.ClientResponse, *ok: int) -> dict:
    body = await r.json(content_type=None)
    if r.status not in ok:
        raise RuntimeError(f"{r.method} {r.url.path}: {r.status} {body}")
    return body


async def _user(s: aiohttp.ClientSession, url: str, i: int, tag: str) -> tuple[str, dict]:
    creds = {"email": f"risk-{tag}-{i}@example.com", "password": PASSWORD}
    uid = (await _check(await s.post(f"{url}/v1/auth/register", json=creds), 201))["user_id"]
    token = (await _check(await s.post(f"{url}/v1/auth/login", json=creds), 200))["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    kyc = {"id_type": "ssn", "id_number": "123456789"}
    await _check(await s.post(f"{url}/v1/users/{uid}/kyc", json=kyc, headers=auth), 200)
    await _check(await s.post(f"{url}/v1/users/{uid}/kyc/review",
                              json={"decision": "verified"}), 200)  # fmt: skip
    wallet = f"risk-{tag}-w{i}"
    await _check(
        await s.post(
            f"{url}/v1/accounts",
            headers=auth,
            json={"id": wallet, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]},
        ),
        201,
    )
    await _check(
        await s.post(
            f"{url}/v1/transfers",
            json={
                "id": f"risk-{tag}-fund{i}",
                "debit_account_id": f"risk-{tag}-treasury",
                "credit_account_id": wallet,
                "amount": 10_000_000,
                "currency": "USD",
            },
        ),
        201,
    )
    return wallet, auth


async def _phase(
    s: aiohttp.ClientSession, url: str, clients: Sequence[tuple[str, dict | None]], payee: str,
    duration: float, prefix: str,
) -> dict:  # fmt: skip
    latencies: list[float] = []
    errors: dict[str, int] = {}
    completed = 0
    deadline = time.perf_counter() + duration

    async def client(n: int, wallet: str, auth: dict | None) -> None:
        i = 0
        while time.perf_counter() < deadline:
            body = {"id": f"{prefix}-{n}-{i}", "from": wallet, "to": payee, "amount": 1,
                    "currency": "USD"}  # fmt: skip
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/payments", json=body, headers=auth or {}) as r:
                got = await r.json(content_type=None)
            latencies.append(time.perf_counter() - t0)
            nonlocal completed
            completed += r.status == 201 and got.get("status") == "completed"
            if r.status != 201 or got.get("status") != "completed":
                key = f"{r.status}:{got.get('code') or got.get('status')}"
                errors[key] = errors.get(key, 0) + 1
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n, w, a) for n, (w, a) in enumerate(clients)))
    elapsed = time.perf_counter() - t0
    return {"payments": len(latencies), "per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": _q(latencies, 0.5), "p99_ms": _q(latencies, 0.99),
            "errors": errors, "completed": completed}  # fmt: skip


def _summary(text: str, name: str) -> dict:
    """p50/p99 (ms) and count of a summary in the node's /metrics text."""
    out: dict = {}
    for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
        m = re.search(rf'{name}{{quantile="{q}"}} (\S+)', text)
        out[key] = round(float(m.group(1)) * 1000, 4) if m else None
    m = re.search(rf"{name}_count (\d+)", text)
    out["samples"] = int(m.group(1)) if m else 0
    return out


async def _gate_quantiles(s: aiohttp.ClientSession, url: str) -> dict:
    text = await (await s.get(f"{url}/metrics")).text()
    return {"gate": _summary(text, "paynode_risk_decision_seconds"),
            "score": _summary(text, "paynode_risk_score_seconds")}  # fmt: skip


async def _main(url: str, concurrency: int, duration: float) -> dict:
    tag = hex(time.time_ns())[-8:]
    async with drivers.session(concurrency) as s:
        await _check(
            await s.post(
                f"{url}/v1/accounts", json={"id": f"risk-{tag}-treasury", "currency": "USD"}
            ),
            201,
        )
        payee = f"risk-{tag}-payee"
        await _check(await s.post(f"{url}/v1/accounts", json={"id": payee, "currency": "USD"}),
                     201)  # fmt: skip
        print(f"risk: {concurrency} verified users ...", flush=True)
        users = [await _user(s, url, i, tag) for i in range(concurrency)]
        # One payment each first: the payee is then known (no new_payee points).
        warm = await _phase(s, url, users, payee, 0.5, f"risk-{tag}-warm")
        print(f"risk: gated, {concurrency} users for {duration:.0f}s ...", flush=True)
        gated = await _phase(s, url, users, payee, duration, f"risk-{tag}-g")
        gate = await _gate_quantiles(s, url)
        print(f"risk: baseline (operator key, not gated) for {duration:.0f}s ...", flush=True)
        base = await _phase(s, url, [(w, None) for w, _ in users], payee, duration,
                            f"risk-{tag}-b")  # fmt: skip
        got = await _check(await s.get(f"{url}/v1/accounts/{payee}"), 200)
    paid = warm["completed"] + gated["completed"] + base["completed"]
    problems = [] if got["credits_posted"] == paid else [
        f"payee credited {got['credits_posted']}, {paid} payments completed"]  # fmt: skip
    return {
        "problems": problems,"gated": gated, "baseline": base, "gate_in_node": gate,
            "added_p50_ms": round(gated["p50_ms"] - base["p50_ms"], 3),
            "added_p99_ms": round(gated["p99_ms"] - base["p99_ms"], 3)}  # fmt: skip


def run(args: argparse.Namespace, w: Workload, target, report: dict) -> bool:
    assert target.url is not None
    result = asyncio.run(_main(target.url, args.concurrency, args.duration))
    report["risk"] = result
    problems = list(result["problems"])
    if target.database_url:
        from paynode.storage.audit_log import verify_database

        chain = verify_database(target.database_url)
        if chain.first_broken_seq is not None:
            problems.append(f"audit chain broken at seq {chain.first_broken_seq}")
        print(f"audit log: {chain.records} records, chain "
              f"{'intact' if chain.first_broken_seq is None else 'BROKEN'}")  # fmt: skip
    # Every completed payment 1 minor unit to one payee: its balance counts them.
    report["audit"] = {"accounts": 1, "journal_checked": bool(target.database_url),
                       "problems": problems}  # fmt: skip
    g, b = result["gated"], result["baseline"]
    gate, score = result["gate_in_node"]["gate"], result["gate_in_node"]["score"]
    print(
        f"gated:    {g['per_s']:>8} payments/s  p50 {g['p50_ms']} ms  p99 {g['p99_ms']} ms"
        f"  errors {g['errors']}"
    )
    print(
        f"baseline: {b['per_s']:>8} payments/s  p50 {b['p50_ms']} ms  p99 {b['p99_ms']} ms"
        f"  errors {b['errors']}"
    )
    print(
        f"gate inside the node (usage read + limits + score): p50 {gate['p50_ms']} ms"
        f"  p99 {gate['p99_ms']} ms  ({gate['samples']} decisions)"
    )
    print(f"score alone: p50 {score['p50_ms']} ms  p99 {score['p99_ms']} ms")
    print(
        f"added by the gate, end to end: p50 {result['added_p50_ms']} ms"
        f"  p99 {result['added_p99_ms']} ms"
    )
    return not g["errors"] and not b["errors"] and not problems
