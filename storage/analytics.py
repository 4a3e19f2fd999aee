"""The analytics store: the committed journal as Parquet segments, DuckDB views over them.

DuckDB lets one process write a database file, and an analyst's ``duckdb``
must be able to query while the node runs. So the node never keeps a DuckDB
file open for writing: it appends immutable Parquet segments, and
``views.duckdb`` holds only view definitions over them. Any number of
processes open it read-only (``duckdb -readonly``, ``paynode sql``) and see
every segment published so far.

Layout under ``<data-dir>/analytics``::

    live -> gen-000003/               symlink, swapped atomically by compaction
    gen-000003/transfers-<txid>-<seq>.parquet, accounts-<txid>-<seq>.parquet,
               audit-<txid>-<seq>.parquet
    recon/reconciliation_runs.parquet, recon/discrepancies.parquet
    views.duckdb                      views only, rewritten atomically at start
    tmp/

**No gaps, no duplicates.** Rows are read from PostgreSQL in ``(txid, id)``
order, ``txid`` being the writing transaction's id, and only below the
oldest transaction still running (``pg_snapshot_xmin``): every such
transaction has finished, so no row can appear later behind the watermark.
The watermark is the largest ``(txid, id)`` in the published segments, and a
segment is published by an atomic rename: after a crash it is either there
(and the watermark includes it) or not (and it is read again).

No personal data: the journal's and accounts' free-form ``metadata`` is not
exported (clients may put anything there); owners appear as user ids only. The
audit log goes out without source IPs and with only the keys of before/after.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

Watermark = tuple[int, str]  # (txid, id): everything up to here is published
START: Watermark = (-1, "")


@dataclass(frozen=True)
class Exported:
    """A journal table as exported: its PostgreSQL columns and their DuckDB types."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]


