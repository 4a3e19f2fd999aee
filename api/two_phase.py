"""The two-phase coordinator: groups whose decisions span shards.

``prepare`` on every decider (each decides its local legs in order, rolls them
back and *reserves* the net exposure on its accounts, locking the ids and
pendings), then ``commit`` on the first decider, which journals the whole
group in its group commit and ``finish``es it on every participant. Any
refusal or failure aborts every reservation. A client's timeout must not
strand reservations halfway, so the caller shields this coroutine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from paynode.api.batcher import Overloaded
from paynode.api.shard_calls import ShardCalls, Unavailable, unexpected
from paynode.domain.ledger.model import Code, Outcome
from paynode.domain.ledger.plan import TwoPhase
from paynode.domain.ledger.rules import refuse_group
from paynode.domain.ledger.wire import Commit, Prepare

# A fault-injection point for tests: awaited after every decider prepared a group and
# before its primary commits it, the window a decider's death must not open. Nothing in
# the product (no setting, no variable) sets it; tests/system/test_two_phase_window.py does.
between_prepare_and_commit: Callable[[TwoPhase], Awaitable[None]] | None = None


async def run(calls: ShardCalls, group: TwoPhase) -> list[Outcome]:
    """Decide ``group`` across its deciders; one outcome per transfer, all or nothing."""
    ops, deciders, participants = group.ops, group.deciders, group.participants
    gid = uuid.uuid4().hex
    prep = Prepare(gid, ops)
    # Checked here, with no await before the submits: a check made before this task ran
    # is stale, and a refusal after the first submit would leave that decider's
    # reservation held for good.
    if not all(calls.prepare[s].has_room(len(ops)) for s in deciders):
        raise Overloaded
    prepared = await asyncio.gather(
        *(calls.prepare[s].submit(prep, weight=len(ops)) for s in deciders),
        return_exceptions=True,
    )
    if any(isinstance(a, BaseException) for a in prepared):
        await _abort(calls, gid, deciders)  # a dead decider kept nothing; free the others
        raise next(a for a in prepared if isinstance(a, BaseException))
    answers = [a.outcomes for a in prepared]  # type: ignore[union-attr]
    epochs = {s: a.epoch for s, a in zip(deciders, prepared, strict=True)}  # type: ignore[union-attr]
    failure = _first_failure(answers)
    by_id = {o.id: o for answer in answers for o in answer if o.row is not None}
    replayed = [i for i, op in enumerate(ops) if by_id[op.id].replayed] if not failure else []
    if replayed and len(replayed) == len(ops):
        await _abort(calls, gid, deciders)
        return [by_id[op.id] for op in ops]
    if replayed:  # part of this chain was committed before, in another group
        failure = (replayed[0], Code.EXISTS)
    if failure is not None:
        await _abort(calls, gid, deciders)
        return refuse_group(ops, *failure)
    rows = [row for op in ops if (row := by_id[op.id].row) is not None]
    assert len(rows) == len(ops), "a debit decider returned no row"
    if between_prepare_and_commit is not None:
        await between_prepare_and_commit(group)
    try:
        committed: list[Outcome] = await calls.commit[deciders[0]].submit(
            Commit(gid, rows, participants, epochs), weight=len(ops)
        )
    except Overloaded:
        # The primary's commit queue is full (slow commits): nothing was queued, so
        # free what the deciders reserved before refusing, or it stays held for good.
        await _abort(calls, gid, deciders)
        raise
    except Unavailable:
        # The primary died while committing: only the journal knows whether the
        # group is in. The others apply it if it is, and free their reservations.
        others = [s for s in participants if s != deciders[0]]
        unexpected(await calls.settle(gid, rows, others))  # a dead one re-reads at restart
        raise
    if committed:
        await _abort(calls, gid, deciders)
        return committed
    return [Outcome(op.id, Code.OK, row) for op, row in zip(ops, rows, strict=True)]


async def _abort(calls: ShardCalls, gid: str, shards: list[int]) -> None:
    unexpected(await calls.abort(gid, shards))  # a dead shard's reservations died with it


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
