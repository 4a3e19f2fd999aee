"""Reconciliation's data: the three copies of the ledger compared, and what it found.

The three copies are the shards' memory, the PostgreSQL journal (the truth)
and the DuckDB analytics store. The comparisons here are pure functions or
single queries; :mod:`actors.reconciler` decides when to run them.

A discrepancy is stored once per (kind, object, sources) while it is open:
seen again it is updated (``last_seen_at``, ``last_run_id``), and a full run
that no longer finds it resolves it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from paynode.storage.analytics import RECON_COLUMNS, Watermark
from paynode.storage.audit import JOURNAL_BALANCES_SQL, Balances

MEMORY_JOURNAL = "memory/journal"
JOURNAL_ANALYTICS = "journal/analytics"


@dataclass(frozen=True)
class Finding:
    kind: str  # balance_drift, missing_in_analytics, missing_in_journal, amount_mismatch, ...
    object_type: str  # account, transfer, currency
    object_id: str
    sources: str  # which two copies disagree, e.g. "memory/journal"
    expected: str | None  # what the journal (the truth) says
    actual: str | None  # what the other copy says


def _fmt(b: Balances | None) -> str | None:
    return None if b is None else "dp={} cp={} dpend={} cpend={}".format(*b)


def compare_memory(
    first: dict[str, Balances | None],
    journal: dict[str, Balances],
    second: dict[str, Balances | None],
) -> tuple[list[Finding], list[str]]:
    """Memory read before and after the journal aggregate, against it.

    An account whose memory changed between the two reads had money moving
    during the check: it is skipped (returned second), not judged. For the
    rest, memory must equal the journal exactly.
    """
    findings, in_flight = [], []
    for account_id, expected in journal.items():
        before, after = first.get(account_id), second.get(account_id)
        if before != after:
            in_flight.append(account_id)
        elif before != expected:
            findings.append(
                Finding("balance_drift", "account", account_id, MEMORY_JOURNAL,
                        _fmt(expected), _fmt(before) or "missing in memory")
            )  # fmt: skip
    return findings, in_flight


def compare_analytics(
    journal: dict[str, Balances], analytics: dict[str, Balances]
) -> list[Finding]:
    """Both aggregated up to the same watermark: they must be equal.

    An account created after the watermark is not in analytics yet; it is
    judged only once money has moved on it up to the watermark.
    """
    zero = (0, 0, 0, 0)
    out = []
    for account_id, expected in journal.items():
        actual = analytics.get(account_id)
        if actual is None and expected == zero:
            continue
        if actual != expected:
            out.append(
                Finding("balance_drift", "account", account_id, JOURNAL_ANALYTICS,
                        _fmt(expected), _fmt(actual) or "missing in analytics")
            )  # fmt: skip
    return out


def nonzero_totals(totals: dict[str, int], sources: str) -> list[Finding]:
    return [
        Finding("nonzero_total", "currency", currency, sources, "0", str(total))
        for currency, total in totals.items()
        if total != 0
    ]


# -- PostgreSQL side -----------------------------------------------------------------------


def _upto(watermark: Watermark | None) -> sql.Composable:
    if watermark is None:
        return sql.SQL("TRUE")
    return sql.SQL("(txid, id) <= ({}, {})").format(
        sql.Literal(watermark[0]), sql.Literal(watermark[1])
    )


def journal_balances_of(
    conn: psycopg.Connection, ids: Sequence[str] | None, upto: Watermark | None = None
) -> dict[str, Balances]:
    """Journal aggregate per account (all accounts if ``ids`` is None), optionally up to a
    watermark (rows after it excluded: what analytics has published)."""
    if ids is None:
        base = sql.SQL(
            JOURNAL_BALANCES_SQL.replace("FROM transfers", "FROM transfers WHERE {upto}")
        )
        query = base.format(upto=_upto(upto))
        return {r[0]: tuple(r[1:]) for r in conn.execute(query)}  # type: ignore[misc]
    query = sql.SQL(
        "WITH wanted AS (SELECT unnest({ids}::text[]) AS id)"
        " SELECT w.id, COALESCE(SUM(l.dp), 0)::bigint, COALESCE(SUM(l.cp), 0)::bigint,"
        " COALESCE(SUM(l.dpend), 0)::bigint, COALESCE(SUM(l.cpend), 0)::bigint"
        " FROM wanted w JOIN accounts a ON a.id = w.id LEFT JOIN ("
        "  SELECT debit_account_id AS id, posted_amount AS dp, 0 AS cp, pending_delta AS dpend,"
        "  0 AS cpend FROM transfers WHERE debit_account_id = ANY({ids}) AND {upto}"
        "  UNION ALL SELECT credit_account_id, 0, posted_amount, 0, pending_delta FROM transfers"
        "  WHERE credit_account_id = ANY({ids}) AND {upto}"
        " ) l ON l.id = w.id GROUP BY w.id"
    ).format(ids=sql.Literal(list(ids)), upto=_upto(upto))
    return {r[0]: tuple(r[1:]) for r in conn.execute(query)}  # type: ignore[misc]


def touched_since(conn: psycopg.Connection, from_txid: int, below_txid: int) -> list[str]:
    """Accounts created or moved by transactions in [from_txid, below_txid)."""
    rows = conn.execute(
        "SELECT debit_account_id FROM transfers WHERE txid >= %(f)s AND txid < %(b)s"
        " UNION SELECT credit_account_id FROM transfers WHERE txid >= %(f)s AND txid < %(b)s"
        " UNION SELECT id FROM accounts WHERE txid >= %(f)s AND txid < %(b)s",
        {"f": from_txid, "b": below_txid},
    )
    return [r[0] for r in rows]


def currency_totals_of(balances: dict[str, Balances], currencies: dict[str, str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for account_id, (dp, cp, _, _) in balances.items():
        cur = currencies[account_id]
        totals[cur] = totals.get(cur, 0) + cp - dp
    return totals


def account_currencies(conn: psycopg.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT id, currency FROM accounts")}


def export_journal_rows(
    conn: psycopg.Connection, from_txid: int, upto: Watermark, csv_path: Path
) -> int:
    """The journal's rows in [from_txid, upto] to CSV, for the row-level comparison in DuckDB."""
    query = sql.SQL(
        "COPY (SELECT id, amount, status, posted_amount, pending_delta FROM transfers"
        " WHERE txid >= {f} AND {upto}) TO STDOUT (FORMAT csv)"
    ).format(f=sql.Literal(from_txid), upto=_upto(upto))
    size = 0
    with open(csv_path, "wb") as f, conn.cursor().copy(query) as copy:
        for data in copy:
            size += f.write(data)
    return size


