"""The HTTP contract for reconciliation: runs, status, discrepancies."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

RunKind = Literal["incremental", "full"]
DiscrepancyKind = Literal[
    "missing_in_journal",
    "missing_in_bank",
    "missing_in_analytics",
    "amount_mismatch",
    "balance_drift",
    "status_mismatch",
    "nonzero_total",
]


class RunIn(msgspec.Struct, forbid_unknown_fields=True):
    """``incremental`` checks what changed since the last run; ``full`` checks everything."""

    kind: RunKind = "incremental"


class RunOut(msgspec.Struct):
    id: int
    kind: RunKind
    trigger: str  # api, schedule, cli
    status: Literal["ok", "discrepancies", "failed"]
    from_txid: int  # the journal range checked: transactions in [from_txid, to_txid)
    to_txid: int
    accounts_checked: int
    transfers_checked: int  # journal rows compared with analytics row by row
    skipped_in_flight: int  # accounts whose balances moved during the check (next run)
    findings: int  # differences this run saw: candidates, confirmations, still open
    candidates: int  # differences seen for the first time (not discrepancies yet)
    found: int  # discrepancies opened: candidates this run saw again
    dropped: int  # candidates this run checked and no longer saw
    resolved: int
    seconds: float


class AnalyticsOut(msgspec.Struct):
    watermark_txid: int  # every journal row of a transaction below this is queryable
    rows_published: int
    segments_live: int
    lag_last_s: float  # commit to queryable, last segment
    lag_max_s: float
    errors: int


class ReconStatusOut(msgspec.Struct):
    runs: int
    failures: int
    open_discrepancies: int
    candidates: int  # differences seen once, waiting for the next run's second look
    last_run: RunOut | None
    analytics: AnalyticsOut


class DiscrepancyOut(msgspec.Struct):
    id: int
    kind: DiscrepancyKind
    object_type: Literal["account", "transfer", "currency", "bank_entry"]
    object_id: str
    sources: str  # the two copies that disagree, e.g. memory/journal
    expected: str | None  # what the journal says
    actual: str | None
    first_run_id: int
    last_run_id: int
    found_at: dt.datetime
    last_seen_at: dt.datetime
    resolved_at: dt.datetime | None


class DiscrepancyPage(msgspec.Struct):
    """Oldest first; pass ``next_after`` as ``after`` for the next page."""

    data: list[DiscrepancyOut]
    next_after: int | None


RECON_TYPES = (RunIn, RunOut, ReconStatusOut, AnalyticsOut, DiscrepancyOut, DiscrepancyPage)
