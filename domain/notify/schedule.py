"""Which webhook deliveries may start now, and when a failed one is tried again.

Pure functions: the notifier actor calls them with what it holds in memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, TypeVar


class Queued(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def due(self) -> float: ...
    @property
    def keys(self) -> tuple[str, ...]: ...


T = TypeVar("T", bound="Queued")


def ready(
    queue: Sequence[T], in_flight: Collection[int], max_in_flight: int, now: float
) -> list[T]:
    """The deliveries of ``queue`` (outbox order) to start now.

    With ``max_in_flight == 1`` an endpoint gets its events strictly in order:
    only the head may go, and only when nothing is in flight. With more, a
    delivery may start only if no earlier one that shares an order key (an
    account it concerns) is still waiting or in flight: events about the same
    account never overtake each other, unrelated ones do not wait.
    """
    assert max_in_flight >= 1
    room = max_in_flight - len(in_flight)
    if room <= 0 or not queue:
        return []
    if max_in_flight == 1:
        head = queue[0]
        return [head] if head.id not in in_flight and head.due <= now else []
    out: list[T] = []
    blocked: set[str] = set()
    for d in queue:
        if room == 0:
            break
        clear = d.id not in in_flight and d.due <= now and blocked.isdisjoint(d.keys)
        blocked.update(d.keys)
        if clear:
            out.append(d)
            room -= 1
    return out


def backoff_s(
    attempts: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, with equal jitter.

    Half the delay is fixed (a failing endpoint is not hammered) and half is
    random (endpoints that failed together do not retry together).
    """
    assert attempts >= 1 and base_s > 0 and cap_s >= base_s
    delay = min(cap_s, base_s * 2 ** min(attempts - 1, 62))
    return delay / 2 + rand() * delay / 2
