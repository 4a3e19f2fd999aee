"""Edge checks that need no state: the shape of a transfer's flags and fields."""

from __future__ import annotations

import msgspec

from paynode.api import problems as p
from paynode.api.schemas import AccountIn, TransferIn
from paynode.domain.ledger.model import (
    ACCOUNT_FLAGS,
    NO_METADATA,
    TRANSFER_FLAGS,
    Code,
    TransferFlags,
)

_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def canonical_metadata(metadata: dict[str, str]) -> str:
    """One byte-exact form per mapping, so replays compare equal whatever the key order."""
    return _encode_sorted(metadata).decode() if metadata else NO_METADATA


def account_flags(body: AccountIn) -> int:
    bits = 0
    for name in body.flags:
        bits |= ACCOUNT_FLAGS[name]
    both = (
        ACCOUNT_FLAGS["debits_must_not_exceed_credits"]
        | ACCOUNT_FLAGS["credits_must_not_exceed_debits"]
    )
    if bits & both == both:
        raise p.ApiError(p.FLAGS_MUTUALLY_EXCLUSIVE, "an account takes at most one limit flag")
    return bits


def transfer_flags(t: TransferIn) -> int:
    """Check a transfer's static rules; return its flag bits or raise ApiError."""
    bits = 0
    for name in t.flags:
        bits |= TRANSFER_FLAGS[name]
    kinds = bits & (TransferFlags.PENDING | TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING)
    if kinds & (kinds - 1):
        raise p.ApiError(
            p.FLAGS_MUTUALLY_EXCLUSIVE, "use one of pending, post_pending, void_pending", "$.flags"
        )
    resolves = bool(kinds & (TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING))
    if resolves:
        if t.pending_id is None:
            raise p.ApiError(p.PENDING_ID_REQUIRED, field="$.pending_id")
        if t.pending_id == t.id:
            raise p.ApiError(p.PENDING_ID_MUST_BE_DIFFERENT, field="$.pending_id")
    else:
        if t.pending_id is not None:
            raise p.ApiError(p.PENDING_ID_MUST_BE_EMPTY, field="$.pending_id")
        for attr in ("debit_account_id", "credit_account_id", "amount", "currency"):
            if getattr(t, attr) is None:
                raise p.ApiError(p.MISSING_FIELD, f"`{attr}` is required", f"$.{attr}")
    if t.timeout_s is not None and not kinds & TransferFlags.PENDING:
        raise p.ApiError(p.TIMEOUT_RESERVED, field="$.timeout_s")
    if t.debit_account_id is not None and t.debit_account_id == t.credit_account_id:
        raise p.ApiError(Code.SAME_ACCOUNT)
    return bits
