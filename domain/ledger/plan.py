"""Planning a request's transfers: which shard decides what, in which order (pure).

A *group* is one transfer or one linked chain. Its *deciders* are the shards
that must check something: the shard of every debit account, and the shard
of every credit account with ``credits_must_not_exceed_debits``. A group with
one decider is appended to that shard's columnar :class:`TransferBatch`; a
group with several runs the two-phase protocol on its own.

Groups run in request order as *segments*: consecutive one-decider groups
share a segment (one batch per shard, sent together), and a two-phase group
is a segment of its own, so no group ever sees the effect of a later one.

Everything here is plain data in, plain data out: the front's client does the
I/O (account facts, shard calls) around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from paynode.domain.ledger.model import (
    NO_METADATA,
    AccountFlags,
    AccountSpec,
    Code,
    Outcome,
    Status,
    TransferFlags,
    TransferOp,
)
from paynode.domain.ledger.wire import (
    APPLIED,
    REPLAYED,
    RESULT_CODES,
    BatchResult,
    TransferBatch,
    empty_batch,
)

CMNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def canonical_metadata(metadata: Mapping[str, str]) -> str:
    """One byte-exact form per mapping, so replays compare equal whatever the key order."""
    return _encode_sorted(metadata).decode() if metadata else NO_METADATA


class TransferRequest(Protocol):
    """What the planner reads of a request (the API's TransferIn is one).

    Read-only members (properties), so a request may hold narrower types: a list of flag
    literals for Sequence[str], a dict for Mapping[str, str].
    """

    @property
    def id(self) -> str: ...
    @property
    def debit_account_id(self) -> str | None: ...
    @property
    def credit_account_id(self) -> str | None: ...
    @property
    def amount(self) -> int | None: ...
    @property
    def currency(self) -> str | None: ...
    @property
    def flags(self) -> Sequence[str]: ...
    @property
    def pending_id(self) -> str | None: ...
    @property
    def timeout_s(self) -> int | None: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...


class TransferResult(msgspec.Struct, array_like=True, gc=False):
    """A transfer's answer as the front gives it: applied, replayed, or refused with a code.

    The other fields are the journal row's where the request may not say them (a
    post or void takes accounts, currency and amount from its pending); empty for
    a refusal.
    """

    id: str
    code: str = Code.OK
    replayed: bool = False
    status: str = ""
    amount: int = 0
    ts: int = 0
    debit_account_id: str = ""
    credit_account_id: str = ""
    currency: str = ""


@dataclass
class Chunk:
    """One shard's part of a segment: its batch, and where each transfer sits in the request."""

    batch: TransferBatch = field(default_factory=empty_batch)
    positions: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # group sizes, dropped if all are 1

    def seal(self) -> TransferBatch:
        if any(n > 1 for n in self.sizes):
            self.batch.group_sizes = self.sizes
        self.batch.check()
        return self.batch


@dataclass
class TwoPhase:
    """A group whose decisions span shards: prepared on every decider, then committed."""

    start: int
    ops: list[TransferOp]
    deciders: list[int]
    participants: list[int]


Segment = dict[int, Chunk] | TwoPhase


@dataclass
class Plan:
    results: list[TransferResult | None]  # refused before any shard: filled in; else None
    segments: list[Segment]


def plan(
    requests: Sequence[TransferRequest],
    flags: Sequence[int],
    codes: Sequence[str],
    specs: Mapping[str, AccountSpec],
    shard_of: Callable[[str], int],
) -> Plan:
    """Split ``requests`` into segments of shard batches and two-phase groups.

    ``flags`` are each request's flag bits and ``codes`` its edge refusal ("" if it
    passed the static checks); ``specs`` the known accounts (an absent id does not
    exist). A group with any refusal is refused whole, before any shard sees it.
    """
    n = len(requests)
    assert len(flags) == n and len(codes) == n
    results: list[TransferResult | None] = [None] * n
    segments: list[Segment] = []
    local: dict[int, Chunk] | None = None
    for start, end in chains(flags):
        failure = _static_failure(requests, codes, specs, start, end)
        if failure is None and end == n and flags[end - 1] & TransferFlags.LINKED:
            failure = (end - 1, Code.LINKED_CHAIN_OPEN)
        if failure is not None:
            index, code = failure
            for i in range(start, end):
                failed = code if i == index or end - start == 1 else Code.LINKED_EVENT_FAILED
                results[i] = TransferResult(requests[i].id, failed)
            continue
        deciders: set[int] = set()
        participants: set[int] = set()
        for i in range(start, end):
            r = requests[i]
            debit, credit = shard_of(r.debit_account_id), shard_of(r.credit_account_id)  # type: ignore[arg-type]
            deciders.add(debit)
            participants.add(debit)
            participants.add(credit)
            if specs[r.credit_account_id].flags & CMNED:  # type: ignore[index]
                deciders.add(credit)
        if len(deciders) > 1:
            ops = [_op(requests[i], flags[i], specs) for i in range(start, end)]
            segments.append(TwoPhase(start, ops, sorted(deciders), sorted(participants)))
            local = None
            continue
        if local is None:
            local = {}
            segments.append(local)
        (shard,) = deciders
        chunk = local.get(shard)
        if chunk is None:
            chunk = local[shard] = Chunk()
        _append(chunk, requests, flags, specs, start, end)
    for segment in segments:
        if isinstance(segment, dict):
            for chunk in segment.values():
                chunk.seal()
    return Plan(results, segments)


