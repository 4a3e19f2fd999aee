"""The reconciler during a bench load: its runs and findings, then one full run after it.

Nothing is injected during a bench, so every finding is a false alarm (issue
#16): a run during the load, or the full run after it, that reports any is an
audit problem. The figures come from ``/metrics`` (any node), and each run's
details from ``reconciliation_runs`` when the bench knows the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from paynode.benchmarks import drivers

SCRAPE_ATTEMPTS = 5  # /metrics omits an actor that did not answer within 3 s: ask again
FULL_RUN_TIMEOUT_S = 320.0  # the node's own limit is 300 s
MAX_RUNS_LISTED = 50

_COUNTERS = {
    "runs": "paynode_recon_runs_total",
    "failures": "paynode_recon_failures_total",
    "findings": "paynode_recon_findings_total",
    "accounts_checked": "paynode_recon_accounts_checked_total",
    "transfers_checked": "paynode_recon_transfers_checked_total",
    "seconds": "paynode_recon_run_seconds_total",
    "accounts_read_whole": "paynode_recon_accounts_read_whole_total",
}


@dataclass(frozen=True)
class Before:
    counters: dict[str, float]
    last_run_id: int  # 0 when the database is not known


def before_load(url: str, database_url: str | None) -> Before:
    return Before(_counters(url), _last_run_id(database_url))


def after_load(url: str, database_url: str | None, before: Before) -> tuple[dict, list[str]]:
    """The runs since ``before`` (the load and its catch-up), then a full run now; (the
    report, the audit problems)."""
    during = {k: round(v - before.counters[k], 3) for k, v in _counters(url).items()}
    runs = _runs_after(database_url, before.last_run_id)
    r = httpx.post(url + "/v1/reconciliation/runs", json={"kind": "full"},
                   headers=drivers.api_headers(), timeout=FULL_RUN_TIMEOUT_S)  # fmt: skip
    problems = []
    if r.status_code != 201:
        problems.append(f"reconciliation: the full run after the load answered {r.status_code}")
        final: dict = {}
    else:
        final = r.json()
        if final["findings"]:
            problems.append(f"reconciliation: the full run after a clean load saw "
                            f"{final['findings']} differences")  # fmt: skip
    if during["findings"]:
        problems.append(f"reconciliation: {during['findings']:.0f} differences in "
                        f"{during['runs']:.0f} runs during a clean load")  # fmt: skip
    status = httpx.get(url + "/v1/reconciliation/status", headers=drivers.api_headers(),
                       timeout=30).json()  # fmt: skip
    if status["open_discrepancies"] or status["candidates"]:
        problems.append(f"reconciliation: {status['open_discrepancies']} open discrepancies, "
                        f"{status['candidates']} candidates after a clean load")  # fmt: skip
    report = {"during_load": during, "runs": runs, "full_after_load": final,
              "open_discrepancies": status["open_discrepancies"]}  # fmt: skip
    return report, problems


def line(report: dict) -> str:
    """One line for the summary."""
    d, f = report["during_load"], report["full_after_load"]
    longest = max((x["seconds"] for x in report["runs"]), default=None)
    text = (
        f"reconciliation since the load began: {d['runs']:.0f} runs ({d['failures']:.0f} failed), "
        f"{d['transfers_checked']:.0f} rows and {d['accounts_checked']:.0f} accounts checked "
        f"({d['accounts_read_whole']:.0f} read from their whole history) in {d['seconds']} s"
        + (f" (longest {longest} s)" if longest is not None else "")
        + f", findings {d['findings']:.0f}"
    )  # fmt: skip
    if f:
        text += (f"; full run after it: {f['transfers_checked']} rows, {f['accounts_checked']} "
                 f"accounts in {f['seconds']:.2f} s, findings {f['findings']}")  # fmt: skip
    return text + f"; open discrepancies {report['open_discrepancies']}"


def _counters(url: str) -> dict[str, float]:
    for _ in range(SCRAPE_ATTEMPTS):
        text = httpx.get(url + "/metrics", headers=drivers.api_headers(), timeout=10).text
        found = {}
        for key, name in _COUNTERS.items():
            m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
            if m:
                found[key] = float(m.group(1))
        if len(found) == len(_COUNTERS):
            return found
    raise RuntimeError("the reconciler's figures are missing from /metrics")


def _last_run_id(database_url: str | None) -> int:
    if not database_url:
        return 0
    import psycopg

    from paynode.storage.database import libpq_url

    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("SELECT COALESCE(max(id), 0) FROM reconciliation_runs").fetchone()
    return int(row[0]) if row else 0


def _runs_after(database_url: str | None, last_run_id: int) -> list[dict]:
    """Each run since ``last_run_id`` (finished), oldest first; none without the database."""
    if not database_url:
        return []
    import psycopg

    from paynode.storage.database import libpq_url

    with psycopg.connect(libpq_url(database_url)) as conn:
        cur = conn.execute(
            "SELECT id, kind, trigger, status, from_txid, to_txid, accounts_checked,"
            " transfers_checked, skipped_in_flight, findings,"
            " round(extract(epoch FROM finished_at - started_at)::numeric, 3)::float AS seconds"
            " FROM reconciliation_runs WHERE id > %s AND finished_at IS NOT NULL"
            " ORDER BY id LIMIT %s",
            (last_run_id, MAX_RUNS_LISTED),
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
