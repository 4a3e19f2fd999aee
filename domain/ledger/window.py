"""The recent-id window: what a shard remembers of the transfers it no longer needs.

A shard's memory holds its accounts, its open pendings and this window; the
journal holds everything. The window is a map in two generations: entries go
into the young one, and ``age`` drops the old one and makes the young one old.
Lookups, inserts and deletes are O(1), aging is O(1) (the old dict is freed),
and the window holds between ``limit / 2`` and ``limit`` entries once full.
A plain dict evicting its oldest key would cost a scan of the deleted slots
at its front on every eviction.

Who may call ``age`` is the shard's business (``actors/ledger_shard.py``): an
entry may only leave once the journal holds it, because a transfer id missing
from the window is looked up there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")

MIN_WINDOW = 2  # one entry per generation


class Window(Generic[V]):
    """A bounded map of recent entries; ``limit`` 0 keeps everything (pure tests)."""

    __slots__ = ("limit", "old", "young")

    def __init__(self, limit: int = 0) -> None:
        assert limit == 0 or limit >= MIN_WINDOW, limit
        self.limit = limit
        self.young: dict[str, V] = {}
        self.old: dict[str, V] = {}

    def get(self, key: str) -> V | None:
        value = self.young.get(key)
        return self.old.get(key) if value is None else value

    def __contains__(self, key: str) -> bool:
        return key in self.young or key in self.old

    def __setitem__(self, key: str, value: V) -> None:
        self.young[key] = value

    def pop(self, key: str) -> V | None:
        value = self.young.pop(key, None)
        return self.old.pop(key, None) if value is None else value

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def __iter__(self) -> Iterator[str]:
        yield from self.old
        yield from self.young

    def full(self) -> bool:
        """Whether the young generation has reached half the limit (time to ``age``)."""
        return self.limit > 0 and len(self.young) >= self.limit // 2

    def age(self) -> int:
        """Forget the old generation; the young one becomes old. Returns how many left."""
        dropped = len(self.old)
        self.old, self.young = self.young, {}
        return dropped
