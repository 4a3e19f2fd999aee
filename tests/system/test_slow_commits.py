"""Slow commits (a slow disk): the node pushes back instead of growing memory.

PostgreSQL itself is made slow: a statement-level trigger on the journal table
sleeps in every shard commit (``COPY transfers`` fires it once per group
commit), so the node's own code runs unchanged against a journal that takes
``SLOW_COMMIT_S`` per transaction. The node runs as the real ``paynode run``
process tree on the test's database, with small queue limits, while clients
offer many times what it can commit. The test checks that the node refuses
(503/429) rather than queueing without bound, that every acknowledged transfer
is journaled and no refused one is, that the memory of the processes holding
the queues stays within a fixed bound of their idle size, and that the node
serves normally once the trigger is dropped. Run with ``-s`` for the figures.

A second test drives cross-shard linked chains (two-phase) into full queues under
slow commits: a chain refused after its prepare must leave no reservation behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import psutil
import psycopg
import pytest

from paynode.benchmarks.node_process import NodeProcess, PeakRss, total_rss
from paynode.storage.audit import currency_totals, journal_balances
from paynode.storage.database import libpq_url
from tests.support.fault_load import memory_vs_journal
from tests.support.node import ADMIN_HEADERS, ADMIN_KEY, wait_until

pytestmark = pytest.mark.slow

SLOW_COMMIT_S = 0.5  # per journal transaction, whatever its size
ACCOUNTS = [f"s{i}" for i in range(8)]  # no balance limits: overload is the only refusal
BATCH = 400  # transfers per batch request, about half per shard
BATCH_CLIENTS = 12
SINGLE_CLIENTS = 4
QUEUE_LIMIT = 1_000  # transfers queued per shard in the front
MAX_ITEMS = 200  # transfers per shard call
MAX_INFLIGHT = 2  # shard calls in flight per shard
REQUEST_TIMEOUT_S = 4.0
LIMITS = {
    "PAYNODE_QUEUE_LIMIT": str(QUEUE_LIMIT),
    "PAYNODE_BATCH_MAX_ITEMS": str(MAX_ITEMS),
    "PAYNODE_BATCH_MAX_INFLIGHT": str(MAX_INFLIGHT),
    "PAYNODE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
}
# Growth allowed above idle RSS for the processes that hold the queues (the front and
# the shard workers). What the limits let them hold is small: per shard 1,000 queued and
# 2 x 200 in flight transfers (under 500 bytes each decoded), plus the 16 requests in
# flight (400 transfers, ~40 KB of JSON, ~300 KB each while being decoded): under
# 10 MiB in all. The rest is what CPython does under load on a 2-core machine
# (allocator arenas kept after a burst, JSON/msgpack buffers, uvicorn's and Ray's
# per-call buffers): +11..19 MiB measured over eight runs, some on a machine busy with
# other test runs. 64 MiB is over three times that. The load runs until a node that
# kept what it was offered, even only as decoded request bodies, would need twice it.
NODE_BOUND = 64 * 2**20
# The whole tree adds Ray's daemons and the helper actors (analytics and the reconciler
# read the journal rows that do commit): +20..84 MiB measured; same margin.
TREE_BOUND = 256 * 2**20
OVERLOAD_MIN_S, OVERLOAD_MAX_S = 8.0, 45.0


@contextlib.contextmanager
def slow_commits(database_url: str, seconds: float) -> Iterator[None]:
    """Every transaction that writes journal rows spends ``seconds`` inside PostgreSQL.

    An AFTER ... FOR EACH STATEMENT trigger fires once per ``COPY transfers``, i.e.
    once per shard group commit, while the transaction is open: to the node this is
    a commit that takes ``seconds`` longer, as with a slow disk. Dropped on exit.
    """
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER test_slow_commit AFTER INSERT ON transfers"
            " FOR EACH STATEMENT EXECUTE FUNCTION test_slow_commit()"
        )
    try:
        yield
    finally:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS test_slow_commit ON transfers")
            conn.execute("DROP FUNCTION IF EXISTS test_slow_commit()")


def _transfer(tid: str, i: int) -> dict:
    return {"id": tid, "debit_account_id": ACCOUNTS[i % 8],
            "credit_account_id": ACCOUNTS[(i + 1 + i // 8 % 7) % 8],
            "amount": 1 + i % 7, "currency": "USD"}  # fmt: skip


@dataclass
class Tally:
    """What the clients were told, per transfer and per request."""

    acked: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # id -> code: nothing applied
    unknown: dict[str, dict] = field(default_factory=dict)  # 503 timeout: retry with the id
    answers: Counter = field(default_factory=Counter)  # (route, status, code)
    latency: dict[str, list[float]] = field(default_factory=dict)  # by outcome
    offered: int = 0  # transfers sent
    offered_bytes: int = 0
    unexpected: list[str] = field(default_factory=list)

    def answer(self, kind: str, seconds: float) -> None:
        self.latency.setdefault(kind, []).append(seconds)


NO_EFFECT = {"overloaded", "rate_limited", "storage_unavailable"}  # codes that applied nothing
UNKNOWN = {"timeout", "shard_restarted"}  # codes whose outcome the journal decides


def _classify(tally: Tally, bodies: list[dict], r: httpx.Response, seconds: float) -> None:
    route = "batch" if len(bodies) > 1 else "single"
    if r.status_code in (503, 429):
        code = r.json().get("code", "")
        tally.answers[(route, r.status_code, code)] += 1
        if code in NO_EFFECT:
            tally.refused.update((b["id"], code) for b in bodies)
            tally.answer("refused", seconds)
        elif code in UNKNOWN:
            tally.unknown.update((b["id"], b) for b in bodies)
            tally.answer("timeout", seconds)
        else:
            tally.unexpected.append(f"{route} {r.status_code} {r.text[:200]}")
        return
    if route == "single" and r.status_code in (200, 201):
        tally.answers[(route, r.status_code, "")] += 1
        tally.acked.add(bodies[0]["id"])
        tally.answer("accepted", seconds)
        return
    if route == "batch" and r.status_code == 200:
        codes = {x.get("code") or "" for x in r.json()["results"]}
        tally.answers[(route, 200, ",".join(sorted(codes)))] += 1
        for x in r.json()["results"]:
            if x.get("code") in NO_EFFECT:
                tally.refused[x["id"]] = x["code"]
            elif not x.get("code") and x.get("status") == "posted":
                tally.acked.add(x["id"])
            else:
                tally.unexpected.append(f"batch result {x}")
        tally.answer("accepted" if codes == {""} else "refused", seconds)
        return
    tally.unexpected.append(f"{route} {r.status_code} {r.text[:200]}")


def decoded_bytes_per_transfer() -> float:
    """Memory one offered transfer takes in a process that keeps it as a decoded body."""
    from paynode.api.schemas import TransferBatchIn

    raw = json.dumps({"transfers": [_transfer(f"b0-{i}", i) for i in range(BATCH)]}).encode()
    tracemalloc.start()
    try:
        kept = [msgspec.json.decode(raw, type=TransferBatchIn) for _ in range(20)]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(kept) == 20
    return size / (20 * BATCH)


async def _overload(
    url: str, tally: Tally, enough: Callable[[], bool], peaks: dict[str, int]
) -> None:
    """Clients send as fast as they are answered, from OVERLOAD_MIN_S until ``enough()``."""
    stop = asyncio.Event()

    async def control() -> None:
        start = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= OVERLOAD_MAX_S or (elapsed >= OVERLOAD_MIN_S and enough()):
                stop.set()
            await asyncio.sleep(0.1)  # a polling interval

    async def post(http: httpx.AsyncClient, path: str, bodies: list[dict], payload) -> None:
        content = json.dumps(payload).encode()
        tally.offered += len(bodies)
        tally.offered_bytes += len(content)
        t0 = time.perf_counter()
        try:
            r = await http.post(path, content=content)
        except httpx.HTTPError as e:  # the node never drops a request: no answer is a failure
            tally.unexpected.append(f"{path}: {type(e).__name__}")
            return
        _classify(tally, bodies, r, time.perf_counter() - t0)

    async def batches(c: int, http: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            bodies = [_transfer(f"b{c}-{n + i}", c + n + i) for i in range(BATCH)]
            n += BATCH
            await post(http, "/v1/transfers/batch", bodies, {"transfers": bodies})

    async def singles(c: int, http: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            body = _transfer(f"t{c}-{n}", c + n)
            n += 1
            await post(http, "/v1/transfers", [body], body)

    async def queues(http: httpx.AsyncClient) -> None:
        """The node's own gauges: how deep its queues got (sampled twice a second)."""
        while not stop.is_set():
            for name, value in queue_gauges((await http.get("/metrics")).text).items():
                peaks[name] = max(peaks.get(name, 0), value)
            await asyncio.sleep(0.5)  # a sampling interval, not a wait for a condition

    headers = {**ADMIN_HEADERS, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=BATCH_CLIENTS + SINGLE_CLIENTS + 1)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=headers) as http:
        await asyncio.gather(
            *(batches(c, http) for c in range(BATCH_CLIENTS)),
            *(singles(c, http) for c in range(SINGLE_CLIENTS)),
            queues(http),
            control(),
        )