TRANSFERS = Exported(
    "transfers",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("debit_account_id", "VARCHAR"),
        ("credit_account_id", "VARCHAR"),
        ("amount", "BIGINT"),
        ("currency", "VARCHAR"),
        ("flags", "INTEGER"),
        ("pending_id", "VARCHAR"),
        ("timeout_s", "INTEGER"),
        ("status", "VARCHAR"),
        ("posted_amount", "BIGINT"),
        ("pending_delta", "BIGINT"),
        ("ts", "BIGINT"),
    ),
)
ACCOUNTS = Exported(
    "accounts",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("currency", "VARCHAR"),
        ("flags", "INTEGER"),
        ("owner_user_id", "VARCHAR"),
        ("ts", "BIGINT"),
    ),
)
# Which rail made a transfer (migration 12): payments, refunds, ACH returns, micro-deposits.
TRANSFER_RAILS = Exported(
    "transfer_rails",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("rail", "VARCHAR"),
        ("payment_id", "VARCHAR"),
        ("ts", "BIGINT"),
    ),
)
# Completed FX conversions (migration 19): FX volume and P&L per currency pair.
FX_TRADES = Exported(
    "fx_trades",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("sell_currency", "VARCHAR"),
        ("buy_currency", "VARCHAR"),
        ("sell_amount", "BIGINT"),
        ("buy_amount", "BIGINT"),
        ("mid_e9", "BIGINT"),
        ("rate_e9", "BIGINT"),
        ("pnl", "BIGINT"),
        ("ts", "BIGINT"),
    ),
)
# Billing (migration 29): every version of a subscription's and an invoice's state,
# appended by triggers in the transaction that changes the row (the rows themselves are
# updated in place, and only append-only tables can be followed by (txid, id)). ``id``
# is the version's seq zero-padded; the latest seq per object is its state now. ``*_us``:
# unix microseconds on the subscription's clock (a test clock's time, else the wall's).
BILLING_SUBSCRIPTIONS = Exported(
    "billing_subscription_history",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("seq", "BIGINT"),
        ("subscription_id", "VARCHAR"),
        ("customer_user_id", "VARCHAR"),
        ("merchant_user_id", "VARCHAR"),
        ("price_id", "VARCHAR"),
        ("price_amount", "BIGINT"),
        ("currency", "VARCHAR"),
        ("interval", "VARCHAR"),
        ("interval_count", "INTEGER"),
        ("quantity", "INTEGER"),
        ("status", "VARCHAR"),
        ("cancel_at_period_end", "BOOLEAN"),
        ("started_us", "BIGINT"),
        ("canceled_us", "BIGINT"),
        ("test_clock_id", "VARCHAR"),
        ("at_us", "BIGINT"),
        ("ts", "BIGINT"),
    ),
)
BILLING_INVOICES = Exported(
    "billing_invoice_history",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("seq", "BIGINT"),
        ("invoice_id", "VARCHAR"),
        ("number", "VARCHAR"),
        ("subscription_id", "VARCHAR"),
        ("customer_user_id", "VARCHAR"),
        ("merchant_user_id", "VARCHAR"),
        ("period_index", "INTEGER"),
        ("currency", "VARCHAR"),
        ("total", "BIGINT"),
        ("amount_due", "BIGINT"),
        ("status", "VARCHAR"),
        ("attempts", "INTEGER"),
        ("last_code", "VARCHAR"),
        ("at_us", "BIGINT"),
        ("ts", "BIGINT"),
    ),
)
# The audit log without personal data (storage.audit_chain.redact_for_analytics):
# PostgreSQL's view ``audit`` over ``audit_log`` drops source_ip and keeps only the
# keys of before/after, comma-joined and sorted ('' for {}, NULL for none); ``id`` is
# seq zero-padded to 20 digits so that (txid, id) orders like the other tables.
AUDIT = Exported(
    "audit",
    (
        ("txid", "BIGINT"),
        ("id", "VARCHAR"),
        ("seq", "BIGINT"),
        ("at", "VARCHAR"),
        ("actor", "VARCHAR"),
        ("action", "VARCHAR"),
        ("subject", "VARCHAR"),
        ("before_keys", "VARCHAR"),
        ("after_keys", "VARCHAR"),
        ("prev_hash", "VARCHAR"),
        ("hash", "VARCHAR"),
        ("ts", "BIGINT"),
    ),
)
# Exported in this order, below one xmin. A rail's label commits before its transfer
# reaches a shard, so below any xmin the labels are there for every journal row.
EXPORTED = (
    ACCOUNTS, TRANSFER_RAILS, TRANSFERS, FX_TRADES, BILLING_SUBSCRIPTIONS, BILLING_INVOICES, AUDIT,
)  # fmt: skip
_SEGMENT = re.compile(r"(?P<table>[a-z_]+)-(?P<txid>\d{20})-(?P<seq>\d{8})\.parquet\Z")
GRACE_S = 120.0  # an old generation stays readable this long after a swap


def xmin(conn: psycopg.Connection) -> int:
    """Transactions below this id have all finished: their rows are final."""
    row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def export_query(table: Exported, after: Watermark, below_txid: int, limit: int) -> sql.Composed:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.names)
    return sql.SQL(
        "COPY (SELECT {cols} FROM {table} WHERE (txid, id) > ({t}, {i}) AND txid < {x}"
        " ORDER BY txid, id LIMIT {n}) TO STDOUT (FORMAT csv)"
    ).format(
        cols=cols,
        table=sql.Identifier(table.name),
        t=sql.Literal(after[0]),
        i=sql.Literal(after[1]),
        x=sql.Literal(below_txid),
        n=sql.Literal(limit),
    )


def _csv_source(path: Path, table: Exported) -> str:
    types = ", ".join(f"'{c}': '{t}'" for c, t in table.columns)
    return (
        f"read_csv('{path}', columns={{{types}}}, header=false, auto_detect=false,"
        " quote='\"', escape='\"', allow_quoted_nulls=false)"
    )


