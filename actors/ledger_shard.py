"""The ledger shard actor: a thin asynchronous shell around :class:`Ledger`.

One shard owns the accounts whose ``shard_key % count`` is its index. Ray
runs an actor's coroutines on one event loop, and no method awaits between
reading and changing the ledger, so every decision is serialized without
locks. The pipeline per call:

1. decide and apply the whole batch in memory (synchronous);
2. hand its rows to the commit loop, which writes everything queued in one
   PostgreSQL transaction (group commit) and resolves the waiters in order;
3. only then forward credit legs to other shards and answer.

Before step 1, the ids the shard no longer remembers (beyond its recent-id
window, ``domain/ledger/window.py``) are looked up in the journal, one query
per call: a replay of an old id answers as it always did.

Batch k+1 may be applied while batch k commits; it is answered only after
its own (later) commit. If a commit fails, everything applied but not
committed is refused with ``storage_unavailable`` and the ledger is rebuilt
from the journal before the shard accepts work again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec.structs import astuple

from paynode.actors import tracing
from paynode.actors.balance_watch import BalanceWatch
from paynode.actors.heap import settle_heap
from paynode.actors.ray_peers import RayPeers
from paynode.actors.ray_peers import restarted as ray_restarted
from paynode.domain.ledger.model import (
    NOTHING_RECALLED,
    ROW_CREDIT,
    ROW_ID,
    SAW_NOTHING,
    AccountSpec,
    Code,
    Horizon,
    Outcome,
    Recalled,
    Row,
    TransferOp,
    shard_key,
)
from paynode.domain.ledger.monitors import Monitor
from paynode.domain.ledger.ports import (
    JournalConflict,
    MonitorStore,
    Peers,
    ShardJournal,
    StorageUnavailable,
)
from paynode.domain.ledger.rules import Ledger, rebuilt, refuse_group
from paynode.domain.ledger.wire import (
    COMMIT_BUCKETS_S,
    REPLAYED,
    RESULT_OF,
    AccountResult,
    BatchResult,
    Commit,
    Finish,
    Prepared,
    ShardStats,
    TransferBatch,
    batch_groups,
    decode_batch,
    decode_commits,
    decode_finishes,
    decode_ids,
    decode_prepares,
    decode_rows,
    decode_specs,
    empty_batch,
    encode,
    extend_batch,
    refused,
    subset,
)
from paynode.storage.monitors import PgMonitorStore
from paynode.storage.shard_journal import PgShardJournal

log = logging.getLogger("paynode.shard")


@dataclass
class _Job:
    accounts: Sequence[AccountSpec]
    rows: Sequence[Row]
    done: asyncio.Future[int]  # the id of the transaction that journaled it
    forward: bool = True  # credit legs go to their shards (two-phase groups finish instead)
    seq: int = 0  # order of arrival in the commit queue
    trace: Any = None  # the span context waiting on it (tracing only)


def shard_of(account_id: str, count: int) -> int:
    return shard_key(account_id) % count


class LedgerShard:
    """Run under Ray as ``ray.remote(LedgerShard)``; every method takes/returns msgpack."""

    def __init__(
        self,
        index: int,
        count: int,
        database_url: str,
        namespace: str,
        commit_max_rows: int = 65_536,
        expiry_interval_ms: int = 200,
        peer_names: Sequence[str] = (),
        id_window: int = 131_072,
        max_accounts: int = 0,
        monitor_interval_ms: int = 100,
        *,
        journal: ShardJournal | None = None,
        peers: Peers | None = None,
        monitor_store: MonitorStore | None = None,
        restarted: Callable[[], bool] = ray_restarted,
        now_ns: Callable[[], int] = time.time_ns,
        trace_endpoint: str = "",
    ) -> None:
        """Under Ray the edges default to PostgreSQL at ``database_url`` and the peers
        named ``peer_names``; the simulator passes its own (``domain/ledger/ports.py``)."""
        assert 0 <= index < count
        assert not peer_names or len(peer_names) == count
        self.index = index
        # None unless traces are exported: every span below is behind this test.
        self._tracer = tracing.tracer(f"paynode-shard-{index}", trace_endpoint)
        self._journal: ShardJournal = journal or PgShardJournal(
            database_url, f"paynode-shard-{index}"
        )
        self._peers_port: Peers = peers or RayPeers(peer_names, namespace)
        # Balance monitors: in PostgreSQL under Ray; off in the simulator unless it passes
        # a store (its journal is its own).
        store = monitor_store
        if store is None and journal is None:
            store = PgMonitorStore(database_url, f"paynode-monitors-{index}")
        self._watch = BalanceWatch(store, monitor_interval_ms / 1000)
        self._jobs_in_flight: list[_Job] = []  # the commit in flight's (monitors discount them)
        self._restarted = restarted
        self._now_ns = now_ns
        self.count = count
        self._commit_max_rows = commit_max_rows
        self._expiry_interval = expiry_interval_ms / 1000
        self._expiry_wake = asyncio.Event()
        self._expiry_due: int | None = None  # the deadline the expiry loop sleeps until
        self._id_window = id_window
        self._max_accounts = max_accounts
        self.ledger = Ledger(id_window, max_accounts)
        self._queue: deque[_Job] = deque()
        # The window may forget only what the journal holds: it ages once every job
        # queued before its last aging has left the queue (committed or refused).
        self._next_seq = 0
        self._committing_seq: int | None = None
        self._aged_at_seq = 0
        self._wake = asyncio.Event()
        self._ready = False
        self._rebuilt = asyncio.Event()
        # What the last rebuild read: rows of a transaction it saw are in memory already,
        # and a peer forwarding them late (it sends each transaction's rows once) is ignored.
        self._seen: Horizon = SAW_NOTHING
        # One rebuild at a time, each from a quiet shard. Two that overlapped (two peers'
        # resyncs, or a resync and a failed commit) let the later one, reading the journal
        # before work the earlier one's end let in was committed, drop acknowledged
        # transfers from memory. Found by the simulator.
        self._rebuild_lock = asyncio.Lock()
        self._committing = False  # a transaction is in flight (its jobs left the queue)
        self._tasks: list[asyncio.Task[None]] = []
        self._forwards: set[asyncio.Task[None]] = set()  # credit legs on their way to peers
        self._commits = 0
        self._rows_committed = 0
        self._commit_sum = 0.0
        self._commit_max = 0.0
        self._buckets = [0] * (len(COMMIT_BUCKETS_S) + 1)
        self._rebuilds = 0
        self._agings_before = 0  # window agings of the ledgers rebuilds replaced
        self._lookups = 0
        self._ids_looked_up = 0
        self._phase: dict[str, float] = {"durable_wait": 0.0, "forward": 0.0, "calls": 0}
        self._starting: asyncio.Task[None] | None = None
        # Two-phase groups across shards. A reservation lives in the memory of the
        # incarnation that prepared it: ``epoch`` names this incarnation, peers learn a
        # restarted shard's new one (``fence``) before it decides anything, and a primary
        # journals a group only if every decider is still the incarnation that prepared.
        self.epoch = uuid.uuid4().hex
        self._peer_epochs: dict[int, str] = {}
        self._group_commits = 0  # groups this shard, as primary, is journaling now

    # -- life cycle -------------------------------------------------------

    async def start(self) -> int:
        """Rebuild from the journal and start the commit and expiry loops (idempotent).

        Every other entry point calls this too: when Ray restarts a crashed
        shard it runs ``__init__`` again and nobody calls ``start``, so the
        first message to the new incarnation triggers its rebuild and waits
        for it.
        """
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        await asyncio.shield(self._starting)
        return len(self.ledger.accounts)

    async def _start(self) -> None:
        if self._restarted():
            # Before the journal is read: groups the previous incarnation prepared are
            # then either journaled (and in the rebuild) or refused at their commit.
            await self._fence_peers()
        async with self._rebuild_lock:
            await self._rebuild()
        self._tasks = [
            asyncio.create_task(self._commit_loop()),
            asyncio.create_task(self._expiry_loop()),
            asyncio.create_task(
                self._watch.run(lambda: self._ready and not self._rebuilding(),
                                lambda: self.ledger.accounts, self._uncommitted)
            ),
        ]  # fmt: skip
        if self._restarted():
            self._tasks.append(asyncio.create_task(self._tell_peers_to_resync()))

    async def _tell_peers_to_resync(self) -> None:
        """After a crash: rows the previous incarnation committed may never have reached
        their credit shards (it died between commit and forward). Each peer re-reads the
        journal; until it has, its credit balances can only be short, never long."""
        log.warning("shard %d: restarted after a crash; peers re-read the journal", self.index)
        others = [i for i in range(self.count) if i != self.index]
        await self._call_peers({i: self._peers_port.call(i, "resync") for i in others})

    async def _fence_peers(self) -> None:
        """Tell every peer this incarnation's epoch; each answers once no group it is
        journaling as primary can still carry the previous one."""
        log.warning("shard %d: restarted; fencing groups its last incarnation prepared",
                    self.index)  # fmt: skip
        calls = {}
        for i in range(self.count):
            if i != self.index:
                try:
                    calls[i] = self._peers_port.call(i, "fence", self.index, self.epoch)
                except Exception as e:  # not found: a peer that is not up commits nothing
                    log.error("shard %d: peer %d not found: %s", self.index, i, type(e).__name__)
        await self._call_peers(calls)

    async def fence(self, index: int, epoch: str) -> None:
        """Shard ``index`` restarted as ``epoch``: refuse from now on every commit of a group
        it prepared as an earlier incarnation, and return once the group commits already
        under way (which passed that check) are durable, so that its rebuild sees them.

        Does not wait for this shard's own start: two shards restarting together fence
        each other while starting."""
        assert 0 <= index < self.count and index != self.index
        self._peer_epochs[index] = epoch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while self._group_commits and loop.time() < deadline:
            await asyncio.sleep(0.002)

    def _stale(self, c: Commit) -> bool:
        """Whether a decider of group ``c`` is no longer the incarnation that reserved for it
        (this shard included: a restarted primary holds no reservation either)."""
        if c.gid not in self.ledger.holds or c.epochs.get(self.index) != self.epoch:
            return True
        return any(
            self._peer_epochs.get(p, epoch) != epoch for p, epoch in c.epochs.items()
            if p != self.index
        )  # fmt: skip

    async def resync(self) -> int:
        """Re-read this shard's accounts from the journal without losing decided work.

        New work is refused (``storage_unavailable``) from here on; everything
        already applied is committed first, then memory is rebuilt. Returns the
        number of rebuilds so far.
        """
        await self.start()
        async with self._rebuild_lock:
            self._ready = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while (self._queue or self._committing) and loop.time() < deadline:
                await asyncio.sleep(0.002)
            await self._rebuild()
        return self._rebuilds

    async def ping(self) -> bool:
        await self.start()
        return self._ready

    async def identity(self) -> tuple[int, int, int]:
        """(index, count, pid): how fronts discover the shard set, and tests find the process."""
        import os

        return self.index, self.count, os.getpid()

    async def _rebuild(self) -> None:
        """Replace the in-memory ledger with the journal's state; retry until it works."""
        self._ready = False
        self._rebuilt.clear()
        delay = 0.1
        while True:
            try:
                await self._journal.open()
                snap = await self._journal.load(self.index, self.count)
                await self._watch.load(self.index, self.count)
                break
            except StorageUnavailable as e:
                log.warning("shard %d: rebuild failed (%s); retrying", self.index, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        old = self.ledger
        fresh = rebuilt(snap, self._id_window, self._max_accounts)
        # Reservations of prepared cross-shard groups live only in memory: keep them.
        for gid, hold in old.holds.items():
            for account_id, held_dr, held_cr in hold.accounts:
                acct = fresh.accounts.get(account_id)
                if acct is not None:
                    acct.held_dr += held_dr
                    acct.held_cr += held_cr
            fresh.holds[gid] = hold
        self._seen = snap.horizon
        fresh.inflight_ids = set(old.inflight_ids)
        fresh.locked_pendings = set(old.locked_pendings)
        self._agings_before += self.ledger.agings  # a counter across rebuilds
        self.ledger = fresh
        settle_heap()  # the rebuilt ledger lives until the next rebuild
        self._rearm()
        self._rebuilds += 1
        self._ready = True
        self._rebuilt.set()
        log.info(
            "shard %d/%d: %d accounts, %d rows replayed %s", self.index, self.count,
            len(snap.accounts), len(snap.rows),
            "after the checkpoint" if snap.checkpoint else "(the whole journal)",
        )  # fmt: skip

    # -- group commit -----------------------------------------------------

    async def _durable(
        self, accounts: Sequence[AccountSpec], rows: Sequence[Row], forward: bool = True
    ) -> int:
        """Wait until ``accounts`` and ``rows`` (and everything queued before) are committed,
        and (``forward``) the rows' credit legs applied on the shards that own them; return
        the id of the transaction that journaled them."""
        if not self._ready:
            raise StorageUnavailable("shard is rebuilding")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        trace = tracing.current() if self._tracer is not None else None
        self._queue.append(_Job(accounts, rows, fut, forward, self._next_seq, trace))
        self._next_seq += 1
        self._wake.set()
        return await fut

    def _uncommitted(self) -> list[Row]:
        """Rows applied in memory and not journaled yet (a balance monitor discounts them):
        the commit in flight's, and the queued jobs' (a two-phase group's rows are
        applied only after their commit)."""
        return [r for j in (*self._jobs_in_flight, *self._queue) if j.forward for r in j.rows]

    # -- balance monitors (actors/balance_watch.py) ---------------------------

    async def watch(self, payload: bytes) -> None:
        """Start evaluating a monitor its API call just recorded."""
        await self.start()
        await self._rebuilt.wait()
        m = msgspec.msgpack.decode(payload, type=Monitor)
        assert shard_of(m.account_id, self.count) == self.index, "monitor routed to the wrong shard"
        self._watch.add(m)

    async def unwatch(self, monitor_ids: list[str]) -> None:
        await self.start()
        self._watch.remove(monitor_ids)

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                jobs: list[_Job] = []
                n = 0
                while self._queue and (
                    not jobs or n + len(self._queue[0].rows) <= self._commit_max_rows
                ):
                    job = self._queue.popleft()
                    jobs.append(job)
                    n += len(job.rows) + len(job.accounts)
                await self._commit_jobs(jobs)

    async def _commit_jobs(self, jobs: list[_Job]) -> None:
        accounts = [a for j in jobs for a in j.accounts]
        rows = [r for j in jobs for r in j.rows]
        txid = 0  # nothing written: a barrier
        if accounts or rows:
            t0 = time.perf_counter()
            self._committing = True
            self._committing_seq = jobs[0].seq
            self._jobs_in_flight = jobs
            span = None
            if self._tracer is not None:
                span = tracing.start_linked(self._tracer, "journal commit",
                                            [j.trace for j in jobs])  # fmt: skip
                span.set_attribute("paynode.rows", len(rows))
            try:
                txid = await self._journal.commit(accounts, rows)
            except JournalConflict as e:
                await self._fail(jobs, e)
                return
            except StorageUnavailable as e:
                log.error("shard %d: commit failed: %s", self.index, e)
                await self._fail(jobs, e)
                return
            finally:
                self._committing = False
                self._committing_seq = None
                self._jobs_in_flight = []
                if span is not None:
                    span.end()
            self._observe(time.perf_counter() - t0, len(rows))
            self._watch.touch(rows)
            self._maybe_age()
        remote = self._remote_legs(jobs)
        if not remote:
            _release(jobs, txid)
            return
        # One call per peer for the whole commit, sent now (in commit order, so a peer
        # applies a pending's credit leg before its post's), awaited apart: the next
        # commit need not wait for this one's peers.
        calls = {
            i: self._peers_port.call(i, "apply_rows", encode(r), txid) for i, r in remote.items()
        }
        task = asyncio.create_task(self._forwarded(calls, jobs, txid))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)

    def _remote_legs(self, jobs: list[_Job]) -> dict[int, list[Row]]:
        remote: dict[int, list[Row]] = defaultdict(list)
        local = self.ledger.accounts
        for job in jobs:
            if job.forward:
                for row in job.rows:
                    credit = row[ROW_CREDIT]
                    if credit not in local:
                        remote[shard_of(credit, self.count)].append(row)
        return remote

    async def _forwarded(self, calls: dict, jobs: list[_Job], txid: int) -> None:
        """Answer the jobs once their credit legs are applied (read-your-writes)."""
        t0 = time.perf_counter()
        await self._call_peers(calls)
        self._phase["forward"] += time.perf_counter() - t0
        _release(jobs, txid)

    async def _fail(self, jobs: list[_Job], error: StorageUnavailable) -> None:
        """Refuse everything not yet committed, then rebuild from the journal."""
        self._ready = False
        for job in [*jobs, *self._queue]:
            if not job.done.done():
                job.done.set_exception(error)
        self._queue.clear()
        async with self._rebuild_lock:
            # Whatever a rebuild that ran meanwhile let in is decided on state this one
            # discards (this is the commit loop: nothing of it can be committing).
            self._ready = False
            for job in self._queue:
                if not job.done.done():
                    job.done.set_exception(error)
            self._queue.clear()
            await self._rebuild()
        if not isinstance(error, JournalConflict):  # a unique violation rolled back for sure
            await self._forward_journaled(jobs)

    async def _forward_journaled(self, jobs: list[_Job]) -> None:
        """A failed commit may have committed (only its acknowledgement lost): the rebuild
        holds its rows, and their credit legs must still reach the shards that own them.
        Found by the simulator (a torn commit left a peer's credits short of the journal)."""
        remote = self._remote_legs(jobs)
        if not remote:
            return
        try:
            ids = [row[ROW_ID] for rows in remote.values() for row in rows]
            present = await self._journal.existing_ids(ids, fresh=True)
        except StorageUnavailable:
            await self._tell_peers_to_resync()  # cannot tell: the peers re-read the journal
            return
        # One transaction wrote them all (the failed commit), or none.
        txids = set(present.values())
        assert len(txids) <= 1, txids
        calls = {
            i: self._peers_port.call(i, "apply_rows", encode(landed), *txids)
            for i, rows in remote.items()
            if (landed := [row for row in rows if row[ROW_ID] in present])
        }
        await self._call_peers(calls)

    def _rebuilding(self) -> bool:
        return not self._ready

    def _maybe_age(self) -> None:
        """Age the window when full, if everything it would forget is journaled."""
        if not self.ledger.window_full():
            return
        oldest = self._committing_seq
        if oldest is None:
            oldest = self._queue[0].seq if self._queue else self._next_seq
        if oldest >= self._aged_at_seq:
            self.ledger.age()
            self._aged_at_seq = self._next_seq

    async def _recall(self, ops: Callable[[], tuple[list[str], list[str]]]) -> Recalled:
        """The journal's answer for the ids ``ops()`` says memory cannot answer.

        Asked again after each lookup: the window may have aged meanwhile and
        forgotten an id that was in it before."""
        rows: dict[str, Row] = {}
        resolutions: dict[str, str] = {}
        asked: set[str] = set()
        ledger, agings = self.ledger, self.ledger.agings
        ids, pids = ops()
        while ids or pids:
            self._lookups += 1
            self._ids_looked_up += len(ids) + len(pids)
            found = await self._journal.recall(ids, pids)
            rows |= found.rows
            resolutions |= found.resolutions
            if self.ledger is ledger and self.ledger.agings == agings:
                break  # nothing forgotten meanwhile: what was known still is
            asked.update(ids)
            asked.update(pids)
            ledger, agings = self.ledger, self.ledger.agings
            ids, pids = ops()
            ids = [i for i in ids if i not in asked]
            pids = [p for p in pids if p not in asked]
        return Recalled(rows, resolutions) if rows or resolutions else NOTHING_RECALLED

    def _observe(self, seconds: float, rows: int) -> None:
        self._commits += 1
        self._rows_committed += rows
        self._commit_sum += seconds
        self._commit_max = max(self._commit_max, seconds)
        self._buckets[bisect.bisect_left(COMMIT_BUCKETS_S, seconds)] += 1

    # -- transfers: single-decider groups ---------------------------------

    async def execute(self, payload: bytes, traceparent: str | None = None) -> bytes:
        """Decide, journal and answer a TransferBatch whose every decision is local here.
        ``traceparent``: the front's batch span (tracing on), this call's parent."""
        if self._tracer is not None and traceparent:
            from opentelemetry import trace
            from opentelemetry.trace import NonRecordingSpan

            remote = tracing.parse_traceparent(traceparent)
            parent = trace.set_span_in_context(NonRecordingSpan(remote)) if remote else None
            span = self._tracer.start_span("shard execute", context=parent,
                                           attributes={"paynode.shard": self.index})  # fmt: skip
            with trace.use_span(span, end_on_exit=True):
                return await self._execute_payload(payload)
        return await self._execute_payload(payload)

    async def _execute_payload(self, payload: bytes) -> bytes:
        await self.start()
        batch = decode_batch(payload)
        batch.check()
        if not self._ready:
            return encode(refused(len(batch), Code.STORAGE_UNAVAILABLE))
        return encode(await self._execute(batch))

    async def _execute(self, batch: TransferBatch, retried: bool = False) -> BatchResult:
        try:
            recalled = await self._recall(lambda: self.ledger.unknown_in_batch(batch))
        except StorageUnavailable:
            return refused(len(batch), Code.STORAGE_UNAVAILABLE)
        if self._rebuilding():  # one began during the lookup
            return refused(len(batch), Code.STORAGE_UNAVAILABLE)
        result, rows = self.ledger.execute_batch(batch, self._now_ns(), recalled)
        self._rearm()
        if not rows:
            if REPLAYED in result.results:
                try:
                    await self._barrier()  # a replay must not be answered before its commit
                except StorageUnavailable:  # found by the simulator: it escaped as an error
                    return refused(len(batch), Code.STORAGE_UNAVAILABLE)
            return result
        t0 = time.perf_counter()
        try:
            await self._durable((), rows)
        except JournalConflict:
            if retried:
                return refused(len(batch), Code.STORAGE_UNAVAILABLE)
            return await self._execute_after_conflict(batch)
        except StorageUnavailable:
            return refused(len(batch), Code.STORAGE_UNAVAILABLE)
        self._phase["durable_wait"] += time.perf_counter() - t0
        self._phase["calls"] += 1
        return result

    async def _execute_after_conflict(self, batch: TransferBatch) -> BatchResult:
        """Some id of the batch exists on another shard: refuse its groups, redo the rest.

        The commit failed and the shard rebuilt from the journal, so nothing of the
        batch is applied; the groups without a taken id are decided again.
        """
        await self._rebuilt.wait()
        try:
            taken = await self._journal.existing_ids(batch.ids)
        except StorageUnavailable:
            return refused(len(batch), Code.STORAGE_UNAVAILABLE)
        spans = batch_groups(batch)
        clean = [(a, b) for a, b in spans if not any(i in taken for i in batch.ids[a:b])]
        redo = empty_batch()
        for a, b in clean:
            extend_batch(redo, subset(batch, a, b))
        redone = await self._execute(redo, retried=True) if clean else None
        out = refused(len(batch), Code.STORAGE_UNAVAILABLE)
        k = 0
        for a, b in spans:
            if (a, b) in clean and redone is not None:
                for i in range(a, b):
                    out.results[i] = redone.results[k]
                    out.stamps[i] = redone.stamps[k]
                    if k in redone.amounts:
                        out.amounts[i] = redone.amounts[k]
                    k += 1
                continue
            first = next(i for i in range(a, b) if batch.ids[i] in taken)
            for i in range(a, b):  # all or nothing: the chain fails at the taken id
                code = Code.EXISTS_WITH_DIFFERENT_FIELDS if i == first else Code.LINKED_EVENT_FAILED
                out.results[i] = RESULT_OF[code]
        return out

    async def _barrier(self) -> None:
        """Wait until everything applied so far is durable."""
        if self._queue or self._committing or not self._ready:
            await self._durable((), ())

    async def _call_peers(self, calls: dict) -> None:
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        for i, r in zip(calls, results, strict=True):
            if isinstance(r, BaseException):
                # The rows are durable; that shard rebuilds them from the journal.
                log.error("shard %d: peer %d unreachable: %s", self.index, i, type(r).__name__)

    async def apply_rows(self, payload: bytes, txid: int) -> int:
        """Credit legs of rows another shard journaled in transaction ``txid``: sent once,
        and ignored if this shard's last rebuild read them already."""
        await self.start()
        rows = decode_rows(payload)
        await self._rebuilt.wait()
        if self._seen.saw(txid):
            return 0
        applied = sum(self.ledger.apply(r) for r in rows)
        self._watch.touch_journaled(rows)
        self._maybe_age()
        return applied

    # -- transfers: two-phase groups across shards -------------------------

    async def prepare(self, payload: bytes) -> bytes:
        await self.start()
        items = decode_prepares(payload)
        if not self._ready:
            return encode([Prepared(self.epoch, _unavailable(p.ops)) for p in items])
        ops: list[TransferOp] = [op for p in items for op in p.ops]
        try:
            recalled = await self._recall(lambda: self.ledger.unknown(ops))
        except StorageUnavailable:
            return encode([Prepared(self.epoch, _unavailable(p.ops)) for p in items])
        if self._rebuilding():  # one began during the lookup
            return encode([Prepared(self.epoch, _unavailable(p.ops)) for p in items])
        now = self._now_ns()
        answers = [
            Prepared(self.epoch, self.ledger.prepare(p.gid, p.ops, now, recalled)) for p in items
        ]
        # Decided on memory that may hold effects not yet durable (a credit queued for
        # this shard's next group commit), while the group commits on another shard:
        # those effects must be durable first, or the group could outlive them. Found by
        # the simulator: a chain was journaled on a credit whose commit came later.
        try:
            await self._barrier()
        except StorageUnavailable:
            for p in items:
                self.ledger.release(p.gid)  # the rebuild kept the reservations
            return encode([Prepared(self.epoch, _unavailable(p.ops)) for p in items])
        return encode(answers)

    async def commit(self, payload: bytes) -> bytes:
        """Primary of prepared groups: journal their rows, then finish them everywhere."""
        await self.start()
        every = decode_commits(payload)
        # Checked and counted with no await in between: a fence arriving later either
        # finds the group refused here or waits for it to be durable.
        answers: list[list[Outcome]] = [_unavailable(c.rows) if self._stale(c) else []
                                        for c in every]  # fmt: skip
        items = [c for c, answer in zip(every, answers, strict=True) if not answer]
        if not items:
            return encode(answers)
        rows = [astuple(r) for c in items for r in c.rows]
        self._group_commits += 1
        try:
            txid = await self._durable((), rows, forward=False)  # `finish` applies them
        except JournalConflict:
            return encode(_merge(answers, await self._commit_after_conflict(items)))
        except StorageUnavailable:
            # It may have committed with only the acknowledgement lost (a torn commit):
            # the journal decides for every participant (found by the simulator: the
            # others were aborted and never applied rows the journal held).
            await self._settle_participants(items)
            return encode(_merge(answers, [_unavailable(c.rows) for c in items]))
        finally:
            self._group_commits -= 1
        calls: dict[int, list] = defaultdict(list)
        for c in items:
            self.ledger.release(c.gid)
            for r in c.rows:
                self.ledger.apply(r)
            self._watch.touch_journaled(c.rows)
            for p in c.participants:
                if p != self.index:
                    calls[p].append([c.gid, c.rows])
        self._rearm()
        await self._call_peers(
            {p: self._peers_port.call(p, "finish", encode(v), txid) for p, v in calls.items()}
        )
        return encode(answers)

    async def _settle_participants(self, items: list[Commit]) -> None:
        """Each other participant applies what the journal holds of these groups and frees
        their reservations (``settle``); this shard's rebuild already holds it."""
        calls: dict[int, list[Finish]] = defaultdict(list)
        for c in items:
            for p in c.participants:
                if p != self.index:
                    calls[p].append(Finish(c.gid, c.rows))
        await self._call_peers(
            {p: self._peers_port.call(p, "settle", encode(v)) for p, v in calls.items()}
        )

    async def _commit_after_conflict(self, items: list) -> list[list[Outcome]]:
        """Refuse the groups holding an id another shard journaled; the rest may retry."""
        await self._rebuilt.wait()
        try:
            taken = await self._journal.existing_ids([r.id for c in items for r in c.rows])
        except StorageUnavailable:
            taken = {}
        out = []
        for c in items:
            index = next((i for i, r in enumerate(c.rows) if r.id in taken), None)
            if index is None:
                out.append(_unavailable(c.rows))
            else:
                out.append(refuse_group(c.rows, index, Code.EXISTS_WITH_DIFFERENT_FIELDS))
        return out

    async def finish(self, payload: bytes, txid: int) -> int:
        """Groups their primary journaled in transaction ``txid``: release, and apply the
        rows unless this shard's last rebuild read them already."""
        await self.start()
        items = decode_finishes(payload)
        await self._rebuilt.wait()
        applied = 0
        seen = self._seen.saw(txid)
        for f in items:
            self.ledger.release(f.gid)
            if not seen:
                applied += sum(self.ledger.apply(r) for r in f.rows)
                self._watch.touch_journaled(f.rows)
        self._maybe_age()
        return applied

    async def settle(self, payload: bytes) -> int:
        """Groups whose primary died during commit: release their reservations and re-read
        the journal, which alone knows whether the primary committed them.

        Applying the journaled rows here instead could apply them twice: the primary
        may have sent ``finish`` before it died, and that call may land before or
        after this one. The rebuild is exact either way (a ``finish`` landing after it
        is ignored when the rebuild's read saw its transaction). It is a rare path.
        Returns the number of rebuilds so far.
        """
        items = decode_finishes(payload)
        await self.start()
        await self._rebuilt.wait()
        for f in items:
            self.ledger.release(f.gid)
        return await self.resync()

    async def abort(self, payload: bytes) -> None:
        await self.start()
        for gid in decode_ids(payload):
            self.ledger.release(gid)

    # -- accounts -----------------------------------------------------------

    async def create_accounts(self, payload: bytes) -> bytes:
        await self.start()
        specs = decode_specs(payload)
        if not self._ready:
            return encode([AccountResult(Code.STORAGE_UNAVAILABLE, s) for s in specs])
        now = self._now_ns()
        results: list[AccountResult] = []
        fresh: list[AccountSpec] = []
        for spec in specs:
            assert shard_of(spec.id, self.count) == self.index, "account routed to the wrong shard"
            stamped = AccountSpec(
                spec.id,
                spec.currency,
                spec.flags,
                spec.metadata,
                self.ledger.timestamp(now),
                spec.owner,
            )
            code, stored = self.ledger.create_account(stamped)
            if code == Code.OK:
                fresh.append(stored)
            results.append(AccountResult(code, stored))
        try:
            await self._durable(fresh, ())
        except StorageUnavailable:
            # The rebuild dropped them; nothing was created.
            return encode([AccountResult(Code.STORAGE_UNAVAILABLE, r.spec) for r in results])
        return encode(results)

    async def get_accounts(self, payload: bytes) -> bytes:
        """Balances as of now, answered once everything they reflect is durable."""
        await self.start()
        ids = decode_ids(payload)
        accounts = self.ledger.accounts
        snap = [accounts[i].balances() if i in accounts else None for i in ids]
        try:
            await self._barrier()
        except StorageUnavailable:
            return encode(None)
        return encode(snap)

    async def balances(self) -> bytes:
        """Every local account's balances at a durable point (for checks and tests)."""
        await self.start()
        await self._barrier()
        return encode(self.ledger.balances())

    # -- background -----------------------------------------------------------

    def _rearm(self) -> None:
        """Wake the expiry loop if the ledger now holds an earlier deadline than it waits for."""
        due = self.ledger.next_expiry()
        if due is not None and (self._expiry_due is None or due < self._expiry_due):
            self._expiry_wake.set()

    async def _expiry_loop(self) -> None:
        """Release pendings whose timeout passed: asleep until the earliest deadline (or
        a new, earlier one), and at most one pass per ``expiry_interval_ms``, which
        batches the expiries of a busy shard into one commit."""
        while True:
            self._expiry_due = self.ledger.next_expiry()
            due = self._expiry_due
            wait_s = None if due is None else (due - self._now_ns()) / 1e9
            if wait_s is None or wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._expiry_wake.wait(), wait_s)
            self._expiry_wake.clear()
            await asyncio.sleep(self._expiry_interval)  # batches; also paces a rebuilding shard
            if not self._ready:
                continue
            expired = self.ledger.expire_due(self._now_ns(), limit=self._commit_max_rows)
            if not expired:
                continue
            rows = [astuple(r) for r in expired]
            with contextlib.suppress(StorageUnavailable):
                # on failure the rebuild restored those pendings; they expire next pass
                await self._durable((), rows)

    async def stats(self) -> bytes:
        await self.start()
        lg = self.ledger
        return encode(
            ShardStats(
                index=self.index,
                accounts=len(lg.accounts),
                window_transfers=len(lg.rows),
                window_agings=self._agings_before + lg.agings,
                lookups=self._lookups,
                ids_looked_up=self._ids_looked_up,
                pendings=len(lg.pendings),
                holds=len(lg.holds),
                commit_queue=sum(len(j.rows) for j in self._queue),
                commits=self._commits,
                rows_committed=self._rows_committed,
                commit_seconds_sum=self._commit_sum,
                commit_seconds_max=self._commit_max,
                commit_buckets=list(self._buckets),
                rebuilds=self._rebuilds,
                phase_seconds=dict(self._phase),
                ready=self._ready,
            )
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self._journal.close()


def _merge(answers: list[list[Outcome]], journaled: list[list[Outcome]]) -> list[list[Outcome]]:
    """Per group, in order: refused before journaling (``answers``) or what journaling said."""
    rest = iter(journaled)
    return [answer or next(rest) for answer in answers]


def _unavailable(ops: Sequence) -> list[Outcome]:
    return [Outcome(op.id, Code.STORAGE_UNAVAILABLE) for op in ops]


def _release(jobs: list[_Job], txid: int) -> None:
    for job in jobs:
        if not job.done.done():
            job.done.set_result(txid)
