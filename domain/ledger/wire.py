"""Wire format between the front and the shards, and between shards.

Every Ray call carries one msgpack-encoded batch (never one object per
transfer): the fixed cost of a call is paid once per batch.
"""

from __future__ import annotations

import msgspec

from paynode.domain.ledger.model import (
    AccountBalances,
    AccountSpec,
    JournalRow,
    Outcome,
    TransferOp,
)

Group = list[TransferOp]  # a single transfer or a linked chain


class Prepare(msgspec.Struct, array_like=True):
    gid: str
    ops: Group


class Commit(msgspec.Struct, array_like=True):
    """Journal ``rows`` of a prepared group, then finish it on every participant."""

    gid: str
    rows: list[JournalRow]
    participants: list[int]


class Finish(msgspec.Struct, array_like=True):
    gid: str
    rows: list[JournalRow]


class AccountResult(msgspec.Struct, array_like=True):
    code: str
    spec: AccountSpec


class ShardStats(msgspec.Struct):
    index: int
    accounts: int
    transfers: int
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
decode_commits = msgspec.msgpack.Decoder(list[Commit]).decode
decode_finishes = msgspec.msgpack.Decoder(list[Finish]).decode
decode_rows = msgspec.msgpack.Decoder(list[JournalRow]).decode
decode_specs = msgspec.msgpack.Decoder(list[AccountSpec]).decode
decode_account_results = msgspec.msgpack.Decoder(list[AccountResult]).decode
decode_ids = msgspec.msgpack.Decoder(list[str]).decode
decode_balances = msgspec.msgpack.Decoder(list[AccountBalances | None] | None).decode
decode_stats = msgspec.msgpack.Decoder(ShardStats).decode