class Store:
    """The segment files. One writer (the analytics actor); readers anywhere."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.live = root / "live"
        self.tmp = root / "tmp"
        self.recon = root / "recon"
        self._db = duckdb.connect()  # in memory: only converts and reads files
        self._seq = 0

    # -- set-up ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the layout if new; drop leftovers of an interrupted write; publish views."""
        for d in (self.root, self.tmp, self.recon):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        if not self.live.exists():
            gen = self.root / "gen-000001"
            gen.mkdir(exist_ok=True)
            _swap_symlink(self.live, gen.name)
        for table in EXPORTED:
            if not self.segments(table):
                self._write_empty(table)
        for name, columns in RECON_COLUMNS.items():
            if not (self.recon / f"{name}.parquet").exists():
                empty = ", ".join(f"NULL::{t} AS {c}" for c, t in columns)
                staged = self.tmp / f"{name}.parquet"
                self._db.execute(f"COPY (SELECT {empty} LIMIT 0) TO '{staged}' (FORMAT parquet)")
                os.replace(staged, self.recon / f"{name}.parquet")
        self._seq = max((int(m["seq"]) for m in self._matches()), default=0)
        write_views_file(self.root)

    def _matches(self) -> list[re.Match]:
        found = (_SEGMENT.match(p.name) for p in self.live.iterdir())
        return [m for m in found if m is not None]

    def segments(self, table: Exported) -> list[Path]:
        names = sorted(m.string for m in self._matches() if m["table"] == table.name)
        return [self.live / n for n in names]

    def _write_empty(self, table: Exported) -> None:
        cols = ", ".join(f"NULL::{t} AS {c}" for c, t in table.columns)
        self._publish(table, f"SELECT {cols} LIMIT 0", txid=0)

    # -- appending ------------------------------------------------------------------

    def watermark(self, table: Exported) -> Watermark:
        row = self._db.execute(
            f"SELECT txid, id FROM read_parquet({_files(self.segments(table))})"
            " ORDER BY txid DESC, id DESC LIMIT 1"
        ).fetchone()
        return START if row is None else (int(row[0]), str(row[1]))

    def append_csv(self, table: Exported, csv_path: Path, last_txid: int) -> Path:
        """Publish a segment from a CSV export (rows already in (txid, id) order)."""
        return self._publish(table, f"SELECT * FROM {_csv_source(csv_path, table)}", last_txid)

    def summary(self, segment: Path) -> tuple[int, int]:
        """(rows, smallest ts) of a published segment."""
        row = self._db.execute(
            f"SELECT count(*), min(ts) FROM read_parquet('{segment}')"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _publish(self, table: Exported, select: str, txid: int) -> Path:
        self._seq += 1
        name = f"{table.name}-{txid:020d}-{self._seq:08d}.parquet"
        staged = self.tmp / name
        self._db.execute(f"COPY ({select}) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)")
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        final = self.live / name
        os.replace(staged, final)  # the publish: readers see the whole segment or none
        return final

    # -- compaction ------------------------------------------------------------------

    def compact(self, table: Exported, max_segments: int) -> int:
        """Merge segments in tiers, so that each row is rewritten a few times in all.

        Segments are ordered by their last (txid, id). Leaving the newest alone,
        once the last ``FANOUT`` segments before it are of the same size tier
        (``FANOUT`` times bigger per tier), they become one segment of the next
        tier; repeated while it applies, like a binary counter. A row is thus
        rewritten about once per tier, log_FANOUT of the history, where merging
        everything each time rewrote the whole history every few seconds under
        load. Past ``max_segments`` all but the newest are merged (a bound, seldom
        reached: the tiers keep about FANOUT per tier).

        The merged set goes into a new generation directory (hard links for the
        rest) and ``live`` is swapped to it in one rename: a reader sees the old
        set or the new one, never both. Returns the segments merged (0 if none).
        """
        merged = 0
        while run := self._mergeable(self.segments(table), max_segments):
            self._merge(table, run)
            merged += len(run)
        return merged

    @staticmethod
    def _mergeable(current: list[Path], max_segments: int) -> list[Path]:
        older = current[:-1]  # the newest stays as it is
        if len(current) > max_segments:
            return older
        if len(older) < FANOUT:
            return []
        tiers = [_tier(p.stat().st_size) for p in older[-FANOUT:]]
        return older[-FANOUT:] if len(set(tiers)) == 1 else []

    def _merge(self, table: Exported, merge: list[Path]) -> None:
        gen_now = self.live.resolve()
        number = int(gen_now.name.split("-")[1]) + 1
        gen_next = self.root / f"gen-{number:06d}"
        gen_next.mkdir()
        last = _SEGMENT.match(merge[-1].name)
        assert last is not None
        merged = self.tmp / f"{table.name}-{last['txid']}-{last['seq']}.parquet"
        self._db.execute(
            f"COPY (SELECT * FROM read_parquet({_files(merge)}) ORDER BY txid, id)"
            f" TO '{merged}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"
        )
        os.replace(merged, gen_next / merged.name)
        merged_names = {p.name for p in merge}
        for p in gen_now.iterdir():
            if p.name not in merged_names:
                os.link(p, gen_next / p.name)
        _swap_symlink(self.live, gen_next.name)
        self.collect_garbage()

    def collect_garbage(self, grace_s: float = GRACE_S) -> None:
        """Remove generations older than the live one once no reader can still be listing them."""
        live = self.live.resolve().name
        for gen in self.root.glob("gen-*"):
            if gen.name != live and time.time() - gen.stat().st_mtime > grace_s:
                shutil.rmtree(gen, ignore_errors=True)

    # -- reconciliation tables ----------------------------------------------------------

    def replace_recon_table(self, name: str, csv_path: Path) -> None:
        """Replace a reconciliation table's file with a fresh CSV export of it."""
        staged = self.tmp / f"{name}.parquet"
        source = _csv_source(csv_path, Exported(name, RECON_COLUMNS[name]))
        self._db.execute(f"COPY (SELECT * FROM {source}) TO '{staged}' (FORMAT parquet)")
        os.replace(staged, self.recon / f"{name}.parquet")


FANOUT = 8  # segments of one tier merged into one of the next
TIER_BASE_BYTES = 1 << 20  # segments up to this size are the first tier


def _tier(size_bytes: int) -> int:
    """0 up to TIER_BASE_BYTES, then one more per FANOUT times bigger."""
    if size_bytes <= TIER_BASE_BYTES:
        return 0
    return 1 + int(math.log(size_bytes / TIER_BASE_BYTES, FANOUT))


def _files(paths: list[Path]) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


def _swap_symlink(link: Path, target: str) -> None:
    staged = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    os.symlink(target, staged)
    os.replace(staged, link)


# -- the views ------------------------------------------------------------------------

RECON_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "reconciliation_runs": (
        ("id", "BIGINT"),
        ("kind", "VARCHAR"),
        ("trigger", "VARCHAR"),
        ("started_at", "TIMESTAMP"),
        ("finished_at", "TIMESTAMP"),
        ("status", "VARCHAR"),
        ("from_txid", "BIGINT"),
        ("to_txid", "BIGINT"),
        ("accounts_checked", "INTEGER"),
        ("transfers_checked", "BIGINT"),
        ("skipped_in_flight", "INTEGER"),
        ("findings", "INTEGER"),
        ("candidates", "INTEGER"),
        ("found", "INTEGER"),
        ("dropped", "INTEGER"),
        ("resolved", "INTEGER"),
        ("error", "VARCHAR"),
    ),
    "discrepancies": (
        ("id", "BIGINT"),
        ("kind", "VARCHAR"),
        ("object_type", "VARCHAR"),
        ("object_id", "VARCHAR"),
        ("sources", "VARCHAR"),
        ("expected", "VARCHAR"),
        ("actual", "VARCHAR"),
        ("first_run_id", "BIGINT"),
        ("last_run_id", "BIGINT"),
        ("found_at", "TIMESTAMP"),
        ("last_seen_at", "TIMESTAMP"),
        ("resolved_at", "TIMESTAMP"),
    ),
}


