"""One simulated run: a node of real shards and a real front over the simulated world,
clients with a random workload, shards killed and restarted, invariants checked.

Checked during the run: every commit keeps the journal's invariants
(``world.Database.check``), and after every client request no shard's memory has
a ``debits_must_not_exceed_credits`` account overdrawn. Checked at the end, once
the load stopped and every shard is back: every acknowledged transfer is in the
journal; each shard's memory equals the journal, before and after every shard is
killed and rebuilt; and replaying every acknowledged request changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from paynode.api import problems as p
from paynode.api import two_phase
from paynode.api.batcher import Overloaded
from paynode.api.ledger_client import LedgerClient
from paynode.api.schemas import TransferIn
from paynode.api.shard_calls import Unavailable
from paynode.domain.ledger.model import RETRYABLE, AccountFlags, AccountSpec, Code
from paynode.domain.ledger.ports import StorageUnavailable
from paynode.domain.settings import build
from paynode.sim import world as w
from paynode.sim.loop import Stalled, VirtualLoop

USD = "USD"
RETRY_LIMIT = 200  # a request retried this often without an answer is a liveness failure
RETRY_CODES = RETRYABLE | {p.OVERLOADED, p.TIMEOUT, p.SHARD_RESTARTED}
SETTLE_S = 5.0  # virtual seconds for forwards, expiries and restarts to finish


@dataclass
class Report:
    seed: int
    ok: bool
    failure: str = ""
    requests: int = 0
    acked: int = 0
    kills: int = 0
    torn_commits: int = 0
    commits: int = 0
    calls: int = 0
    virtual_s: float = 0.0
    wall_s: float = 0.0
    fingerprint: str = ""  # of the journal in commit order: equal for equal runs


@dataclass
class _Client:
    acked: dict[str, TransferIn] = field(default_factory=dict)  # id -> request body
    requests: list[list[TransferIn]] = field(default_factory=list)  # acknowledged whole
    pendings: list[str] = field(default_factory=list)
    sent: int = 0


class _Ids:
    """Transfer ids from the seed (never uuid4: a run must be repeatable)."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"


class _SeededUuid:
    """uuid4 for the code under test (two-phase group ids, shard epochs), from the seed."""

    def __init__(self, world: w.World) -> None:
        self._world = world

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._world.rng.getrandbits(128), version=4)


def _where(e: BaseException) -> str:
    """The last frames of ``e``'s traceback, innermost first."""
    frames = traceback.extract_tb(e.__traceback__)[-4:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


def run(seed: int, shards: int = 2, clients: int = 3, steps: int = 25) -> Report:
    """Run seed ``seed``; the report says whether every invariant held, and if not which."""
    t0 = time.perf_counter()
    world = w.World(seed, shards)
    report = Report(seed, ok=True)
    loop = VirtualLoop()
    loop.set_task_factory(world.task_factory)
    seeded = _SeededUuid(world)
    saved = (two_phase.uuid, _shard_module().uuid)
    two_phase.uuid = seeded  # type: ignore[assignment]
    _shard_module().uuid = seeded
    try:
        loop.run_until_complete(_main(world, report, clients, steps))
    except (w.InvariantBroken, AssertionError, Stalled) as e:
        report.ok = False
        report.failure = f"{type(e).__name__}: {e}"
        if isinstance(e, AssertionError) and not isinstance(e, w.InvariantBroken):
            report.failure += " (at " + _where(e) + ")"
    except Exception as e:  # the code under test raised where it should have answered
        report.ok = False
        report.failure = f"unexpected {type(e).__name__}: {e} (at {_where(e)})"
    finally:
        two_phase.uuid, _shard_module().uuid = saved
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    report.kills, report.torn_commits = world.kills, world.torn_commits
    report.commits, report.calls = world.db.commits, world.network.calls
    report.virtual_s = loop.now
    report.fingerprint = hashlib.sha256(
        "\n".join(
            f"{r.id} {r.status} {r.posted_amount} {r.ts}" for r in world.db.rows.values()
        ).encode()
    ).hexdigest()[:16]
    report.wall_s = time.perf_counter() - t0
    return report


def _shard_module():  # the module whose uuid the simulator seeds
    from paynode.actors import ledger_shard

    return ledger_shard


async def _main(world: w.World, report: Report, clients: int, steps: int) -> None:
    for i in range(world.count):
        world.boot(i, restarted=False)
    settings = build(batch_window_ms=1.0, batch_max_items=64, batch_max_inflight=2,
                     request_timeout_s=2.0, queue_limit=10_000)  # fmt: skip
    front = LedgerClient(world.handles(), w.Reads(world), settings)
    ids = _Ids()
    accounts = await _open_accounts(world, front)
    state = [_Client() for _ in range(clients)]
    stop = asyncio.Event()
    killer = asyncio.get_running_loop().create_task(_killer(world, stop))
    keepalive = asyncio.get_running_loop().create_task(front.keep_shards_started())
    try:
        await asyncio.gather(*(_client(world, front, accounts, ids, c, steps) for c in state))
    finally:
        stop.set()
        await killer
    for index in range(world.count):  # everyone back
        if index not in world.live:
            world.boot(index, restarted=True)
    await asyncio.sleep(SETTLE_S)
    report.requests = sum(c.sent for c in state)
    report.acked = sum(len(c.acked) for c in state)
    await _check_end(world, front, accounts, state)
    keepalive.cancel()


async def _open_accounts(world: w.World, front: LedgerClient) -> list[AccountSpec]:
    rng = world.rng
    specs = [AccountSpec("bank", USD, 0, "{}")]
    specs += [AccountSpec(f"c{i}", USD, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS, "{}")
              for i in range(rng.randint(3, 6))]  # fmt: skip
    specs += [AccountSpec(f"p{i}", USD, 0, "{}") for i in range(rng.randint(1, 3))]
    for spec in specs:
        for _ in range(RETRY_LIMIT):
            try:
                result = await front.create_account(spec)
            except (Unavailable, Overloaded, p.ApiError):
                await asyncio.sleep(0.05)
                continue
            if result.code in (Code.OK, Code.EXISTS):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"account {spec.id} never created")
    return specs


