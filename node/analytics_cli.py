"""``paynode sql``, ``paynode recon run``, ``paynode report daily``: the analysts' commands.

``sql`` and ``report`` read the analytics store directly (Parquet segments
through DuckDB views, read-only), so they work from any process while the
node runs, and even when it does not. ``recon run`` asks the running node,
which alone holds the ledger's memory, over HTTP with ``PAYNODE_API_KEY``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

from paynode.domain.settings import Settings

MAX_ROWS = 100_000  # printed rows; a bigger result is a job for the duckdb CLI or Python


def add_parsers(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "sql", help="query the analytics views (read-only), even while the node runs"
    )
    q.add_argument("query", help='e.g. "SELECT * FROM daily_volume ORDER BY day"')
    q.add_argument("--data-dir", help="data directory (default ./paynode-data)")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")

    rec = sub.add_parser("recon", help="reconciliation on the running node")
    rec.add_argument("action", choices=["run", "status"])
    rec.add_argument("--full", action="store_true", help="check everything, not only what changed")
    rec.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the node (default %(default)s)"
    )

    rep = sub.add_parser("report", help="a daily summary for finance: Markdown + PNG")
    rep.add_argument("period", choices=["daily"])
    rep.add_argument("--date", help="YYYY-MM-DD (default: today, UTC)")
    rep.add_argument("--days", type=int, default=14, help="days of volume shown (default 14)")
    rep.add_argument("--data-dir", help="data directory (default ./paynode-data)")
    rep.add_argument("--out", help="directory for the files (default <data-dir>/reports)")


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return value


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    plain = [[_plain(v) for v in r] for r in rows]
    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in plain], indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(plain)
        return buf.getvalue().rstrip("\n")
    cells = [columns] + [["" if v is None else str(v) for v in r] for r in plain]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    numeric = [bool(plain) and all(isinstance(r[i], int | None) for r in plain)
               for i in range(len(columns))]  # fmt: skip

    def line(row: list[str]) -> str:
        return " | ".join(
            (c.rjust(w) if num else c.ljust(w)).rstrip() if i == len(row) - 1 else
            (c.rjust(w) if num else c.ljust(w))
            for i, (c, w, num) in enumerate(zip(row, widths, numeric, strict=True))
        )  # fmt: skip

    lines = [line(row) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import duckdb

    from paynode.storage.analytics import connect_views

    root = settings.analytics_path()
    if not (root / "live").exists():
        print(f"paynode: no analytics store under {root} (has the node run?)", file=sys.stderr)
        return 2
    con = connect_views(root)
    try:
        cur = con.execute(args.query)
        if not cur.description:  # no result set (DB-API says None; duckdb's types, never)
            return 0
        columns = [d[0] for d in cur.description]
        rows = cur.fetchmany(MAX_ROWS + 1)
    except duckdb.Error as e:
        print(f"paynode: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        con.close()
    if len(rows) > MAX_ROWS:
        print(f"paynode: more than {MAX_ROWS} rows; add a LIMIT", file=sys.stderr)
        return 1
    print(format_rows(columns, rows, args.format))
    return 0


def cmd_recon(args: argparse.Namespace) -> int:
    import httpx

    key = os.environ.get("PAYNODE_API_KEY")
    if not key:
        print("paynode: set PAYNODE_API_KEY to the node's admin key", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {key}"}
    url = args.url.rstrip("/")
    try:
        if args.action == "run":
            kind = "full" if args.full else "incremental"
            r = httpx.post(f"{url}/v1/reconciliation/runs", json={"kind": kind},
                           headers=headers, timeout=330)  # fmt: skip
        else:
            r = httpx.get(f"{url}/v1/reconciliation/status", headers=headers, timeout=30)
    except httpx.HTTPError as e:
        print(f"paynode: cannot reach {url}: {type(e).__name__}", file=sys.stderr)
        return 2
    print(json.dumps(r.json(), indent=1))
    if r.status_code >= 400:
        return 2
    if args.action == "run":
        return 0 if r.json()["status"] == "ok" else 1
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from paynode.node.report import daily_report

    day = dt.date.fromisoformat(args.date) if args.date else dt.datetime.now(dt.UTC).date()
    out = Path(args.out) if args.out else settings.data_path() / "reports"
    if not (settings.analytics_path() / "live").exists():
        print(f"paynode: no analytics store under {settings.analytics_path()}", file=sys.stderr)
        return 2
    md, png = daily_report(settings.analytics_path(), day, max(1, args.days), out)
    print(f"wrote {md} and {png}")
    return 0
