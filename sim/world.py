"""The simulated world the real ledger code runs in: a journal, a network, shard processes.

What stands behind the shard's and the front's narrow interfaces
(``domain/ledger/ports.py``):

- ``Database``: the journal as PostgreSQL would hold it (accounts and transfer rows,
  ids unique), with the invariants checked on every commit: per currency the posted
  debits equal the posted credits, and no ``debits_must_not_exceed_credits`` account
  has more debits (posted and pending) than posted credits.
- ``ShardJournal``: one shard's connection: latency, slow commits, commits that fail
  before they apply, and torn commits (applied, but the shard is told they failed).
- ``Network``: calls between shards and from the front, each delivered after a
  random delay. Ray's actor calls are ordered per caller and callee and are never
  duplicated or dropped while both live, so the network keeps that order per
  channel, reorders across channels, and loses calls only with their callee: a
  shard that dies loses its running calls, its replies in flight and its memory.
- ``World``: the shard processes. ``kill`` cancels every task of the incarnation
  (any await may be its last); ``restart`` makes a new ``LedgerShard`` that knows it
  was restarted, as Ray does, and rebuilds lazily on its first message.

Every choice comes from ``World.rng``: a run is determined by its seed.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import astuple

from paynode.actors.ledger_shard import LedgerShard
from paynode.domain.ledger.model import (
    AccountFlags,
    AccountSpec,
    Horizon,
    JournalRow,
    Recalled,
    Row,
    shard_key,
)
from paynode.domain.ledger.ports import (
    Checkpoint,
    JournalConflict,
    PeerLost,
    ShardSnapshot,
    StorageUnavailable,
)


class InvariantBroken(AssertionError):
    """The journal or a shard broke a rule every run must keep."""


@dataclass(frozen=True)
class Faults:
    """Probabilities and delays of one run (drawn from the seed by ``Faults.draw``)."""

    net_delay_ms: tuple[float, float] = (0.05, 2.0)
    io_delay_ms: tuple[float, float] = (0.1, 3.0)
    slow_commit: float = 0.02  # a commit takes 50-500 ms
    commit_fails: float = 0.01  # refused before it applies
    commit_torn: float = 0.01  # applied, but the shard hears it failed
    read_fails: float = 0.01  # a load or an id lookup fails
    kill_per_ms: float = 0.0005  # chance per virtual ms that a shard dies
    checkpoint: float = 0.0  # chance per commit that the ledger checkpoint advances
    restart_ms: tuple[float, float] = (5.0, 200.0)

    @staticmethod
    def draw(rng: random.Random) -> Faults:
        """Some runs calm, some stormy: each fault rate is scaled by a factor of the seed."""
        storm = rng.choice((0.0, 0.5, 1.0, 3.0, 6.0))
        return Faults(
            slow_commit=0.02 * storm,
            commit_fails=0.01 * storm,
            commit_torn=0.01 * storm,
            read_fails=0.01 * storm,
            kill_per_ms=0.0005 * storm,
            checkpoint=rng.choice((0.0, 0.05, 0.3)),
        )


class Database:
    """The journal (what PostgreSQL holds), with its invariants checked on every commit."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountSpec] = {}
        self.rows: dict[str, JournalRow] = {}  # in commit order
        self.resolutions: dict[str, str] = {}  # pending id -> the status that resolved it
        self.txids: dict[str, int] = {}  # transfer id -> its commit's (commits are instants)
        # The ledger checkpoint (storage/checkpoint.py): every row of a commit below `below`
        # folded into balances, latest stamps and the pendings still open.
        self.below = 0
        self.folded: dict[str, list[int]] = {}
        self.last_ts: dict[str, int] = {}
        self.open_pendings: set[str] = set()
        # Per account: debits posted, credits posted, debits pending, credits pending.
        self.balances: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.commits = 0
        # The first broken invariant. It is raised inside the shard that committed, where
        # the code under test may swallow it; the run reports it at its next check.
        self.broken: InvariantBroken | None = None

    def apply(self, accounts: Sequence[AccountSpec], rows: Sequence[Row]) -> int:
        """One transaction: all of it, or (a duplicate id) nothing. Returns its id."""
        fresh = [JournalRow(*r) for r in rows]
        if any(a.id in self.accounts for a in accounts) or any(r.id in self.rows for r in fresh):
            raise JournalConflict("id already journaled")
        ids = [r.id for r in fresh]
        if len(set(ids)) != len(ids):
            raise JournalConflict("an id twice in one transaction")
        for a in accounts:
            self.accounts[a.id] = a
        for r in fresh:
            self.rows[r.id] = r
            self.txids[r.id] = self.commits + 1
            if r.pending_id is not None and r.status != "pending":
                self.resolutions[r.pending_id] = r.status
            debit, credit = self.balances[r.debit_account_id], self.balances[r.credit_account_id]
            debit[0] += r.posted_amount
            debit[2] += r.pending_delta
            credit[1] += r.posted_amount
            credit[3] += r.pending_delta
        self.commits += 1
        try:
            self.check({r.debit_account_id for r in fresh})
        except InvariantBroken as e:
            self.broken = self.broken or InvariantBroken(f"at commit {self.commits}: {e}")
            raise
        return self.commits

    def check(self, debited: Collection[str] | None = None) -> None:
        """Zero sum per currency; no constrained account overdrawn (``debited``: only those)."""
        totals: dict[str, int] = defaultdict(int)
        for account_id, (dp, cp, _, _) in self.balances.items():
            totals[self.accounts[account_id].currency] += cp - dp
        if any(totals.values()):
            raise InvariantBroken(f"the journal does not sum to zero: {dict(totals)}")
        for account_id in self.balances if debited is None else debited:
            spec = self.accounts[account_id]
            dp, cp, dpend, _ = self.balances[account_id]
            if spec.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and dp + dpend > cp:
                raise InvariantBroken(
                    f"account {account_id} overdrawn in the journal: debits {dp} posted"
                    f" + {dpend} pending > credits {cp}"
                )

    def advance_checkpoint(self) -> None:
        """Fold every row committed since the last checkpoint (commits are instants here,
        so the horizon is simply the next commit)."""
        hi = self.commits + 1
        for r in self.rows.values():
            if self.below <= self.txids[r.id] < hi:
                legs = (
                    (r.debit_account_id, (r.posted_amount, 0, r.pending_delta, 0)),
                    (r.credit_account_id, (0, r.posted_amount, 0, r.pending_delta)),
                )
                for account, delta in legs:
                    sums = self.folded.setdefault(account, [0, 0, 0, 0])
                    for k in range(4):
                        sums[k] += delta[k]
                    self.last_ts[account] = max(self.last_ts.get(account, 0), r.ts)
                if r.status == "pending":
                    self.open_pendings.add(r.id)
                elif r.pending_id is not None:
                    self.open_pendings.discard(r.pending_id)
        self.below = hi

    def snapshot(self, index: int, count: int) -> ShardSnapshot:
        mine = {a for a in self.accounts if shard_key(a) % count == index}
        accounts = sorted((self.accounts[a] for a in mine), key=lambda a: a.ts)
        rows = [r for r in self.rows.values()
                if (r.debit_account_id in mine or r.credit_account_id in mine)
                and self.txids[r.id] >= self.below]  # fmt: skip
        rows.sort(key=lambda r: (r.ts, r.id))
        horizon = Horizon(self.commits + 1, self.commits + 1)
        if not self.below:
            return ShardSnapshot(accounts, rows, horizon)
        balances = {a: (s[0], s[1], s[2], s[3]) for a, s in self.folded.items() if a in mine}
        pendings = [self.rows[p] for p in sorted(self.open_pendings)
                    if self.rows[p].debit_account_id in mine
                    or self.rows[p].credit_account_id in mine]  # fmt: skip
        clock = max((self.last_ts[a] for a in balances), default=0)
        return ShardSnapshot(
            accounts, rows, horizon, Checkpoint(self.below, balances, pendings, clock)
        )