def _transfer(
    tid: str, debit: str, credit: str, amount: int, *flags: str, timeout_s: int | None = None
) -> TransferIn:
    return TransferIn(id=tid, debit_account_id=debit, credit_account_id=credit, amount=amount,
                      currency=USD, flags=list(flags), timeout_s=timeout_s)  # type: ignore[arg-type]  # fmt: skip


def _request(
    world: w.World, accounts: Sequence[AccountSpec], ids: _Ids, c: _Client
) -> list[TransferIn]:
    """One request of a random kind: a transfer, a batch (maybe a linked chain across
    shards), a pending with a timeout, a post or void of one, or a replay."""
    rng = world.rng
    names = [a.id for a in accounts]

    def pair() -> tuple[str, str]:
        debit, credit = rng.sample(names, 2)
        return debit, credit

    kind = rng.random()
    if kind < 0.35:
        return [_transfer(ids("t"), *pair(), rng.randint(1, 400))]
    if kind < 0.6:
        n, linked = rng.randint(2, 4), rng.random() < 0.6
        body = []
        for k in range(n):
            flags = ("linked",) if linked and k < n - 1 else ()
            body.append(_transfer(ids("b"), *pair(), rng.randint(1, 300), *flags))
        return body
    if kind < 0.75:
        tid = ids("h")
        c.pendings.append(tid)
        return [_transfer(tid, *pair(), rng.randint(1, 300), "pending",
                          timeout_s=rng.randint(1, 3))]  # fmt: skip
    if kind < 0.88 and c.pendings:
        pending = c.pendings.pop(rng.randrange(len(c.pendings)))
        flag = "post_pending" if rng.random() < 0.6 else "void_pending"
        return [TransferIn(id=ids("r"), flags=[flag], pending_id=pending)]  # type: ignore[list-item]
    if c.requests:
        return list(rng.choice(c.requests))  # a replay: same ids, same fields
    return [_transfer(ids("t"), *pair(), rng.randint(1, 400))]


async def _client(world: w.World, front: LedgerClient, accounts: Sequence[AccountSpec],
                  ids: _Ids, c: _Client, steps: int) -> None:  # fmt: skip
    rng = world.rng
    # Tight funds: the constrained accounts are often near zero, where a lost
    # reservation or a doubled decision would show as an overdraft.
    funding = [_transfer(ids("f"), "bank", a.id, rng.randint(100, 600)) for a in accounts
               if a.flags]  # fmt: skip
    await _send(world, front, c, funding)  # each client funds the constrained accounts once
    for _ in range(steps):
        await _send(world, front, c, _request(world, accounts, ids, c))
        _check_memory(world)
        await asyncio.sleep(rng.uniform(0, 0.02))


