"""Prometheus text exposition for the front and the shards (no client library needed)."""

from __future__ import annotations

from collections import Counter, deque

from paynode.actors.analytics import LAG_BUCKETS_S, AnalyticsStats
from paynode.actors.notifier import NotifierStats
from paynode.actors.reconciler import ReconStats
from paynode.domain.ledger.wire import COMMIT_BUCKETS_S, ShardStats

BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 4000, 8190)


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


def _histogram(name: str, bounds: tuple, counts: list[int], total: float, labels: str) -> list[str]:
    lines, running = [], 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        lines.append(f'{name}_bucket{{{labels}le="{bound}"}} {running}')
    running += counts[-1]
    lines.append(f'{name}_bucket{{{labels}le="+Inf"}} {running}')
    lines.append(f"{name}_sum{{{labels.rstrip(',')}}} {total}")
    lines.append(f"{name}_count{{{labels.rstrip(',')}}} {running}")
    return lines


def render_helpers(
    analytics: AnalyticsStats | None,
    recon: ReconStats | None,
    notifier: NotifierStats | None = None,
) -> list[str]:
    """Analytics, reconciliation and notifier gauges (absent when an actor did not answer)."""
    out: list[str] = []

    def gauge(name: str, help_text: str, value: float, kind: str = "gauge") -> None:
        out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"])

    if analytics is not None:
        a = analytics
        gauge("paynode_analytics_lag_seconds", "Commit to queryable, last segment.", a.lag_last_s)
        gauge("paynode_analytics_lag_max_seconds", "Worst commit to queryable.", a.lag_max_s)
        gauge("paynode_analytics_rows_total", "Journal rows published.", a.rows_published,
              "counter")  # fmt: skip
        gauge("paynode_analytics_segments", "Live Parquet segments (transfers).", a.segments_live)
        gauge("paynode_analytics_errors_total", "Failed publish cycles.", a.errors, "counter")
        gauge("paynode_analytics_watermark_txid", "Published up to this transaction.",
              a.watermark_txid)  # fmt: skip
        out += [
            "# HELP paynode_analytics_lag_segments Segments by commit-to-queryable lag.",
            "# TYPE paynode_analytics_lag_segments histogram",
            *_histogram("paynode_analytics_lag_segments", LAG_BUCKETS_S,
                        _uncumulate(a.lag_buckets, a.segments_published), 0.0, ""),
        ]  # fmt: skip
    if recon is not None:
        gauge("paynode_recon_runs_total", "Reconciliation runs finished.", recon.runs, "counter")
        gauge("paynode_recon_failures_total", "Reconciliation runs failed.", recon.failures,
              "counter")  # fmt: skip
        gauge("paynode_recon_open_discrepancies", "Discrepancies not resolved.",
              recon.open_discrepancies)  # fmt: skip
        gauge("paynode_recon_candidates", "Differences seen once, awaiting a second look.",
              recon.candidates)  # fmt: skip
        gauge("paynode_recon_findings_total", "Differences seen, over all runs.",
              recon.findings_total, "counter")  # fmt: skip
        gauge("paynode_recon_accounts_checked_total", "Accounts checked, over all runs.",
              recon.accounts_checked_total, "counter")  # fmt: skip
        gauge("paynode_recon_transfers_checked_total", "Journal rows checked, over all runs.",
              recon.transfers_checked_total, "counter")  # fmt: skip
        gauge("paynode_recon_run_seconds_total", "Time spent in runs.", recon.seconds_total,
              "counter")  # fmt: skip
        gauge("paynode_recon_run_seconds_max", "Longest run.", recon.seconds_max)
        gauge("paynode_recon_accounts_read_whole_total",
              "Accounts whose journal totals a run read from their whole history.",
              recon.accounts_read_whole_total, "counter")  # fmt: skip
        gauge("paynode_recon_last_run_timestamp_seconds", "When the last run finished.",
              recon.last_run_unix)  # fmt: skip
        if recon.last is not None:
            gauge("paynode_recon_last_run_seconds", "Duration of the last run.", recon.last.seconds)
            gauge("paynode_recon_last_run_skipped_in_flight", "Accounts moving during it.",
                  recon.last.skipped_in_flight)  # fmt: skip
    if notifier is not None:
        n = notifier
        gauge("paynode_webhook_endpoints", "Enabled webhook endpoints.", n.endpoints)
        gauge("paynode_push_devices", "Registered devices.", n.devices)
        gauge("paynode_events_scanned_total", "Outbox events fanned out.", n.events_scanned,
              "counter")  # fmt: skip
        gauge("paynode_webhook_deliveries_total", "Deliveries queued.", n.deliveries_created,
              "counter")  # fmt: skip
        gauge("paynode_webhook_delivered_total", "Deliveries answered 2xx.", n.delivered,
              "counter")  # fmt: skip
        gauge("paynode_webhook_failed_attempts_total", "Attempts that failed.",
              n.failed_attempts, "counter")  # fmt: skip
        gauge("paynode_webhook_dead_total", "Deliveries given up on.", n.dead, "counter")
        gauge("paynode_webhook_in_flight", "Requests in flight.", n.in_flight)
        gauge("paynode_push_sent_total", "Push notifications handed over.", n.pushes_sent,
              "counter")  # fmt: skip
        gauge("paynode_notifier_errors_total", "Notifier database errors.", n.errors, "counter")
        if n.delivery_lag_p99_s is not None:
            gauge("paynode_webhook_lag_p50_seconds", "Commit to first delivery, median.",
                  n.delivery_lag_p50_s or 0.0)  # fmt: skip
            gauge("paynode_webhook_lag_p99_seconds", "Commit to first delivery, p99.",
                  n.delivery_lag_p99_s)  # fmt: skip
    return out