class ShardJournal:
    """A shard's connection to the simulated journal (``ports.ShardJournal``)."""

    def __init__(self, world: World, index: int) -> None:
        self._world = world
        self.index = index

    async def _io(self) -> None:
        w = self._world
        low, high = w.faults.io_delay_ms
        slow = w.rng.random() < w.faults.slow_commit
        await asyncio.sleep((w.rng.uniform(50, 500) if slow else w.rng.uniform(low, high)) / 1000)

    def _read_fault(self) -> None:
        if self._world.rng.random() < self._world.faults.read_fails:
            raise StorageUnavailable("simulated read failure")

    async def open(self) -> None:
        await self._io()
        self._read_fault()

    async def load(self, index: int, count: int) -> ShardSnapshot:
        await self._io()
        self._read_fault()
        return self._world.db.snapshot(index, count)

    async def commit(self, accounts: Sequence[AccountSpec], rows: Sequence[Row]) -> int:
        w = self._world
        await self._io()  # the statement on its way: a kill here loses it
        fate = w.rng.random()
        if fate < w.faults.commit_fails:
            raise StorageUnavailable("simulated commit failure")
        txid = w.db.apply(accounts, rows)  # the COMMIT: atomic, at one instant
        if w.rng.random() < w.faults.checkpoint:
            w.db.advance_checkpoint()  # (the node's checkpointer, between two commits)
        await self._io()  # the acknowledgement on its way: a kill here loses only it
        if fate < w.faults.commit_fails + w.faults.commit_torn:
            w.torn_commits += 1
            raise StorageUnavailable("simulated torn commit (it did apply)")
        return txid

    async def existing_ids(self, ids: Sequence[str], fresh: bool = False) -> dict[str, int]:
        await self._io()
        self._read_fault()
        return {i: self._world.db.txids[i] for i in ids if i in self._world.db.rows}

    async def recall(self, ids: Sequence[str], pending_ids: Sequence[str]) -> Recalled:
        await self._io()
        self._read_fault()
        db = self._world.db
        rows = {i: astuple(db.rows[i]) for i in {*ids, *pending_ids} if i in db.rows}
        done = {p: db.resolutions[p] for p in pending_ids if p in db.resolutions}
        return Recalled(rows, done)

    async def close(self) -> None:
        return None


