"""Reconciliation's queries: the journal (PostgreSQL) and the analytics copy (DuckDB), read
over the same transactions.

Every comparison between the two reads one half-open range of writing
transactions, ``lo <= txid < hi``, on both sides. ``hi`` is a bound below which
the analytics actor has published every row (its ``pg_snapshot_xmin`` at a
sync), so both sides then hold exactly the same committed rows: a row
committed later is in neither. Incremental runs read the range since the last
run (per-account changes and rows, both proportional to what changed); full
runs read ``txid < hi`` (totals and every row).

The comparisons themselves are pure (:mod:`domain.reconciliation`); runs and
findings are stored by :mod:`storage.recon_records`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from paynode.domain.reconciliation import (
    ACH_BANK,
    ACH_JOURNAL,
    JOURNAL_ANALYTICS,
    Balances,
    Finding,
)

MAX_ROW_FINDINGS = 10_000  # row differences reported per run; beyond, the run says so

# Each journal row as its two legs, summed per account: the one definition of a balance.
_PG_LEGS = """
SELECT l.account, SUM(l.dp)::bigint, SUM(l.cp)::bigint, SUM(l.dpend)::bigint,
       SUM(l.cpend)::bigint
FROM transfers t CROSS JOIN LATERAL (VALUES
    (t.debit_account_id, t.posted_amount, 0::bigint, t.pending_delta, 0::bigint),
    (t.credit_account_id, 0::bigint, t.posted_amount, 0::bigint, t.pending_delta)
) AS l(account, dp, cp, dpend, cpend)
WHERE {where}
GROUP BY l.account
"""


def _sums(rows: Sequence[tuple]) -> dict[str, Balances]:
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


# -- PostgreSQL side -----------------------------------------------------------------------


def journal_changes(conn: psycopg.Connection, lo: int, hi: int) -> dict[str, Balances]:
    """Per-account change by the rows of transactions in [lo, hi) (accounts that moved)."""
    where = sql.SQL("t.txid >= {} AND t.txid < {}").format(sql.Literal(lo), sql.Literal(hi))
    return _sums(conn.execute(sql.SQL(_PG_LEGS).format(where=where)).fetchall())


def journal_tail(conn: psycopg.Connection, ids: Sequence[str], lo: int) -> dict[str, Balances]:
    """Per-account change by the rows of transactions from ``lo`` on, committed by now."""
    if not ids:
        return {}
    where = sql.SQL("t.txid >= {} AND l.account = ANY({})").format(
        sql.Literal(lo), sql.Literal(list(ids))
    )
    return _sums(conn.execute(sql.SQL(_PG_LEGS).format(where=where)).fetchall())


def journal_balances_of(
    conn: psycopg.Connection, ids: Sequence[str] | None, below: int | None = None
) -> dict[str, Balances]:
    """Journal totals of existing accounts (all if ``ids`` is None; zero if nothing moved),
    over the rows of transactions below ``below`` (all rows if None)."""
    upto = sql.SQL("TRUE") if below is None else sql.SQL("txid < {}").format(sql.Literal(below))
    if ids is None:
        query = sql.SQL(
            "SELECT a.id, COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpend, 0),"
            " COALESCE(s.cpend, 0) FROM accounts a LEFT JOIN ({legs}) AS s(id, dp, cp, dpend,"
            " cpend) ON s.id = a.id"
        ).format(legs=sql.SQL(_PG_LEGS).format(where=upto))
        return _sums(conn.execute(query).fetchall())
    # A few accounts: through the per-account indexes, not the whole journal.
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
    ).format(ids=sql.Literal(list(ids)), upto=upto)
    return _sums(conn.execute(query).fetchall())


def accounts_created(conn: psycopg.Connection, lo: int, hi: int) -> list[str]:
    """Accounts created by transactions in [lo, hi)."""
    rows = conn.execute("SELECT id FROM accounts WHERE txid >= %s AND txid < %s", (lo, hi))
    return [r[0] for r in rows]


def account_currencies(conn: psycopg.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT id, currency FROM accounts")}


def _rows_where(lo: int, hi: int, recheck: Sequence[str]) -> sql.Composable:
    """Rows of [lo, hi), and rows below ``hi`` named in ``recheck``."""
    in_range = sql.SQL("txid >= {} AND txid < {}").format(sql.Literal(lo), sql.Literal(hi))
    if not recheck:
        return in_range
    return sql.SQL("({}) OR (txid < {} AND id = ANY({}))").format(
        in_range, sql.Literal(hi), sql.Literal(list(recheck))
    )


def export_journal_rows(
    conn: psycopg.Connection, lo: int, hi: int, recheck: Sequence[str], csv_path: Path
) -> int:
    """The journal's rows of [lo, hi) (and ``recheck``) to CSV, for the row-level comparison
    in DuckDB; returns how many."""
    query = sql.SQL(
        "COPY (SELECT id, amount, status, posted_amount, pending_delta FROM transfers"
        " WHERE {}) TO STDOUT (FORMAT csv)"
    ).format(_rows_where(lo, hi, recheck))
    cur = conn.cursor()
    with open(csv_path, "wb") as f, cur.copy(query) as copy:
        for data in copy:
            f.write(data)
    return max(cur.rowcount, 0)


# -- DuckDB side ----------------------------------------------------------------------------


def _duck_range(lo: int, hi: int) -> str:
    # Plain bounds on txid: DuckDB skips the segments (and row groups) outside them.
    return f"txid >= {int(lo)} AND txid < {int(hi)}"


_DUCK_LEGS = """
SELECT account, SUM(dp)::BIGINT, SUM(cp)::BIGINT, SUM(dpend)::BIGINT, SUM(cpend)::BIGINT
FROM (
    SELECT debit_account_id AS account, posted_amount AS dp, 0::BIGINT AS cp,
           pending_delta AS dpend, 0::BIGINT AS cpend FROM journal WHERE {where}
    UNION ALL
    SELECT credit_account_id, 0, posted_amount, 0, pending_delta FROM journal WHERE {where}
) GROUP BY account
"""


def analytics_changes(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> dict[str, Balances]:
    """Per-account change by the analytics rows of [lo, hi) (accounts that moved)."""
    return _sums(con.execute(_DUCK_LEGS.format(where=_duck_range(lo, hi))).fetchall())


def analytics_balances_at(
    con: duckdb.DuckDBPyConnection, hi: int, ids: Sequence[str] | None
) -> dict[str, Balances]:
    """Analytics totals over its rows below ``hi``, for the accounts it holds created below
    ``hi`` (all, or ``ids``): an account missing from its ``accounts`` is missing here."""
    wanted = "" if ids is None else " AND a.account_id IN (SELECT unnest($ids))"
    query = (
        "SELECT a.account_id, COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpend, 0),"
        " COALESCE(s.cpend, 0) FROM accounts a LEFT JOIN ("
        + _DUCK_LEGS.format(where=_duck_range(-1, hi))
        + f") AS s(id, dp, cp, dpend, cpend) ON s.id = a.account_id WHERE a.txid < {int(hi)}"
        + wanted
    )
    return _sums(con.execute(query, {} if ids is None else {"ids": list(ids)}).fetchall())


def compare_rows(
    con: duckdb.DuckDBPyConnection, csv_path: Path, lo: int, hi: int, recheck: Sequence[str]
) -> tuple[list[Finding], bool]:
    """The journal's rows (CSV) against the analytics rows of the same range: every
    difference, up to MAX_ROW_FINDINGS; second, whether that limit cut the list short."""
    where = _duck_range(lo, hi)
    if recheck:
        where = f"({where}) OR (txid < {int(hi)} AND id IN (SELECT unnest($recheck)))"
    rows = con.execute(
        f"""
        WITH pg AS (
            SELECT * FROM read_csv('{csv_path}', header=false, auto_detect=false,
                columns={{'id': 'VARCHAR', 'amount': 'BIGINT', 'status': 'VARCHAR',
                          'posted_amount': 'BIGINT', 'pending_delta': 'BIGINT'}})
        ), dk AS (
            SELECT id, amount, status, posted_amount, pending_delta FROM journal WHERE {where}
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
        LIMIT {MAX_ROW_FINDINGS}
        """,
        {"recheck": list(recheck)} if recheck else {},
    ).fetchall()
    found = [
        Finding(kind, "transfer", tid, JOURNAL_ANALYTICS, exp, act) for tid, kind, exp, act in rows
    ]
    return found, len(found) >= MAX_ROW_FINDINGS


def analytics_rows(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> int:
    row = con.execute(f"SELECT count(*) FROM journal WHERE {_duck_range(lo, hi)}").fetchone()
    assert row is not None  # count(*) answers one row
    return int(row[0])


# -- the bank's side (ACH) ---------------------------------------------------------------------

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
