"""Wire format between the front and the shards, and between shards.

Every Ray call carries one msgpack-encoded batch (never one object per
transfer): the fixed cost of a call is paid once per batch.
"""

from __future__ import annotations

import msgspec

from paynode.domain.ledger.model import (
    AccountBalances,
    AccountSpec,
    Code,
    JournalRow,
    Outcome,
    TransferOp,
)

Group = list[TransferOp]  # a single transfer or a linked chain


class TransferBatch(msgspec.Struct, array_like=True):
    """Groups of transfers for one shard's ``execute``, one list per field (columnar).

    Columns decode into plain lists of str and int: no object per transfer on
    either side of the call, and the shard's loop reads them by index. Every
    column has one entry per transfer. ``amounts[i] == 0`` means "the pending
    amount" (a post or void that names none; a real amount is >= 1).
    ``group_sizes`` is empty when every group is a single transfer (the usual
    case); otherwise it holds each group's size, in order, summing to the count.
    """

    ids: list[str]
    debits: list[str]
    credits: list[str]
    amounts: list[int]
    currencies: list[str]
    flags: list[int]
    pending_ids: list[str | None]
    timeouts: list[int]
    metadata: list[str]
    group_sizes: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def check(self) -> None:
        """Columns of one length, groups covering them exactly (asserted on both ends)."""
        n = len(self.ids)
        assert all(
            len(c) == n
            for c in (self.debits, self.credits, self.amounts, self.currencies, self.flags,
                      self.pending_ids, self.timeouts, self.metadata)
        ), "columns of different lengths"  # fmt: skip
        assert not self.group_sizes or sum(self.group_sizes) == n, "groups do not cover the batch"


def empty_batch() -> TransferBatch:
    return TransferBatch([], [], [], [], [], [], [], [], [], [])


def extend_batch(into: TransferBatch, more: TransferBatch) -> None:
    """Append ``more``'s transfers (and groups) to ``into``: concatenation, column by column."""
    if more.group_sizes and not into.group_sizes:
        into.group_sizes.extend([1] * len(into.ids))
    elif into.group_sizes and not more.group_sizes:
        more = msgspec.structs.replace(more, group_sizes=[1] * len(more.ids))
    into.ids.extend(more.ids)
    into.debits.extend(more.debits)
    into.credits.extend(more.credits)
    into.amounts.extend(more.amounts)
    into.currencies.extend(more.currencies)
    into.flags.extend(more.flags)
    into.pending_ids.extend(more.pending_ids)
    into.timeouts.extend(more.timeouts)
    into.metadata.extend(more.metadata)
    into.group_sizes.extend(more.group_sizes)


def subset(batch: TransferBatch, start: int, end: int) -> TransferBatch:
    """Transfers ``start:end`` (whole groups) as a batch of their own."""
    b = batch
    return TransferBatch(
        b.ids[start:end], b.debits[start:end], b.credits[start:end], b.amounts[start:end],
        b.currencies[start:end], b.flags[start:end], b.pending_ids[start:end],
        b.timeouts[start:end], b.metadata[start:end],
        [] if end - start == 1 else [end - start],
    )  # fmt: skip


def batch_groups(batch: TransferBatch) -> list[tuple[int, int]]:
    """[start, end) of every group of the batch."""
    if not batch.group_sizes:
        return [(i, i + 1) for i in range(len(batch.ids))]
    spans, start = [], 0
    for size in batch.group_sizes:
        spans.append((start, start + size))
        start += size
    return spans


def batch_ops(batch: TransferBatch, start: int, end: int) -> list[TransferOp]:
    """Transfers ``start:end`` of the batch as TransferOps (the general path's type)."""
    b = batch
    return [
        TransferOp(b.ids[i], b.debits[i], b.credits[i], b.amounts[i] or None, b.currencies[i],
                   b.flags[i], b.pending_ids[i], b.timeouts[i], b.metadata[i])
        for i in range(start, end)
    ]  # fmt: skip


