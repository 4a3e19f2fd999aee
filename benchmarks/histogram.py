"""Latency histograms for the load generators: HdrHistogram (the ``hdrhistogram``
package), 3 significant digits from 1 us to an hour, bounded memory.

A thin adapter: recording takes seconds (what ``perf_counter`` differences are)
and the summary is in milliseconds, the units the bench prints. Recording costs
~1.2 us per value here (our former hand-written log-linear buckets: ~0.6 us),
nothing next to a request (the generator records one value per request).
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

MAX_US = 3_600_000_000  # one hour; larger values are clamped
_DIGITS = 3  # relative error <= 0.1%


class Histogram:
    def __init__(self) -> None:
        self._h = HdrHistogram(1, MAX_US, _DIGITS)

    @property
    def total(self) -> int:
        return int(self._h.get_total_count())

    def record(self, seconds: float) -> None:
        self._h.record_value(min(MAX_US, max(1, int(seconds * 1_000_000))))

    def merge(self, other: Histogram) -> None:
        self._h.add(other._h)

    def percentile(self, q: float) -> float:
        """The value (seconds) at quantile ``q`` in [0, 1]; 0.0 when empty."""
        if not self.total:
            return 0.0
        return self._h.get_value_at_percentile(min(100.0, q * 100)) / 1e6

    def summary_ms(self, quantiles: Iterable[float] = (0.5, 0.9, 0.99, 0.999)) -> dict[str, float]:
        return {f"p{q * 100:g}": round(self.percentile(q) * 1000, 3) for q in quantiles} | {
            "max": round(self._h.get_max_value() / 1000 if self.total else 0.0, 3)
        }
