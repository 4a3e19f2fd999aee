"""The HTTP contract (v1): request and response bodies as msgspec Structs.

These types are both the validator at the edge and the source of
``/openapi.json``. Requests forbid unknown fields; amounts are integers in
minor units between 1 and 2^63-1; ids are 1-64 characters of
``[A-Za-z0-9._:-]``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.domain.ledger.model import MAX_AMOUNT, MAX_TIMEOUT_S

# Every pattern ends in `$(?!\n)`, not `$`: msgspec matches with Python's `re`, whose `$`
# also matches before a final newline, so "USD\n" passed as a currency and "a\n" as an id.
# The lookahead refuses that, and in the contract's (ECMA) regex it changes nothing.
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$(?!\n)"

Id = Annotated[
    str,
    Meta(min_length=1, max_length=64, pattern=ID_PATTERN, description="Client-chosen id"),
]
UserId = Annotated[str, Meta(pattern=r"^usr_[0-9a-f]{32}$(?!\n)", description="A user id")]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$(?!\n)", description="ISO 4217 code")]
Amount = Annotated[
    int, Meta(ge=1, le=MAX_AMOUNT, description="Integer amount in minor units (cents)")
]
Metadata = Annotated[
    dict[
        Annotated[str, Meta(min_length=1, max_length=64)],
        Annotated[str, Meta(max_length=512)],
    ],
    Meta(max_length=32, description="Up to 32 string pairs; stored, never interpreted"),
]
AccountFlag = Literal["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]
TransferFlag = Literal["pending", "post_pending", "void_pending", "linked"]
TransferStatus = Literal["posted", "pending", "voided", "expired"]


class AccountIn(msgspec.Struct, forbid_unknown_fields=True):
    """Create an account. Re-sending the same body is safe (200 with the account)."""

    id: Id
    currency: Currency
    flags: Annotated[list[AccountFlag], Meta(max_length=2)] = []
    metadata: Metadata = {}
    owner_user_id: UserId | None = None  # admins only; otherwise the caller's user owns it


class AccountOut(msgspec.Struct):
    """An account and its balances. balance = credits_posted - debits_posted;
    available = balance - debits_pending."""

    id: str
    currency: str
    flags: list[AccountFlag]
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    balance: int
    available: int
    metadata: dict[str, str]
    timestamp: int  # nanoseconds since the Unix epoch, assigned by the node
    owner_user_id: str | None  # who may read and debit it; null: admin keys only


class TransferIn(msgspec.Struct, forbid_unknown_fields=True):
    """A transfer. ``id`` is the idempotency key.

    For ``post_pending``/``void_pending`` the accounts, currency and amount may
    be omitted: they are taken from the pending transfer (a post may give a
    smaller amount to post part of it).
    """

    id: Id
    debit_account_id: Id | None = None
    credit_account_id: Id | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    flags: Annotated[list[TransferFlag], Meta(max_length=4)] = []
    pending_id: Id | None = None
    timeout_s: Annotated[int, Meta(ge=1, le=MAX_TIMEOUT_S)] | None = None
    metadata: Metadata = {}


class TransferOut(msgspec.Struct):
    """A journaled transfer. Read back (``GET``), a pending transfer shows where it is
    now: ``status`` is ``pending`` while it is open, then ``posted``, ``voided`` or
    ``expired``, with ``resolved_by`` naming the transfer that resolved it (a post's
    own amount may be less than the pending's). The answer to a ``POST`` is the
    transfer as it was applied, replays included."""

    id: str
    status: TransferStatus
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    flags: list[TransferFlag]
    pending_id: str | None
    timeout_s: int | None
    metadata: dict[str, str]
    timestamp: int  # nanoseconds since the Unix epoch, assigned by the deciding shard
    resolved_by: str | None = None


class TransferBatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 8190 transfers, applied in order per shard; ``linked`` chains are atomic."""

    transfers: Annotated[list[TransferIn], Meta(min_length=1, max_length=8190)]


class BatchResult(msgspec.Struct, omit_defaults=True):
    """One entry per submitted transfer: ``status`` if it applied (or was a replay),
    ``code`` if it was refused."""

    id: str
    status: TransferStatus | None = None
    code: str | None = None


class TransferBatchOut(msgspec.Struct):
    results: list[BatchResult]


class TransferPage(msgspec.Struct):
    """Newest first. Pass ``next_cursor`` as ``cursor`` for the next page."""

    data: list[TransferOut]
    next_cursor: str | None


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    retryable: bool = False
    # The request's trace (when tracing is on): what to quote to an operator
    trace_id: str | None = None


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: Literal["ready", "not_ready"]
    database: bool
    shards: list[bool]


PUBLIC_TYPES = (
    AccountIn,
    AccountOut,
    TransferIn,
    TransferOut,
    TransferBatchIn,
    TransferBatchOut,
    TransferPage,
    Problem,
    Health,
    Readiness,
)