class Reads:
    """What the front reads of the journal (``ports.JournalReads``)."""

    def __init__(self, world: World) -> None:
        self._world = world

    async def account_specs(self, ids: Collection[str]) -> dict[str, AccountSpec]:
        await asyncio.sleep(self._world.rng.uniform(*self._world.faults.io_delay_ms) / 1000)
        return {i: self._world.db.accounts[i] for i in ids if i in self._world.db.accounts}

    async def pending_parties(self, ids: Collection[str]) -> dict[str, tuple[str, str, str]]:
        rows = self._world.db.rows
        return {
            i: (rows[i].debit_account_id, rows[i].credit_account_id, rows[i].currency)
            for i in ids if i in rows and rows[i].status == "pending"
        }  # fmt: skip

    async def statuses(self, ids: Collection[str]) -> dict[str, str]:
        rows = self._world.db.rows
        return {i: rows[i].status for i in ids if i in rows}


_INCARNATION: contextvars.ContextVar[Incarnation | None] = contextvars.ContextVar(
    "incarnation", default=None
)


@dataclass(eq=False)
class Incarnation:
    """One life of a shard process: its object and every task it runs."""

    shard: LedgerShard
    # A dict, not a set: a kill cancels them in creation order. A set would order them
    # by address, and a run would depend on what ran before it in the process.
    tasks: dict[asyncio.Task[Any], None] = field(default_factory=dict)
    alive: bool = True


class Peers:
    """``ports.Peers`` for shard ``src``: calls through the simulated network."""

    def __init__(self, world: World, src: int) -> None:
        self._world, self._src = world, src

    def call(self, index: int, method: str, *args: Any) -> asyncio.Future[Any]:
        return self._world.network.call(f"shard{self._src}", index, method, args)


class _Method:
    def __init__(self, world: World, index: int, name: str) -> None:
        self._world, self._index, self._name = world, index, name

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        return self._world.network.call("front", self._index, self._name, args)


