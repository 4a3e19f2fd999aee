"""Token buckets, in memory, per front process.

Each key (a client IP, a user, an API key) has a bucket of ``burst`` tokens
refilled at ``rate`` per second; a request takes one. The table is bounded:
when full, the least recently used buckets go (they were idle, so full).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        assert rate > 0 and burst >= 1 and max_keys >= 1
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if allowed, else the seconds until one token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> str:
    """Retry-After is whole seconds; never tell a client 0."""
    return str(max(1, math.ceil(wait)))
