"""A log-linear latency histogram (HDR-style): bounded memory, ~1% relative error.

Values are recorded in microseconds into buckets whose width grows with the
value (``SUB`` linear sub-buckets per power of two), so p99.9 of a million
samples costs a few kilobytes, and histograms from several workers merge
by adding counts.
"""

from __future__ import annotations

from collections.abc import Iterable

SUB_BITS = 7  # 128 sub-buckets per power of two: <= 0.8% relative error
SUB = 1 << SUB_BITS
MAX_US = 3_600_000_000  # one hour; larger values are clamped


def _index(us: int) -> int:
    if us < SUB:
        return us
    exp = us.bit_length() - SUB_BITS - 1  # us >> exp lies in [SUB, 2 * SUB)
    return SUB + exp * SUB + (us >> exp) - SUB


def _bounds(index: int) -> tuple[int, int]:
    """The smallest and largest microsecond values of bucket ``index``."""
    if index < SUB:
        return index, index
    exp, sub = divmod(index - SUB, SUB)
    mantissa = SUB + sub
    return mantissa << exp, ((mantissa + 1) << exp) - 1


class Histogram:
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_us = 0

    def record(self, seconds: float) -> None:
        us = min(MAX_US, max(0, int(seconds * 1_000_000)))
        i = _index(us)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.total += 1
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: Histogram) -> None:
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.total += other.total
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, q: float) -> float:
        """The value (seconds) at quantile ``q`` in [0, 1]; 0.0 when empty."""
        if not self.total:
            return 0.0
        if q >= 1.0:
            return self.max_us / 1e6
        rank = q * self.total
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen > rank:
                return min(_bounds(i)[1], self.max_us) / 1e6
        return self.max_us / 1e6

    def summary_ms(self, quantiles: Iterable[float] = (0.5, 0.9, 0.99, 0.999)) -> dict[str, float]:
        return {_label(q): round(self.percentile(q) * 1000, 3) for q in quantiles} | {
            "max": round(self.max_us / 1000, 3)
        }


def _label(q: float) -> str:
    return f"p{q * 100:g}"
