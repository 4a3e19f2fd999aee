"""Analytics and reconciliation against a running node: real PostgreSQL, Ray, DuckDB, HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import psycopg

from paynode.storage.analytics import connect_views
from paynode.storage.audit import journal_balances
from paynode.storage.database import libpq_url
from tests.support.node import ADMIN_KEY, RunningNode


def _sync(node: RunningNode) -> dict:
    import ray  # only after conftest set Ray's token auth up

    return ray.get(node.analytics.sync.remote(), timeout=60)


def _views(node: RunningNode) -> duckdb.DuckDBPyConnection:
    return connect_views(node.settings.analytics_path())


def _seed(node: RunningNode, n: int = 40) -> None:
    for account_id, flags in (("treasury", []), ("alice", ["debits_must_not_exceed_credits"]),
                              ("bob", []), ("carol", [])):  # fmt: skip
        r = node.http.post(
            "/v1/accounts", json={"id": account_id, "currency": "USD", "flags": flags}
        )
        assert r.status_code == 201, r.text
    transfers = [
        {"id": "fund", "debit_account_id": "treasury", "credit_account_id": "alice",
         "amount": 100_000, "currency": "USD"},
        {"id": "hold", "debit_account_id": "alice", "credit_account_id": "carol",
         "amount": 700, "currency": "USD", "flags": ["pending"], "timeout_s": 3600},
        {"id": "hold2", "debit_account_id": "alice", "credit_account_id": "carol",
         "amount": 300, "currency": "USD", "flags": ["pending"]},
        {"id": "void2", "pending_id": "hold2", "flags": ["void_pending"]},
    ] + [
        {"id": f"p{i}", "debit_account_id": "alice", "credit_account_id": "bob",
         "amount": 100 + i, "currency": "USD"}
        for i in range(n)
    ]  # fmt: skip
    r = node.http.post("/v1/transfers/batch", json={"transfers": transfers})
    assert r.status_code == 200 and all("status" in x for x in r.json()["results"]), r.text


# The seed's accounts, plus the rails' operator accounts every node creates at start.
ACCOUNTS = 4 + len(
    ("ach-clearing-usd", "ach-microdeposits-usd", "rtp-clearing-usd", "rtp-fees-usd")
)


def _pg_count(node: RunningNode) -> int:
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        return conn.execute("SELECT count(*) FROM transfers").fetchone()[0]


def _run(node: RunningNode, kind: str) -> dict:
    r = node.http.post("/v1/reconciliation/runs", json={"kind": kind})
    assert r.status_code == 201, r.text
    return r.json()


def _open(node: RunningNode) -> set[tuple[str, str, str]]:
    r = node.http.get("/v1/reconciliation/discrepancies", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {(d["kind"], d["object_id"], d["sources"]) for d in r.json()["data"]}


def test_the_views_match_the_journal(make_node) -> None:
    node = make_node(recon_interval_ms=0)
    _seed(node)
    _sync(node)
    con = _views(node)
    try:
        assert con.execute("SELECT count(*) FROM journal").fetchone()[0] == _pg_count(node)
        got = {
            r[0]: tuple(r[1:])
            for r in con.execute(
                "SELECT account_id, debits_posted, credits_posted, debits_pending,"
                " credits_pending FROM balances"
            ).fetchall()
        }
        assert got == journal_balances(node.database_url) == node.balances()
        # One open hold (hold2 was voided), with its expiry.
        holds = con.execute("SELECT transfer_id, amount, expires_at FROM pending_holds").fetchall()
        assert [(h[0], h[1]) for h in holds] == [("hold", 700)] and holds[0][2] is not None
        # Daily volume: every journal row counted once, posted money summed.
        n, posted = con.execute(
            "SELECT SUM(transfers), SUM(posted_amount) FROM daily_volume"
        ).fetchone()
        assert n == _pg_count(node) and posted == 100_000 + sum(100 + i for i in range(40))
        # balances as of a time before anything happened: the accounts with zero balances.
        early = con.execute("SELECT count(*) FROM balances_at(TIMESTAMP '2000-01-01')").fetchone()[
            0
        ]
        assert early == 0
        (net,) = con.execute("SELECT SUM(net) FROM account_activity").fetchone()
        assert net == 0
        # No free-form metadata (it may hold personal data) in any view.
        for view in ("journal", "transfers", "accounts", "balances", "legs"):
            cols = [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
            assert "metadata" not in cols, view
    finally:
        con.close()


def test_a_separate_process_queries_during_a_load(make_node) -> None:
    node = make_node(recon_interval_ms=0, analytics_interval_ms=50)
    _seed(node, n=5)
    stop = threading.Event()
    errors: list[str] = []

    def load() -> None:
        k = 0
        while not stop.is_set():
            batch = [
                {"id": f"l{k}-{i}", "debit_account_id": "treasury", "credit_account_id": "bob",
                 "amount": 1 + i, "currency": "USD"}
                for i in range(200)
            ]  # fmt: skip
            r = node.http.post("/v1/transfers/batch", json={"transfers": batch})
            if r.status_code != 200:
                errors.append(r.text)
            k += 1

    env = dict(os.environ)
    query = "SELECT count(*) AS n, count(DISTINCT transfer_id) AS d FROM transfers"
    cmd = [sys.executable, "-m", "paynode.node.cli", "sql", "--data-dir", node.settings.data_dir,
           "--format", "json", query]  # fmt: skip
    thread = threading.Thread(target=load)
    thread.start()
    seen = []
    try:
        for _ in range(4):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            (row,) = json.loads(done.stdout)
            assert row["n"] == row["d"], "no duplicates, even mid-publish"
            seen.append(row["n"])
        # The plain DuckDB client, read-only on the views file, at the same time.
        views = node.settings.analytics_path() / "views.duckdb"
        code = (f"import duckdb; c = duckdb.connect({str(views)!r}, read_only=True); "
                "print(c.execute('SELECT count(*) FROM daily_volume').fetchone()[0])")  # fmt: skip
        plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert plain.returncode == 0, plain.stderr
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:2]
    assert seen == sorted(seen) and seen[-1] > seen[0], seen
    _sync(node)
    con = _views(node)
    try:
        assert con.execute("SELECT count(*) FROM journal").fetchone()[0] == _pg_count(node)
    finally:
        con.close()


def test_reconciliation_finds_each_kind_of_drift_and_resolves_it(make_node) -> None:
    node = make_node(recon_interval_ms=0)
    _seed(node)
    clean = _run(node, "full")
    assert clean["status"] == "ok" and clean["findings"] == 0 and clean["found"] == 0, clean
    assert clean["accounts_checked"] == ACCOUNTS and clean["transfers_checked"] == _pg_count(node)

    # 1. a journal row altered behind the node's back: seen once, a candidate ...
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        conn.execute("UPDATE transfers SET amount = 999, posted_amount = 999 WHERE id = 'p3'")
    seen = _run(node, "full")
    assert seen["status"] == "ok" and seen["found"] == 0 and seen["candidates"] >= 5, seen
    assert _open(node) == set()
    assert node.http.get("/v1/reconciliation/status").json()["candidates"] == seen["candidates"]
    # ... seen again by the next run: a discrepancy
    found = _run(node, "full")
    assert found["status"] == "discrepancies" and found["found"] == seen["candidates"], found
    assert {
        ("balance_drift", "alice", "memory/journal"),
        ("balance_drift", "bob", "memory/journal"),
        ("amount_mismatch", "p3", "journal/analytics"),
        ("balance_drift", "alice", "journal/analytics"),
    } <= _open(node)

    # 2. an analytics segment lost (the one holding the seed transfers): its rows are now
    # missing in analytics (p3's amount mismatch becomes that, and is resolved as such)
    live = node.settings.analytics_path() / "live"
    seeded = [p for p in sorted(live.glob("transfers-*.parquet")) if p.stat().st_size > 600]
    seeded[0].unlink()
    lost = _run(node, "full")
    assert lost["resolved"] >= 1, lost
    assert ("amount_mismatch", "p3", "journal/analytics") not in _open(node)
    _run(node, "full")
    assert ("missing_in_analytics", "p0", "journal/analytics") in _open(node)

    # 3. a journal row deleted behind the node's back (analytics still has it)
    r = node.http.post("/v1/transfers", json={"id": "late", "debit_account_id": "treasury",
                                              "credit_account_id": "carol", "amount": 5,
                                              "currency": "USD"})  # fmt: skip
    assert r.status_code == 201
    _sync(node)
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        conn.execute("DELETE FROM transfers WHERE id = 'late'")
    _run(node, "full")
    _run(node, "full")
    assert {
        ("missing_in_journal", "late", "journal/analytics"),
        ("balance_drift", "carol", "memory/journal"),
    } <= _open(node)

    status = node.http.get("/v1/reconciliation/status").json()
    assert status["open_discrepancies"] == len(_open(node))
    assert status["last_run"]["kind"] == "full" and status["runs"] == 7
    assert status["analytics"]["rows_published"] >= _pg_count(node)

    # The analysts' views carry the same findings and every run.
    con = _views(node)
    try:
        kinds = {r[0] for r in con.execute(
            "SELECT kind FROM discrepancies WHERE resolved_at IS NULL").fetchall()}  # fmt: skip
        assert {"balance_drift", "missing_in_analytics", "missing_in_journal"} <= kinds
        resolved = {r[0] for r in con.execute(
            "SELECT kind FROM discrepancies WHERE resolved_at IS NOT NULL").fetchall()}  # fmt: skip
        assert "amount_mismatch" in resolved
        assert con.execute("SELECT count(*) FROM reconciliation_runs").fetchone()[0] == 7
        assert con.execute("SELECT sum(candidates) FROM reconciliation_runs").fetchone()[0] > 0
    finally:
        con.close()

    # Repair p3 in the journal: the memory/journal drift of alice and bob is resolved at
    # once (an open discrepancy needs one run that no longer sees it).
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        conn.execute("UPDATE transfers SET amount = 103, posted_amount = 103 WHERE id = 'p3'")
    after = _run(node, "full")
    assert after["resolved"] >= 2, after
    remaining = _open(node)
    assert ("balance_drift", "alice", "memory/journal") not in remaining
    assert ("balance_drift", "bob", "memory/journal") not in remaining
    assert ("balance_drift", "carol", "memory/journal") in remaining  # 'late' is still gone


def _read_whole(node: RunningNode) -> float:
    """Accounts whose journal totals runs read from their whole history, so far."""
    text = node.http.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith("paynode_recon_accounts_read_whole")]
    return float(line.split()[1])


def test_incremental_runs_check_only_what_changed(make_node) -> None:
    node = make_node(recon_interval_ms=0)
    _seed(node)
    first = _run(node, "incremental")
    assert first["status"] == "ok" and first["accounts_checked"] == ACCOUNTS
    assert _read_whole(node) == ACCOUNTS  # nothing cached yet: each read whole, once
    r = node.http.post("/v1/transfers", json={"id": "one-more", "debit_account_id": "treasury",
                                              "credit_account_id": "carol", "amount": 5,
                                              "currency": "USD"})  # fmt: skip
    assert r.status_code == 201
    second = _run(node, "incremental")
    assert second["status"] == "ok" and second["findings"] == 0, second
    assert second["from_txid"] == first["to_txid"]
    assert second["accounts_checked"] == 2 and second["transfers_checked"] == 1
    assert _read_whole(node) == ACCOUNTS  # the two came from the cache plus the new row
    nothing = _run(node, "incremental")
    assert nothing["accounts_checked"] == 0 and nothing["transfers_checked"] == 0


def test_reconciliation_needs_its_scope(node: RunningNode) -> None:
    with node.anonymous() as anon:
        assert anon.get("/v1/reconciliation/status").status_code == 401
        r = anon.post(
            "/v1/auth/register", json={"email": "u@example.org", "password": "long enough pw"}
        )
        assert r.status_code == 201
        token = anon.post("/v1/auth/login", json={"email": "u@example.org",
                                                  "password": "long enough pw"}).json()  # fmt: skip
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        r = anon.post("/v1/reconciliation/runs", json={"kind": "full"}, headers=auth)
        assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
        r = anon.get("/v1/reconciliation/discrepancies", headers=auth)
        assert r.status_code == 403


def test_cli_recon_and_daily_report(make_node, tmp_path: Path) -> None:
    node = make_node(recon_interval_ms=0)
    _seed(node)
    env = {**os.environ, "PAYNODE_API_KEY": ADMIN_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "paynode.node.cli", "recon", "run", "--full", "--url", node.url],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "ok"
    _sync(node)
    out = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "paynode.node.cli", "report", "daily", "--data-dir",
         node.settings.data_dir, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (md,) = out.glob("daily-*.md")
    text = md.read_text()
    assert "treasury" in text and "-1,000.00 USD" in text  # the operator account, funded alice
    assert "Open holds" in text and "7.00 USD" in text
    assert (out / md.name.replace(".md", ".png")).stat().st_size > 1000


def test_metrics_carry_analytics_lag_and_reconciliation(make_node) -> None:
    node = make_node(recon_interval_ms=0)
    _seed(node, n=3)
    _sync(node)
    _run(node, "incremental")
    text = node.http.get("/metrics").text
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(values["paynode_analytics_rows_total"]) == _pg_count(node)
    assert 0 <= float(values["paynode_analytics_lag_max_seconds"]) < 60
    assert float(values["paynode_recon_runs_total"]) == 1
    assert float(values["paynode_recon_open_discrepancies"]) == 0
    assert 'paynode_analytics_lag_segments_bucket{le="+Inf"}' in values


def test_compaction_merges_in_tiers_and_keeps_every_row_once(tmp_path: Path, monkeypatch) -> None:
    """Small segments merge FANOUT at a time, merged ones again once FANOUT of them
    line up: the segment count stays logarithmic and each row is rewritten about once
    per tier, not the whole history at every compaction; every row stays, once."""
    from paynode.storage import analytics as an

    store = an.Store(tmp_path / "analytics")
    store.open()
    merged = 0
    appended = an.FANOUT * an.FANOUT + 3
    for k in range(appended):
        csv = tmp_path / f"seg{k}.csv"
        csv.write_text("".join(
            f"{100 + k},t{k:04d}-{i},a,b,{1 + i},USD,0,,0,posted,{1 + i},0,{10**18}\n"
            for i in range(5)))  # fmt: skip
        segment = store.append_csv(an.TRANSFERS, csv, last_txid=100 + k)
        if k == 0:  # tiers measured in segments of this size
            monkeypatch.setattr(an, "TIER_BASE_BYTES", segment.stat().st_size)
        merged += store.compact(an.TRANSFERS, max_segments=10_000)
    assert len(store.segments(an.TRANSFERS)) < 3 * an.FANOUT  # a few per tier
    assert merged <= 3 * appended  # rewritten about once per tier (two tiers here)
    con = an.connect_views(store.root)
    try:
        count, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM journal").fetchone()
    finally:
        con.close()
    assert (count, distinct) == (5 * appended, 5 * appended)
    assert store.watermark(an.TRANSFERS) == (100 + appended - 1, f"t{appended - 1:04d}-4")