_QUEUE_GAUGE = re.compile(
    r'^(paynode_front_queue_depth|paynode_shard_commit_queue_rows)\{shard="\d+"\} ([0-9.e+]+)$',
    re.M,
)


def queue_gauges(metrics: str) -> dict[str, int]:
    """The deepest front queue and shard commit queue in a /metrics page."""
    out: dict[str, int] = {}
    for name, value in _QUEUE_GAUGE.findall(metrics):
        out[name] = max(out.get(name, 0), int(float(value)))
    return out


def _percentiles(xs: list[float]) -> str:
    if not xs:
        return "-"
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else xs * 99
    return f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms (n={len(xs)})"


def _name(p: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return p.name()
    return ""  # gone meanwhile


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def test_slow_commits_refuse_and_memory_stays_bounded(tmp_path: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= LIMITS | {"DATABASE_URL": database_url, "PAYNODE_API_KEY": ADMIN_KEY}
    node = NodeProcess(tmp_path / "node", shards=2, env=env)
    node.start()
    http = httpx.Client(base_url=node.url, timeout=30, headers=ADMIN_HEADERS)
    try:
        for a in ACCOUNTS:
            assert http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201
        # Warm up every path the load takes, at full speed, before measuring "idle".
        warm = [_transfer(f"w{i}", i) for i in range(BATCH)]
        r = http.post("/v1/transfers/batch", json={"transfers": warm})
        assert {x.get("status") for x in r.json()["results"]} == {"posted"}, r.text
        assert http.post("/v1/transfers", json=_transfer("w-single", 3)).status_code == 201
        expected = {b["id"] for b in warm} | {"w-single"}

        root = node.proc.pid  # type: ignore[union-attr]
        holders = [p for p in node.processes()
                   if p.pid == root or _name(p).startswith("ray::LedgerShard")]  # fmt: skip
        assert len(holders) == 3, [_name(p) for p in node.processes()]
        idle_node, idle_tree = total_rss(holders), node.rss_bytes()

        tally, peaks = Tally(), {}
        per_transfer = decoded_bytes_per_transfer()

        def enough() -> bool:  # a node keeping what it was offered would break the bound
            return tally.offered * per_transfer >= 2 * NODE_BOUND

        with slow_commits(database_url, SLOW_COMMIT_S):
            node_peak, tree_peak = PeakRss(lambda: total_rss(holders)), PeakRss(node.rss_bytes)
            with node_peak, tree_peak:
                t0 = time.monotonic()
                asyncio.run(_overload(node.url, tally, enough, peaks))
                load_s = time.monotonic() - t0
            # Requests that timed out may still be queued: let the node work them off
            # (still slowly) before the trigger goes, so the drop does not race them.
            wait_until(
                lambda: queue_gauges(http.get("/metrics").text)["paynode_front_queue_depth"] == 0,
                timeout=30,
                what="the front's queues to drain",
            )
        assert not tally.unexpected, tally.unexpected[:10]

        print(
            f"\nslow commits ({SLOW_COMMIT_S}s each), {BATCH_CLIENTS} batch clients x {BATCH} "
            f"+ {SINGLE_CLIENTS} single clients for {load_s:.1f}s; queue_limit {QUEUE_LIMIT}, "
            f"{MAX_INFLIGHT} x {MAX_ITEMS} in flight per shard, timeout {REQUEST_TIMEOUT_S}s"
        )
        print(f"offered {tally.offered} transfers ({_mib(tally.offered_bytes)} of JSON, "
              f"{_mib(int(tally.offered * per_transfer))} decoded): "
              f"{len(tally.acked)} acknowledged, {len(tally.refused)} refused "
              f"{dict(Counter(tally.refused.values()))}, "
              f"{len(tally.unknown)} timed out")  # fmt: skip
        for (route, status, code), n in sorted(tally.answers.items()):
            print(f"  {route:6} {status} {code or 'ok':30} {n} requests")
        for kind in ("accepted", "refused", "timeout"):
            print(f"  latency {kind:8}: {_percentiles(tally.latency.get(kind, []))}")
        everything = [x for xs in tally.latency.values() for x in xs]
        print(f"  latency all     : {_percentiles(everything)}")
        print(f"  peak queue gauges: {peaks}")
        print(f"RSS front+shards: idle {_mib(idle_node)}, peak {_mib(node_peak.peak)} "
              f"(+{_mib(node_peak.peak - idle_node)}); whole tree: idle {_mib(idle_tree)}, "
              f"peak {_mib(tree_peak.peak)} (+{_mib(tree_peak.peak - idle_tree)})")  # fmt: skip

        # (a) Over its limits the node refused, with a retryable 503/429, and the queues
        # it reports never went past their limits.
        assert tally.refused and tally.acked, "no overload, or nothing got through"
        assert tally.offered >= 10 * len(tally.acked), "the load did not overload the node"
        assert peaks.get("paynode_front_queue_depth", 0) <= QUEUE_LIMIT, peaks
        # A shard call carries up to MAX_ITEMS, or one request's share if that is more.
        per_call = max(MAX_ITEMS, BATCH)
        assert peaks.get("paynode_shard_commit_queue_rows", 0) <= MAX_INFLIGHT * per_call, peaks

        # (c) Memory: bounded above idle, while the offered load was much more than that.
        assert enough(), "too little load to tell a bounded node from one that keeps it"
        assert node_peak.peak - idle_node <= NODE_BOUND, _mib(node_peak.peak - idle_node)
        assert tree_peak.peak - idle_tree <= TREE_BOUND, _mib(tree_peak.peak - idle_tree)

        # (d) Without the trigger the node serves normally again, by itself.
        wait_until(
            lambda: http.post("/v1/transfers", json=_transfer("after", 5)).status_code < 300,
            timeout=30,
            what="a transfer to be acknowledged after the slow commits",
        )
        after = [_transfer(f"after-{i}", i) for i in range(BATCH)]
        t0 = time.perf_counter()
        r = http.post("/v1/transfers/batch", json={"transfers": after})
        after_s = time.perf_counter() - t0
        assert {x.get("status") for x in r.json()["results"]} == {"posted"}, r.text
        expected |= {"after"} | {b["id"] for b in after}
        # Timed-out transfers, retried with their ids, apply once (or replay).
        unknown = list(tally.unknown.values())
        for i in range(0, len(unknown), BATCH):
            chunk = unknown[i : i + BATCH]
            r = http.post("/v1/transfers/batch", json={"transfers": chunk})
            assert r.status_code == 200, r.text
            assert {x.get("status") for x in r.json()["results"]} == {"posted"}, r.text
        print(f"after the trigger dropped: {BATCH} transfers in {after_s * 1000:.0f} ms; "
              f"{len(unknown)} timed-out transfers retried, all posted")  # fmt: skip

        # (b) The journal holds exactly what was acknowledged (plus the retried ones):
        # every 2xx is in it, no refused transfer is, and memory equals the journal.
        with psycopg.connect(libpq_url(database_url)) as conn:
            journaled = {row[0] for row in conn.execute("SELECT id FROM transfers")}
        assert tally.acked <= journaled, sorted(tally.acked - journaled)[:10]
        leaked = journaled & tally.refused.keys()
        assert not leaked, f"{len(leaked)} refused transfers applied, e.g. {sorted(leaked)[:5]}"
        assert journaled == tally.acked | tally.unknown.keys() | expected
        assert not memory_vs_journal(http, journal_balances(database_url), list(ACCOUNTS))
        assert currency_totals(database_url) == {"USD": 0}
    finally:
        http.close()
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def test_chains_refused_after_their_prepare_hold_nothing(make_node) -> None:
    """A cross-shard chain refused for overload after its prepare leaves no reservation.

    Prepares are decided in memory, so under slow commits they keep passing while
    the primary's commit queue is full: those chains are refused (``overloaded``)
    after every decider reserved for them. The reservations must be released, or
    each such refusal would stay in the shards' memory for good and its ids would be
    ``transfer_in_flight`` to every retry.
    """
    import ray

    from paynode.domain.ledger.model import shard_key
    from paynode.domain.ledger.wire import decode_stats

    node = make_node(shards=2, batch_max_items=10, queue_limit=20, batch_max_inflight=1)
    ids = [f"x{i}" for i in range(64)]
    left = [i for i in ids if shard_key(i) % 2 == 0][:2]
    right = [i for i in ids if shard_key(i) % 2 == 1][:2]
    for a in left + right:
        assert node.http.post("/v1/accounts", json={"id": a, "currency": "USD"}).status_code == 201

    def chain(n: int) -> list[dict]:  # debits on both shards: two deciders, two phases
        return [
            {"id": f"c{n}-0", "debit_account_id": left[0], "credit_account_id": right[0],
             "amount": 1, "currency": "USD", "flags": ["linked"]},
            {"id": f"c{n}-1", "debit_account_id": right[1], "credit_account_id": left[1],
             "amount": 1, "currency": "USD"},
        ]  # fmt: skip

    codes: dict[int, set[str]] = {}

    async def load() -> None:
        async with httpx.AsyncClient(base_url=node.url, headers=ADMIN_HEADERS, timeout=60) as h:

            async def one(n: int) -> None:
                r = await h.post("/v1/transfers/batch", json={"transfers": chain(n)})
                assert r.status_code == 200, r.text
                codes[n] = {x.get("code") or x["status"] for x in r.json()["results"]}

            await asyncio.gather(*(one(n) for n in range(200)))

    with slow_commits(node.database_url, SLOW_COMMIT_S):
        asyncio.run(load())
    refused = [n for n, c in codes.items() if c == {"overloaded"}]
    posted = [n for n, c in codes.items() if c == {"posted"}]
    assert len(refused) + len(posted) == len(codes), Counter(map(str, codes.values()))
    assert refused and posted
    holds = [decode_stats(ray.get(s.stats.remote())).holds for s in node.shards]
    print(f"\n{len(posted)} chains posted, {len(refused)} refused; holds left: {holds}")
    assert holds == [0, 0], "reservations of refused chains were never released"

    with psycopg.connect(libpq_url(node.database_url)) as conn:
        journaled = {row[0] for row in conn.execute("SELECT id FROM transfers")}
    assert journaled == {f"c{n}-{i}" for n in posted for i in (0, 1)}
    for n in refused:  # retried with the same ids, each applies now
        r = node.http.post("/v1/transfers/batch", json={"transfers": chain(n)})
        assert {x.get("code") or x["status"] for x in r.json()["results"]} == {"posted"}, r.text
    assert node.balances() == journal_balances(node.database_url)
