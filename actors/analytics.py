"""The analytics actor: follows the committed journal (and audit log) into Parquet segments.

It reads only what PostgreSQL has committed (``storage.analytics`` explains
the ``(txid, id)`` watermark), in bulk (COPY to CSV, DuckDB to Parquet: no
row-by-row work in Python), every ``interval_ms`` and at once when asked
(:meth:`sync`). It never slows the ledger: shards do not wait for it, and
if it falls behind it catches up in chunks of ``max_rows``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from pathlib import Path

import msgspec
import psycopg

from paynode.actors.background import lower_priority
from paynode.storage.analytics import (
    EXPORTED,
    RECON_COLUMNS,
    TRANSFERS,
    Exported,
    Store,
    Watermark,
    export_query,
    xmin,
)
from paynode.storage.database import libpq_url
from paynode.storage.journal_watch import JournalWatch

log = logging.getLogger("paynode.analytics")

LAG_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
IDLE_CHECK_S = 30.0  # a cycle even with nothing announced (an announcement may be lost)


class AnalyticsStats(msgspec.Struct):
    watermark_txid: int
    rows_published: int
    segments_published: int
    segments_live: int
    compactions: int
    cycles: int
    errors: int
    lag_last_s: float
    lag_max_s: float
    lag_buckets: list[int]  # cumulative counts of segments by lag, per LAG_BUCKETS_S
    last_cycle_unix: float


class AnalyticsStreamer:
    def __init__(
        self,
        database_url: str,
        root: str,
        interval_ms: int = 250,
        max_rows: int = 100_000,
        max_segments: int = 64,
        compact: bool = True,
    ) -> None:
        lower_priority()  # follows the journal: yields the CPU to the money path
        assert interval_ms >= 10 and max_rows >= 1 and max_segments >= 2
        self.database_url = database_url
        self.store = Store(Path(root))
        self.interval_s = interval_ms / 1000
        self.max_rows = max_rows
        self.max_segments = max_segments
        self.compact = compact
        self.watermarks: dict[str, Watermark] = {}
        # Every row of a transaction below this is published (the xmin of the last
        # complete cycle); -1 until one completes.
        self.published_below = -1
        self._lock = asyncio.Lock()
        self._conn: psycopg.Connection | None = None
        self._task: asyncio.Task | None = None
        self.rows = self.segments = self.compactions = self.cycles = self.errors = 0
        self.lag_last = self.lag_max = 0.0
        self.lag_buckets = [0] * len(LAG_BUCKETS_S)
        self.last_cycle = 0.0

    async def start(self) -> dict[str, Watermark]:
        """Open the store, find where it stopped, and follow the journal from there."""
        await asyncio.to_thread(self.store.open)
        for table in EXPORTED:
            self.watermarks[table.name] = await asyncio.to_thread(self.store.watermark, table)
        self._task = asyncio.get_running_loop().create_task(self._follow())
        log.info("analytics resumes after %s", self.watermarks)
        return self.watermarks

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def sync(self) -> dict[str, Watermark]:
        """Publish everything committed so far, now; return the watermarks."""
        async with self._lock:
            await asyncio.to_thread(self._cycle)
        return dict(self.watermarks)

    async def sync_point(self) -> int:
        """Publish everything committed so far, now; return the bound below which every
        transaction's rows are published (and no row can be added later): reconciliation
        reads both copies up to it."""
        async with self._lock:
            await asyncio.to_thread(self._cycle)
            return self.published_below

    async def export_recon(self) -> None:
        """Republish the reconciliation tables (small) for the analysts' views."""
        from paynode.storage.recon_records import export_recon_table

        def export() -> None:
            conn = self._connection()
            for name in RECON_COLUMNS:
                path = self.store.tmp / f"export-{name}.csv"
                export_recon_table(conn, name, path)
                self.store.replace_recon_table(name, path)

        async with self._lock:
            await asyncio.to_thread(export)

    async def _follow(self) -> None:
        """Publish at most every ``interval_s`` while anything announced is unpublished;
        otherwise sleep until the journal announces a commit (storage/journal_watch.py)."""
        watch = JournalWatch(self.database_url)
        watch.start()
        last = 0.0
        try:
            while True:
                if not watch.behind(self.published_below - 1):
                    await watch.wait(IDLE_CHECK_S)
                rest = self.interval_s - (time.monotonic() - last)
                if rest > 0:
                    await asyncio.sleep(rest)  # under load: one cycle per interval, batched
                last = time.monotonic()
                try:
                    async with self._lock:
                        await asyncio.to_thread(self._cycle)
                except Exception as e:  # keep following: PostgreSQL may come back
                    self.errors += 1
                    log.warning("analytics cycle failed (%s); retrying", type(e).__name__)
                    if self._conn is not None:
                        self._conn.close()
                        self._conn = None
        finally:
            await watch.stop()

    # -- one cycle (in a worker thread, under the lock) ------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                libpq_url(self.database_url),
                autocommit=True,
                connect_timeout=5,
                options="-c statement_timeout=60000",
                application_name="paynode-analytics",
            )
        return self._conn

    def _cycle(self) -> None:
        conn = self._connection()
        # One bound for every table: accounts never trail their transfers, nor audit
        # records the actions they record.
        below = xmin(conn)
        for table in EXPORTED:
            while self._chunk(conn, table, below) == self.max_rows:
                pass
        assert below >= self.published_below, "xmin never goes back"
        self.published_below = below
        for table in EXPORTED:
            if self.compact and self.store.compact(table, self.max_segments):
                self.compactions += 1
        self.cycles += 1
        self.last_cycle = time.time()

    def _chunk(self, conn: psycopg.Connection, table: Exported, below: int) -> int:
        """Export and publish one chunk after the watermark; the number of rows."""
        path = self.store.tmp / f"export-{table.name}.csv"
        after = self.watermarks[table.name]
        with (
            open(path, "wb") as f,
            conn.cursor().copy(export_query(table, after, below, self.max_rows)) as copy,
        ):
            for data in copy:
                f.write(data)
        if path.stat().st_size == 0:
            return 0
        last = last_key(path)
        assert last > after, "the watermark only moves forward"
        published = self.store.append_csv(table, path, last_txid=last[0])
        count, oldest_ts = self.store.summary(published)
        self.watermarks[table.name] = last
        self.segments += 1
        if table is TRANSFERS:  # journal rows; account rows are not counted
            self.rows += count
            self._observe_lag(time.time() - oldest_ts / 1e9)
        return int(count)

    def _observe_lag(self, lag: float) -> None:
        self.lag_last = lag
        self.lag_max = max(self.lag_max, lag)
        for i, bound in enumerate(LAG_BUCKETS_S):
            if lag <= bound:
                self.lag_buckets[i] += 1

    async def stats(self) -> bytes:
        return msgspec.msgpack.encode(
            AnalyticsStats(
                watermark_txid=self.watermarks.get("transfers", (-1, ""))[0],
                rows_published=self.rows,
                segments_published=self.segments,
                segments_live=len(self.store.segments(TRANSFERS)),
                compactions=self.compactions,
                cycles=self.cycles,
                errors=self.errors,
                lag_last_s=self.lag_last,
                lag_max_s=self.lag_max,
                lag_buckets=self.lag_buckets,
                last_cycle_unix=self.last_cycle,
            )
        )