def chains(flags: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each group: a run of linked transfers closed by an unlinked one."""
    spans, start, last = [], 0, len(flags) - 1
    for i, f in enumerate(flags):
        if not f & TransferFlags.LINKED or i == last:
            spans.append((start, i + 1))
            start = i + 1
    return spans


def _static_failure(
    requests: Sequence[TransferRequest],
    codes: Sequence[str],
    specs: Mapping[str, AccountSpec],
    start: int,
    end: int,
) -> tuple[int, str] | None:
    for i in range(start, end):
        if codes[i]:
            return i, codes[i]
        r = requests[i]
        dr = specs.get(r.debit_account_id)  # type: ignore[arg-type]
        cr = specs.get(r.credit_account_id)  # type: ignore[arg-type]
        if dr is None or cr is None:
            return i, Code.ACCOUNT_NOT_FOUND
        if not (dr.currency == cr.currency == r.currency):
            return i, Code.CURRENCY_MISMATCH
    return None


def _append(
    chunk: Chunk,
    requests: Sequence[TransferRequest],
    flags: Sequence[int],
    specs: Mapping[str, AccountSpec],
    start: int,
    end: int,
) -> None:
    b = chunk.batch
    for i in range(start, end):
        r = requests[i]
        b.ids.append(r.id)
        b.debits.append(r.debit_account_id)  # type: ignore[arg-type]
        b.credits.append(r.credit_account_id)  # type: ignore[arg-type]
        b.amounts.append(r.amount or 0)
        b.currencies.append(r.currency)  # type: ignore[arg-type]
        b.flags.append(flags[i])
        b.pending_ids.append(r.pending_id)
        b.timeouts.append(r.timeout_s or 0)
        b.metadata.append(canonical_metadata(r.metadata) if r.metadata else NO_METADATA)
        chunk.positions.append(i)
    chunk.sizes.append(end - start)


def _op(r: TransferRequest, flags: int, specs: Mapping[str, AccountSpec]) -> TransferOp:
    return TransferOp(
        r.id, r.debit_account_id, r.credit_account_id, r.amount,  # type: ignore[arg-type]
        specs[r.debit_account_id].currency, flags, r.pending_id,  # type: ignore[index]
        r.timeout_s or 0, canonical_metadata(r.metadata),
    )  # fmt: skip


def status_of(flags: int) -> str:
    """A new or replayed row's status follows from its request's flags."""
    if flags & TransferFlags.PENDING:
        return Status.PENDING
    if flags & TransferFlags.VOID_PENDING:
        return Status.VOIDED
    return Status.POSTED


def settle(chunk: Chunk, answer: BatchResult, into: list[TransferResult | None]) -> None:
    """The shard's answer to ``chunk``, as results at the transfers' places in the request."""
    b = chunk.batch
    assert len(answer.results) == len(b.ids), "a shard answered a different number of transfers"
    amounts = answer.amounts
    for k, position in enumerate(chunk.positions):
        r = answer.results[k]
        if r > REPLAYED:
            into[position] = TransferResult(b.ids[k], RESULT_CODES[r])
            continue
        into[position] = TransferResult(
            b.ids[k], Code.OK, r == REPLAYED, status_of(b.flags[k]), b.amounts[k] or amounts[k],
            answer.stamps[k], b.debits[k], b.credits[k], b.currencies[k],
        )  # fmt: skip
    assert APPLIED == 0


def from_outcome(o: Outcome) -> TransferResult:
    """A two-phase group's outcome (it carries the whole row) as a result."""
    if o.code or o.row is None:
        return TransferResult(o.id, o.code)
    r = o.row
    return TransferResult(o.id, Code.OK, o.replayed, r.status, r.amount, r.ts, r.debit_account_id,
                          r.credit_account_id, r.currency)  # fmt: skip
