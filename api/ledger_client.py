"""The front's view of the ledger: resolve, route and batch transfers toward the shards.

A *group* is one transfer or one linked chain. Its *deciders* are the shards
that must check something: the shard of every debit account, and the shard
of every credit account with a credit limit. With one decider the group goes
to that shard in one call (the common case: it decides, journals, applies
remote credit legs and answers). With several, the front runs two phases:
every decider prepares (checks and reserves), then the first decider
journals the whole group and finishes it on every participant; any refusal
aborts all reservations.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.api import problems as p
from paynode.api.batcher import MicroBatcher, Overloaded
from paynode.api.schemas import TransferIn
from paynode.api.validation import canonical_metadata, transfer_flags
from paynode.domain.ledger.model import (
    AccountBalances,
    AccountFlags,
    AccountSpec,
    Code,
    Outcome,
    TransferFlags,
    TransferOp,
    shard_key,
)
from paynode.domain.ledger.rules import refuse_group
from paynode.domain.ledger.wire import (
    AccountResult,
    Commit,
    Finish,
    Group,
    Prepare,
    decode_account_results,
    decode_balances,
    decode_outcomes,
    encode,
)
from paynode.domain.settings import Settings
from paynode.storage.schema import accounts as accounts_t
from paynode.storage.schema import transfers as transfers_t

CMNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS

# Groups run as segments: one-decider groups by shard, or one two-phase group
# (start, ops, deciders, participants).
_Segment = dict[int, list[tuple[int, Group]]] | tuple[int, Group, list[int], list[int]]


class Unavailable(Exception):
    """The shard could not make its answer durable: nothing was applied."""

    code = Code.STORAGE_UNAVAILABLE


class ShardLost(Unavailable):
    """The shard died before answering (Ray restarts it): the outcome is unknown."""

    code = p.SHARD_RESTARTED


def _actor_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a call whose actor died or cannot be reached (imported late:
    Ray reads its auth settings at import)."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    return (RayActorError, ActorUnavailableError)


async def _call(ref) -> object:
    """Await a shard call; a shard that died under it (Ray restarts it) is a 503.

    The outcome of such a call is unknown: it may have committed before the
    process died. Clients retry with the same ids and get the journal's answer.
    """
    try:
        return await ref
    except _actor_errors() as e:
        raise ShardLost(type(e).__name__) from None


@dataclass
class _Draft:
    """A request on its way to becoming a TransferOp, or the code that stopped it."""

    body: TransferIn
    flags: int = 0
    code: str = ""


class LedgerClient:
    def __init__(
        self,
        shards: Sequence[object],
        engine: AsyncEngine,
        settings: Settings,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.shards = list(shards)
        self.count = len(self.shards)
        self.engine = engine
        self.settings = settings
        self.specs: dict[str, AccountSpec] = {}  # immutable facts, safe to cache forever
        self._shards_by_account: dict[str, int] = {}

        def batcher(send, max_items: int | None = None):
            max_items = max_items or settings.batch_max_items
            return MicroBatcher(
                send,
                max_items=max_items,
                window_s=settings.batch_window_ms / 1000,
                max_inflight=settings.batch_max_inflight,
                queue_limit=max(settings.queue_limit, max_items),
                on_batch=on_batch,
            )

        self._execute = [batcher(self._execute_caller(h)) for h in self.shards]
        self._prepare = [batcher(self._caller(h, "prepare", decode_outcomes)) for h in self.shards]
        self._commit = [batcher(self._caller(h, "commit", decode_outcomes)) for h in self.shards]
        self._create = [
            batcher(self._caller(h, "create_accounts", decode_account_results)) for h in self.shards
        ]
        self._read = [batcher(self._read_caller(h), max_items=4096) for h in self.shards]
        self._lookup = batcher(self._load_specs, max_items=4096)

    def queue_depths(self) -> list[int]:
        return [b.queued for b in self._execute]

    @staticmethod
    def _caller(handle, method: str, decode):
        remote = getattr(handle, method)

        async def send(items: list) -> list:
            return decode(await _call(remote.remote(encode(items))))

        return send

    @staticmethod
    def _execute_caller(handle):
        """Items are lists of groups (one request's share); flattened into one call."""

        async def send(items: list[list[Group]]) -> list[list[list[Outcome]]]:
            flat = [g for item in items for g in item]
            outcomes = decode_outcomes(await _call(handle.execute.remote(encode(flat))))
            out, i = [], 0
            for item in items:
                out.append(outcomes[i : i + len(item)])
                i += len(item)
            return out

        return send

    @staticmethod
    def _read_caller(handle):
        async def send(ids: list[str]) -> list:
            result = decode_balances(await _call(handle.get_accounts.remote(encode(ids))))
            if result is None:
                raise Unavailable
            return result

        return send

    def shard_of(self, account_id: str) -> int:
        shard = self._shards_by_account.get(account_id)
        if shard is None:
            shard = shard_key(account_id) % self.count
            if len(self._shards_by_account) < 10_000_000:  # bounded: ids are client-chosen
                self._shards_by_account[account_id] = shard
        return shard

    async def _wait(self, fut: asyncio.Future) -> object:
        try:
            return await asyncio.wait_for(fut, self.settings.request_timeout_s)
        except TimeoutError:
            raise p.ApiError(p.TIMEOUT) from None

    # -- accounts -----------------------------------------------------------

    async def create_account(self, spec: AccountSpec) -> AccountResult:
        result: AccountResult = await self._wait(self._create[self.shard_of(spec.id)].submit(spec))  # type: ignore[assignment]
        if result.code in (Code.OK, Code.EXISTS):
            self.specs[result.spec.id] = result.spec
        return result

    async def account(self, account_id: str) -> AccountBalances | None:
        return await self._wait(self._read[self.shard_of(account_id)].submit(account_id))  # type: ignore[return-value]

    async def resolve(self, ids: set[str]) -> dict[str, AccountSpec]:
        """Static account facts (currency, flags) from cache or PostgreSQL; unknown ids absent."""
        missing = [i for i in ids if i not in self.specs]
        if missing:
            found = await asyncio.gather(*(self._lookup.submit(i) for i in missing))
            for spec in found:
                if spec is not None:
                    self.specs[spec.id] = spec
        return {i: self.specs[i] for i in ids if i in self.specs}

    async def _load_specs(self, ids: list[str]) -> list[AccountSpec | None]:
        q = sa.select(
            accounts_t.c.id,
            accounts_t.c.currency,
            accounts_t.c.flags,
            sa.cast(accounts_t.c.metadata, sa.Text),
            accounts_t.c.ts,
            sa.func.coalesce(accounts_t.c.owner_user_id, ""),
        ).where(accounts_t.c.id.in_(set(ids)))
        async with self.engine.connect() as conn:
            rows = {r[0]: AccountSpec(*r) for r in await conn.execute(q)}
        return [rows.get(i) for i in ids]

    # -- transfers ----------------------------------------------------------

    async def transfer(
        self, bodies: Sequence[TransferIn], may_debit: Callable[[str], bool] | None = None
    ) -> list[Outcome]:
        """Submit transfers in order; linked chains all-or-nothing. One outcome each.

        A request's groups that one shard can decide travel to it as one item
        (one future, however many transfers); groups spanning shards run the
        two-phase protocol. ``may_debit(owner_user_id)`` is asked for every
        existing debit account (after post/void took theirs from the pending);
        one refusal fails the whole request with 403 before anything is queued.
        """
        drafts = [_Draft(b) for b in bodies]
        for d in drafts:
            try:
                d.flags = transfer_flags(d.body)
            except p.ApiError as e:
                d.code = e.code
        await self._fill_from_pendings(drafts)
        ids = {
            a
            for d in drafts
            if not d.code
            for a in (d.body.debit_account_id, d.body.credit_account_id)
            if a is not None
        }
        specs = await self.resolve(ids)
        if may_debit is not None:
            for i, d in enumerate(drafts):
                debit = specs.get(d.body.debit_account_id or "") if not d.code else None
                if debit is not None and not may_debit(debit.owner):
                    raise p.ApiError(
                        p.FORBIDDEN,
                        f"transfer {i} debits an account that is not yours",
                        "debit_account_id",
                    )

        outcomes: list[Outcome] = [Outcome("")] * len(drafts)
        # Segments run one after another, so no group sees a later group's effects:
        # consecutive one-decider groups share a segment (one item per shard);
        # a group spanning shards is a segment of its own.
        segments: list[_Segment] = []
        for start, end in _chains(drafts):
            group_drafts = drafts[start:end]
            ops, failure = self._ops(group_drafts, specs)
            if end == len(drafts) and _linked(group_drafts[-1]):
                failure = failure or (end - start - 1, Code.LINKED_CHAIN_OPEN)
            if failure is not None:
                outcomes[start:end] = refuse_group([d.body for d in group_drafts], *failure)
                continue
            deciders, participants = self._placement(ops, specs)
            if len(deciders) > 1:
                segments.append((start, ops, deciders, participants))
                continue
            if not segments or not isinstance(segments[-1], dict):
                segments.append(defaultdict(list))
            segments[-1][deciders[0]].append((start, ops))  # type: ignore[index]

        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                for n, segment in enumerate(segments):
                    try:
                        await self._run_segment(segment, outcomes)
                    except Overloaded:
                        # Nothing of this segment or later ones was queued: say so per transfer.
                        for later in segments[n:]:
                            for start, ops in _groups_of(later):
                                outcomes[start : start + len(ops)] = [
                                    Outcome(op.id, p.OVERLOADED) for op in ops
                                ]
                        break
        except TimeoutError:
            raise p.ApiError(p.TIMEOUT) from None
        assert all(o.id for o in outcomes), "every transfer gets an outcome"
        await self._correct_misrouted(drafts, outcomes)
        return outcomes

    async def _correct_misrouted(self, drafts: list[_Draft], outcomes: list[Outcome]) -> None:
        """Refusals a shard gave for want of facts another shard holds.

        A transfer goes to its debit account's shard. An id reused with a debit
        account on another shard, or a post/void naming accounts on another
        shard than its pending's, reaches a shard that has never seen the id or
        the pending, and is refused for its balances or as ``pending_not_found``.
        The journal knows better; it is asked only when there are such refusals.
        """
        suspects = [i for i, o in enumerate(outcomes) if o.code in _DECIDED_REFUSALS]
        if not suspects:
            return
        wanted = {outcomes[i].id for i in suspects} | {
            drafts[i].body.pending_id or "" for i in suspects
            if outcomes[i].code == Code.PENDING_NOT_FOUND
        }  # fmt: skip
        q = sa.select(transfers_t.c.id, transfers_t.c.status).where(transfers_t.c.id.in_(wanted))
        async with self.engine.connect() as conn:
            found = {r[0]: r[1] for r in await conn.execute(q)}
        for i in suspects:
            o, pending_id = outcomes[i], drafts[i].body.pending_id
            if o.id in found:
                outcomes[i] = Outcome(o.id, Code.EXISTS_WITH_DIFFERENT_FIELDS)
            elif o.code == Code.PENDING_NOT_FOUND and pending_id in found:
                code = (Code.PENDING_ACCOUNT_MISMATCH if found[pending_id] == "pending"
                        else Code.PENDING_NOT_PENDING)  # fmt: skip
                outcomes[i] = Outcome(o.id, code)

    async def _run_segment(self, segment: _Segment, outcomes: list[Outcome]) -> None:
        if isinstance(segment, dict):
            await self._run_local(segment, outcomes)
            return
        start, ops, deciders, participants = segment
        if not all(self._prepare[s].has_room(len(ops)) for s in deciders):
            raise Overloaded
        # Shielded: a client timeout must not strand reservations halfway.
        task = asyncio.ensure_future(self._two_phase(ops, deciders, participants))
        outcomes[start : start + len(ops)] = await asyncio.shield(task)

    async def _run_local(
        self, segment: dict[int, list[tuple[int, Group]]], outcomes: list[Outcome]
    ) -> None:
        """One item per shard holding all of this segment's groups for it (all or none queued)."""
        weights = {shard: sum(len(g) for _, g in entries) for shard, entries in segment.items()}
        if not all(self._execute[shard].has_room(w) for shard, w in weights.items()):
            raise Overloaded
        calls = [
            (entries, self._execute[shard].submit([g for _, g in entries],
                                                  weight=sum(len(g) for _, g in entries)))
            for shard, entries in segment.items()
        ]  # fmt: skip
        results = await asyncio.gather(*(f for _, f in calls))
        for (entries, _), per_group in zip(calls, results, strict=True):
            for (start, ops), group_outcomes in zip(entries, per_group, strict=True):
                outcomes[start : start + len(ops)] = group_outcomes

    async def _fill_from_pendings(self, drafts: list[_Draft]) -> None:
        """Post/void may omit accounts, currency: take them from the pending transfer."""
        wanted = {
            d.body.pending_id
            for d in drafts
            if not d.code
            and d.flags & (TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING)
            and (d.body.debit_account_id is None or d.body.credit_account_id is None
                 or d.body.currency is None)
        }  # fmt: skip
        if not wanted:
            return
        known = {
            d.body.id: (d.body.debit_account_id, d.body.credit_account_id, d.body.currency)
            for d in drafts
            if d.flags & TransferFlags.PENDING and d.body.id in wanted
        }
        rest = wanted - known.keys()
        if rest:
            q = sa.select(
                transfers_t.c.id,
                transfers_t.c.debit_account_id,
                transfers_t.c.credit_account_id,
                transfers_t.c.currency,
            ).where(transfers_t.c.id.in_(rest), transfers_t.c.status == "pending")
            async with self.engine.connect() as conn:
                for r in await conn.execute(q):
                    known[r[0]] = (r[1], r[2], r[3])
        for d in drafts:
            if d.body.pending_id not in wanted or d.code:
                continue
            found = known.get(d.body.pending_id)  # type: ignore[arg-type]
            if found is None:
                d.code = Code.PENDING_NOT_FOUND
                continue
            b = d.body
            d.body = TransferIn(
                id=b.id,
                debit_account_id=b.debit_account_id or found[0],
                credit_account_id=b.credit_account_id or found[1],
                amount=b.amount,
                currency=b.currency or found[2],
                flags=b.flags,
                pending_id=b.pending_id,
                timeout_s=b.timeout_s,
                metadata=b.metadata,
            )
            if d.body.debit_account_id == d.body.credit_account_id:
                d.code = Code.PENDING_ACCOUNT_MISMATCH

    def _ops(
        self, drafts: Sequence[_Draft], specs: dict[str, AccountSpec]
    ) -> tuple[list[TransferOp], tuple[int, str] | None]:
        ops: list[TransferOp] = []
        for i, d in enumerate(drafts):
            if d.code:
                return ops, (i, d.code)
            b = d.body
            dr = specs.get(b.debit_account_id)  # type: ignore[arg-type]
            cr = specs.get(b.credit_account_id)  # type: ignore[arg-type]
            if dr is None or cr is None:
                return ops, (i, Code.ACCOUNT_NOT_FOUND)
            if not (dr.currency == cr.currency == b.currency):
                return ops, (i, Code.CURRENCY_MISMATCH)
            ops.append(
                TransferOp(
                    b.id,
                    dr.id,
                    cr.id,
                    b.amount,
                    dr.currency,
                    d.flags,
                    b.pending_id,
                    b.timeout_s or 0,
                    canonical_metadata(b.metadata),
                )
            )
        return ops, None

    def _placement(self, ops: Group, specs: dict[str, AccountSpec]) -> tuple[list[int], list[int]]:
        """(deciders, participants) of a group, as sorted shard indexes."""
        deciders: set[int] = set()
        participants: set[int] = set()
        for op in ops:
            dr, cr = self.shard_of(op.debit_account_id), self.shard_of(op.credit_account_id)
            deciders.add(dr)
            participants.add(dr)
            participants.add(cr)
            if specs[op.credit_account_id].flags & CMNED:
                deciders.add(cr)
        return sorted(deciders), sorted(participants)

    async def _two_phase(
        self, ops: Group, deciders: list[int], participants: list[int]
    ) -> list[Outcome]:
        gid = uuid.uuid4().hex
        prep = Prepare(gid, ops)
        # Checked again here, with no await before the submits: the check in _run_segment
        # is stale once this task runs, and a refusal after the first submit would leave
        # that decider's reservation held for good.
        if not all(self._prepare[s].has_room(len(ops)) for s in deciders):
            raise Overloaded
        prepared = await asyncio.gather(
            *(self._prepare[s].submit(prep, weight=len(ops)) for s in deciders),
            return_exceptions=True,
        )
        if any(isinstance(a, BaseException) for a in prepared):
            await self._abort(gid, deciders)  # a dead decider kept nothing; free the others
            raise next(a for a in prepared if isinstance(a, BaseException))
        answers: list[list[Outcome]] = prepared  # type: ignore[assignment]
        failure = _first_failure(answers)
        by_id = {
            o.id: o
            for shard, answer in zip(deciders, answers, strict=True)
            for o in answer
            if o.row is not None
        }
        replayed = [i for i, op in enumerate(ops) if by_id[op.id].replayed] if not failure else []
        if replayed and len(replayed) == len(ops):
            await self._abort(gid, deciders)
            return [by_id[op.id] for op in ops]
        if replayed:  # part of this chain was committed before, in another group
            failure = (replayed[0], Code.EXISTS)
        if failure is not None:
            await self._abort(gid, deciders)
            return refuse_group(ops, *failure)
        rows = [by_id[op.id].row for op in ops]
        assert all(r is not None for r in rows), "a debit decider returned no row"
        try:
            committed: list[Outcome] = await self._commit[deciders[0]].submit(
                Commit(gid, rows, participants), weight=len(ops)
            )
        except Overloaded:
            # The primary's commit queue is full (slow commits): nothing was queued, so
            # free what the deciders reserved before refusing, or it stays held for good.
            await self._abort(gid, deciders)
            raise
        except Unavailable:
            # The primary died while committing: only the journal knows whether the
            # group is in. The others apply it if it is, and free their reservations.
            await self._settle(gid, rows, [s for s in participants if s != deciders[0]])
            raise
        if committed:
            await self._abort(gid, deciders)
            return committed
        return [Outcome(op.id, Code.OK, row) for op, row in zip(ops, rows, strict=True)]

    async def _abort(self, gid: str, shards: list[int]) -> None:
        payload = encode([gid])
        results = await asyncio.gather(
            *(_call(self.shards[s].abort.remote(payload)) for s in shards),
            return_exceptions=True,
        )
        _raise_unexpected(results)  # a dead shard's reservations died with it

    async def _settle(self, gid: str, rows: list, shards: list[int]) -> None:
        payload = encode([Finish(gid, rows)])
        results = await asyncio.gather(
            *(_call(self.shards[s].settle.remote(payload)) for s in shards),
            return_exceptions=True,
        )
        _raise_unexpected(results)  # a dead shard re-reads the journal when it restarts


def _raise_unexpected(results: list) -> None:
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Unavailable):
            raise r


