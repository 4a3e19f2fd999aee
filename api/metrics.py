"""/metrics: the front's own counters and the actors' figures, in Prometheus' text format.

Counting on the hot path stays in plain dicts and lists (``FrontMetrics``):
``prometheus_client``'s ``Counter.labels(...).inc()`` takes a lock and costs
~1.3 us per transfer here against ~0.03 us for ``Counter.update`` (5% of a
durable transfer's whole CPU). The exposition (names, escaping, histogram
and counter conventions, content type) is ``prometheus_client``'s: each
scrape turns a snapshot of those figures into metric families.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from paynode.actors.analytics import LAG_BUCKETS_S, AnalyticsStats
from paynode.actors.checkpointer import CheckpointStats
from paynode.actors.notifier import NotifierStats
from paynode.actors.reconciler import ReconStats
from paynode.domain.ledger.wire import COMMIT_BUCKETS_S, ShardStats

BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 4000, 8190)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class FrontMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.batch_buckets = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0
        self.batch_count = 0

    def observe_batch(self, size: int) -> None:
        self.batch_count += 1
        self.batch_sum += size
        for i, bound in enumerate(BATCH_BUCKETS):
            if size <= bound:
                self.batch_buckets[i] += 1
                return
        self.batch_buckets[-1] += 1


class _Snapshot:
    """What ``generate_latest`` collects from: families built for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(families: list[Metric]) -> bytes:
    return generate_latest(_Snapshot(families))


