"""The reconciliation actor: memory == journal == analytics, all the time.

Every ``interval_s`` it runs an *incremental* check of what changed since
the last run (accounts created or moved by transactions since its
watermark); every ``full_every``-th run, and on demand, a *full* one (every
account and every journal row, which also finds tampering behind the node's
back). Each run:

1. memory vs journal, per account: shard balances read (at a durable
   point), then the journal aggregate, then memory again. Accounts whose
   memory moved in between are skipped as in flight; a difference on a
   still account is confirmed by re-reading before it is reported.
2. journal vs analytics, at the analytics watermark (both sides then hold
   exactly the same rows): per-account balances, and row by row (missing
   on either side, amount or status different).
3. per-currency totals (credits - debits) are zero in the journal and in
   analytics.

Bank files (settlement and returns) join this once the ACH rail exists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from pathlib import Path

import msgspec
import psycopg

from paynode.domain.ledger.model import shard_key
from paynode.domain.ledger.wire import decode_balances, encode
from paynode.domain.rails.calendar import add_business_days
from paynode.storage import reconciliation as r
from paynode.storage.analytics import connect_views
from paynode.storage.audit import Balances
from paynode.storage.database import libpq_url

log = logging.getLogger("paynode.reconciler")

CONFIRM_ATTEMPTS = 3
CHECKED_KINDS = (
    "balance_drift", "missing_in_analytics", "missing_in_journal", "amount_mismatch",
    "status_mismatch", "nonzero_total", "missing_in_bank",
)  # fmt: skip
# A bank settles or returns an entry by its effective date; returns may come two
# banking days later. Past that, silence is a discrepancy.
ACH_GRACE_BUSINESS_DAYS = 2


class RunSummary(msgspec.Struct):
    id: int
    kind: str
    trigger: str
    status: str
    from_txid: int
    to_txid: int
    accounts_checked: int
    transfers_checked: int
    skipped_in_flight: int
    found: int
    resolved: int
    seconds: float


class ReconStats(msgspec.Struct):
    runs: int
    failures: int
    last: RunSummary | None
    open_discrepancies: int
    last_run_unix: float


class Reconciler:
    def __init__(
        self,
        database_url: str,
        analytics_root: str,
        shard_names: list[str],
        analytics_name: str,
        namespace: str,
        interval_s: float = 30.0,
        full_every: int = 10,
    ) -> None:
        assert interval_s >= 0 and full_every >= 1
        self.database_url = database_url
        self.root = Path(analytics_root)
        self.shard_names = shard_names
        self.analytics_name = analytics_name
        self.namespace = namespace
        self.interval_s = interval_s
        self.full_every = full_every
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.runs = self.failures = 0
        self.last: RunSummary | None = None
        self.last_run_unix = 0.0
        self.open = 0

    async def start(self) -> None:
        import ray

        self.shards = [ray.get_actor(n, namespace=self.namespace) for n in self.shard_names]
        self.analytics = ray.get_actor(self.analytics_name, namespace=self.namespace)
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._every())

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            kind = "full" if (self.runs + 1) % self.full_every == 0 else "incremental"
            try:
                await self.run(kind, "schedule")
            except Exception as e:  # a failed run is recorded; the next one tries again
                log.warning("scheduled reconciliation failed: %s", type(e).__name__)

    async def run(self, kind: str = "incremental", trigger: str = "api") -> bytes:
        """One run; returns its RunSummary (msgpack). Runs never overlap."""
        assert kind in ("incremental", "full")
        async with self._lock:
            started = time.monotonic()
            try:
                summary = await self._run(kind, trigger, started)
            except Exception:
                self.failures += 1
                raise
            self.runs += 1
            self.last = summary
            self.last_run_unix = time.time()
            return msgspec.msgpack.encode(summary)

    async def status(self) -> bytes:
        return msgspec.msgpack.encode(
            ReconStats(self.runs, self.failures, self.last, self.open, self.last_run_unix)
        )

    # -- one run ------------------------------------------------------------------------

    async def _memory(self, ids: list[str]) -> dict[str, Balances | None]:
        by_shard: dict[int, list[str]] = defaultdict(list)
        for account_id in ids:
            by_shard[shard_key(account_id) % len(self.shards)].append(account_id)
        out: dict[str, Balances | None] = {}
        calls = {
            s: self.shards[s].get_accounts.remote(encode(part)) for s, part in by_shard.items()
        }
        for s, ref in calls.items():
            snap = decode_balances(await ref)
            if snap is None:
                raise RuntimeError("a shard could not reach a durable point")
            for account_id, b in zip(by_shard[s], snap, strict=True):
                out[account_id] = (
                    None
                    if b is None
                    else (b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending)
                )
        return out

    async def _run(self, kind: str, trigger: str, started: float) -> RunSummary:
        conn = await asyncio.to_thread(
            psycopg.connect, libpq_url(self.database_url), autocommit=True, connect_timeout=5
        )
        try:
            return await self._run_on(conn, kind, trigger, started)
        finally:
            conn.close()

    async def _run_on(
        self, conn: psycopg.Connection, kind: str, trigger: str, started: float
    ) -> RunSummary:
        from paynode.storage.analytics import xmin

        full = kind == "full"
        from_txid = -1 if full else r.last_watermark(conn)
        run_id = r.start_run(conn, kind, trigger, from_txid)
        try:
            below = xmin(conn)
            ids = None if full else r.touched_since(conn, from_txid, below)
            findings, skipped, accounts, rows = await self._compare(conn, ids, from_txid)
            new = r.record(conn, run_id, findings)
            resolved = r.resolve_unseen(conn, run_id, CHECKED_KINDS) if full else 0
            status = "discrepancies" if findings else "ok"
            r.finish_run(
                conn, run_id, status=status, to_txid=below, accounts_checked=accounts,
                transfers_checked=rows, skipped_in_flight=len(skipped), found=new,
                resolved=resolved,
            )  # fmt: skip
        except Exception as e:
            r.finish_run(conn, run_id, status="failed", error=type(e).__name__)
            raise
        finally:
            await self.analytics.export_recon.remote()
        row = conn.execute(
            "SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL"
        ).fetchone()
        self.open = int(row[0]) if row else 0
        return RunSummary(
            run_id, kind, trigger, status, from_txid, below, accounts, rows, len(skipped), new,
            resolved, time.monotonic() - started,
        )  # fmt: skip

    async def _compare(
        self, conn: psycopg.Connection, ids: list[str] | None, from_txid: int
    ) -> tuple[list[r.Finding], list[str], int, int]:
        findings: list[r.Finding] = []
        # 1. memory vs journal; a difference must survive CONFIRM_ATTEMPTS reads (a credit
        # leg reaches its shard just after the debit shard's commit: briefly, memory trails)
        scope = list(await asyncio.to_thread(r.journal_balances_of, conn, ids))
        suspects, skipped, drift = scope, [], []
        for attempt in range(CONFIRM_ATTEMPTS):
            first = await self._memory(suspects)
            journal = await asyncio.to_thread(r.journal_balances_of, conn, suspects)
            second = await self._memory(suspects)
            drift, in_flight = r.compare_memory(first, journal, second)
            skipped = in_flight if attempt == 0 else skipped
            suspects = [f.object_id for f in drift]
            if not suspects:
                break
        findings += drift

        # 2. journal vs analytics, both at the analytics watermark
        marks = await self.analytics.sync.remote()
        upto = marks["transfers"]
        journal_at = await asyncio.to_thread(r.journal_balances_of, conn, ids, upto)
        csv = self.root / "tmp" / "recon-journal.csv"
        await asyncio.to_thread(r.export_journal_rows, conn, max(from_txid, 0), upto, csv)

        def duck() -> tuple[dict[str, Balances], list[r.Finding], int]:
            con = connect_views(self.root)
            try:
                got = r.analytics_balances_of(con, ids)
                diffs = r.compare_rows(con, csv, max(from_txid, 0))
                (count,) = (
                    con.execute(f"SELECT count(*) FROM read_csv('{csv}', header=false)").fetchone()
                    if csv.stat().st_size
                    else (0,)
                )
                return got, diffs, int(count)
            finally:
                con.close()

        analytics, row_diffs, rows = await asyncio.to_thread(duck)
        findings += r.compare_analytics(journal_at, analytics)
        findings += row_diffs

        # 3. ACH entries against the bank's answers and the journal (small: every run)
        overdue = add_business_days(dt.date.today(), -ACH_GRACE_BUSINESS_DAYS)
        findings += await asyncio.to_thread(r.compare_bank, conn, overdue)

        # 4. zero-sum per currency, where the whole ledger was read
        if ids is None:
            currencies = await asyncio.to_thread(r.account_currencies, conn)
            findings += r.nonzero_totals(r.currency_totals_of(journal_at, currencies), "journal")
            in_analytics = {a: b for a, b in analytics.items() if a in currencies}
            findings += r.nonzero_totals(
                r.currency_totals_of(in_analytics, currencies), "analytics"
            )
        return findings, skipped, len(scope), rows


def decode_summary(raw: bytes) -> RunSummary:
    return msgspec.msgpack.decode(raw, type=RunSummary)


def decode_status(raw: bytes) -> ReconStats:
    return msgspec.msgpack.decode(raw, type=ReconStats)