# Results of a batch, per transfer: applied now, replayed (already journaled with the same
# fields), or refused with one of RESULT_CODES[k] for k >= 2.
APPLIED = 0
REPLAYED = 1
RESULT_CODES: tuple[str, ...] = (
    Code.OK, Code.OK, Code.EXISTS, Code.EXISTS_WITH_DIFFERENT_FIELDS, Code.TRANSFER_IN_FLIGHT,
    Code.ACCOUNT_NOT_FOUND, Code.CURRENCY_MISMATCH, Code.SAME_ACCOUNT,
    Code.INSUFFICIENT_FUNDS, Code.CREDITS_EXCEED_DEBITS, Code.OVERFLOW, Code.PENDING_NOT_FOUND,
    Code.PENDING_NOT_PENDING, Code.PENDING_ALREADY_POSTED, Code.PENDING_ALREADY_VOIDED,
    Code.PENDING_EXPIRED, Code.PENDING_ACCOUNT_MISMATCH, Code.EXCEEDS_PENDING_AMOUNT,
    Code.VOID_AMOUNT_MISMATCH, Code.LINKED_EVENT_FAILED, Code.LINKED_CHAIN_OPEN,
    Code.STORAGE_UNAVAILABLE,
)  # fmt: skip
RESULT_OF: dict[str, int] = {code: k for k, code in enumerate(RESULT_CODES) if k >= 2}


class BatchResult(msgspec.Struct, array_like=True):
    """A shard's answer to a TransferBatch, one entry per transfer, in order.

    ``results[i]`` is APPLIED, REPLAYED or a refusal's index in RESULT_CODES;
    ``stamps[i]`` the row's timestamp (0 if refused); ``amounts`` holds the
    row's amount only where the request left it to the pending (amount 0).
    """

    results: list[int]
    stamps: list[int]
    amounts: dict[int, int] = {}


def refused(count: int, code: str) -> BatchResult:
    return BatchResult([RESULT_OF[code]] * count, [0] * count, {})


class Prepare(msgspec.Struct, array_like=True):
    gid: str
    ops: Group


class Prepared(msgspec.Struct, array_like=True):
    """A decider's answer to a Prepare: its outcomes, and which incarnation of the
    shard holds the reservation (a restarted shard has a new ``epoch`` and none)."""

    epoch: str
    outcomes: list[Outcome]


class Commit(msgspec.Struct, array_like=True):
    """Journal ``rows`` of a prepared group, then finish it on every participant.

    ``epochs``: each decider's epoch when it prepared. The primary journals the
    group only if every decider is still that incarnation (its reservation alive).
    """

    gid: str
    rows: list[JournalRow]
    participants: list[int]
    epochs: dict[int, str] = {}


class Finish(msgspec.Struct, array_like=True):
    gid: str
    rows: list[JournalRow]


class AccountResult(msgspec.Struct, array_like=True):
    code: str
    spec: AccountSpec


class ShardStats(msgspec.Struct):
    index: int
    accounts: int
    window_transfers: int  # transfers the recent-id window remembers (not all transfers)
    window_agings: int  # times the window aged, forgetting its older generation
    lookups: int  # journal lookups for ids memory could not answer
    ids_looked_up: int
    pendings: int
    holds: int
    commit_queue: int
    commits: int
    rows_committed: int
    commit_seconds_sum: float
    commit_seconds_max: float
    commit_buckets: list[int]
    rebuilds: int
    ready: bool
    phase_seconds: dict[str, float]  # time execute calls spent waiting, by phase


COMMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_enc = msgspec.msgpack.Encoder()
encode = _enc.encode

decode_groups = msgspec.msgpack.Decoder(list[Group]).decode
decode_outcomes = msgspec.msgpack.Decoder(list[list[Outcome]]).decode
decode_prepares = msgspec.msgpack.Decoder(list[Prepare]).decode
decode_prepared = msgspec.msgpack.Decoder(list[Prepared]).decode
decode_commits = msgspec.msgpack.Decoder(list[Commit]).decode
decode_finishes = msgspec.msgpack.Decoder(list[Finish]).decode
decode_rows = msgspec.msgpack.Decoder(list[JournalRow]).decode
decode_specs = msgspec.msgpack.Decoder(list[AccountSpec]).decode
decode_account_results = msgspec.msgpack.Decoder(list[AccountResult]).decode
decode_ids = msgspec.msgpack.Decoder(list[str]).decode
decode_balances = msgspec.msgpack.Decoder(list[AccountBalances | None] | None).decode
decode_stats = msgspec.msgpack.Decoder(ShardStats).decode
decode_batch = msgspec.msgpack.Decoder(TransferBatch).decode
decode_batch_result = msgspec.msgpack.Decoder(BatchResult).decode