def compare_rows(con: duckdb.DuckDBPyConnection, csv_path: Path, from_txid: int) -> list[Finding]:
    """Journal rows (CSV) against analytics rows from the same txid on: every difference."""
    rows = con.execute(
        f"""
        WITH pg AS (
            SELECT * FROM read_csv('{csv_path}', header=false, auto_detect=false,
                columns={{'id': 'VARCHAR', 'amount': 'BIGINT', 'status': 'VARCHAR',
                          'posted_amount': 'BIGINT', 'pending_delta': 'BIGINT'}})
        ), dk AS (
            SELECT id, amount, status, posted_amount, pending_delta FROM journal
            WHERE txid >= {int(from_txid)}
        )
        SELECT COALESCE(pg.id, dk.id),
               CASE WHEN dk.id IS NULL THEN 'missing_in_analytics'
                    WHEN pg.id IS NULL THEN 'missing_in_journal'
                    WHEN pg.status <> dk.status THEN 'status_mismatch'
                    ELSE 'amount_mismatch' END,
               CASE WHEN pg.id IS NULL THEN NULL ELSE
                    concat_ws(' ', pg.status, pg.amount, pg.posted_amount, pg.pending_delta) END,
               CASE WHEN dk.id IS NULL THEN NULL ELSE
                    concat_ws(' ', dk.status, dk.amount, dk.posted_amount, dk.pending_delta) END
        FROM pg FULL OUTER JOIN dk ON pg.id = dk.id
        WHERE pg.id IS NULL OR dk.id IS NULL
           OR (pg.amount, pg.status, pg.posted_amount, pg.pending_delta)
              IS DISTINCT FROM (dk.amount, dk.status, dk.posted_amount, dk.pending_delta)
        ORDER BY 1
        LIMIT 10000
        """
    ).fetchall()
    return [
        Finding(kind, "transfer", tid, JOURNAL_ANALYTICS, exp, act) for tid, kind, exp, act in rows
    ]


def analytics_balances_of(
    con: duckdb.DuckDBPyConnection, ids: Sequence[str] | None
) -> dict[str, Balances]:
    query = (
        "SELECT account_id, debits_posted, credits_posted, debits_pending, credits_pending"
        " FROM balances"
    )
    rows = (
        con.execute(query).fetchall()
        if ids is None
        else con.execute(query + " WHERE account_id IN (SELECT unnest(?))", [list(ids)]).fetchall()
    )
    return {r[0]: tuple(int(x) for x in r[1:]) for r in rows}  # type: ignore[misc]


# -- runs and findings -----------------------------------------------------------------------


def start_run(conn: psycopg.Connection, kind: str, trigger: str, from_txid: int) -> int:
    row = conn.execute(
        "INSERT INTO reconciliation_runs (kind, trigger, from_txid) VALUES (%s, %s, %s)"
        " RETURNING id",
        (kind, trigger, from_txid),
    ).fetchone()
    assert row is not None
    return int(row[0])