def _uncumulate(cumulative: list[int], total: int) -> list[int]:
    """The actor counts each segment in every bucket it fits; _histogram wants per-bucket."""
    per = [c - (cumulative[i - 1] if i else 0) for i, c in enumerate(cumulative)]
    return [*per, total - (cumulative[-1] if cumulative else 0)]


def render(front: FrontMetrics, queues: list[int], shards: list[ShardStats | None]) -> str:
    out = [
        "# HELP paynode_http_requests_total HTTP requests by route and status.",
        "# TYPE paynode_http_requests_total counter",
    ]
    for (method, route, status), n in sorted(front.requests.items()):
        labels = f'method="{method}",route="{route}",status="{status}"'
        out.append(f"paynode_http_requests_total{{{labels}}} {n}")
    out += [
        "# HELP paynode_transfer_outcomes_total Transfers answered, by result code.",
        "# TYPE paynode_transfer_outcomes_total counter",
    ]
    for code, n in sorted(front.outcomes.items()):
        out.append(f'paynode_transfer_outcomes_total{{code="{code or "ok"}"}} {n}')
    out += [
        "# HELP paynode_shard_call_batch_size Items per call from the front to a shard.",
        "# TYPE paynode_shard_call_batch_size histogram",
        *_histogram(
            "paynode_shard_call_batch_size", BATCH_BUCKETS, front.batch_buckets,
            front.batch_sum, "",
        ),
        "# HELP paynode_front_queue_depth Items waiting in the front for each shard.",
        "# TYPE paynode_front_queue_depth gauge",
    ]  # fmt: skip
    out += [f'paynode_front_queue_depth{{shard="{i}"}} {q}' for i, q in enumerate(queues)]
    gauges = {
        "paynode_shard_commit_queue_rows": ("Rows waiting for the shard's next commit.", "gauge"),
        "paynode_shard_accounts": ("Accounts owned by the shard.", "gauge"),
        "paynode_shard_open_pendings": ("Pending transfers not yet resolved.", "gauge"),
        "paynode_shard_ready": ("1 when the shard accepts work.", "gauge"),
        "paynode_shard_commits_total": ("Journal transactions committed.", "counter"),
        "paynode_shard_rows_committed_total": ("Journal rows committed.", "counter"),
        "paynode_shard_rebuilds_total": ("Rebuilds of memory from the journal.", "counter"),
    }
    values = {
        "paynode_shard_commit_queue_rows": lambda s: s.commit_queue,
        "paynode_shard_accounts": lambda s: s.accounts,
        "paynode_shard_open_pendings": lambda s: s.pendings,
        "paynode_shard_ready": lambda s: int(s.ready),
        "paynode_shard_commits_total": lambda s: s.commits,
        "paynode_shard_rows_committed_total": lambda s: s.rows_committed,
        "paynode_shard_rebuilds_total": lambda s: s.rebuilds,
    }
    live = [s for s in shards if s is not None]
    for name, (help_text, kind) in gauges.items():
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        out += [f'{name}{{shard="{s.index}"}} {values[name](s)}' for s in live]
    out += [
        "# HELP paynode_shard_execute_phase_seconds_total Time shard calls spent per phase.",
        "# TYPE paynode_shard_execute_phase_seconds_total counter",
    ]
    for s in live:
        for phase, seconds in sorted(s.phase_seconds.items()):
            out.append(
                f'paynode_shard_execute_phase_seconds_total{{shard="{s.index}",phase="{phase}"}}'
                f" {seconds}"
            )
    out += [
        "# HELP paynode_shard_commit_seconds Latency of one group commit (one transaction).",
        "# TYPE paynode_shard_commit_seconds histogram",
    ]
    for s in live:
        out += _histogram(
            "paynode_shard_commit_seconds", COMMIT_BUCKETS_S, s.commit_buckets,
            s.commit_seconds_sum, f'shard="{s.index}",',
        )  # fmt: skip
    return "\n".join(out) + "\n"


class RiskStats:
    """What the gate costs and decides, for /metrics (in this front process)."""

    def __init__(self, window: int = 10_000) -> None:
        self.seconds: deque[float] = deque(maxlen=window)  # read + limits + score
        self.score_seconds: deque[float] = deque(maxlen=window)  # rules.score alone
        self.decisions: Counter[str] = Counter()  # by the status they led to
        self.otp: Counter[str] = Counter()  # by check outcome

    @staticmethod
    def quantile(values: deque[float], q: float) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def _summary(self, name: str, help_text: str, values: deque[float]) -> list[str]:
        return [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} summary",
            *(f'{name}{{quantile="{q}"}} {self.quantile(values, q)}' for q in (0.5, 0.99)),
            f"{name}_count {len(values)}",
        ]

    def render(self) -> list[str]:
        out = [
            *self._summary("paynode_risk_decision_seconds",
                           "Risk gate per user payment: usage read, limits, score (recent).",
                           self.seconds),
            *self._summary("paynode_risk_score_seconds", "The rules' score alone (recent).",
                           self.score_seconds),
            "# HELP paynode_risk_decisions_total User payments by what the risk gate decided.",
            "# TYPE paynode_risk_decisions_total counter",
            *(f'paynode_risk_decisions_total{{status="{k}"}} {v}'
              for k, v in sorted(self.decisions.items())),
            "# HELP paynode_otp_checks_total One-time code checks by outcome.",
            "# TYPE paynode_otp_checks_total counter",
            *(f'paynode_otp_checks_total{{outcome="{k}"}} {v}'
              for k, v in sorted(self.otp.items())),
        ]  # fmt: skip
        return out
