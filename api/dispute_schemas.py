"""The HTTP contract of card disputes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.domain.rails.disputes import MAX_EVIDENCE_CHARS


class DisputeOut(msgspec.Struct, kw_only=True):
    """A cardholder's dispute of a card payment into your wallet. While open, the amount
    is held out of the wallet; won gives it back, lost keeps it gone. ``unrecovered``:
    what a lost dispute could not take because the wallet had spent it."""

    id: str
    payment_id: str
    account_id: str
    amount: int
    currency: str
    reason: str
    status: Literal["needs_response", "under_review", "won", "lost"]
    held: bool
    unrecovered: int
    created_at: dt.datetime
    closed_at: dt.datetime | None


class DisputePage(msgspec.Struct):
    disputes: list[DisputeOut]
    next_after: str | None


class EvidenceIn(msgspec.Struct, forbid_unknown_fields=True):
    """What proves the charge: receipts, delivery, correspondence (kept sealed)."""

    text: Annotated[str, Meta(min_length=1, max_length=MAX_EVIDENCE_CHARS)]


DISPUTE_TYPES = (DisputeOut, DisputePage, EvidenceIn)