async def _answered(world: w.World, front: LedgerClient, body: list[TransferIn]) -> list:
    """The request's final answer: sent again with the same ids while it is retryable."""
    for _ in range(RETRY_LIMIT):
        try:
            results = await front.transfer(body)
        except (Unavailable, Overloaded):
            results = None
        except p.ApiError as e:
            if e.code not in RETRY_CODES:
                raise
            results = None
        if results is not None and not any(r.code in RETRY_CODES for r in results):
            return results
        await asyncio.sleep(world.rng.uniform(0.01, 0.5))
    raise AssertionError(f"no answer for {[b.id for b in body]} after {RETRY_LIMIT} tries")


async def _send(world: w.World, front: LedgerClient, c: _Client, body: list[TransferIn]) -> None:
    """Send until every transfer has a final answer; remember what was acknowledged."""
    c.sent += 1
    results = await _answered(world, front, body)
    if all(r.code == Code.OK for r in results):
        c.requests.append(body)
    for r, b in zip(results, body, strict=True):
        if r.code == Code.OK:
            c.acked[b.id] = b


async def _killer(world: w.World, stop: asyncio.Event) -> None:
    """Every virtual millisecond, maybe kill a shard; Ray restarts it after a while."""
    loop = asyncio.get_running_loop()
    rng = world.rng
    while not stop.is_set():
        await asyncio.sleep(0.001)
        if world.faults.kill_per_ms and rng.random() < world.faults.kill_per_ms:
            index = rng.randrange(world.count)
            if index in world.live:
                world.kill(index)
                loop.call_later(rng.uniform(*world.faults.restart_ms) / 1000, world.boot, index,
                                True)  # fmt: skip


def _check_memory(world: w.World) -> None:
    """No shard's memory has a constrained account overdrawn, even uncommitted (and no
    commit broke the journal's invariants since the last check)."""
    if world.db.broken is not None:
        raise world.db.broken
    for inc in world.live.values():
        for a in inc.shard.ledger.accounts.values():
            if a.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and a.dp + a.dpend > a.cp:
                raise w.InvariantBroken(f"shard {inc.shard.index}: {a.spec.id} overdrawn in memory")


async def _check_end(world: w.World, front: LedgerClient, accounts: Sequence[AccountSpec],
                     state: list[_Client]) -> None:  # fmt: skip
    db = world.db
    if db.broken is not None:
        raise db.broken
    db.check()
    acked = {tid for c in state for tid in c.acked}
    lost = sorted(acked - db.rows.keys())
    if lost:
        raise w.InvariantBroken(f"acknowledged but not journaled: {lost[:5]}")
    await _memory_equals_journal(world, accounts, "after the load")
    for index in list(world.live):  # recovery: every shard rebuilt from the journal
        world.kill(index)
        world.boot(index, restarted=True)
    await asyncio.sleep(0.5)
    await _memory_equals_journal(world, accounts, "after every shard was rebuilt")
    rows = len(db.rows)
    for c in state:  # replays change nothing
        for body in c.requests:
            results = await _answered(world, front, body)
            wrong = [(r.id, r.code) for r in results if r.code != Code.OK]
            if wrong:
                raise w.InvariantBroken(
                    f"a replay of an acknowledged request was refused: {wrong}"
                    f" (request {[b.id for b in body]})"
                )
    if len(db.rows) != rows:
        new = [(r.id, r.status, r.pending_id) for r in list(db.rows.values())[rows:]]
        raise w.InvariantBroken(f"replays wrote new journal rows: {new}")


async def _memory_equals_journal(
    world: w.World, accounts: Sequence[AccountSpec], when: str
) -> None:
    from paynode.domain.ledger.wire import decode_balances

    for index, inc in sorted(world.live.items()):
        for _ in range(RETRY_LIMIT):  # a shard re-reading the journal answers when done
            try:
                answer = await world.spawn(inc, inc.shard.balances())
                break
            except StorageUnavailable:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{when}: shard {index} never became ready")
        balances = decode_balances(answer) or []
        for b in balances:
            if b is None:
                continue
            journal = world.db.balances.get(b.id, [0, 0, 0, 0])
            memory = [b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending]
            if memory != journal:
                rows = [(r.id, r.status, r.pending_id, r.ts, r.pending_delta)
                        for r in world.db.rows.values() if r.pending_delta
                        and b.id in (r.debit_account_id, r.credit_account_id)]  # fmt: skip
                raise w.InvariantBroken(
                    f"{when}: shard {index} has {b.id} at {memory}, the journal {journal};"
                    f" its pending rows {rows}"
                )
