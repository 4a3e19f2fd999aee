"""Balances recomputed from the journal alone: the yardstick for every other copy.

In-memory shard balances, and later DuckDB, must equal this aggregate at a
quiescent point. It reads only committed rows.
"""

from __future__ import annotations

import psycopg

from paynode.domain.reconciliation import Balances
from paynode.storage.database import libpq_url

__all__ = ["JOURNAL_BALANCES_SQL", "Balances", "currency_totals", "journal_balances"]

JOURNAL_BALANCES_SQL = """
SELECT a.id,
       COALESCE(SUM(l.dp), 0)::bigint, COALESCE(SUM(l.cp), 0)::bigint,
       COALESCE(SUM(l.dpend), 0)::bigint, COALESCE(SUM(l.cpend), 0)::bigint
FROM accounts a
LEFT JOIN (
    SELECT debit_account_id AS id, posted_amount AS dp, 0 AS cp,
           pending_delta AS dpend, 0 AS cpend FROM transfers
    UNION ALL
    SELECT credit_account_id, 0, posted_amount, 0, pending_delta FROM transfers
) l ON l.id = a.id
GROUP BY a.id
"""


def journal_balances(database_url: str) -> dict[str, Balances]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(JOURNAL_BALANCES_SQL)}


def currency_totals(database_url: str) -> dict[str, int]:
    """Sum of (credits_posted - debits_posted) per currency: zero in a sound ledger."""
    sql = (
        "SELECT a.currency, SUM(x.cp - x.dp)::bigint FROM ("
        + JOURNAL_BALANCES_SQL
        + ") AS x(id, dp, cp, dpend, cpend) JOIN accounts a ON a.id = x.id GROUP BY a.currency"
    )
    with psycopg.connect(libpq_url(database_url)) as conn:
        return {r[0]: r[1] for r in conn.execute(sql)}
