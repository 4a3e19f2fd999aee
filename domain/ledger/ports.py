"""The ledger shard's two edges, kept narrow so that something else can stand behind them.

In production the journal is PostgreSQL (``storage/shard_journal.py``) and the
peers are Ray actors (``actors/ray_peers.py``); the simulator (``sim/``) puts an
in-memory journal with injected faults and a simulated network behind the same
interfaces, and drives the real shard and front code over a virtual clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Sequence
from typing import Any, Protocol

import msgspec

from paynode.domain.ledger.model import AccountSpec, Horizon, JournalRow, Recalled, Row
from paynode.domain.ledger.monitors import Monitor, Transition


class StorageUnavailable(Exception):
    """The journal could not be written or read; nothing of the batch is durable."""


class JournalConflict(StorageUnavailable):
    """A transfer id in the batch was already journaled by another shard."""


class PeerLost(Exception):
    """The called shard died with the call (Ray raises its own errors for this; the
    simulator raises this one): the call's outcome is unknown."""


class Checkpoint(msgspec.Struct):
    """A shard's accounts folded up to a journal horizon (``storage/checkpoint.py``):
    every row of a transaction below ``below`` is in it."""

    below: int
    balances: dict[str, tuple[int, int, int, int]]  # dp, cp, dpend, cpend of each account
    pendings: list[JournalRow]  # still open at the horizon, touching the shard's accounts
    clock: int  # the latest stamp of a row folded in, on the shard's accounts


class ShardSnapshot(msgspec.Struct):
    """Everything one shard owns, as the journal holds it, as of ``horizon``: its accounts,
    a checkpoint of them (or None), and the rows that debit or credit them after the
    checkpoint (all of them without one), in replay order (a pending before its
    resolution)."""

    accounts: list[AccountSpec]
    rows: list[JournalRow]
    horizon: Horizon
    checkpoint: Checkpoint | None = None


class ShardJournal(Protocol):
    """A shard's connection to the journal. Every method raises ``StorageUnavailable``
    (``commit``: ``JournalConflict`` for an id another shard journaled) on failure."""

    async def open(self) -> None:
        """(Re)connect: the old connection, if any, is closed first."""

    async def load(self, index: int, count: int) -> ShardSnapshot:
        """Shard ``index`` of ``count``: its accounts and rows, one consistent snapshot."""

    async def commit(self, accounts: Sequence[AccountSpec], rows: Sequence[Row]) -> int:
        """Write accounts and rows in one transaction; return its id once durable."""

    async def recall(self, ids: Sequence[str], pending_ids: Sequence[str]) -> Recalled:
        """The journaled rows of ``ids`` and ``pending_ids``, and how each of the pendings
        among them was resolved, on a connection of its own (ids a shard no longer
        remembers: ``Ledger.unknown``)."""

    async def existing_ids(self, ids: Sequence[str], fresh: bool = False) -> dict[str, int]:
        """Which of ``ids`` are journaled, each with its transaction's id; ``fresh``: on a
        connection of its own (the shard's may be inside a transaction)."""

    async def close(self) -> None: ...


class MonitorStore(Protocol):
    """Where a shard's balance monitors live (``domain/ledger/monitors.py``). Raises
    ``StorageUnavailable`` on failure."""

    async def load(self, index: int, count: int) -> list[Monitor]:
        """The live monitors of the accounts shard ``index`` of ``count`` owns."""

    async def record(self, transitions: Sequence[Transition]) -> list[Transition]:
        """Record changes of state (and their events); the ones that applied."""

    async def close(self) -> None: ...


class Peers(Protocol):
    """The other shards of the node, by index."""

    def call(self, index: int, method: str, *args: Any) -> Awaitable[Any]:
        """Call ``method`` of shard ``index``; the awaitable fails if that shard died."""


class JournalReads(Protocol):
    """What the front reads of the journal to plan and to explain refusals."""

    async def account_specs(self, ids: Collection[str]) -> dict[str, AccountSpec]:
        """The immutable facts of the accounts among ``ids`` that exist."""

    async def pending_parties(self, ids: Collection[str]) -> dict[str, tuple[str, str, str]]:
        """(debit, credit, currency) of the transfers among ``ids`` that are pendings."""

    async def statuses(self, ids: Collection[str]) -> dict[str, str]:
        """The status of every journaled transfer among ``ids``."""
