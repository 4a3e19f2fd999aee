"""The benchmark's workload: accounts, funding, and a stream of transfers.

The same generator drives the node and the conventional baseline, so both
see the same accounts, pairs and amounts. Pairs can be skewed (Zipf hot
accounts) and the share of cross-shard pairs can be fixed.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from paynode.domain.ledger.model import shard_key

FUND = 10**12  # minor units given to each no-overdraft account before the run
TREASURY = "treasury"


@dataclass(frozen=True)
class AccountPlan:
    id: str
    no_overdraft: bool


class Workload:
    def __init__(
        self,
        accounts: int,
        shards: int,
        *,
        prefix: str,
        skew: float = 0.0,
        cross_shard_ratio: float | None = None,
        no_overdraft_ratio: float = 0.5,
        max_amount: int = 10_000,
        seed: int = 1,
    ) -> None:
        assert accounts >= 2 and shards >= 1
        assert cross_shard_ratio is None or 0.0 <= cross_shard_ratio <= 1.0
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.accounts = [
            AccountPlan(f"{prefix}-{i}", self.rng.random() < no_overdraft_ratio)
            for i in range(accounts)
        ]
        self.ids = [a.id for a in self.accounts]
        self.shards = shards
        self.cross_shard_ratio = cross_shard_ratio if shards > 1 else None
        self.max_amount = max_amount
        shard = [shard_key(i) % shards for i in self.ids]
        self._by_shard: list[list[int]] = [[] for _ in range(shards)]
        for index, s in enumerate(shard):
            self._by_shard[s].append(index)
        self._shard = shard
        # Zipf: rank r (0-based) has weight 1 / (r + 1) ** skew; 0 is uniform.
        weights = [1.0 / (r + 1) ** skew for r in range(accounts)]
        self._cdf = list(itertools.accumulate(weights))
        self._seq = itertools.count()

    def treasury(self) -> str:
        return f"{self.prefix}-{TREASURY}"

    def funding(self) -> list[dict]:
        """Transfers from the treasury (no limit) that fund every no-overdraft account."""
        return [
            {"id": f"{self.prefix}-fund-{a.id}", "debit_account_id": self.treasury(),
             "credit_account_id": a.id, "amount": FUND, "currency": "USD"}
            for a in self.accounts if a.no_overdraft
        ]  # fmt: skip

    def _pick(self) -> int:
        return bisect.bisect_left(self._cdf, self.rng.random() * self._cdf[-1])

    def pair(self) -> tuple[str, str]:
        debit = self._pick()
        if self.cross_shard_ratio is None:
            credit = self._pick()
            while credit == debit:
                credit = self._pick()
            return self.ids[debit], self.ids[credit]
        home = self._shard[debit]
        if self.rng.random() < self.cross_shard_ratio:
            other = self.rng.choice(
                [s for s in range(self.shards) if s != home and self._by_shard[s]]
            )
            credit = self.rng.choice(self._by_shard[other])
        else:
            pool = self._by_shard[home]
            credit = debit if len(pool) < 2 else self.rng.choice(pool)
            while credit == debit and len(pool) >= 2:
                credit = self.rng.choice(pool)
        return self.ids[debit], self.ids[credit]

    def transfer(self) -> dict:
        debit, credit = self.pair()
        return {
            "id": f"{self.prefix}-t{next(self._seq)}",
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": self.rng.randint(1, self.max_amount),
            "currency": "USD",
        }

    def transfer_json(self) -> bytes:
        """The next transfer as the JSON ``transfer()`` encodes to, formatted directly
        (ids are plain ASCII: nothing to escape)."""
        debit, credit = self.pair()
        return (
            f'{{"id":"{self.prefix}-t{next(self._seq)}","debit_account_id":"{debit}",'
            f'"credit_account_id":"{credit}","amount":{self.rng.randint(1, self.max_amount)},'
            f'"currency":"USD"}}'
        ).encode()

    def batch_json(self, size: int) -> bytes:
        return b'{"transfers":[' + b",".join([self.transfer_json() for _ in range(size)]) + b"]}"

    def bodies(self, make: Callable[[], bytes], prebuilt: int) -> Iterator[bytes]:
        """``prebuilt`` bodies made before the run starts, then more made as needed.

        The generator shares the cores with the node: building a body during the
        load would count against the node's throughput.
        """
        ready = [make() for _ in range(prebuilt)]
        return itertools.chain(ready, (make() for _ in itertools.count()))
