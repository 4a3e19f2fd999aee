"""A shard's balance monitors (actors/balance_watch.py) over an in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

from paynode.actors.balance_watch import BalanceWatch
from paynode.domain.ledger.monitors import Monitor, Transition


class Store:
    """What storage/monitors.PgMonitorStore does, in memory: the seq guard included."""

    def __init__(self, monitors: list[Monitor]) -> None:
        self.rows = {m.id: Monitor(**{f: getattr(m, f) for f in Monitor.__struct_fields__})
                     for m in monitors}  # fmt: skip
        self.deleted: set[str] = set()
        self.events: list[tuple[str, bool]] = []
        self.loads = 0

    async def load(self, index: int, count: int) -> list[Monitor]:
        self.loads += 1
        return [Monitor(**{f: getattr(m, f) for f in Monitor.__struct_fields__})
                for m in self.rows.values() if m.id not in self.deleted]  # fmt: skip

    async def record(self, transitions: Sequence[Transition]) -> list[Transition]:
        done = []
        for t in transitions:
            row = self.rows[t.monitor.id]
            if row.id in self.deleted or row.seq != t.monitor.seq:
                continue
            row.crossed, row.seq = t.crossed, row.seq + 1
            if not t.silent:
                self.events.append((row.id, t.crossed))
            done.append(t)
        return done

    async def close(self) -> None:
        return None


def _row(debit: str, credit: str, amount: int) -> tuple:
    return ("t", debit, credit, amount, "USD", 0, None, 0, "{}", "posted", amount, 0, 0)


def test_one_event_per_change_on_durable_balances_and_a_reload_after_a_miss() -> None:
    low = Monitor(id="m1", account_id="a", owner_user_id=None, condition="balance_below",
                  threshold=50, crossed=None, seq=0)  # fmt: skip
    store = Store([low])
    watch = BalanceWatch(store, 0.001)
    accounts = {"a": SimpleNamespace(dp=0, cp=100, dpend=0)}
    queued: list[tuple] = []

    async def scenario() -> None:
        await watch.load(0, 1)
        task = asyncio.create_task(watch.run(lambda: True, lambda: accounts, lambda: queued))

        async def settle() -> None:
            """Until a pass took every mark (a deadline, not a guess), and one more turn
            for its record to land."""
            deadline = asyncio.get_running_loop().time() + 10
            while watch._dirty or watch._stale:
                assert asyncio.get_running_loop().time() < deadline, "no pass ran"
                await asyncio.sleep(0.001)
            for _ in range(5):
                await asyncio.sleep(0.002)

        await settle()
        assert (store.rows["m1"].crossed, store.events) == (False, [])  # set silently
        # 60 applied but still queued for the journal: not durable, no event yet.
        accounts["a"].dp = 60
        queued.append(_row("a", "b", 60))
        watch.touch(queued)
        await settle()
        assert store.events == []
        queued.clear()  # journaled now
        watch.touch([_row("a", "b", 60)])
        await settle()
        accounts["a"].dp = 70  # still below: no second event
        watch.touch([_row("a", "b", 10)])
        await settle()
        assert store.events == [("m1", True)]
        # Deleted behind the watch's back: the change does not apply; it reloads and stops.
        store.deleted.add("m1")
        accounts["a"].dp = 0
        watch.touch([_row("b", "a", 70)])
        await settle()
        assert store.loads == 2 and watch.monitors == {} and store.events == [("m1", True)]
        task.cancel()

    asyncio.run(scenario())
