"""The HTTP contract for compliance reviews."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class MatchOut(msgspec.Struct):
    """A sanctions list entry that matched (public list data; the screened name is not shown)."""

    ent_num: int
    listed_name: str
    matched_name: str
    score: float
    program: str
    party: Literal["payer", "payee", "bank_account"] | None = None


class ReviewOut(msgspec.Struct, kw_only=True):
    id: str
    kind: Literal["payment", "user", "bank_account"]
    subject_id: str  # the payment id, user id or bank account id held
    user_id: str | None
    status: Literal["open", "approved", "rejected"]
    reason: Literal["sanctions_match"]
    matches: list[MatchOut]
    created_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    note: str | None


class ReviewPage(msgspec.Struct):
    reviews: list[ReviewOut]
    next_after: str | None


class ReviewDecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["approve", "reject"]
    note: Annotated[str, Meta(max_length=500)] = ""


class CodeSendOut(msgspec.Struct):
    """One send of a step-up code: which channel took it (never the address or code)."""

    seq: int  # 0: the first send, then each resend
    status: Literal["pending", "sent", "failed"]
    channel: Literal["push", "sms", "email"] | None
    delivery: str | None  # the SMS provider's last reported status, if any


class ResendOut(msgspec.Struct):
    """A resend was queued: the code goes out again (same code, same expiry)."""

    payment_id: str
    resends_left: int
    next_resend_at: dt.datetime
    sends: list[CodeSendOut]


RISK_TYPES = (MatchOut, ReviewOut, ReviewPage, ReviewDecisionIn, CodeSendOut, ResendOut)