def view_statements(root: Path, pinned: bool = False) -> list[str]:
    """The analysts' views, over the segments under ``root`` (absolute paths).

    ``pinned``: over the generation live now, not the ``live`` link. A query then
    reads one set of files even if compaction swaps ``live`` meanwhile (the merged
    file takes the name of the last segment it merged: read through the link after
    a swap, a list made before it would count rows twice). An old generation stays
    GRACE_S after its swap: long enough for one reconciliation.
    """
    live = (root / "live").resolve() if pinned else root.resolve() / "live"
    recon = root.resolve() / "recon"

    def recon_source(name: str) -> str:
        return f"SELECT * FROM read_parquet('{recon / name}.parquet')"

    return [
        "CREATE OR REPLACE VIEW journal AS"
        f" SELECT * FROM read_parquet('{live}/transfers-*.parquet')",
        f"""CREATE OR REPLACE VIEW accounts AS
            SELECT id AS account_id, currency, flags, owner_user_id,
                   (flags & 1) <> 0 AS no_overdraft, (flags & 2) <> 0 AS credit_limited,
                   make_timestamp(ts // 1000) AS created_at, txid
            FROM read_parquet('{live}/accounts-*.parquet')""",
        "CREATE OR REPLACE VIEW transfer_rails AS"
        f" SELECT id, rail, payment_id FROM read_parquet('{live}/transfer_rails-*.parquet')",
        # A row's rail: its own label, else its pending's (the post, void or expiry of a
        # rail's hold), else 'ledger' (a transfer made through /v1/transfers).
        """CREATE OR REPLACE VIEW transfers AS
            SELECT j.id AS transfer_id, j.debit_account_id, j.credit_account_id, j.amount,
                   j.currency, j.status,
                   CASE WHEN j.flags & 2 <> 0 THEN 'post'
                        WHEN j.flags & 4 <> 0 THEN 'void'
                        WHEN j.status = 'expired' THEN 'expiry'
                        WHEN j.flags & 1 <> 0 THEN 'pending'
                        ELSE 'transfer' END AS kind,
                   (j.flags & 8) <> 0 AS linked,
                   j.pending_id, j.timeout_s, j.posted_amount, j.pending_delta,
                   coalesce(r.rail, rp.rail, 'ledger') AS rail,
                   coalesce(r.payment_id, rp.payment_id) AS payment_id,
                   j.ts AS ts_ns, make_timestamp(j.ts // 1000) AS booked_at,
                   CAST(make_timestamp(j.ts // 1000) AS DATE) AS day, j.txid
            FROM journal j
            LEFT JOIN transfer_rails r ON r.id = j.id
            LEFT JOIN transfer_rails rp ON rp.id = j.pending_id""",
        # Each journal row as two legs: what it did to each of its accounts.
        """CREATE OR REPLACE VIEW legs AS
            SELECT transfer_id, debit_account_id AS account_id, 'debit' AS side, currency,
                   posted_amount AS debits_posted, 0::BIGINT AS credits_posted,
                   pending_delta AS debits_pending, 0::BIGINT AS credits_pending, booked_at, day
            FROM transfers
            UNION ALL
            SELECT transfer_id, credit_account_id, 'credit', currency, 0, posted_amount,
                   0, pending_delta, booked_at, day
            FROM transfers""",
        """CREATE OR REPLACE MACRO balances_at(as_of) AS TABLE
            SELECT a.account_id, a.currency, a.owner_user_id,
                   COALESCE(SUM(l.debits_posted), 0)::BIGINT AS debits_posted,
                   COALESCE(SUM(l.credits_posted), 0)::BIGINT AS credits_posted,
                   COALESCE(SUM(l.debits_pending), 0)::BIGINT AS debits_pending,
                   COALESCE(SUM(l.credits_pending), 0)::BIGINT AS credits_pending,
                   (COALESCE(SUM(l.credits_posted), 0) - COALESCE(SUM(l.debits_posted), 0))::BIGINT
                       AS balance,
                   (COALESCE(SUM(l.credits_posted), 0) - COALESCE(SUM(l.debits_posted), 0)
                    - COALESCE(SUM(l.debits_pending), 0))::BIGINT AS available
            FROM accounts a
            LEFT JOIN (SELECT * FROM legs WHERE booked_at <= as_of) l ON l.account_id = a.account_id
            WHERE a.created_at <= as_of
            GROUP BY a.account_id, a.currency, a.owner_user_id""",
        "CREATE OR REPLACE VIEW balances AS SELECT * FROM balances_at(TIMESTAMP '9999-12-31')",
        """CREATE OR REPLACE VIEW daily_volume AS
            SELECT day, currency, rail, status, kind, COUNT(*) AS transfers,
                   SUM(amount)::BIGINT AS amount, SUM(posted_amount)::BIGINT AS posted_amount
            FROM transfers GROUP BY ALL""",
        f"""CREATE OR REPLACE VIEW fx_trades AS
            SELECT id AS conversion_id, sell_currency || '/' || buy_currency AS pair,
                   sell_currency, buy_currency, sell_amount, buy_amount,
                   mid_e9, rate_e9, pnl,
                   make_timestamp(ts // 1000) AS traded_at,
                   CAST(make_timestamp(ts // 1000) AS DATE) AS day, txid
            FROM read_parquet('{live}/fx_trades-*.parquet')""",
        # Volume in each side's minor units; pnl (the spread kept) in the bought currency's.
        """CREATE OR REPLACE VIEW fx_volume AS
            SELECT day, pair, sell_currency, buy_currency, COUNT(*) AS conversions,
                   SUM(sell_amount)::BIGINT AS sold, SUM(buy_amount)::BIGINT AS bought,
                   SUM(pnl)::BIGINT AS pnl
            FROM fx_trades GROUP BY ALL""",
        """CREATE OR REPLACE VIEW account_activity AS
            SELECT account_id, day, currency,
                   COUNT(*) FILTER (WHERE side = 'debit') AS debits,
                   SUM(debits_posted)::BIGINT AS debited,
                   COUNT(*) FILTER (WHERE side = 'credit') AS credits,
                   SUM(credits_posted)::BIGINT AS credited,
                   (SUM(credits_posted) - SUM(debits_posted))::BIGINT AS net
            FROM legs GROUP BY ALL""",
        """CREATE OR REPLACE VIEW pending_holds AS
            SELECT p.transfer_id, p.debit_account_id, p.credit_account_id, p.amount,
                   p.currency, p.booked_at AS held_at,
                   timezone('UTC', current_timestamp) - p.booked_at AS age,
                   CASE WHEN p.timeout_s > 0 THEN p.booked_at + to_seconds(p.timeout_s)
                   END AS expires_at
            FROM transfers p
            WHERE p.kind = 'pending'
              AND NOT EXISTS (SELECT 1 FROM journal r WHERE r.pending_id = p.transfer_id)""",
        # The audit log as storage.audit_chain.redact_for_analytics gives it: which
        # fields an action touched (keys only), never the values or the source IP.
        # "at" (a keyword in DuckDB) is the hashed text; occurred_at the same as a TIMESTAMP.
        f"""CREATE OR REPLACE VIEW audit AS
            SELECT seq, "at", actor, action, subject,
                   CASE WHEN before_keys = '' THEN []::VARCHAR[]
                        ELSE string_split(before_keys, ',') END AS before_keys,
                   CASE WHEN after_keys = '' THEN []::VARCHAR[]
                        ELSE string_split(after_keys, ',') END AS after_keys,
                   prev_hash, hash,
                   make_timestamp(ts // 1000) AS occurred_at,
                   CAST(make_timestamp(ts // 1000) AS DATE) AS day, txid
            FROM read_parquet('{live}/audit-*.parquet')""",
        *billing_views(live),
        f"CREATE OR REPLACE VIEW reconciliation_runs AS {recon_source('reconciliation_runs')}",
        f"CREATE OR REPLACE VIEW discrepancies AS {recon_source('discrepancies')}",
    ]


