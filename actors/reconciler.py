"""The reconciliation actor: memory == journal == analytics, all the time.

Every ``interval_ms`` it runs an *incremental* check of what changed since the
last run; every ``full_every``-th one is *full* (every account and every
journal row, which also finds tampering behind the node's back: an UPDATE keeps
a row's txid); on demand, either kind. A run
reads one point of the journal, ``hi``: the analytics actor's bound below which
every transaction's rows are published (``AnalyticsStreamer.sync_point``).

1. The journal at ``hi``: totals of every account (full), or the per-account
   changes by the transactions in ``[lo, hi)``, ``lo`` being where the last run
   stopped (incremental; the totals of the accounts they moved come from a
   cache of earlier runs' plus those changes: proportional to what changed).
2. Memory vs journal, per account moved in ``[lo, hi)`` (all: full): shard
   balances read at a durable point, then the journal (totals at ``hi`` plus
   the rows committed since), then memory again. Accounts whose memory moved in
   between are skipped as in flight; a difference on a still account must
   survive CONFIRM_ATTEMPTS reads.
3. Journal vs analytics over the same transactions: per-account changes in
   ``[lo, hi)`` (totals below ``hi``: full), and row by row.
4. Per-currency totals (credits - debits) are zero in the journal and in
   analytics (full runs).
5. ACH entries against the bank's answers and the journal (every run).

Findings then go through the persistence rule (domain.reconciliation): a
candidate first, a discrepancy once the next run checking its object sees it
again. Every run re-checks the candidates and open discrepancies it tracks (up
to recon_records.MAX_TRACKED of each), at its own point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from paynode.actors.background import lower_priority
from paynode.actors.host import find_service
from paynode.actors.names import ANALYTICS_NAME
from paynode.domain.ledger.model import shard_key
from paynode.domain.ledger.wire import decode_balances, encode
from paynode.domain.rails.calendar import add_business_days
from paynode.domain.reconciliation import (
    ACH_BANK,
    ACH_JOURNAL,
    JOURNAL_ANALYTICS,
    MEMORY_JOURNAL,
    ZERO,
    Balances,
    Coverage,
    Finding,
    Tracked,
    add,
    compare_changes,
    compare_memory,
    compare_totals,
    currency_totals_of,
    decide,
    nonzero_totals,
)
from paynode.storage import recon_records as records
from paynode.storage import reconciliation as r
from paynode.storage.analytics import connect_views
from paynode.storage.database import libpq_url

log = logging.getLogger("paynode.reconciler")

CONFIRM_ATTEMPTS = 3
# A bank settles or returns an entry by its effective date; returns may come two
# banking days later. Past that, silence is a discrepancy.
ACH_GRACE_BUSINESS_DAYS = 2
# Journal totals kept between runs, one entry per account: about 200 bytes each. Past
# this many accounts incremental runs read touched accounts' whole history instead.
MAX_CACHED_ACCOUNTS = 1_000_000
STATEMENT_TIMEOUT_MS = 300_000  # one query of a run; the API gives up waiting at 300 s


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
    findings: int  # differences this run saw (each a candidate or a discrepancy)
    candidates: int  # differences seen for the first time: not discrepancies yet
    found: int  # discrepancies opened: candidates this run saw again
    dropped: int  # candidates this run checked and did not see again
    resolved: int
    seconds: float


class ReconStats(msgspec.Struct):
    runs: int
    failures: int
    last: RunSummary | None
    open_discrepancies: int
    last_run_unix: float
    candidates: int = 0  # awaiting their second look
    findings_total: int = 0  # over every run since the actor started
    accounts_checked_total: int = 0
    transfers_checked_total: int = 0
    seconds_total: float = 0.0
    seconds_max: float = 0.0
    # Accounts whose journal totals were read from their whole history (all of them in a
    # full run; in an incremental one only those not cached): the part of a run's cost
    # that is not proportional to what changed.
    accounts_read_whole_total: int = 0


@dataclass
class JournalCache:
    """Journal totals of some accounts over the rows of transactions below ``below``.

    Exact: rows below ``below`` are final (their transactions had all finished),
    so totals plus the changes of ``[below, hi)`` are the totals below ``hi``. An
    account enters it once read whole; a full run rebuilds it whole (and so sees
    rows altered behind the node's back).
    """

    below: int
    totals: dict[str, Balances]

    def advance(self, changes: dict[str, Balances], hi: int) -> None:
        assert hi >= self.below
        for account_id, change in changes.items():
            if account_id in self.totals:  # others are read whole when needed
                self.totals[account_id] = add(self.totals[account_id], change)
        self.below = hi


@dataclass
class Checked:
    """What the comparisons of one run saw, and what they covered."""

    findings: list[Finding] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)
    accounts: int = 0
    transfers: int = 0
    skipped: list[str] = field(default_factory=list)
    read_whole: int = 0  # accounts whose journal totals were read from their whole history


class Reconciler:
    def __init__(
        self,
        database_url: str,
        analytics_root: str,
        shard_names: list[str],
        namespace: str,
        interval_ms: int = 30_000,
        full_every: int = 10,
        max_cached_accounts: int = MAX_CACHED_ACCOUNTS,
    ) -> None:
        lower_priority()  # follows the journal: yields the CPU to the money path
        assert interval_ms >= 0 and full_every >= 1 and max_cached_accounts >= 0
        self.database_url = database_url
        self.root = Path(analytics_root)
        self.shard_names = shard_names
        self.namespace = namespace
        self.interval_s = interval_ms / 1000
        self.full_every = full_every
        self.max_cached_accounts = max_cached_accounts
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._cache: JournalCache | None = None
        self._scheduled = 0
        self.stats = ReconStats(0, 0, None, 0, 0.0)

    async def start(self) -> None:
        import ray

        # Actor handles (Any: a method's .remote() is found at run time).
        self.shards: list[Any] = [
            ray.get_actor(n, namespace=self.namespace) for n in self.shard_names
        ]
        self.analytics: Any = find_service(ANALYTICS_NAME, self.namespace)
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
            self._scheduled += 1
            kind = "full" if self._scheduled % self.full_every == 0 else "incremental"
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
                self.stats.failures += 1
                raise
            s = self.stats
            s.runs += 1
            s.last = summary
            s.last_run_unix = time.time()
            s.findings_total += summary.findings
            s.accounts_checked_total += summary.accounts_checked
            s.transfers_checked_total += summary.transfers_checked
            s.seconds_total += summary.seconds
            s.seconds_max = max(s.seconds_max, summary.seconds)
            return msgspec.msgpack.encode(summary)

    async def status(self) -> bytes:
        return msgspec.msgpack.encode(self.stats)

    # -- one run ------------------------------------------------------------------------

    async def _run(self, kind: str, trigger: str, started: float) -> RunSummary:
        conn: psycopg.Connection = await asyncio.to_thread(
            psycopg.connect,
            libpq_url(self.database_url),
            autocommit=True,
            connect_timeout=5,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )
        try:
            return await self._run_on(conn, kind, trigger, started)
        finally:
            conn.close()

    async def _run_on(
        self, conn: psycopg.Connection, kind: str, trigger: str, started: float
    ) -> RunSummary:
        full = kind == "full"
        lo = -1 if full else await asyncio.to_thread(records.last_watermark, conn)
        run_id = await asyncio.to_thread(records.start_run, conn, kind, trigger, lo)
        try:
            candidates, open_ = await asyncio.to_thread(records.tracked, conn)
            hi = await self.analytics.sync_point.remote()
            if hi < lo:
                raise RuntimeError(f"the analytics bound {hi} is below the last run's {lo}")
            checked = await self._check(conn, full, lo, hi, [*candidates, *open_])
            verdict = decide(checked.findings, candidates, open_, checked.coverage)
            seen = len({f.key for f in checked.findings})

            def write() -> tuple[str, int, int, int]:
                with conn.transaction():  # the verdict and the run's record, together
                    added, opened, resolved = records.apply_verdict(conn, run_id, verdict)
                    status = "discrepancies" if opened or verdict.still_open else "ok"
                    records.finish_run(
                        conn, run_id, status=status, to_txid=hi, accounts_checked=checked.accounts,
                        transfers_checked=checked.transfers,
                        skipped_in_flight=len(checked.skipped), findings=seen, candidates=added,
                        found=opened, dropped=len(verdict.dropped), resolved=resolved,
                    )  # fmt: skip
                return status, added, opened, resolved

            status, added, opened, resolved = await asyncio.to_thread(write)
            self.stats.accounts_read_whole_total += checked.read_whole
        except Exception as e:
            await asyncio.to_thread(
                records.finish_run, conn, run_id, status="failed", error=type(e).__name__
            )
            raise
        finally:
            await self.analytics.export_recon.remote()
        self.stats.open_discrepancies, self.stats.candidates = await asyncio.to_thread(
            records.counts, conn
        )
        if seen:
            log.warning("reconciliation run %d: %d findings (%d new candidates, %d confirmed)",
                        run_id, seen, added, opened)  # fmt: skip
        return RunSummary(
            run_id, kind, trigger, status, lo, hi, checked.accounts, checked.transfers,
            len(checked.skipped), seen, added, opened, len(verdict.dropped), resolved,
            time.monotonic() - started,
        )  # fmt: skip

    async def _check(
        self, conn: psycopg.Connection, full: bool, lo: int, hi: int, tracked: Sequence[Tracked]
    ) -> Checked:
        def ids(object_type: str, sources: str) -> list[str]:
            """Objects of one scope under suspicion: re-checked at this run's point."""
            return sorted({oid for _, otype, oid, src in (t.key for t in tracked)
                           if (otype, src) == (object_type, sources)})  # fmt: skip

        out = Checked()
        cov = out.coverage
        # 1. the journal at hi
        changes: dict[str, Balances] = {}
        recheck_memory = ids("account", MEMORY_JOURNAL)
        if full:
            at_hi = await asyncio.to_thread(r.journal_balances_of, conn, None, hi)
            out.read_whole = len(at_hi)
            cache = JournalCache(hi, dict(at_hi))
            self._cache = cache if len(at_hi) <= self.max_cached_accounts else None
        else:
            changes = await asyncio.to_thread(r.journal_changes, conn, lo, hi)
            created = await asyncio.to_thread(r.accounts_created, conn, lo, hi)
            scope = sorted(changes.keys() | set(created) | set(recheck_memory))
            at_hi, out.read_whole = await self._journal_at(
                conn, lo, hi, changes, scope, recheck_memory
            )
        out.accounts = len(at_hi)

        # 2. memory vs journal
        drift, out.skipped = await self._memory_vs_journal(conn, at_hi, hi)
        out.findings += drift
        cov.objects(("account", MEMORY_JOURNAL), at_hi.keys() - set(out.skipped))

        # 3. journal vs analytics, over the same transactions
        recheck_rows = ids("transfer", JOURNAL_ANALYTICS)
        recheck_totals = [] if full else ids("account", JOURNAL_ANALYTICS)
        csv = self.root / "tmp" / "recon-journal.csv"
        out.transfers = await asyncio.to_thread(
            r.export_journal_rows, conn, lo, hi, recheck_rows, csv
        )
        journal_totals = (
            await asyncio.to_thread(r.journal_balances_of, conn, recheck_totals, hi)
            if recheck_totals
            else {}
        )

        def duck() -> tuple[list[Finding], bool, dict[str, Balances], dict[str, Balances]]:
            con = connect_views(self.root, pinned=True)
            try:
                rows, cut = r.compare_rows(con, csv, lo, hi, recheck_rows)
                if full:
                    return rows, cut, {}, r.analytics_balances_at(con, hi, None)
                moved = r.analytics_changes(con, lo, hi)
                totals = r.analytics_balances_at(con, hi, recheck_totals) if recheck_totals else {}
                return rows, cut, moved, totals
            finally:
                con.close()

        row_diffs, cut, moved, analytics_totals = await asyncio.to_thread(duck)
        if full:
            out.findings += compare_totals(at_hi, analytics_totals)
            cov.all_of(("account", JOURNAL_ANALYTICS))
        else:
            # A change that differs is a finding; an equal one cannot clear an earlier
            # difference in the totals: only the re-checked totals cover those accounts.
            out.findings += compare_changes(changes, moved, f"txid [{lo}, {hi})")
            out.findings += compare_totals(journal_totals, analytics_totals)
            cov.objects(("account", JOURNAL_ANALYTICS), recheck_totals)
        out.findings += row_diffs
        if cut:
            log.warning("more than %d row differences: the rest wait", r.MAX_ROW_FINDINGS)
        elif full:
            cov.all_of(("transfer", JOURNAL_ANALYTICS))
        else:
            cov.objects(("transfer", JOURNAL_ANALYTICS), recheck_rows)

        # 4. zero-sum per currency, where the whole ledger was read
        if full:
            currencies = await asyncio.to_thread(r.account_currencies, conn)
            out.findings += nonzero_totals(currency_totals_of(at_hi, currencies), "journal")
            held = {a: b for a, b in analytics_totals.items() if a in currencies}
            out.findings += nonzero_totals(currency_totals_of(held, currencies), "analytics")
            cov.all_of(("currency", "journal"))
            cov.all_of(("currency", "analytics"))

        # 5. ACH entries against the bank's answers and the journal (small: every run)
        overdue = add_business_days(dt.date.today(), -ACH_GRACE_BUSINESS_DAYS)
        out.findings += await asyncio.to_thread(r.compare_bank, conn, overdue)
        cov.all_of(("bank_entry", ACH_BANK))
        cov.all_of(("bank_entry", ACH_JOURNAL))
        return out

    async def _journal_at(
        self,
        conn: psycopg.Connection,
        lo: int,
        hi: int,
        changes: dict[str, Balances],
        scope: list[str],
        fresh: list[str],
    ) -> tuple[dict[str, Balances], int]:
        """Journal totals below ``hi`` of the accounts in ``scope`` (those that exist):
        cached totals plus ``changes``; an account not cached, or under suspicion
        (``fresh``), is read whole. Second: how many were read whole."""
        cache, self._cache = self._cache, None  # unset until advanced: a failure leaves it so
        if cache is None or cache.below != lo:  # after a restart or a failed run: start over
            cache = JournalCache(hi, {})
        else:
            cache.advance(changes, hi)
        whole = sorted({a for a in scope if a not in cache.totals} | set(fresh))
        if whole:
            cache.totals.update(await asyncio.to_thread(r.journal_balances_of, conn, whole, hi))
        if len(cache.totals) <= self.max_cached_accounts:
            self._cache = cache
        return {a: cache.totals[a] for a in scope if a in cache.totals}, len(whole)

    async def _memory_vs_journal(
        self, conn: psycopg.Connection, at_hi: dict[str, Balances], hi: int
    ) -> tuple[list[Finding], list[str]]:
        """Memory read before and after the journal; a difference must survive
        CONFIRM_ATTEMPTS reads (a credit leg reaches its shard just after the debit
        shard's commit: briefly, memory trails). Returns (drift, accounts in flight)."""
        suspects = list(at_hi)
        skipped: set[str] = set()
        drift: list[Finding] = []
        for _ in range(CONFIRM_ATTEMPTS):
            first = await self._memory(suspects)
            tail = await asyncio.to_thread(r.journal_tail, conn, suspects, hi)
            journal = {a: add(at_hi[a], tail.get(a, ZERO)) for a in suspects}
            second = await self._memory(suspects)
            drift, in_flight = compare_memory(first, journal, second)
            skipped.update(in_flight)
            suspects = [f.object_id for f in drift]
            if not suspects:
                break
        return drift, sorted(skipped)

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


def decode_summary(raw: bytes) -> RunSummary:
    return msgspec.msgpack.decode(raw, type=RunSummary)


def decode_status(raw: bytes) -> ReconStats:
    return msgspec.msgpack.decode(raw, type=ReconStats)