class Handle:
    """What the front holds for a shard (a Ray actor handle's ``h.method.remote(...)``)."""

    def __init__(self, world: World, index: int) -> None:
        self._world, self._index = world, index

    def __getattr__(self, name: str) -> _Method:
        return _Method(self._world, self._index, name)


class Network:
    """Calls delivered after a random delay, in order per (caller, callee)."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._last: dict[tuple[str, int], float] = {}  # when the channel's last call lands
        self.calls = 0
        self.lost = 0

    def _delay(self) -> float:
        return self._world.rng.uniform(*self._world.faults.net_delay_ms) / 1000

    def call(self, src: str, dst: int, method: str, args: tuple) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        at = max(loop.time() + self._delay(), self._last.get((src, dst), 0.0))
        self._last[(src, dst)] = at
        loop.call_at(at, self._deliver, dst, method, args, reply)
        self.calls += 1
        return reply

    def _deliver(self, dst: int, method: str, args: tuple, reply: asyncio.Future[Any]) -> None:
        inc = self._world.live.get(dst)
        if inc is None:  # down: Ray fails the call
            self._lose(reply)
            return
        task = self._world.spawn(inc, getattr(inc.shard, method)(*args))
        task.add_done_callback(lambda t: self._answer(inc, t, reply))

    def _answer(
        self, inc: Incarnation, task: asyncio.Task[Any], reply: asyncio.Future[Any]
    ) -> None:
        if task.cancelled() or not inc.alive:
            self._lose(reply)
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self._delay(), self._reply, inc, task, reply)

    def _reply(self, inc: Incarnation, task: asyncio.Task[Any], reply: asyncio.Future[Any]) -> None:
        if reply.done():
            return
        if not inc.alive:  # the process died with the answer on its way
            self._lose(reply)
        elif task.exception() is not None:
            reply.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            reply.set_result(task.result())

    def _lose(self, reply: asyncio.Future[Any]) -> None:
        self.lost += 1
        if not reply.done():
            reply.set_exception(PeerLost("the shard died with the call"))


class World:
    """The shard processes of one simulated node, over one journal."""

    def __init__(self, seed: int, shards: int, faults: Faults | None = None) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or Faults.draw(self.rng)
        # Small windows make most replays and resolutions look their ids up in the journal.
        self.id_window = self.rng.choice((2, 16, 256, 131_072))
        self.count = shards
        self.db = Database()
        self.network = Network(self)
        self.live: dict[int, Incarnation] = {}
        self.kills = 0
        self.torn_commits = 0
        self.epoch_ns = 1_700_000_000 * 10**9  # virtual wall clock at time 0

    def now_ns(self) -> int:
        return self.epoch_ns + int(asyncio.get_running_loop().time() * 1e9)

    def spawn(self, inc: Incarnation, coro: Any) -> asyncio.Task[Any]:
        """A task of ``inc``: it, and every task it creates, dies with the incarnation."""
        ctx = contextvars.copy_context()
        ctx.run(_INCARNATION.set, inc)
        return asyncio.get_running_loop().create_task(coro, context=ctx)

    def task_factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task:
        task = asyncio.Task(coro, loop=loop, **kw)
        inc = _INCARNATION.get() if kw.get("context") is None else kw["context"].get(_INCARNATION)
        if inc is not None:
            inc.tasks[task] = None
            task.add_done_callback(lambda t: inc.tasks.pop(t, None))
        return task

    def boot(self, index: int, restarted: bool) -> Incarnation:
        shard = LedgerShard(
            index, self.count, "sim://journal", "sim", commit_max_rows=4096,
            expiry_interval_ms=50, id_window=self.id_window, journal=ShardJournal(self, index),
            peers=Peers(self, index),
            restarted=lambda: restarted, now_ns=self.now_ns,
        )  # fmt: skip
        inc = Incarnation(shard)
        self.live[index] = inc
        return inc

    def kill(self, index: int) -> None:
        inc = self.live.pop(index, None)
        if inc is None:
            return
        inc.alive = False
        self.kills += 1
        for task in list(inc.tasks):
            task.cancel()

    def handles(self) -> list[Handle]:
        return [Handle(self, i) for i in range(self.count)]