def last_watermark(conn: psycopg.Connection) -> int:
    """Where the next incremental run starts: the end of the last run that finished."""
    row = conn.execute(
        "SELECT to_txid FROM reconciliation_runs WHERE status IN ('ok', 'discrepancies')"
        " AND to_txid IS NOT NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return -1 if row is None else int(row[0])


ACH_BANK = "ach/bank"
ACH_JOURNAL = "ach/journal"
# What the journal must hold for an ACH payment in each state (derived transfer ids).
_ACH_MOVES = {"settled": "ach-settle:", "returned": "ach-return:"}


def compare_bank(conn: psycopg.Connection, overdue_before: dt.date) -> list[Finding]:
    """ACH entries against what the bank told us, and against the journal.

    * an entry sent with an effective date before ``overdue_before`` that the
      bank neither settled nor returned is ``missing_in_bank``;
    * a payment settled or returned whose ledger move is not in the journal
      (or an entry whose payment says otherwise) is a ``status_mismatch``.
    """
    findings = []
    rows = conn.execute(
        "SELECT e.trace_number, e.status, e.effective_date, p.id, p.status,"
        " (SELECT t.status FROM transfers t WHERE t.id = 'ach-settle:' || p.id),"
        " (SELECT t.status FROM transfers t WHERE t.id = 'ach-return:' || p.id)"
        " FROM ach_entries e LEFT JOIN payments p ON p.id = e.payment_id"
        " WHERE e.status <> 'pending'"
    ).fetchall()
    for trace, status, effective, pid, pay_status, settle_row, return_row in rows:
        if status == "submitted" and effective is not None and effective < overdue_before:
            expected = f"settled or returned by {overdue_before}"
            findings.append(
                Finding("missing_in_bank", "bank_entry", trace, ACH_BANK, expected, "nothing")
            )
        if pid is None:
            continue  # a micro-deposit: no ledger move depends on the bank
        if status in ("settled", "returned") and pay_status != status:
            findings.append(Finding("status_mismatch", "bank_entry", trace, ACH_BANK,
                                    status, pay_status))  # fmt: skip
        move = settle_row if pay_status == "settled" else return_row
        if pay_status in _ACH_MOVES and move is None:
            findings.append(Finding("status_mismatch", "bank_entry", trace, ACH_JOURNAL,
                                    _ACH_MOVES[pay_status] + pid, None))  # fmt: skip
    return findings


def record(conn: psycopg.Connection, run_id: int, findings: Iterable[Finding]) -> int:
    """Store findings (open ones updated, not repeated); return how many were new."""
    new = 0
    for f in findings:
        row = conn.execute(
            "INSERT INTO discrepancies (kind, object_type, object_id, sources, expected, actual,"
            " first_run_id, last_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (kind, object_type, object_id, sources) WHERE resolved_at IS NULL"
            " DO UPDATE SET last_seen_at = now(), last_run_id = EXCLUDED.last_run_id,"
            " expected = EXCLUDED.expected, actual = EXCLUDED.actual"
            " RETURNING (xmax = 0)",
            (f.kind, f.object_type, f.object_id, f.sources, f.expected, f.actual, run_id, run_id),
        ).fetchone()
        new += 1 if row and row[0] else 0
    return new


def resolve_unseen(conn: psycopg.Connection, run_id: int, kinds: Sequence[str]) -> int:
    """After a full run: open discrepancies of the kinds it checks, not seen by it, are gone."""
    done = conn.execute(
        "UPDATE discrepancies SET resolved_at = now() WHERE resolved_at IS NULL"
        " AND kind = ANY(%s) AND last_run_id <> %s",
        (list(kinds), run_id),
    )
    return done.rowcount


def finish_run(conn: psycopg.Connection, run_id: int, **fields: object) -> None:
    assert set(fields) <= {
        "status", "to_txid", "accounts_checked", "transfers_checked", "skipped_in_flight",
        "found", "resolved", "error",
    }  # fmt: skip
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in fields.items()
    )
    conn.execute(
        sql.SQL("UPDATE reconciliation_runs SET finished_at = now(), {} WHERE id = {}").format(
            sets, sql.Literal(run_id)
        )
    )


def export_recon_table(conn: psycopg.Connection, name: str, csv_path: Path) -> None:
    """A reconciliation table to CSV with UTC timestamps, in RECON_COLUMNS order."""
    cols = sql.SQL(", ").join(
        sql.SQL("({} AT TIME ZONE 'UTC')").format(sql.Identifier(c))
        if t == "TIMESTAMP"
        else sql.Identifier(c)
        for c, t in RECON_COLUMNS[name]
    )
    query = sql.SQL("COPY (SELECT {} FROM {} ORDER BY id) TO STDOUT (FORMAT csv)").format(
        cols, sql.Identifier(name)
    )
    with open(csv_path, "wb") as f, conn.cursor().copy(query) as copy:
        for data in copy:
            f.write(data)