def _buckets(bounds: Sequence[float], per_bucket: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from per-bucket counts whose last is the overflow."""
    assert len(per_bucket) == len(bounds) + 1
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds, per_bucket, strict=False):
        running += n
        out.append((str(bound), running))
    out.append(("+Inf", running + per_bucket[-1]))
    return out


def _uncumulate(cumulative: list[int], total: int) -> list[int]:
    """The analytics actor counts each segment in every bucket it fits; per bucket here."""
    per = [c - (cumulative[i - 1] if i else 0) for i, c in enumerate(cumulative)]
    return [*per, total - (cumulative[-1] if cumulative else 0)]


def _one(name: str, help_text: str, value: float, counter: bool = False) -> Metric:
    if counter:
        return CounterMetricFamily(name, help_text, value=value)
    return GaugeMetricFamily(name, help_text, value=value)


def front_families(
    front: FrontMetrics, queues: list[int], shards: list[ShardStats | None]
) -> list[Metric]:
    requests = CounterMetricFamily(
        "paynode_http_requests_total", "HTTP requests by route and status.",
        labels=["method", "route", "status"],
    )  # fmt: skip
    for (method, route, status), n in sorted(front.requests.items()):
        requests.add_metric([method, route, str(status)], n)
    outcomes = CounterMetricFamily(
        "paynode_transfer_outcomes_total", "Transfers answered, by result code.", labels=["code"]
    )
    for code, n in sorted(front.outcomes.items()):
        outcomes.add_metric([code or "ok"], n)
    batch = HistogramMetricFamily(
        "paynode_shard_call_batch_size", "Items per call from the front to a shard."
    )
    batch.add_metric([], _buckets(BATCH_BUCKETS, front.batch_buckets), front.batch_sum)
    queue = GaugeMetricFamily(
        "paynode_front_queue_depth", "Items waiting in the front for each shard.", labels=["shard"]
    )
    for i, depth in enumerate(queues):
        queue.add_metric([str(i)], depth)
    return [requests, outcomes, batch, queue, *_shard_families([s for s in shards if s])]


_SHARD_SERIES = (
    ("paynode_shard_commit_queue_rows", "Rows waiting for the shard's next commit.", False,
     lambda s: s.commit_queue),
    ("paynode_shard_accounts", "Accounts owned by the shard.", False, lambda s: s.accounts),
    ("paynode_shard_window_transfers",
     "Transfers the recent-id window remembers (older ids are looked up in the journal).",
     False, lambda s: s.window_transfers),
    ("paynode_shard_window_agings_total", "Times the window forgot its older generation.",
     True, lambda s: s.window_agings),
    ("paynode_shard_lookups_total", "Journal lookups for ids memory could not answer.", True,
     lambda s: s.lookups),
    ("paynode_shard_ids_looked_up_total", "Ids those lookups asked the journal about.", True,
     lambda s: s.ids_looked_up),
    ("paynode_shard_open_pendings", "Pending transfers not yet resolved.", False,
     lambda s: s.pendings),
    ("paynode_shard_ready", "1 when the shard accepts work.", False, lambda s: int(s.ready)),
    ("paynode_shard_commits_total", "Journal transactions committed.", True, lambda s: s.commits),
    ("paynode_shard_rows_committed_total", "Journal rows committed.", True,
     lambda s: s.rows_committed),
    ("paynode_shard_rebuilds_total", "Rebuilds of memory from the journal.", True,
     lambda s: s.rebuilds),
)  # fmt: skip


def _shard_families(live: list[ShardStats]) -> list[Metric]:
    out: list[Metric] = []
    for name, help_text, counter, value in _SHARD_SERIES:
        kind = CounterMetricFamily if counter else GaugeMetricFamily
        family = kind(name, help_text, labels=["shard"])
        for s in live:
            family.add_metric([str(s.index)], value(s))
        out.append(family)
    phases = CounterMetricFamily(
        "paynode_shard_execute_phase_seconds_total", "Time shard calls spent per phase.",
        labels=["shard", "phase"],
    )  # fmt: skip
    commits = HistogramMetricFamily(
        "paynode_shard_commit_seconds", "Latency of one group commit (one transaction).",
        labels=["shard"],
    )  # fmt: skip
    for s in live:
        for phase, seconds in sorted(s.phase_seconds.items()):
            phases.add_metric([str(s.index), phase], seconds)
        commits.add_metric([str(s.index)], _buckets(COMMIT_BUCKETS_S, s.commit_buckets),
                           s.commit_seconds_sum)  # fmt: skip
    return [*out, phases, commits]


def helper_families(
    analytics: AnalyticsStats | None,
    recon: ReconStats | None,
    notifier: NotifierStats | None = None,
    checkpoint: CheckpointStats | None = None,
) -> list[Metric]:
    """Analytics, reconciliation, notifier and checkpoint figures (absent when an actor did
    not answer)."""
    out: list[Metric] = []
    if checkpoint is not None:
        c = checkpoint
        out += [
            _one("paynode_checkpoint_below_txid",
                 "Journal transactions below this are folded into the checkpoint.", c.below),
            _one("paynode_checkpoints_total", "Checkpoint advances by this node.", c.taken,
                 True),
            _one("paynode_checkpoint_failures_total", "Checkpoint advances that failed.",
                 c.failed, True),
            _one("paynode_checkpoint_last_seconds", "Duration of the last advance.",
                 c.last_seconds),
            _one("paynode_checkpoint_last_timestamp_seconds",
                 "When the last advance finished (a restart replays what came after).",
                 c.last_unix),
        ]  # fmt: skip
    if analytics is not None:
        a = analytics
        lag = HistogramMetricFamily(
            "paynode_analytics_lag_segments", "Segments by commit-to-queryable lag."
        )
        per_bucket = _uncumulate(a.lag_buckets, a.segments_published)
        lag.add_metric([], _buckets(LAG_BUCKETS_S, per_bucket), 0.0)
        out += [
            _one("paynode_analytics_lag_seconds", "Commit to queryable, last segment.",
                 a.lag_last_s),
            _one("paynode_analytics_lag_max_seconds", "Worst commit to queryable.", a.lag_max_s),
            _one("paynode_analytics_rows_total", "Journal rows published.", a.rows_published,
                 counter=True),
            _one("paynode_analytics_segments", "Live Parquet segments (transfers).",
                 a.segments_live),
            _one("paynode_analytics_errors_total", "Failed publish cycles.", a.errors,
                 counter=True),
            _one("paynode_analytics_watermark_txid", "Published up to this transaction.",
                 a.watermark_txid),
            lag,
        ]  # fmt: skip
    if recon is not None:
        r = recon
        out += [
            _one("paynode_recon_runs_total", "Reconciliation runs finished.", r.runs, True),
            _one("paynode_recon_failures_total", "Reconciliation runs failed.", r.failures, True),
            _one("paynode_recon_open_discrepancies", "Discrepancies not resolved.",
                 r.open_discrepancies),
            _one("paynode_recon_candidates", "Differences seen once, awaiting a second look.",
                 r.candidates),
            _one("paynode_recon_findings_total", "Differences seen, over all runs.",
                 r.findings_total, True),
            _one("paynode_recon_accounts_checked_total", "Accounts checked, over all runs.",
                 r.accounts_checked_total, True),
            _one("paynode_recon_transfers_checked_total", "Journal rows checked, over all runs.",
                 r.transfers_checked_total, True),
            _one("paynode_recon_run_seconds_total", "Time spent in runs.", r.seconds_total, True),
            _one("paynode_recon_run_seconds_max", "Longest run.", r.seconds_max),
            _one("paynode_recon_accounts_read_whole_total",
                 "Accounts whose journal totals a run read from their whole history.",
                 r.accounts_read_whole_total, True),
            _one("paynode_recon_last_run_timestamp_seconds", "When the last run finished.",
                 r.last_run_unix),
        ]  # fmt: skip
        if r.last is not None:
            out += [
                _one("paynode_recon_last_run_seconds", "Duration of the last run.",
                     r.last.seconds),
                _one("paynode_recon_last_run_skipped_in_flight", "Accounts moving during it.",
                     r.last.skipped_in_flight),
            ]  # fmt: skip
    if notifier is not None:
        n = notifier
        out += [
            _one("paynode_webhook_endpoints", "Enabled webhook endpoints.", n.endpoints),
            _one("paynode_push_devices", "Registered devices.", n.devices),
            _one("paynode_events_scanned_total", "Outbox events fanned out.", n.events_scanned,
                 True),
            _one("paynode_webhook_deliveries_total", "Deliveries queued.", n.deliveries_created,
                 True),
            _one("paynode_webhook_delivered_total", "Deliveries answered 2xx.", n.delivered,
                 True),
            _one("paynode_webhook_failed_attempts_total", "Attempts that failed.",
                 n.failed_attempts, True),
            _one("paynode_webhook_dead_total", "Deliveries given up on.", n.dead, True),
            _one("paynode_webhook_in_flight", "Requests in flight.", n.in_flight),
            _one("paynode_push_sent_total", "Push notifications handed over.", n.pushes_sent,
                 True),
            _one("paynode_push_retries_total", "Pushes a provider deferred (429, 5xx).",
                 n.push_retries, True),
            _one("paynode_push_devices_unregistered_total",
                 "Devices whose token a push provider called dead.", n.devices_unregistered, True),
            _one("paynode_notifier_errors_total", "Notifier database errors.", n.errors, True),
        ]  # fmt: skip
        if n.delivery_lag_p99_s is not None:
            out += [
                _one("paynode_webhook_lag_p50_seconds", "Commit to first delivery, median.",
                     n.delivery_lag_p50_s or 0.0),
                _one("paynode_webhook_lag_p99_seconds", "Commit to first delivery, p99.",
                     n.delivery_lag_p99_s),
            ]  # fmt: skip
    return out


class RiskStats:
    """What the gate costs and decides, for /metrics (in this front process)."""

    def __init__(self, window: int = 10_000) -> None:
        self.seconds: deque[float] = deque(maxlen=window)  # read + limits + score
        self.score_seconds: deque[float] = deque(maxlen=window)  # rules.score alone
        self.decisions: Counter[str] = Counter()  # by the status they led to
        self.otp: Counter[str] = Counter()  # by check outcome

    @staticmethod
    def quantile(values: Iterable[float], q: float) -> float:
        ordered = sorted(values)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @classmethod
    def _summary(cls, name: str, help_text: str, values: deque[float]) -> Metric:
        # prometheus_client's SummaryMetricFamily has no quantiles: the samples by hand.
        family = Metric(name, help_text, "summary")
        for q in (0.5, 0.99):
            family.add_sample(name, {"quantile": str(q)}, cls.quantile(values, q))
        family.add_sample(name + "_count", {}, len(values))
        family.add_sample(name + "_sum", {}, sum(values))
        return family

    def families(self) -> list[Metric]:
        decisions = CounterMetricFamily(
            "paynode_risk_decisions_total", "User payments by what the risk gate decided.",
            labels=["status"],
        )  # fmt: skip
        for status, n in sorted(self.decisions.items()):
            decisions.add_metric([status], n)
        otp = CounterMetricFamily(
            "paynode_otp_checks_total", "One-time code checks by outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(self.otp.items()):
            otp.add_metric([outcome], n)
        return [
            self._summary("paynode_risk_decision_seconds",
                          "Risk gate per user payment: usage read, limits, score (recent).",
                          self.seconds),
            self._summary("paynode_risk_score_seconds", "The rules' score alone (recent).",
                          self.score_seconds),
            decisions,
            otp,
        ]  # fmt: skip
