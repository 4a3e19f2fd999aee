"""A shard's balance monitors: which accounts changed, and their monitors' transitions.

The shard tells it which rows became durable (``touch``); every ``interval_s`` it
evaluates the monitors of those accounts on durable balances (memory less the
rows applied but not journaled yet) and records each change of state, with its
event, through the ``MonitorStore``. Nothing here runs on the transfer path but
``touch``, and that only for accounts that have monitors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from paynode.domain.ledger.model import ROW_CREDIT, ROW_DEBIT, JournalRow, Row
from paynode.domain.ledger.monitors import Monitor, Transition, durable_balances, evaluate
from paynode.domain.ledger.ports import MonitorStore, StorageUnavailable

log = logging.getLogger("paynode.shard")


class BalanceWatch:
    def __init__(self, store: MonitorStore | None, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self.monitors: dict[str, dict[str, Monitor]] = {}  # account id -> monitor id -> monitor
        self._dirty: set[str] = set()
        self._shard: tuple[int, int] | None = None  # (index, count) of the last load
        self._stale = False  # a change did not apply: what PostgreSQL holds is reloaded
        self.transitions = 0  # recorded by this incarnation

    def touch(self, rows: Sequence[Row]) -> None:
        """``rows`` are durable now: their monitored accounts are evaluated next."""
        if self.monitors:
            self._mark((r[ROW_DEBIT], r[ROW_CREDIT]) for r in rows)

    def touch_journaled(self, rows: Sequence[JournalRow]) -> None:
        """``touch`` for rows as structs (peers' legs, two-phase groups)."""
        if self.monitors:
            self._mark((r.debit_account_id, r.credit_account_id) for r in rows)

    def _mark(self, pairs: Iterable[tuple[str, str]]) -> None:
        watched = self.monitors
        for debit, credit in pairs:
            if debit in watched:
                self._dirty.add(debit)
            if credit in watched:
                self._dirty.add(credit)

    async def load(self, index: int, count: int) -> None:
        """After a rebuild: the monitors as recorded (states that match the journal)."""
        if self._store is None:
            return
        self._shard = (index, count)
        loaded: dict[str, dict[str, Monitor]] = {}
        for m in await self._store.load(index, count):
            loaded.setdefault(m.account_id, {})[m.id] = m
        self.monitors = loaded
        self._dirty = set(loaded)
        self._stale = False

    def add(self, m: Monitor) -> None:
        self.monitors.setdefault(m.account_id, {})[m.id] = m
        self._dirty.add(m.account_id)

    def remove(self, monitor_ids: Sequence[str]) -> None:
        gone = set(monitor_ids)
        for account_id, ms in list(self.monitors.items()):
            for mid in gone & ms.keys():
                del ms[mid]
            if not ms:
                del self.monitors[account_id]

    async def run(
        self,
        ready: Callable[[], bool],
        accounts: Callable[[], Mapping[str, Any]],
        uncommitted: Callable[[], list[Row]],
    ) -> None:
        """Evaluate and record, every ``interval_s``, while the shard lives."""
        while True:
            await asyncio.sleep(self._interval_s)
            if self._store is None or not (self._dirty or self._stale) or not ready():
                continue
            try:
                await self._pass(accounts, uncommitted)
            except Exception:  # a bug must not end the loop silently: logged, and retried
                log.exception("balance monitors: a pass failed")

    async def _pass(
        self, accounts: Callable[[], Mapping[str, Any]], uncommitted: Callable[[], list[Row]]
    ) -> None:
        if self._stale and self._shard is not None:
            try:
                await self.load(*self._shard)
            except StorageUnavailable as e:
                log.warning("balance monitors not reloaded (%s); retrying", e)
                return
        dirty, self._dirty = self._dirty, set()
        changes = self._changes(dirty, accounts(), uncommitted())
        if not changes:
            return
        assert self._store is not None
        try:
            done = await self._store.record(changes)
        except StorageUnavailable as e:
            log.warning("balance monitors not recorded (%s); retrying", e)
            self._dirty |= dirty
            return
        for t in done:
            t.monitor.crossed = t.crossed
            t.monitor.seq += 1
        self.transitions += len(done)
        if len(done) < len(changes):
            # Changed elsewhere (deleted, or recorded by a previous incarnation): what
            # PostgreSQL holds now is reloaded rather than retried forever.
            self._stale = True

    def _changes(
        self, dirty: set[str], accounts: Mapping[str, Any], uncommitted: list[Row]
    ) -> list[Transition]:
        pending = [r for r in uncommitted if r[ROW_DEBIT] in dirty or r[ROW_CREDIT] in dirty]
        out: list[Transition] = []
        for account_id in dirty:
            acct = accounts.get(account_id)
            watched = self.monitors.get(account_id)
            if acct is None or not watched:
                continue
            balance, available = durable_balances(acct.dp, acct.cp, acct.dpend, account_id,
                                                  pending)  # fmt: skip
            out += [t for m in watched.values() if (t := evaluate(m, balance, available))]
        return out
