"""Reconciliation's records in PostgreSQL: runs, candidates and discrepancies.

A run's findings go through the persistence rule (:func:`domain.reconciliation.decide`)
and its verdict is written by one statement, whatever the number of findings:
``reconciliation_candidates`` holds differences seen once (kept here so that a
restart does not forget them), ``discrepancies`` the confirmed ones, one open row
per (kind, object, sources), updated while seen and resolved once gone.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from paynode.domain.reconciliation import Key, Tracked, Verdict
from paynode.storage.analytics import RECON_COLUMNS

MAX_TRACKED = 10_000  # candidates, and open discrepancies, re-checked per run (oldest first)

RUN_FIELDS = frozenset({
    "status", "to_txid", "accounts_checked", "transfers_checked", "skipped_in_flight",
    "findings", "candidates", "found", "dropped", "resolved", "error",
})  # fmt: skip


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


def finish_run(conn: psycopg.Connection, run_id: int, **fields: object) -> None:
    assert set(fields) <= RUN_FIELDS, set(fields) - RUN_FIELDS
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in fields.items()
    )
    conn.execute(
        sql.SQL("UPDATE reconciliation_runs SET finished_at = now(), {} WHERE id = {}").format(
            sets, sql.Literal(run_id)
        )
    )


def tracked(
    conn: psycopg.Connection, limit: int = MAX_TRACKED
) -> tuple[list[Tracked], list[Tracked]]:
    """The candidates and the open discrepancies a run re-checks, oldest first, ``limit``
    of each (the rest wait for a later run)."""
    candidates = [
        Tracked((r[0], r[1], r[2], r[3]), int(r[4]))
        for r in conn.execute(
            "SELECT kind, object_type, object_id, sources, first_run_id"
            " FROM reconciliation_candidates ORDER BY first_run_id, object_id LIMIT %s",
            (limit,),
        )
    ]
    open_ = [
        Tracked((r[0], r[1], r[2], r[3]), int(r[4]), int(r[5]))
        for r in conn.execute(
            "SELECT kind, object_type, object_id, sources, first_run_id, id FROM discrepancies"
            " WHERE resolved_at IS NULL ORDER BY id LIMIT %s",
            (limit,),
        )
    ]
    return candidates, open_


def _columns(keys: list[Key]) -> list[list[str]]:
    return [[k[i] for k in keys] for i in range(4)]


# One statement: every array is one verdict list (Python made them disjoint). The guards
# (NOT EXISTS, ON CONFLICT) only matter past MAX_TRACKED, where a run did not load all.
_APPLY = """
WITH fresh AS (
    INSERT INTO reconciliation_candidates
        (kind, object_type, object_id, sources, expected, actual, first_run_id, last_run_id)
    SELECT f.kind, f.object_type, f.object_id, f.sources, f.expected, f.actual, %(run)s, %(run)s
    FROM unnest(%(n0)s::text[], %(n1)s::text[], %(n2)s::text[], %(n3)s::text[],
                %(n_exp)s::text[], %(n_act)s::text[])
         AS f(kind, object_type, object_id, sources, expected, actual)
    WHERE NOT EXISTS (
        SELECT 1 FROM discrepancies d WHERE d.resolved_at IS NULL AND d.kind = f.kind
        AND d.object_type = f.object_type AND d.object_id = f.object_id AND d.sources = f.sources)
    ON CONFLICT (kind, object_type, object_id, sources) DO UPDATE
        SET last_run_id = EXCLUDED.last_run_id, expected = EXCLUDED.expected,
            actual = EXCLUDED.actual
    RETURNING 1
), gone AS (
    DELETE FROM reconciliation_candidates c
    USING unnest(%(g0)s::text[], %(g1)s::text[], %(g2)s::text[], %(g3)s::text[])
          AS g(kind, object_type, object_id, sources)
    WHERE c.kind = g.kind AND c.object_type = g.object_type AND c.object_id = g.object_id
      AND c.sources = g.sources
    RETURNING 1
), opened AS (
    INSERT INTO discrepancies
        (kind, object_type, object_id, sources, expected, actual, first_run_id, last_run_id)
    SELECT o.kind, o.object_type, o.object_id, o.sources, o.expected, o.actual, o.first_run,
           %(run)s
    FROM unnest(%(o0)s::text[], %(o1)s::text[], %(o2)s::text[], %(o3)s::text[],
                %(o_exp)s::text[], %(o_act)s::text[], %(o_first)s::bigint[])
         AS o(kind, object_type, object_id, sources, expected, actual, first_run)
    ON CONFLICT (kind, object_type, object_id, sources) WHERE resolved_at IS NULL DO NOTHING
    RETURNING 1
), seen AS (
    UPDATE discrepancies d
    SET last_seen_at = now(), last_run_id = %(run)s, expected = s.expected, actual = s.actual
    FROM unnest(%(s_id)s::bigint[], %(s_exp)s::text[], %(s_act)s::text[])
         AS s(id, expected, actual)
    WHERE d.id = s.id AND d.resolved_at IS NULL
    RETURNING 1
), resolved AS (
    UPDATE discrepancies SET resolved_at = now()
    WHERE id = ANY(%(r_id)s::bigint[]) AND resolved_at IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM opened),
       (SELECT count(*) FROM resolved)
"""


def apply_verdict(conn: psycopg.Connection, run_id: int, v: Verdict) -> tuple[int, int, int]:
    """Write a run's verdict (one statement); (candidates added, discrepancies opened,
    discrepancies resolved)."""
    n0, n1, n2, n3 = _columns([f.key for f in v.new_candidates])
    g0, g1, g2, g3 = _columns([f.key for f, _ in v.confirmed] + v.dropped)
    o0, o1, o2, o3 = _columns([f.key for f, _ in v.confirmed])
    # fmt: off
    row = conn.execute(
        _APPLY,
        {
            "run": run_id,
            "n0": n0, "n1": n1, "n2": n2, "n3": n3,
            "n_exp": [f.expected for f in v.new_candidates],
            "n_act": [f.actual for f in v.new_candidates],
            "g0": g0, "g1": g1, "g2": g2, "g3": g3,
            "o0": o0, "o1": o1, "o2": o2, "o3": o3,
            "o_exp": [f.expected for f, _ in v.confirmed],
            "o_act": [f.actual for f, _ in v.confirmed],
            "o_first": [first for _, first in v.confirmed],
            "s_id": [i for i, _ in v.still_open],
            "s_exp": [f.expected for _, f in v.still_open],
            "s_act": [f.actual for _, f in v.still_open],
            "r_id": v.resolved,
        },
    ).fetchone()
    # fmt: on
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    """(open discrepancies, candidates awaiting a second look)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL),"
        " (SELECT count(*) FROM reconciliation_candidates)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


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
