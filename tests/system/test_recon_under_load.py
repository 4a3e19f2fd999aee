"""Continuous reconciliation under load: no false findings, and real drift is still found.

Issue #16: under ordinary load the reconciler compared the journal and the
analytics segments at different points and filled ``discrepancies`` with false
alarms. Here the reconciler runs every second or two (incremental and full
runs) while clients post batches and single transfers, cross-shard and linked
chains (two-phase), pendings that are posted, voided or left to expire; every
run must report nothing. Then drift is injected behind the node's back and
each kind must be found (as a candidate first, as a discrepancy when the next
run sees it again) and resolve once repaired.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

from paynode.storage.analytics import TRANSFERS, Store, connect_views
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_HEADERS, RunningNode, wait_until

TEST_TIMEOUT_S = 150  # the whole test, node start included; it takes about 40 s
ACCOUNTS = 300  # plus a treasury and two credit-limited accounts
RUNS_UNDER_LOAD = 6  # scheduled runs that must finish while the load goes on
LOAD_DEADLINE_S = 60.0  # ... within this


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail the test (in the main thread) instead of hanging past ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Load:
    """Clients posting until stopped: what each got back is counted, errors kept."""

    def __init__(self, node: RunningNode, ids: list[str], limited: list[str]) -> None:
        self.node, self.ids, self.limited = node, ids, limited
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for k, work in enumerate((self._batches, self._batches, self._singles, self._pendings)):
            t = threading.Thread(target=self._client, args=(work, k), daemon=True)
            t.start()
            self._threads.append(t)

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a load client did not stop"

    def _client(self, work, k: int) -> None:
        rng = random.Random(k)
        tag = uuid.uuid4().hex[:6]
        with httpx.Client(base_url=self.node.url, timeout=30, headers=ADMIN_HEADERS) as http:
            n = 0
            while not self.stop.is_set():
                try:
                    work(http, rng, f"{tag}-{n}")
                except Exception as e:  # kept, and fails the test after the load
                    with self._lock:
                        self.errors.append(f"{type(e).__name__}: {e}")
                    return
                n += 1

    def _count(self, r: httpx.Response) -> None:
        assert r.status_code in (200, 201, 422), r.text
        body = r.json()
        results = body.get("results", [body])
        with self._lock:
            for x in results:
                self.answers[x.get("status") or x.get("code") or "?"] += 1

    def _pair(self, rng: random.Random) -> tuple[str, str]:
        debit, credit = rng.sample(self.ids, 2)
        return debit, credit

    def _batches(self, http: httpx.Client, rng: random.Random, key: str) -> None:
        transfers = []
        for i in range(150):
            debit, credit = self._pair(rng)
            transfers.append({"id": f"b{key}-{i}", "debit_account_id": debit,
                              "credit_account_id": credit, "amount": rng.randint(1, 500),
                              "currency": "USD"})  # fmt: skip
        # A linked chain across shards (two-phase), and a credit to a credit-limited
        # account (its shard reserves: two-phase too).
        a, b = self._pair(rng)
        transfers += [
            {"id": f"b{key}-l1", "debit_account_id": a, "credit_account_id": b, "amount": 3,
             "currency": "USD", "flags": ["linked"]},
            {"id": f"b{key}-l2", "debit_account_id": b, "credit_account_id": a, "amount": 2,
             "currency": "USD"},
            {"id": f"b{key}-c1", "debit_account_id": rng.choice(self.limited),
             "credit_account_id": a, "amount": 7, "currency": "USD"},
            {"id": f"b{key}-c2", "debit_account_id": b,
             "credit_account_id": rng.choice(self.limited), "amount": 5, "currency": "USD"},
        ]  # fmt: skip
        self._count(http.post("/v1/transfers/batch", json={"transfers": transfers}))

    def _singles(self, http: httpx.Client, rng: random.Random, key: str) -> None:
        debit, credit = self._pair(rng)
        self._count(http.post("/v1/transfers", json={
            "id": f"s{key}", "debit_account_id": debit, "credit_account_id": credit,
            "amount": rng.randint(1, 500), "currency": "USD"}))  # fmt: skip

    def _pendings(self, http: httpx.Client, rng: random.Random, key: str) -> None:
        """A hold, then (one time in three each) posted in part, voided, or left to expire."""
        debit, credit = self._pair(rng)
        fate = rng.choice(("post", "void", "expire"))
        hold = {"id": f"h{key}", "debit_account_id": debit, "credit_account_id": credit,
                "amount": 400, "currency": "USD", "flags": ["pending"],
                "timeout_s": 1 if fate == "expire" else 3600}  # fmt: skip
        self._count(http.post("/v1/transfers", json=hold))
        if fate == "post":
            end = {"id": f"h{key}-p", "pending_id": f"h{key}", "flags": ["post_pending"],
                   "amount": 150}  # fmt: skip
        elif fate == "void":
            end = {"id": f"h{key}-v", "pending_id": f"h{key}", "flags": ["void_pending"]}
        else:
            return
        self._count(http.post("/v1/transfers", json=end))


def _seed(node: RunningNode) -> tuple[list[str], list[str]]:
    ids = [f"a{i}" for i in range(ACCOUNTS)]
    limited = ["lim0", "lim1"]
    specs = [("treasury", [])] + [(a, []) for a in ids]
    specs += [(a, ["credits_must_not_exceed_debits"]) for a in limited]
    for account_id, flags in specs:
        r = node.http.post("/v1/accounts", json={"id": account_id, "currency": "USD",
                                                 "flags": flags})  # fmt: skip
        assert r.status_code == 201, r.text
    fund = [{"id": f"fund-{a}", "debit_account_id": a if a in limited else "treasury",
             "credit_account_id": "treasury" if a in limited else a,
             "amount": 10**9, "currency": "USD"} for a in ids + limited]  # fmt: skip
    r = node.http.post("/v1/transfers/batch", json={"transfers": fund})
    assert all(x.get("status") == "posted" for x in r.json()["results"]), r.text
    return ids, limited


def _sql(node: RunningNode, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(libpq_url(node.database_url), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _runs(node: RunningNode, after_id: int = 0) -> list[dict]:
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        cur = conn.execute("SELECT * FROM reconciliation_runs WHERE id > %s ORDER BY id",
                           (after_id,))  # fmt: skip
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _finished(node: RunningNode, after_id: int) -> list[dict]:
    return [run for run in _runs(node, after_id) if run["finished_at"] is not None]


def _status(node: RunningNode) -> dict:
    r = node.http.get("/v1/reconciliation/status")
    assert r.status_code == 200, r.text
    return r.json()


def _run(node: RunningNode, kind: str) -> dict:
    r = node.http.post("/v1/reconciliation/runs", json={"kind": kind})
    assert r.status_code == 201, r.text
    return r.json()


def _open(node: RunningNode) -> dict[tuple[str, str, str], dict]:
    r = node.http.get("/v1/reconciliation/discrepancies", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {(d["kind"], d["object_id"], d["sources"]): d for d in r.json()["data"]}


def _sync(node: RunningNode) -> None:
    import ray  # only after conftest set Ray's token auth up

    ray.get(node.analytics.sync.remote(), timeout=60)


def test_no_false_findings_under_load_and_drift_still_found(make_node) -> None:
    with _deadline(TEST_TIMEOUT_S):
        # A short interval, and a full run every third: both kinds run under the load. No
        # compaction: the segment removed below must be the one that holds the rows chosen
        # (a compaction would merge it into one named like it); reading across a compaction
        # is test_a_pinned_reader_sees_one_generation_across_a_compaction.
        node = make_node(recon_interval_ms=1000, recon_full_every=3, analytics_interval_ms=100,
                         analytics_compact=False)  # fmt: skip
        ids, limited = _seed(node)
        _clean_under_load(node, ids, limited)
        _drift_is_found_and_resolved(node, ids)


def _clean_under_load(node: RunningNode, ids: list[str], limited: list[str]) -> None:
    load = Load(node, ids, limited)
    before = max((run["id"] for run in _runs(node)), default=0)
    load.start()
    try:
        wait_until(lambda: load.errors or len(_finished(node, before)) >= RUNS_UNDER_LOAD,
                   timeout=LOAD_DEADLINE_S, interval=0.1,
                   what=f"{RUNS_UNDER_LOAD} scheduled runs under load")  # fmt: skip
        loaded = _finished(node, before)
    finally:
        load.join()
    assert not load.errors, load.errors[:3]
    assert load.answers["posted"] > 1000 and load.answers["pending"] > 10, load.answers
    final = _run(node, "full")  # after the load: everything, at rest
    # The schedule goes on: a run it started after `final` may still be running.
    runs = _finished(node, 0)
    table = [{k: run[k] for k in ("id", "kind", "status", "from_txid", "to_txid",
                                  "accounts_checked", "transfers_checked", "skipped_in_flight",
                                  "findings", "candidates", "found", "dropped")}
             | {"s": round((run["finished_at"] - run["started_at"]).total_seconds(), 3)}
             for run in runs]  # fmt: skip
    print("\n".join(map(str, table)), load.answers, sep="\n")
    for run in runs:
        assert run["status"] == "ok" and run["findings"] == 0, table
        assert run["candidates"] == run["found"] == run["dropped"] == run["resolved"] == 0, table
    assert _status(node)["failures"] == 0
    # Pendings keep expiring after the load: rows at or above the run's bound are not its.
    journal_rows = _sql(node, "SELECT count(*) FROM transfers WHERE txid < %s", final["to_txid"])
    assert final["findings"] == 0 and final["transfers_checked"] == journal_rows[0][0], final
    assert _sql(node, "SELECT count(*) FROM discrepancies") == [(0,)]
    assert _sql(node, "SELECT count(*) FROM reconciliation_candidates") == [(0,)]
    # The runs under load did check something: rows, and still accounts, in both kinds.
    assert len(loaded) >= RUNS_UNDER_LOAD
    for kind in ("incremental", "full"):
        assert any(run["kind"] == kind and run["transfers_checked"] > 0 for run in loaded), table
    assert sum(run["accounts_checked"] - run["skipped_in_flight"] for run in loaded) > 0, table


def _drift_is_found_and_resolved(node: RunningNode, ids: list[str]) -> None:
    """Each kind of drift, injected while the schedule goes on, is found: a candidate in the
    first run that sees it, a discrepancy in the next. Repaired, it resolves."""
    # 1. a segment deleted: rows posted now, published, then their segment removed
    lost = [{"id": f"lost-{i}", "debit_account_id": ids[0], "credit_account_id": ids[1],
             "amount": 10 + i, "currency": "USD"} for i in range(3)]  # fmt: skip
    r = node.http.post("/v1/transfers/batch", json={"transfers": lost})
    assert all(x.get("status") == "posted" for x in r.json()["results"]), r.text
    _sync(node)
    views = connect_views(node.settings.analytics_path(), pinned=True)
    try:
        (segment,) = views.execute(
            "SELECT DISTINCT filename FROM read_parquet($glob, filename = true)"
            " WHERE id LIKE 'lost-%'",
            {"glob": str((node.settings.analytics_path() / "live").resolve()
                         / "transfers-*.parquet")},
        ).fetchone()  # fmt: skip
    finally:
        views.close()
    (node.settings.analytics_path() / "live" / Path(segment).name).unlink()
    # 2. a journal row deleted (analytics has it)
    r = node.http.post("/v1/transfers", json={"id": "late", "debit_account_id": ids[2],
                                              "credit_account_id": ids[3], "amount": 5,
                                              "currency": "USD"})  # fmt: skip
    assert r.status_code == 201, r.text
    _sync(node)
    _sql(node, "DELETE FROM transfers WHERE id = 'late'")
    # 3. a journal row changed (analytics and memory have the old one)
    ((tampered, debit, credit, amount),) = _sql(
        node, "SELECT id, debit_account_id, credit_account_id, amount FROM transfers"
        " WHERE status = 'posted' AND id LIKE 'b%%' ORDER BY id LIMIT 1")  # fmt: skip
    _sql(node, "UPDATE transfers SET amount = amount + 1, posted_amount = posted_amount + 1"
         " WHERE id = %s", tampered)  # fmt: skip

    expected = {
        ("missing_in_analytics", "lost-0", "journal/analytics"),
        ("missing_in_journal", "late", "journal/analytics"),
        ("balance_drift", ids[3], "memory/journal"),
        ("amount_mismatch", tampered, "journal/analytics"),
        ("balance_drift", debit, "memory/journal"),
        ("balance_drift", credit, "journal/analytics"),
    }
    # Two full runs: whatever the schedule did in between, the second confirms the lot.
    _run(node, "full")
    confirmed = _run(node, "full")
    assert confirmed["findings"] >= len(expected), confirmed
    found = _open(node)
    assert expected <= found.keys(), expected - found.keys()
    by_id = {run["id"]: run for run in _runs(node)}
    for key in expected:
        d = found[key]
        # Seen by two runs at least; the first recorded it as a candidate, not a discrepancy.
        assert d["first_run_id"] < d["last_run_id"], d
        assert by_id[d["first_run_id"]]["candidates"] >= 1, by_id[d["first_run_id"]]

    # Repaired: the next run that checks these objects resolves them (an incremental run
    # re-checks what it tracks, at its own point).
    _sql(node, "UPDATE transfers SET amount = %s, posted_amount = %s WHERE id = %s",
         amount, amount, tampered)  # fmt: skip
    _run(node, "incremental")
    still = _open(node).keys()
    for key in (("amount_mismatch", tampered, "journal/analytics"),
                ("balance_drift", debit, "memory/journal"),
                ("balance_drift", credit, "journal/analytics")):  # fmt: skip
        assert key not in still, key
    assert ("missing_in_journal", "late", "journal/analytics") in still
    assert ("missing_in_analytics", "lost-0", "journal/analytics") in still


def test_a_pinned_reader_sees_one_generation_across_a_compaction(tmp_path: Path) -> None:
    """The reconciler reads the generation live when it connects: a compaction swapping
    ``live`` meanwhile changes nothing for it (no row missed, none counted twice)."""
    store = Store(tmp_path / "analytics")
    store.open()
    for k in range(4):  # four segments of ten rows
        csv = tmp_path / f"seg{k}.csv"
        csv.write_text("".join(
            f"{100 + k},t{k}-{i},a,b,{1 + i},USD,0,,0,posted,{1 + i},0,{10**18}\n"
            for i in range(10)))  # fmt: skip
        store.append_csv(TRANSFERS, csv, last_txid=100 + k)
    query = "SELECT count(*), count(DISTINCT id), sum(amount) FROM journal WHERE txid < 104"
    generation = (store.root / "live").resolve()
    pinned = connect_views(store.root, pinned=True)
    try:
        (view,) = pinned.execute(
            "SELECT sql FROM duckdb_views() WHERE view_name = 'journal'"
        ).fetchone()
        assert f"{generation}/transfers-" in view  # the directory, not the link
        before = pinned.execute(query).fetchone()
        assert before == (40, 40, 4 * 55)
        # All but the newest merged (with the empty one open() wrote); the live link moved.
        assert store.compact(TRANSFERS, max_segments=2) == 4
        assert pinned.execute(query).fetchone() == before
        fresh = connect_views(store.root, pinned=True)
        try:
            assert fresh.execute(query).fetchone() == before
        finally:
            fresh.close()
    finally:
        pinned.close()