def last_key(csv_path: Path) -> Watermark:
    """(txid, id) of an export's last row: its first two fields.

    Usually read off the last line. A quoted field may span lines (audit records
    can carry any text), so when that line holds a quote, or is longer than the
    tail read, the row's start is found by quote parity over the whole file:
    PostgreSQL doubles quotes inside quoted fields, so a newline ends a row exactly
    when an even number of quotes comes before it.
    """
    with open(csv_path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - 4096))
        tail = f.read().removesuffix(b"\n")
        nl = tail.rfind(b"\n")
        if b'"' not in tail[nl + 1 :] and (nl >= 0 or size <= 4096):
            txid, row_id = tail[nl + 1 :].split(b",", 2)[:2]
            return int(txid), row_id.decode()
        f.seek(0)
        data = f.read().removesuffix(b"\n")
    quotes_before, start, pos = data.count(b'"'), 0, len(data)
    while (nl := data.rfind(b"\n", 0, pos)) >= 0:
        quotes_before -= data.count(b'"', nl, pos)
        if quotes_before % 2 == 0:
            start = nl + 1
            break
        pos = nl
    row = next(csv.reader(io.StringIO(data[start:].decode(), newline="")))
    return int(row[0]), row[1]


def decode_stats(raw: bytes) -> AnalyticsStats:
    return msgspec.msgpack.decode(raw, type=AnalyticsStats)