# A price's amount per month, floored: month amount // count; year amount // (12 count);
# week amount * 52 // (12 count); day amount * 365 // (12 count). Integers throughout.
_MONTHLY = """(CASE interval
    WHEN 'month' THEN amount // interval_count
    WHEN 'year' THEN amount // (12 * interval_count)
    WHEN 'week' THEN amount * 52 // (12 * interval_count)
    WHEN 'day' THEN amount * 365 // (12 * interval_count) END)::BIGINT"""
_DAY_US = 86_400_000_000


def billing_views(live: Path) -> list[str]:
    """Subscriptions and invoices (issue #20 item 7), from their version histories.

    A version holds from its ``effective_at`` until the next one's (by seq). Days and
    months are UTC; a subscription counts on a day when it is ``active`` at the day's end.
    """
    return [
        f"""CREATE OR REPLACE VIEW subscription_history AS
            SELECT subscription_id, seq, customer_user_id AS customer,
                   merchant_user_id AS merchant, price_id AS price, price_amount,
                   quantity, price_amount * quantity AS amount, currency, interval,
                   interval_count, status, cancel_at_period_end,
                   make_timestamp(started_us) AS started,
                   make_timestamp(canceled_us) AS canceled_at, test_clock_id,
                   make_timestamp(at_us) AS effective_at,
                   make_timestamp(lead(at_us) OVER w) AS until,
                   lag(status) OVER w AS previous_status, txid
            FROM read_parquet('{live}/billing_subscription_history-*.parquet')
            WINDOW w AS (PARTITION BY subscription_id ORDER BY seq)""",
        f"""CREATE OR REPLACE VIEW invoice_history AS
            SELECT invoice_id, seq, number, subscription_id, customer_user_id AS customer,
                   merchant_user_id AS merchant, period_index, currency, total, amount_due,
                   status, attempts, last_code, make_timestamp(at_us) AS effective_at,
                   make_timestamp(lead(at_us) OVER w) AS until, txid
            FROM read_parquet('{live}/billing_invoice_history-*.parquet')
            WINDOW w AS (PARTITION BY invoice_id ORDER BY seq)""",
        # The state now: each one's latest version.
        """CREATE OR REPLACE VIEW subscriptions AS
            SELECT subscription_id AS id, customer, merchant, price, amount, quantity,
                   currency, interval, interval_count, status, cancel_at_period_end,
                   started, canceled_at, effective_at AS updated_at
            FROM subscription_history WHERE until IS NULL""",
        """CREATE OR REPLACE VIEW invoices AS
            SELECT h.invoice_id AS id, h.number, h.subscription_id AS subscription,
                   h.customer, h.merchant, h.currency, h.total, h.amount_due, h.status,
                   f.created, f.paid_at, h.attempts, h.last_code, f.first_failed_at
            FROM invoice_history h JOIN (
                SELECT invoice_id, max(seq) AS seq, min(effective_at) AS created,
                       min(effective_at) FILTER (WHERE status = 'paid') AS paid_at,
                       min(effective_at) FILTER (WHERE last_code IS NOT NULL)
                           AS first_failed_at
                FROM invoice_history GROUP BY invoice_id
            ) f ON f.invoice_id = h.invoice_id AND f.seq = h.seq""",
        # Per UTC day and currency: the monthly recurring revenue of the subscriptions
        # active at the day's end (_MONTHLY per subscription, then summed), from the
        # first version's day to today (or the last version's, on a test clock ahead).
        f"""CREATE OR REPLACE VIEW mrr_daily AS
            WITH v AS (
                SELECT subscription_id, currency, effective_at, until,
                       {_MONTHLY} AS mrr
                FROM subscription_history WHERE status = 'active'
            ), bounds AS (
                SELECT min(effective_at)::DATE AS lo,
                       greatest(max(effective_at)::DATE, current_date) AS hi
                FROM subscription_history
            ), days AS (
                SELECT unnest(generate_series(lo, hi, INTERVAL 1 DAY))::DATE AS day
                FROM bounds WHERE lo IS NOT NULL
            )
            SELECT d.day, v.currency, SUM(v.mrr)::BIGINT AS mrr,
                   COUNT(*) AS active_subscriptions
            FROM days d JOIN v ON v.effective_at < d.day + INTERVAL 1 DAY
                AND (v.until IS NULL OR v.until >= d.day + INTERVAL 1 DAY)
            GROUP BY ALL""",
        # Per UTC month: subscriptions active or past_due just before it began, those of
        # them or of later ones canceled in it (from active or past_due: a trial's
        # cancellation is not churn), and their ratio (not money: a DOUBLE).
        """CREATE OR REPLACE VIEW churn_monthly AS
            WITH bounds AS (
                SELECT date_trunc('month', min(effective_at))::DATE AS lo,
                       greatest(max(effective_at)::DATE, current_date) AS hi
                FROM subscription_history
            ), months AS (
                SELECT unnest(generate_series(lo, hi, INTERVAL 1 MONTH))::DATE AS month
                FROM bounds WHERE lo IS NOT NULL
            ), at_start AS (
                SELECT m.month, COUNT(v.subscription_id) AS n
                FROM months m LEFT JOIN subscription_history v
                  ON v.status IN ('active', 'past_due') AND v.effective_at < m.month
                 AND (v.until IS NULL OR v.until >= m.month)
                GROUP BY m.month
            ), canceled AS (
                SELECT date_trunc('month', effective_at)::DATE AS month,
                       COUNT(DISTINCT subscription_id) AS n
                FROM subscription_history
                WHERE status = 'canceled' AND previous_status IN ('active', 'past_due')
                GROUP BY ALL
            )
            SELECT s.month, s.n AS active_at_start, coalesce(c.n, 0) AS canceled,
                   CASE WHEN s.n > 0 THEN coalesce(c.n, 0) / s.n END::DOUBLE AS churn
            FROM at_start s LEFT JOIN canceled c ON c.month = s.month""",
        # Open invoices as they were at ``as_of``, by whole days since they were created
        # (an invoice is due when finalized): 0-30, 31-60, 61-90, 90+.
        f"""CREATE OR REPLACE MACRO invoice_aging_at(as_of) AS TABLE
            WITH v AS (
                SELECT h.*, (epoch_us(CAST(as_of AS TIMESTAMP))
                             - epoch_us(i.created)) // {_DAY_US} AS days
                FROM invoice_history h JOIN invoices i ON i.id = h.invoice_id
                WHERE h.effective_at <= CAST(as_of AS TIMESTAMP)
                  AND (h.until IS NULL OR h.until > CAST(as_of AS TIMESTAMP))
                  AND h.status = 'open'
            )
            SELECT CASE WHEN days <= 30 THEN '0-30' WHEN days <= 60 THEN '31-60'
                        WHEN days <= 90 THEN '61-90' ELSE '90+' END AS bucket,
                   currency, COUNT(*) AS invoices, SUM(amount_due)::BIGINT AS amount_due
            FROM v GROUP BY ALL""",
        """CREATE OR REPLACE VIEW invoice_aging AS
            SELECT * FROM invoice_aging_at(timezone('UTC', current_timestamp))""",
        # Each invoice refused at least once: how it ended (paid, uncollectible, still
        # open, void) and how long from its first refusal to its payment, in days.
        """CREATE OR REPLACE VIEW dunning_outcomes AS
            SELECT id AS invoice, subscription, currency, amount_due, attempts,
                   attempts - CASE WHEN status = 'paid' THEN 1 ELSE 0 END AS failures,
                   status AS outcome, first_failed_at, paid_at,
                   CASE WHEN status = 'paid' THEN
                       (epoch_us(paid_at) - epoch_us(first_failed_at)) / 86400e6 END
                       AS days_to_recover
            FROM invoices WHERE first_failed_at IS NOT NULL""",
    ]


def connect_views(root: Path, pinned: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views: what ``paynode sql`` and reconciliation use."""
    con = duckdb.connect()
    for stmt in view_statements(root, pinned):
        con.execute(stmt)
    return con


def write_views_file(root: Path) -> Path:
    """``views.duckdb`` for the plain CLI, replaced atomically (open readers keep the old one)."""
    target = root / "views.duckdb"
    staged = root / "tmp" / "views.duckdb"
    for p in (staged, staged.with_suffix(".duckdb.wal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    con = duckdb.connect(str(staged))
    try:
        for stmt in view_statements(root):
            con.execute(stmt)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(staged, target)
    return target