# Refusals a shard decides from its own memory: the ones a misrouted transfer can get.
_DECIDED_REFUSALS = frozenset({
    Code.INSUFFICIENT_FUNDS, Code.CREDITS_EXCEED_DEBITS, Code.OVERFLOW, Code.PENDING_NOT_FOUND,
    Code.PENDING_NOT_PENDING, Code.PENDING_ALREADY_POSTED, Code.PENDING_ALREADY_VOIDED,
    Code.PENDING_EXPIRED, Code.PENDING_ACCOUNT_MISMATCH, Code.EXCEEDS_PENDING_AMOUNT,
    Code.VOID_AMOUNT_MISMATCH,
})  # fmt: skip


def _chains(drafts: Sequence[_Draft]) -> list[tuple[int, int]]:
    """[start, end) of each group: a run of linked transfers closed by an unlinked one."""
    spans, start = [], 0
    for i, d in enumerate(drafts):
        if not _linked(d) or i == len(drafts) - 1:
            spans.append((start, i + 1))
            start = i + 1
    return spans


def _groups_of(segment: _Segment) -> list[tuple[int, Group]]:
    if isinstance(segment, dict):
        return [entry for entries in segment.values() for entry in entries]
    return [(segment[0], segment[1])]


def _linked(d: _Draft) -> bool:
    return "linked" in d.body.flags


def _first_failure(answers: list[list[Outcome]]) -> tuple[int, str] | None:
    """The earliest transfer a decider refused (the cause), across all deciders."""
    best: tuple[int, str] | None = None
    for answer in answers:
        for i, o in enumerate(answer):
            if o.code and o.code != Code.LINKED_EVENT_FAILED:
                if best is None or i < best[0]:
                    best = (i, o.code)
                break
    return best
