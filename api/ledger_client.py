"""The front's view of the ledger: check, plan and send transfers toward the shards.

``transfer`` runs a request through four steps: the static checks of each
transfer (``api/validation.py``), the account facts it names (cached: accounts
are immutable), the plan (``domain/ledger/plan.py``: one columnar batch per
shard, or a two-phase group), and the shard calls (``api/shard_calls.py``,
``api/two_phase.py``). What it reads of the journal comes through
``domain.ledger.ports.JournalReads`` (``storage.journal.EngineReads`` in production).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from paynode.api import problems as p
from paynode.api import two_phase
from paynode.api.batcher import MicroBatcher, Overloaded
from paynode.api.schemas import TransferIn
from paynode.api.shard_calls import ShardCalls, ShardLost, Unavailable, call
from paynode.api.validation import transfer_flags
from paynode.domain.ledger.model import (
    AccountBalances,
    AccountSpec,
    Code,
    TransferFlags,
    shard_key,
)
from paynode.domain.ledger.plan import (
    Chunk,
    TransferResult,
    TwoPhase,
    from_outcome,
    plan,
    settle,
)
from paynode.domain.ledger.ports import JournalReads
from paynode.domain.ledger.wire import AccountResult
from paynode.domain.settings import Settings

__all__ = ["LedgerClient", "ShardLost", "TransferResult", "Unavailable"]

KEEPALIVE_S = 2.0  # how often the front pings the shards (a restarted one then rebuilds)
_MAX_CACHED_PLACEMENTS = 10_000_000  # ids are client-chosen: the cache is bounded
_RESOLVES = TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING


class LedgerClient:
    def __init__(
        self,
        shards: Sequence[Any],
        reads: JournalReads,
        settings: Settings,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.shards = list(shards)
        self.count = len(self.shards)
        self.reads = reads
        self.settings = settings
        self.calls = ShardCalls(self.shards, settings, on_batch)
        self.specs: dict[str, AccountSpec] = {}  # immutable facts, safe to cache forever
        self._shards_by_account: dict[str, int] = {}
        self._lookup = MicroBatcher(
            self._load_specs,
            max_items=4096,
            window_s=settings.batch.window_ms / 1000,
            max_inflight=settings.batch.max_inflight,
            queue_limit=max(settings.http.queue_limit, 4096),
        )

    def queue_depths(self) -> list[int]:
        return self.calls.queue_depths()

    def shard_of(self, account_id: str) -> int:
        shard = self._shards_by_account.get(account_id)
        if shard is None:
            shard = shard_key(account_id) % self.count
            if len(self._shards_by_account) < _MAX_CACHED_PLACEMENTS:
                self._shards_by_account[account_id] = shard
        return shard

    async def keep_shards_started(self, interval_s: float = KEEPALIVE_S) -> None:
        """Ping every shard every ``interval_s``, for as long as the front runs.

        Ray restarts a crashed shard without calling it; the new incarnation rebuilds
        on its first message. On an idle node nothing else would send one, and the
        pendings it holds would not expire past their timeouts (found by the
        simulator). Failures are expected while a shard restarts: the next ping retries.
        """
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.gather(
                *(call(h.ping.remote()) for h in self.shards), return_exceptions=True
            )

    async def _wait(self, fut: asyncio.Future[Any]) -> Any:
        try:
            return await asyncio.wait_for(fut, self.settings.http.request_timeout_s)
        except TimeoutError:
            raise p.ApiError(p.TIMEOUT) from None

    # -- accounts -----------------------------------------------------------

    async def create_account(self, spec: AccountSpec) -> AccountResult:
        shard = self.shard_of(spec.id)
        result: AccountResult = await self._wait(self.calls.create[shard].submit(spec))
        if result.code in (Code.OK, Code.EXISTS):
            self.specs[result.spec.id] = result.spec
        return result

    async def account(self, account_id: str) -> AccountBalances | None:
        return await self._wait(self.calls.read[self.shard_of(account_id)].submit(account_id))

    async def resolve(self, ids: set[str]) -> dict[str, AccountSpec]:
        """Static account facts (currency, flags) from cache or PostgreSQL; unknown ids absent."""
        await self._cache_specs(ids)
        return {i: self.specs[i] for i in ids if i in self.specs}

    async def _cache_specs(self, ids: set[str]) -> None:
        """Load into the cache the facts of those of ``ids`` it lacks (unknown ids stay out)."""
        specs = self.specs
        missing = [i for i in ids if i not in specs]
        if missing:
            found = await asyncio.gather(*(self._lookup.submit(i) for i in missing))
            for spec in found:
                if spec is not None:
                    specs[spec.id] = spec

    async def _load_specs(self, ids: list[str]) -> list[AccountSpec | None]:
        found = await self.reads.account_specs(set(ids))
        return [found.get(i) for i in ids]

    # -- transfers ----------------------------------------------------------

    async def transfer(
        self, bodies: Sequence[TransferIn], may_debit: Callable[[str], bool] | None = None
    ) -> list[TransferResult]:
        """Submit transfers in order; linked chains all-or-nothing. One result each.

        ``may_debit(owner_user_id)`` is asked for every existing debit account
        (after post/void took theirs from the pending); one refusal fails the
        whole request with 403 before anything is queued.
        """
        flags, codes = _checked(bodies)
        if any(f & _RESOLVES for f in flags):
            bodies = await self._fill_from_pendings(bodies, flags, codes)
        ids = set()
        for b, code in zip(bodies, codes, strict=True):
            if not code:
                ids.add(b.debit_account_id)
                ids.add(b.credit_account_id)
        ids.discard(None)
        await self._cache_specs(ids)  # type: ignore[arg-type]
        specs = self.specs  # read only below; an id absent from it does not exist
        if may_debit is not None:
            for i, (b, code) in enumerate(zip(bodies, codes, strict=True)):
                debit = specs.get(b.debit_account_id) if not code else None  # type: ignore[arg-type]
                if debit is not None and not may_debit(debit.owner):
                    detail = f"transfer {i} debits an account that is not yours"
                    raise p.ApiError(p.FORBIDDEN, detail, "debit_account_id")
        planned = plan(bodies, flags, codes, specs, self.shard_of)
        results = planned.results
        try:
            async with asyncio.timeout(self.settings.http.request_timeout_s):
                for n, segment in enumerate(planned.segments):
                    try:
                        await self._run_segment(segment, results)
                    except Overloaded:
                        # Nothing of this segment or later ones was queued: say so per transfer.
                        for later in planned.segments[n:]:
                            for position in _positions(later):
                                results[position] = TransferResult(bodies[position].id,
                                                                   p.OVERLOADED)  # fmt: skip
                        break
        except TimeoutError:
            raise p.ApiError(p.TIMEOUT) from None
        assert all(r is not None for r in results), "every transfer gets a result"
        done: list[TransferResult] = results  # type: ignore[assignment]
        await self._correct_misrouted(bodies, done)
        return done

    async def _run_segment(self, segment: dict[int, Chunk] | TwoPhase, results: list) -> None:
        if isinstance(segment, TwoPhase):
            if not all(self.calls.prepare[s].has_room(len(segment.ops)) for s in segment.deciders):
                raise Overloaded
            # Shielded: a client timeout must not strand reservations halfway.
            task = asyncio.ensure_future(two_phase.run(self.calls, segment))
            task.add_done_callback(_observed)  # its failure is ours to raise, or nobody's
            outcomes = await asyncio.shield(task)
            for k, o in enumerate(outcomes):
                results[segment.start + k] = from_outcome(o)
            return
        # One batch per shard, all queued or none (an overloaded transfer never applied).
        execute = self.calls.execute
        if not all(execute[s].has_room(len(c.positions)) for s, c in segment.items()):
            raise Overloaded
        chunks = list(segment.items())
        futures = [execute[s].submit(c.batch, weight=len(c.positions)) for s, c in chunks]
        answers = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        for (_, chunk), answer in zip(chunks, answers, strict=True):
            settle(chunk, answer, results)

    async def _fill_from_pendings(
        self, bodies: Sequence[TransferIn], flags: list[int], codes: list[str]
    ) -> list[TransferIn]:
        """Post/void may omit accounts and currency: take them from the pending transfer."""
        out = list(bodies)
        wanted = {
            b.pending_id
            for b, f, code in zip(bodies, flags, codes, strict=True)
            if not code and f & _RESOLVES
            and (b.debit_account_id is None or b.credit_account_id is None or b.currency is None)
        }  # fmt: skip
        if not wanted:
            return out
        known = {
            b.id: (b.debit_account_id, b.credit_account_id, b.currency)
            for b, f in zip(bodies, flags, strict=True)
            if f & TransferFlags.PENDING and b.id in wanted
        }
        rest = wanted - known.keys()
        if rest:
            known.update(await self.reads.pending_parties(rest))  # type: ignore[arg-type]
        for i, b in enumerate(bodies):
            if b.pending_id not in wanted or codes[i]:
                continue
            found = known.get(b.pending_id)  # type: ignore[arg-type]
            if found is None:
                codes[i] = Code.PENDING_NOT_FOUND
                continue
            out[i] = msgspec.structs.replace(
                b,
                debit_account_id=b.debit_account_id or found[0],
                credit_account_id=b.credit_account_id or found[1],
                currency=b.currency or found[2],
            )
            if out[i].debit_account_id == out[i].credit_account_id:
                codes[i] = Code.PENDING_ACCOUNT_MISMATCH
        return out

    async def _correct_misrouted(
        self, bodies: Sequence[TransferIn], results: list[TransferResult]
    ) -> None:
        """Refusals a shard gave for want of facts another shard holds.

        A transfer goes to its debit account's shard. An id reused with a debit
        account on another shard, or a post/void naming accounts on another
        shard than its pending's, reaches a shard that has never seen the id or
        the pending, and is refused for its balances or as ``pending_not_found``.
        The journal knows better; it is asked only when there are such refusals.
        """
        suspects = [i for i, r in enumerate(results) if r.code in _DECIDED_REFUSALS]
        if not suspects:
            return
        wanted = {results[i].id for i in suspects} | {
            bodies[i].pending_id or "" for i in suspects
            if results[i].code == Code.PENDING_NOT_FOUND
        }  # fmt: skip
        found = await self.reads.statuses(wanted)
        for i in suspects:
            r, pending_id = results[i], bodies[i].pending_id
            if r.id in found:
                results[i] = TransferResult(r.id, Code.EXISTS_WITH_DIFFERENT_FIELDS)
            elif r.code == Code.PENDING_NOT_FOUND and pending_id in found:
                code = (Code.PENDING_ACCOUNT_MISMATCH if found[pending_id] == "pending"
                        else Code.PENDING_NOT_PENDING)  # fmt: skip
                results[i] = TransferResult(r.id, code)


def _observed(task: asyncio.Future[Any]) -> None:
    """Mark a shielded group's failure as seen: when the request awaiting it timed out,
    nobody else will (and asyncio would log "exception was never retrieved")."""
    if not task.cancelled():
        task.exception()


def _checked(bodies: Sequence[TransferIn]) -> tuple[list[int], list[str]]:
    """Each transfer's flag bits and its edge refusal ("" if none), in request order.

    A plain transfer (no flags, no pending id, no timeout) needs only its four
    fields and two different accounts; anything else goes through transfer_flags.
    A refused transfer keeps its ``linked`` bit: it still belongs to its chain.
    """
    flags: list[int] = []
    codes: list[str] = []
    for b in bodies:
        if not b.flags and b.pending_id is None and b.timeout_s is None:
            flags.append(0)
            if (b.debit_account_id is None or b.credit_account_id is None or b.amount is None
                    or b.currency is None):  # fmt: skip
                codes.append(p.MISSING_FIELD)
            elif b.debit_account_id == b.credit_account_id:
                codes.append(Code.SAME_ACCOUNT)
            else:
                codes.append("")
            continue
        try:
            flags.append(transfer_flags(b))
            codes.append("")
        except p.ApiError as e:
            flags.append(TransferFlags.LINKED if "linked" in b.flags else 0)
            codes.append(e.code)
    return flags, codes


def _positions(segment: dict[int, Chunk] | TwoPhase) -> list[int]:
    if isinstance(segment, TwoPhase):
        return list(range(segment.start, segment.start + len(segment.ops)))
    return [i for chunk in segment.values() for i in chunk.positions]


# Refusals a shard decides from its own memory: the ones a misrouted transfer can get.
_DECIDED_REFUSALS = frozenset({
    Code.INSUFFICIENT_FUNDS, Code.CREDITS_EXCEED_DEBITS, Code.OVERFLOW, Code.PENDING_NOT_FOUND,
    Code.PENDING_NOT_PENDING, Code.PENDING_ALREADY_POSTED, Code.PENDING_ALREADY_VOIDED,
    Code.PENDING_EXPIRED, Code.PENDING_ACCOUNT_MISMATCH, Code.EXCEEDS_PENDING_AMOUNT,
    Code.VOID_AMOUNT_MISMATCH,
})  # fmt: skip
