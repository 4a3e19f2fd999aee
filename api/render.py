"""Ledger records as the API shows them, and the cursors of ledger listings."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

import msgspec

from paynode.api import problems as p
from paynode.api.schemas import AccountOut, TransferIn, TransferOut
from paynode.domain.ledger.model import (
    ACCOUNT_FLAGS,
    TRANSFER_FLAGS,
    AccountBalances,
    JournalRow,
    flag_names,
)
from paynode.domain.ledger.plan import TransferResult

# Ids as stored: the client alphabet, plus '~' of node-made ids (pending expiries).
STORED_ID = re.compile(r"[A-Za-z0-9._:~-]{1,80}\Z")


def account_out(b: AccountBalances) -> AccountOut:
    balance = b.credits_posted - b.debits_posted
    return AccountOut(
        id=b.id,
        currency=b.currency,
        flags=flag_names(b.flags, ACCOUNT_FLAGS),  # type: ignore[arg-type]
        debits_posted=b.debits_posted,
        credits_posted=b.credits_posted,
        debits_pending=b.debits_pending,
        credits_pending=b.credits_pending,
        balance=balance,
        available=balance - b.debits_pending,
        metadata=msgspec.json.decode(b.metadata),
        timestamp=b.ts,
        owner_user_id=b.owner or None,
    )


def transfer_out(r: JournalRow, outcome: tuple[str, str] | None = None) -> TransferOut:
    """A journal row; ``outcome`` (status, resolving id) for a pending that was resolved
    (``journal.pending_outcomes``)."""
    return TransferOut(
        id=r.id,
        status=(outcome[0] if outcome else r.status),  # type: ignore[arg-type]
        debit_account_id=r.debit_account_id,
        credit_account_id=r.credit_account_id,
        amount=r.amount,
        currency=r.currency,
        flags=flag_names(r.flags, TRANSFER_FLAGS),  # type: ignore[arg-type]
        pending_id=r.pending_id,
        timeout_s=r.timeout_s or None,
        metadata=msgspec.json.decode(r.metadata),
        timestamp=r.ts,
        resolved_by=outcome[1] if outcome else None,
    )


def applied_transfer(body: TransferIn, flags: int, result: TransferResult) -> TransferOut:
    """A transfer just applied or replayed, from its request and the shard's answer.

    A replay matched the stored row field by field, so the request says what the
    row holds; the answer adds what only the journal knows (status, amount, time,
    and the accounts a post or void took from its pending).
    """
    metadata: Mapping[str, str] = body.metadata
    return TransferOut(
        id=result.id,
        status=result.status,  # type: ignore[arg-type]
        debit_account_id=result.debit_account_id,
        credit_account_id=result.credit_account_id,
        amount=result.amount,
        currency=result.currency,
        flags=flag_names(flags, TRANSFER_FLAGS),  # type: ignore[arg-type]
        pending_id=body.pending_id,
        timeout_s=body.timeout_s,
        metadata=dict(metadata),
        timestamp=result.ts,
    )


def cursor_encode(ts: int, tid: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{tid}".encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, tid = raw.split(":", 1)
        value = int(ts)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise p.ApiError(p.INVALID_CURSOR) from None
    if not 0 <= value < 2**63 or not STORED_ID.match(tid):  # ts is a bigint
        raise p.ApiError(p.INVALID_CURSOR)
    return value, tid


def check_path_id(value: str, code: str) -> None:
    """An id that cannot exist is simply not found (and never reaches the database)."""
    if not STORED_ID.match(value):
        raise p.ApiError(code, status=404)
