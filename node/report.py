"""The daily report: what moved, what the operator's accounts hold, what does not match.

Read from the analytics views only (no PostgreSQL, no personal data), written
as Markdown plus one PNG chart. Amounts are shown in major units with the
currency's decimals, computed with integers and Decimal, never floats.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from paynode.storage.analytics import connect_views

# ISO 4217 minor-unit exponents that are not 2 (the rest, and unknown codes, use 2).
_EXPONENT = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3,
             "JOD": 3, "TND": 3}  # fmt: skip


def money(minor: int, currency: str) -> str:
    exp = _EXPONENT.get(currency, 2)
    value = Decimal(int(minor)).scaleb(-exp)
    return f"{value:,.{exp}f} {currency}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["_none_", ""]
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def daily_report(root: Path, day: dt.date, days: int, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    first = day - dt.timedelta(days=days - 1)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())  # end of the day, UTC
    con = connect_views(root)
    try:
        volume = con.execute(
            "SELECT day, currency, SUM(transfers), SUM(posted_amount) FROM daily_volume"
            " WHERE day BETWEEN ? AND ? GROUP BY day, currency ORDER BY day, currency",
            [first, day],
        ).fetchall()
        detail = con.execute(
            "SELECT currency, kind, status, transfers, amount, posted_amount FROM daily_volume"
            " WHERE day = ? ORDER BY currency, kind, status",
            [day],
        ).fetchall()
        system = con.execute(
            "SELECT account_id, currency, balance, available, debits_pending FROM balances_at(?)"
            " WHERE owner_user_id IS NULL ORDER BY abs(balance) DESC, account_id LIMIT 10",
            [end],
        ).fetchall()
        holds = con.execute(
            "SELECT currency, COUNT(*), SUM(amount), MAX(age) FROM pending_holds GROUP BY currency"
        ).fetchall()
        open_by_kind = con.execute(
            "SELECT kind, sources, COUNT(*) FROM discrepancies WHERE resolved_at IS NULL"
            " GROUP BY ALL ORDER BY 3 DESC"
        ).fetchall()
        open_list = con.execute(
            "SELECT id, kind, object_type, object_id, sources, expected, actual, found_at"
            " FROM discrepancies WHERE resolved_at IS NULL ORDER BY id LIMIT 20"
        ).fetchall()
        runs = con.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'ok'),"
            " COUNT(*) FILTER (WHERE status = 'discrepancies'),"
            " COUNT(*) FILTER (WHERE status = 'failed'), MAX(finished_at)"
            " FROM reconciliation_runs WHERE CAST(started_at AS DATE) = ?",
            [day],
        ).fetchone()
    finally:
        con.close()

    png = out_dir / f"daily-{day.isoformat()}.png"
    _chart(volume, first, day, png)
    lines = [
        f"# paynode daily report, {day.isoformat()} (UTC)",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from the analytics store.",
        "",
        f"## Posted volume, {first.isoformat()} to {day.isoformat()}",
        "",
        f"![posted volume by day]({png.name})",
        "",
        *_table(
            ["day", "currency", "journal rows", "posted"],
            [[str(d), c, f"{n:,}", money(v, c)] for d, c, n, v in volume],
        ),
        f"## {day.isoformat()} by kind and status",
        "",
        *_table(
            ["currency", "kind", "status", "rows", "amount", "posted"],
            [[c, k, s, f"{n:,}", money(a, c), money(pa, c)] for c, k, s, n, a, pa in detail],
        ),
        "## Operator accounts (no owner) at the end of the day, largest 10",
        "",
        *_table(
            ["account", "balance", "available", "held (pending debits)"],
            [[a, money(b, c), money(av, c), money(dp, c)] for a, c, b, av, dp in system],
        ),
        "## Open holds (now)",
        "",
        *_table(
            ["currency", "holds", "amount", "oldest"],
            [[c, f"{n:,}", money(a, c), str(age).split(".")[0]] for c, n, a, age in holds],
        ),
        "## Reconciliation",
        "",
        f"Runs on {day.isoformat()}: {runs[0] if runs else 0} "
        f"({runs[1] if runs else 0} clean, {runs[2] if runs else 0} with discrepancies, "
        f"{runs[3] if runs else 0} failed); last finished {runs[4] if runs and runs[4] else '-'}.",
        "",
        "Open discrepancies by kind:",
        "",
        *_table(["kind", "between", "open"], [[k, s, str(n)] for k, s, n in open_by_kind]),
        "Oldest open (at most 20):",
        "",
        *_table(
            ["id", "kind", "object", "between", "journal says", "other copy says", "found"],
            [
                [str(i), k, f"{ot} {oid}", s, e or "-", a or "-", f"{f:%Y-%m-%d %H:%M}"]
                for i, k, ot, oid, s, e, a, f in open_list
            ],
        ),
    ]
    md = out_dir / f"daily-{day.isoformat()}.md"
    md.write_text("\n".join(lines))
    return md, png


def _chart(volume: list[tuple], first: dt.date, last: dt.date, path: Path) -> None:
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    currencies = sorted({c for _, c, _, _ in volume}) or ["USD"]
    fig, axes = plt.subplots(len(currencies), 1, figsize=(9, 2.8 * len(currencies)), squeeze=False)
    for ax, cur in zip(axes[:, 0], currencies, strict=True):
        by_day = {d: v for d, c, _, v in volume if c == cur}
        exp = _EXPONENT.get(cur, 2)
        # Whole major units (integer division): the chart needs no fractions of a cent.
        heights = [int(by_day.get(d, 0)) // 10**exp for d in days]
        ax.bar([d.strftime("%m-%d") for d in days], heights, color="#2f6690")
        ax.set_title(f"Posted volume per day, {cur} (whole units)")
        ax.tick_params(axis="x", labelrotation=45)
        ax.grid(axis="y", alpha=0.3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
