"""The ledger's data model: flags, result codes and the messages that cross processes.

Everything here is a plain value. Messages are msgspec Structs encoded as
msgpack arrays between the front and the shards; amounts are ``int`` minor
units everywhere (a float cannot even be decoded into these types).
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

MAX_AMOUNT = 2**63 - 1  # PostgreSQL bigint; balances must stay below it too
MAX_TIMEOUT_S = 2**31 - 1
NO_METADATA = "{}"


def shard_key(account_id: str) -> int:
    """A stable 63-bit hash of an account id; its shard is ``shard_key % shard_count``.

    Stored with the account so that a shard can select its own accounts in SQL.
    """
    digest = hashlib.blake2b(account_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class AccountFlags:
    """Account flag bits (plain ints: enum arithmetic is slow on the hot path)."""

    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


class TransferFlags:
    """Transfer flag bits."""

    PENDING = 1
    POST_PENDING = 2
    VOID_PENDING = 4
    LINKED = 8


ACCOUNT_FLAGS: dict[str, int] = {
    "debits_must_not_exceed_credits": AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    "credits_must_not_exceed_debits": AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
}
TRANSFER_FLAGS: dict[str, int] = {
    "pending": TransferFlags.PENDING,
    "post_pending": TransferFlags.POST_PENDING,
    "void_pending": TransferFlags.VOID_PENDING,
    "linked": TransferFlags.LINKED,
}
RESOLVES_PENDING = TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING


def flag_names(value: int, table: dict[str, int]) -> list[str]:
    """Flag bits back to their names, in the table's order (stable for clients)."""
    return [name for name, bit in table.items() if value & bit]


class Status:
    """What a journal row did. ``expired`` is a pending released by its timeout."""

    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"
    EXPIRED = "expired"


class Code:
    """Named results. Every refusal carries one of these; clients switch on them."""

    OK = ""
    EXISTS = "exists"  # informational: replay of an identical transfer
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    TRANSFER_IN_FLIGHT = "transfer_in_flight"
    ACCOUNT_NOT_FOUND = "account_not_found"
    CURRENCY_MISMATCH = "currency_mismatch"
    SAME_ACCOUNT = "same_account"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CREDITS_EXCEED_DEBITS = "credits_exceed_debits"
    OVERFLOW = "overflow"
    PENDING_NOT_FOUND = "pending_not_found"
    PENDING_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_ALREADY_POSTED = "pending_already_posted"
    PENDING_ALREADY_VOIDED = "pending_already_voided"
    PENDING_EXPIRED = "pending_expired"
    PENDING_ACCOUNT_MISMATCH = "pending_account_mismatch"
    EXCEEDS_PENDING_AMOUNT = "exceeds_pending_amount"
    VOID_AMOUNT_MISMATCH = "void_amount_mismatch"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_CHAIN_OPEN = "linked_event_chain_open"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    ACCOUNT_LIMIT_REACHED = "account_limit_reached"  # the shard's memory budget is full


# Codes that mean "not applied, and retrying the same request later may work".
RETRYABLE = frozenset({Code.TRANSFER_IN_FLIGHT, Code.STORAGE_UNAVAILABLE})


class AccountSpec(msgspec.Struct, array_like=True, frozen=True):
    """An account as created: the immutable part. ``metadata`` is canonical JSON."""

    id: str
    currency: str
    flags: int
    metadata: str
    ts: int = 0
    owner: str = ""  # user id allowed to read and debit it; "" = admins only (api/, not rules)


class AccountBalances(msgspec.Struct, array_like=True):
    id: str
    currency: str
    flags: int
    metadata: str
    ts: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    owner: str = ""


class TransferOp(msgspec.Struct, array_like=True, frozen=True):
    """A validated transfer request with both accounts resolved.

    ``amount`` is None only for post/void (take the pending amount).
    ``metadata`` is canonical JSON so that replays compare byte for byte.
    """

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int | None
    currency: str
    flags: int
    pending_id: str | None
    timeout_s: int
    metadata: str


class JournalRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One journal entry: the request as decided plus its effect on balances.

    The effect on both accounts is explicit so that any balance is a plain sum:
    debits_posted(a) = sum(posted_amount where debit = a), and so on;
    pending_delta is +amount for a pending, -pending amount when it is
    posted, voided or expires.
    """

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    flags: int
    pending_id: str | None
    timeout_s: int
    metadata: str
    status: str
    posted_amount: int
    pending_delta: int
    ts: int


# A journal row as a plain tuple in JournalRow's field order, which is the journal's COPY
# column order: what the shard keeps per transfer and writes, with no object around it.
Row = tuple[str, str, str, int, str, int, str | None, int, str, str, int, int, int]
# Positions of the fields a shard reads (Final: mypy types row[ROW_CREDIT] as that field's type).
ROW_ID: Final = 0
ROW_DEBIT: Final = 1
ROW_CREDIT: Final = 2
ROW_POSTED: Final = 10
ROW_PENDING_DELTA: Final = 11
ROW_TS: Final = 12


class Horizon(msgspec.Struct, frozen=True):
    """Which journal transactions a read saw: PostgreSQL's ``pg_snapshot`` of it.

    A shard rebuilt from a read must not apply again the rows of a transaction the
    read saw, when another shard forwards them late (they are in the rebuild): rows
    travel between shards with the id of the transaction that journaled them.
    """

    xmin: int  # every transaction below it had ended
    xmax: int  # none at or above it had
    xip: frozenset[int] = frozenset()  # in progress, between the two

    def saw(self, txid: int) -> bool:
        return txid < self.xmin or (txid < self.xmax and txid not in self.xip)


SAW_NOTHING: Final = Horizon(0, 0)


class Recalled(msgspec.Struct, frozen=True):
    """What the journal holds of ids a shard no longer remembers (``Ledger.unknown``).

    ``rows``: the journaled row of each asked id that exists, whichever shard wrote
    it. ``resolutions``: for each asked pending id that was resolved, the status of
    the row that resolved it (posted, voided or expired).
    """

    rows: dict[str, Row] = msgspec.field(default_factory=dict)
    resolutions: dict[str, str] = msgspec.field(default_factory=dict)


NOTHING_RECALLED: Final = Recalled()


class Outcome(msgspec.Struct, array_like=True, frozen=True):
    """The answer for one transfer: a row (new or replayed) or a refusal code."""

    id: str
    code: str = Code.OK
    row: JournalRow | None = None
    replayed: bool = False


def same_request(op: TransferOp, row: JournalRow) -> bool:
    """Whether ``op`` is a replay of the transfer that produced ``row``.

    A post or void without an amount means "the whole pending amount", so it
    replays a row whose amount is the whole pending amount (-pending_delta).
    """
    if op.amount is None:
        amount_matches = bool(op.flags & RESOLVES_PENDING) and row.amount == -row.pending_delta
    else:
        amount_matches = op.amount == row.amount
    return (
        amount_matches
        and op.debit_account_id == row.debit_account_id
        and op.credit_account_id == row.credit_account_id
        and op.currency == row.currency
        and op.flags == row.flags
        and op.pending_id == row.pending_id
        and op.timeout_s == row.timeout_s
        and op.metadata == row.metadata
    )


_FIELDS = JournalRow.__struct_fields__
assert (_FIELDS[ROW_ID], _FIELDS[ROW_DEBIT], _FIELDS[ROW_CREDIT], _FIELDS[ROW_TS]) == (
    "id",
    "debit_account_id",
    "credit_account_id",
    "ts",
), "Row positions must follow JournalRow"
assert (_FIELDS[ROW_POSTED], _FIELDS[ROW_PENDING_DELTA]) == ("posted_amount", "pending_delta")
